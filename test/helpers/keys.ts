// Encryption contexts that differ from the one a key was wrapped with, each in one way: every
// key-encryption provider must refuse all of them.
export const signingContext = { purpose: 'oidc-signing', kid: 'kid-1' };

export const wrongContexts: [string, Record<string, string>][] = [
  ['another kid', { purpose: 'oidc-signing', kid: 'kid-2' }],
  ['another purpose', { purpose: 'cookie-signing', kid: 'kid-1' }],
  ['an extra key', { purpose: 'oidc-signing', kid: 'kid-1', extra: 'x' }],
  ['a missing key', { purpose: 'oidc-signing' }],
  ['an empty context', {}],
];
