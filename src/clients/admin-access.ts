// The admin API as a resource server of this IdP: `${ISSUER}/admin`, scope `idp:admin`, opaque
// tokens only this IdP can read, for clients registered with the scope (and a way to authenticate).
export const adminScope = 'idp:admin';
export const adminResource = (issuer: string) => `${issuer}/admin`;
