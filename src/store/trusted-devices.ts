// "Remember this device": the SHA-256 of a random token kept in a cookie, bound to one account.
import { databaseOf, type Database, type PrismaClient, type SqlRunner } from './database.ts';

// Checked on every sign-in that would ask for a second factor: plain SQL (Database.sql).
const isTrustedSql = 'SELECT 1 AS "trusted" FROM "TrustedDevice" WHERE "hash" = ? AND "accountId" = ? AND "expiresAt" > ? LIMIT 1';

export class TrustedDeviceStore {
  readonly #prisma: PrismaClient;
  readonly #sql: SqlRunner;
  /** `db`: the Database, or its Prisma client. */
  constructor(db: Database | PrismaClient) {
    const database = databaseOf(db);
    this.#prisma = database.prisma;
    this.#sql = database.sql;
  }

  async add(hash: string, accountId: string, expiresAt: Date, userAgent: string | null): Promise<void> {
    await this.#prisma.trustedDevice.create({ data: { hash, accountId, expiresAt, userAgent } });
  }

  async isTrusted(hash: string, accountId: string): Promise<boolean> {
    return (await this.#sql.query(isTrustedSql, [hash, accountId, new Date()])).length > 0;
  }

  async forgetAll(accountId: string): Promise<number> {
    return (await this.#prisma.trustedDevice.deleteMany({ where: { accountId } })).count;
  }
}
