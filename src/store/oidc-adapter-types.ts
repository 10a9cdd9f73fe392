// The storage contract oidc-provider expects of an adapter, kept here so that store/ does not
// import the provider package.
export interface OidcPayload {
  grantId?: string;
  userCode?: string;
  uid?: string;
  consumed?: number;
  [key: string]: unknown;
}

export interface OidcAdapter {
  upsert(id: string, payload: OidcPayload, expiresIn: number): Promise<void>;
  find(id: string): Promise<OidcPayload | undefined>;
  findByUserCode(userCode: string): Promise<OidcPayload | undefined>;
  findByUid(uid: string): Promise<OidcPayload | undefined>;
  /**
   * Marks a one-time record consumed. True only for the one caller that turned it from unconsumed
   * to consumed (a conditional write): of N parallel redemptions exactly one wins.
   */
  consume(id: string): Promise<boolean>;
  destroy(id: string): Promise<void>;
  revokeByGrantId(grantId: string): Promise<void>;
}

export const epochSeconds = (date: Date = new Date()) => Math.floor(date.getTime() / 1000);

/** Identifiers with a NUL byte can never exist, and PostgreSQL refuses them outright (a 500). */
export function impossibleId(value: string): boolean {
  return value.includes('\u0000');
}
