// oidc-provider models in the database (table OidcRecord): always the durable ones, and the
// short-lived ones too when no Redis is configured. Expired rows read as missing and are swept.
import { databaseOf, readOptionalDate, type Database, type PrismaClient, type SqlRunner } from './database.ts';
import { epochSeconds, impossibleId, type OidcAdapter, type OidcPayload } from './oidc-adapter-types.ts';

// Plain SQL (Database.sql), not Prisma's model API: oidc-provider reads and writes these rows on
// every protocol request (userinfo and introspection alone read four). The rows are those
// Prisma writes and reads (other code reads them through Prisma).
const columns = '"payload", "expiresAt", "consumedAt"';
const upsertSql = `INSERT INTO "OidcRecord" ("model", "id", "payload", "grantId", "uid", "userCode", "expiresAt") VALUES (?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT ("model", "id") DO UPDATE SET "payload" = excluded."payload", "grantId" = excluded."grantId", "uid" = excluded."uid", "userCode" = excluded."userCode", "expiresAt" = excluded."expiresAt"`;
const findSql = `SELECT ${columns} FROM "OidcRecord" WHERE "model" = ? AND "id" = ?`;
const findByUidSql = `SELECT ${columns} FROM "OidcRecord" WHERE "model" = ? AND "uid" = ? LIMIT 1`;
const findByUserCodeSql = `SELECT ${columns} FROM "OidcRecord" WHERE "model" = ? AND "userCode" = ? LIMIT 1`;
const consumeSql = 'UPDATE "OidcRecord" SET "consumedAt" = ? WHERE "model" = ? AND "id" = ? AND "consumedAt" IS NULL';
const destroySql = 'DELETE FROM "OidcRecord" WHERE "model" = ? AND "id" = ?';
const revokeSql = 'DELETE FROM "OidcRecord" WHERE "model" = ? AND "grantId" = ?';

interface Row {
  payload: string;
  expiresAt: unknown;
  consumedAt: unknown;
}

export class DatabaseOidcAdapter implements OidcAdapter {
  readonly #sql: SqlRunner;
  readonly #model: string;

  /** `db`: the Database, or its Prisma client (the adapter then finds the Database of it). */
  constructor(db: Database | PrismaClient, model: string) {
    this.#sql = databaseOf(db).sql;
    this.#model = model;
  }

  async upsert(id: string, payload: OidcPayload, expiresIn: number): Promise<void> {
    const expiresAt = expiresIn ? new Date(Date.now() + expiresIn * 1000) : null;
    await this.#sql.run(upsertSql, [this.#model, id, JSON.stringify(payload), payload.grantId ?? null, payload.uid ?? null, payload.userCode ?? null, expiresAt]);
  }

  async find(id: string): Promise<OidcPayload | undefined> {
    if (impossibleId(id)) return undefined;
    return this.#read(await this.#sql.query<Row>(findSql, [this.#model, id]));
  }

  async findByUid(uid: string): Promise<OidcPayload | undefined> {
    if (impossibleId(uid)) return undefined;
    return this.#read(await this.#sql.query<Row>(findByUidSql, [this.#model, uid]));
  }

  async findByUserCode(userCode: string): Promise<OidcPayload | undefined> {
    if (impossibleId(userCode)) return undefined;
    return this.#read(await this.#sql.query<Row>(findByUserCodeSql, [this.#model, userCode]));
  }

  async consume(id: string): Promise<boolean> {
    if (impossibleId(id)) return false;
    // One conditional UPDATE: only the request that finds it unconsumed changes a row.
    return (await this.#sql.run(consumeSql, [new Date(), this.#model, id])) === 1;
  }

  async destroy(id: string): Promise<void> {
    if (impossibleId(id)) return;
    await this.#sql.run(destroySql, [this.#model, id]);
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    if (impossibleId(grantId)) return;
    await this.#sql.run(revokeSql, [this.#model, grantId]);
  }

  #read(rows: Row[]): OidcPayload | undefined {
    const row = rows[0];
    if (!row) return undefined;
    const expiresAt = readOptionalDate(row.expiresAt);
    if (expiresAt && expiresAt.getTime() <= Date.now()) return undefined;
    const payload = JSON.parse(row.payload) as OidcPayload;
    const consumedAt = readOptionalDate(row.consumedAt);
    return consumedAt ? { ...payload, consumed: epochSeconds(consumedAt) } : payload;
  }
}

/**
 * Every grant of an account (grants are always in the database). Offline grants outlive the
 * session that made them, so ending "all sessions" must find them here, not in the session index.
 */
export async function grantIdsOfAccount(prisma: PrismaClient, accountId: string, clientId?: string): Promise<string[]> {
  if (!/^[A-Za-z0-9-]{1,64}$/.test(accountId)) return [];
  const rows = await prisma.oidcRecord.findMany({ where: { model: 'Grant', payload: { contains: `"accountId":"${accountId}"` } }, select: { id: true, payload: true } });
  // The text match narrows; the parsed payload decides.
  return rows.filter((row) => {
    const grant = JSON.parse(row.payload) as { accountId?: string; clientId?: string };
    return grant.accountId === accountId && (clientId === undefined || grant.clientId === clientId);
  }).map((row) => row.id);
}

/** Deletes expired rows; safe to run on every node. Returns how many went. */
export async function sweepExpiredRecords(prisma: PrismaClient, now = new Date()): Promise<number> {
  // Mailed-link rows stay a day past their expiry: the hourly mail limit counts them.
  const dayAgo = new Date(now.getTime() - 86_400_000);
  const results = await Promise.all([
    prisma.oidcRecord.deleteMany({ where: { expiresAt: { lte: now } } }),
    prisma.expiringValue.deleteMany({ where: { expiresAt: { lte: now } } }),
    prisma.attemptCounter.deleteMany({ where: { expiresAt: { lte: now.getTime() / 1000 } } }),
    prisma.rateLimiterFlexible.deleteMany({ where: { expire: { lte: now } } }),
    prisma.accountToken.deleteMany({ where: { expiresAt: { lte: dayAgo } } }),
    prisma.trustedDevice.deleteMany({ where: { expiresAt: { lte: now } } }),
  ]);
  return results.reduce((sum, r) => sum + r.count, 0);
}
