// Consent per account and third-party client, remembered for GRANT_TTL across sign-ins and
// sign-outs (oidc-provider's grants end with the session or logout that held them), merged as the
// client asks for more, and revoked by the user on the account page — which also revokes the
// grants (and so the tokens) the client holds.
import type { AuditSink } from '../audit/types.ts';
import type { Clock } from '../clock.ts';
import type { ConsentStore } from '../store/consents.ts';

export interface Consent {
  clientId: string;
  scopes: string[];
  claims: string[];
  /** Resource indicator → its consented scopes. */
  resources: Record<string, string[]>;
  givenAt: Date;
  expiresAt: Date;
}

const list = (text: string): string[] => {
  try {
    const value = JSON.parse(text) as unknown;
    return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
  } catch {
    return [];
  }
};
const map = (text: string): Record<string, string[]> => {
  try {
    const value = JSON.parse(text) as Record<string, unknown>;
    return Object.fromEntries(Object.entries(value ?? {}).filter(([, v]) => Array.isArray(v)).map(([k, v]) => [k, (v as unknown[]).filter((s): s is string => typeof s === 'string')]));
  } catch {
    return {};
  }
};

export class ConsentService {
  readonly #store: ConsentStore;
  readonly #audit: AuditSink;
  readonly #clock: Clock;
  readonly #ttlSeconds: number;

  constructor(deps: { store: ConsentStore; audit: AuditSink; clock: Clock; ttlSeconds: number }) {
    this.#store = deps.store;
    this.#audit = deps.audit;
    this.#clock = deps.clock;
    this.#ttlSeconds = deps.ttlSeconds;
  }

  async remembered(accountId: string, clientId: string): Promise<Consent | undefined> {
    const row = await this.#store.find(accountId, clientId, new Date(this.#clock.now()));
    return row ? { clientId, scopes: list(row.scopes), claims: list(row.claims), resources: map(row.resources), givenAt: row.updatedAt, expiresAt: row.expiresAt } : undefined;
  }

  /** Adds what was consented now to what the account consented before; the consent lasts GRANT_TTL from now. */
  async record(accountId: string, clientId: string, given: { scopes: string[]; claims: string[]; resources: Record<string, string[]> }): Promise<void> {
    const before = await this.remembered(accountId, clientId);
    const union = (a: string[] = [], b: string[] = []) => [...new Set([...a, ...b])];
    const resources = { ...before?.resources };
    for (const [indicator, scopes] of Object.entries(given.resources)) resources[indicator] = union(resources[indicator], scopes);
    await this.#store.save({
      accountId, clientId,
      scopes: JSON.stringify(union(before?.scopes, given.scopes)),
      claims: JSON.stringify(union(before?.claims, given.claims)),
      resources: JSON.stringify(resources),
      expiresAt: new Date(this.#clock.now() + this.#ttlSeconds * 1000),
    });
  }

  list(accountId: string): Promise<Consent[]> {
    return this.#store.list(accountId, new Date(this.#clock.now())).then((rows) => rows.map((row) => ({
      clientId: row.clientId, scopes: list(row.scopes), claims: list(row.claims), resources: map(row.resources), givenAt: row.updatedAt, expiresAt: row.expiresAt,
    })));
  }

  /** Forgets the consent; the caller revokes the client's grants. Returns whether there was one. */
  async revoke(accountId: string, clientId: string, actor: string): Promise<boolean> {
    const existed = await this.#store.delete(accountId, clientId);
    if (existed) await this.#audit.record({ type: 'consent.revoked', outcome: 'success', actor, subject: accountId, clientId });
    return existed;
  }
}
