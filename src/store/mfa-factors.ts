// Second factors of accounts: authenticator apps (TOTP), passkeys / security keys (WebAuthn) and
// phone numbers for codes by SMS or WhatsApp. The columns that matter only to one type stay null
// for the others. Every write that guards against a replay is one conditional UPDATE, so the
// check and the write cannot be split by another node.
import { DatabaseStore, readBoolean, readDate, readOptionalDate } from './database.ts';

export interface MfaFactorRecord {
  id: string;
  accountId: string;
  /** 'totp', 'webauthn', 'sms' or 'whatsapp'. */
  type: string;
  name: string;
  /** TOTP: the shared secret, in an envelope (JSON) from encryptEnvelope. */
  secret: string | null;
  /** TOTP: the time step of the last accepted code. */
  lastUsedStep: number | null;
  /** WebAuthn: the credential id (base64url). */
  credentialId: string | null;
  publicKey: string | null;
  /** WebAuthn: the authenticator's signature counter. */
  counter: number;
  transports: string | null;
  discoverable: boolean;
  /** SMS / WhatsApp: the phone number (E.164). */
  destination: string | null;
  /** Null until the owner proved the factor works (first code, or a completed registration). */
  confirmedAt: Date | null;
  createdAt: Date;
  lastUsedAt: Date | null;
}

export interface NewMfaFactor {
  id: string;
  accountId: string;
  type: string;
  name: string;
  secret?: string | null;
  credentialId?: string | null;
  publicKey?: string | null;
  counter?: number;
  transports?: string | null;
  discoverable?: boolean;
  destination?: string | null;
  /** Set for factors proven at creation (a verified WebAuthn registration). */
  confirmedAt?: Date | null;
}

// What every sign-in reads (the account's factors) and the replay guards of a second-factor
// step are plain SQL (Database.sql); enrolment and management stay on Prisma.
export const mfaFactorColumns = '"id", "accountId", "type", "name", "secret", "lastUsedStep", "credentialId", "publicKey", "counter", "transports", "discoverable", "destination", "confirmedAt", "createdAt", "lastUsedAt"';
const byIdSql = `SELECT ${mfaFactorColumns} FROM "MfaFactor" WHERE "id" = ?`;
const byCredentialIdSql = `SELECT ${mfaFactorColumns} FROM "MfaFactor" WHERE "credentialId" = ?`;
const listSql = (type: boolean, confirmed: boolean | undefined) =>
  `SELECT ${mfaFactorColumns} FROM "MfaFactor" WHERE "accountId" = ?${type ? ' AND "type" = ?' : ''}${confirmed === undefined ? '' : confirmed ? ' AND "confirmedAt" IS NOT NULL' : ' AND "confirmedAt" IS NULL'} ORDER BY "createdAt" ASC, "id" ASC`;
const claimTotpStepSql = 'UPDATE "MfaFactor" SET "lastUsedStep" = ?, "lastUsedAt" = ? WHERE "id" = ? AND ("lastUsedStep" IS NULL OR "lastUsedStep" < ?)';
const updateCounterSql = (fromZero: boolean) => `UPDATE "MfaFactor" SET "counter" = ?, "lastUsedAt" = ? WHERE "id" = ? AND "counter" ${fromZero ? '= 0' : '< ?'}`;
const touchSql = 'UPDATE "MfaFactor" SET "lastUsedAt" = ? WHERE "id" = ?';

export type MfaFactorRow = Omit<MfaFactorRecord, 'discoverable' | 'confirmedAt' | 'createdAt' | 'lastUsedAt'> & { discoverable: unknown; confirmedAt: unknown; createdAt: unknown; lastUsedAt: unknown };

/** A row read with `mfaFactorColumns`, as Prisma returns it. */
export function toMfaFactor(row: MfaFactorRow): MfaFactorRecord {
  return {
    id: row.id,
    accountId: row.accountId,
    type: row.type,
    name: row.name,
    secret: row.secret,
    lastUsedStep: row.lastUsedStep,
    credentialId: row.credentialId,
    publicKey: row.publicKey,
    counter: row.counter,
    transports: row.transports,
    discoverable: readBoolean(row.discoverable),
    destination: row.destination,
    confirmedAt: readOptionalDate(row.confirmedAt),
    createdAt: readDate(row.createdAt),
    lastUsedAt: readOptionalDate(row.lastUsedAt),
  };
}

export class MfaFactorStore extends DatabaseStore {
  create(factor: NewMfaFactor): Promise<MfaFactorRecord> {
    return this.prisma.mfaFactor.create({ data: factor });
  }

  /** Oldest first, so a list shown to the user keeps its order. */
  async listForAccount(accountId: string, filter: { type?: string; confirmed?: boolean } = {}): Promise<MfaFactorRecord[]> {
    const args = filter.type === undefined ? [accountId] : [accountId, filter.type];
    return (await this.sql.query<MfaFactorRow>(listSql(filter.type !== undefined, filter.confirmed), args)).map(toMfaFactor);
  }

  async findById(id: string): Promise<MfaFactorRecord | null> {
    const row = (await this.sql.query<MfaFactorRow>(byIdSql, [id]))[0];
    return row ? toMfaFactor(row) : null;
  }

  async findByCredentialId(credentialId: string): Promise<MfaFactorRecord | null> {
    const row = (await this.sql.query<MfaFactorRow>(byCredentialIdSql, [credentialId]))[0];
    return row ? toMfaFactor(row) : null;
  }

  /** Marks a pending factor of the account as confirmed; false when it is not pending (or not theirs). */
  async confirm(accountId: string, id: string, at: Date = new Date()): Promise<boolean> {
    const { count } = await this.prisma.mfaFactor.updateMany({ where: { id, accountId, confirmedAt: null }, data: { confirmedAt: at } });
    return count === 1;
  }

  async rename(accountId: string, id: string, name: string): Promise<boolean> {
    const { count } = await this.prisma.mfaFactor.updateMany({ where: { id, accountId }, data: { name } });
    return count === 1;
  }

  /** Scoped to the account, so a factor id from a request can never remove another user's factor. */
  async delete(accountId: string, id: string): Promise<boolean> {
    const { count } = await this.prisma.mfaFactor.deleteMany({ where: { id, accountId } });
    return count === 1;
  }

  async deleteAllForAccount(accountId: string): Promise<number> {
    const { count } = await this.prisma.mfaFactor.deleteMany({ where: { accountId } });
    return count;
  }

  /** Removes the account's factors of a type that were never confirmed (abandoned enrolments). */
  async deletePending(accountId: string, type: string): Promise<number> {
    const { count } = await this.prisma.mfaFactor.deleteMany({ where: { accountId, type, confirmedAt: null } });
    return count;
  }

  /**
   * Records that a TOTP code of time step `step` was accepted. True only for the first caller with
   * a step above every step accepted before: a code works once across all nodes, and once a newer
   * code was used an older one that is still inside the drift window is refused too.
   */
  async claimTotpStep(id: string, step: number): Promise<boolean> {
    return (await this.sql.run(claimTotpStepSql, [step, new Date(), id, step])) === 1;
  }

  /**
   * Stores a WebAuthn signature counter if it moved forward; false means it did not, a sign the
   * credential may have been cloned. Authenticators without a counter always report 0 (WebAuthn
   * §6.1.1): a 0 over a stored 0 is accepted, a 0 over a non-zero counter is not.
   */
  async updateCounter(id: string, newCounter: number): Promise<boolean> {
    const args = newCounter === 0 ? [newCounter, new Date(), id] : [newCounter, new Date(), id, newCounter];
    return (await this.sql.run(updateCounterSql(newCounter === 0), args)) === 1;
  }

  /** For factors without a replay guard of their own (SMS, WhatsApp). */
  async touch(id: string, at: Date = new Date()): Promise<void> {
    await this.sql.run(touchSql, [at, id]);
  }
}
