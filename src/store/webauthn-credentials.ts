// WebAuthn credentials (passkeys and security keys): the MfaFactor rows of type 'webauthn'. Every
// query is restricted to that type, so a factor id of another kind can never be renamed, deleted
// or used here.
import { DatabaseStore } from './database.ts';
import { mfaFactorColumns, toMfaFactor, type MfaFactorRow } from './mfa-factors.ts';

export interface WebAuthnCredentialRecord {
  id: string;
  accountId: string;
  name: string;
  /** base64url, as the browser reports it in `id` / `rawId`. */
  credentialId: string;
  /** base64url of the COSE public key. */
  publicKey: string;
  counter: number;
  transports: string[];
  discoverable: boolean;
  confirmedAt: Date | null;
  createdAt: Date;
  lastUsedAt: Date | null;
}

export type NewWebAuthnCredential = Omit<WebAuthnCredentialRecord, 'createdAt' | 'lastUsedAt'>;

const type = 'webauthn';

interface Row {
  id: string;
  accountId: string;
  name: string;
  credentialId: string | null;
  publicKey: string | null;
  counter: number;
  transports: string | null;
  discoverable: boolean;
  confirmedAt: Date | null;
  createdAt: Date;
  lastUsedAt: Date | null;
}

function parseTransports(text: string | null): string[] {
  if (!text) return [];
  try {
    const value: unknown = JSON.parse(text);
    return Array.isArray(value) ? value.filter((t): t is string => typeof t === 'string') : [];
  } catch {
    return [];
  }
}

function toRecord(row: Row): WebAuthnCredentialRecord {
  return {
    id: row.id,
    accountId: row.accountId,
    name: row.name,
    credentialId: row.credentialId ?? '',
    publicKey: row.publicKey ?? '',
    counter: row.counter,
    transports: parseTransports(row.transports),
    discoverable: row.discoverable,
    confirmedAt: row.confirmedAt,
    createdAt: row.createdAt,
    lastUsedAt: row.lastUsedAt,
  };
}

// The reads and the counter updates of a passkey sign-in in plain SQL (Database.sql).
const listSql = `SELECT ${mfaFactorColumns} FROM "MfaFactor" WHERE "accountId" = ? AND "type" = ? ORDER BY "createdAt" ASC, "id" ASC`;
const byCredentialIdSql = `SELECT ${mfaFactorColumns} FROM "MfaFactor" WHERE "credentialId" = ?`;
const updateCounterSql = (fromZero: boolean) => `UPDATE "MfaFactor" SET "counter" = ?, "lastUsedAt" = ? WHERE "id" = ? AND "type" = ? AND "counter" ${fromZero ? '= 0' : '< ?'}`;
const markUsedSql = 'UPDATE "MfaFactor" SET "lastUsedAt" = ? WHERE "id" = ? AND "type" = ?';

export class WebAuthnCredentialStore extends DatabaseStore {
  async create(credential: NewWebAuthnCredential): Promise<WebAuthnCredentialRecord> {
    const { transports, ...rest } = credential;
    const row = await this.prisma.mfaFactor.create({ data: { ...rest, type, transports: JSON.stringify(transports) } });
    return toRecord(row);
  }

  async listForAccount(accountId: string): Promise<WebAuthnCredentialRecord[]> {
    const rows = await this.sql.query<MfaFactorRow>(listSql, [accountId, type]);
    return rows.map((row) => toRecord(toMfaFactor(row)));
  }

  async findByCredentialId(credentialId: string): Promise<WebAuthnCredentialRecord | null> {
    const row = (await this.sql.query<MfaFactorRow>(byCredentialIdSql, [credentialId]))[0];
    return row && row.type === type ? toRecord(toMfaFactor(row)) : null;
  }

  /** False when the account has no such credential. */
  async rename(accountId: string, id: string, name: string): Promise<boolean> {
    const { count } = await this.prisma.mfaFactor.updateMany({ where: { id, accountId, type }, data: { name } });
    return count > 0;
  }

  /** False when the account has no such credential. */
  async delete(accountId: string, id: string): Promise<boolean> {
    const { count } = await this.prisma.mfaFactor.deleteMany({ where: { id, accountId, type } });
    return count > 0;
  }

  /**
   * Stores the counter of a successful assertion, only if it still moves forward (or stays at 0
   * for authenticators without a counter): a compare-and-set, so two concurrent assertions that
   * carry the same counter (a cloned authenticator) cannot both pass. False when it did not apply.
   */
  async updateCounter(id: string, counter: number): Promise<boolean> {
    const args = counter === 0 ? [counter, new Date(), id, type] : [counter, new Date(), id, type, counter];
    return (await this.sql.run(updateCounterSql(counter === 0), args)) > 0;
  }

  /** Records a use without touching the counter (an accepted counter regression keeps the higher value). */
  async markUsed(id: string): Promise<void> {
    await this.sql.run(markUsedSql, [new Date(), id, type]);
  }
}
