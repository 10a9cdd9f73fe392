// Backup codes as keyed hashes, one row each. Using one is a single conditional UPDATE (unused →
// used), so two requests presenting the same code cannot both succeed, on any number of nodes.
// Using and counting codes (the sign-in path) is plain SQL (Database.sql); replacing them is Prisma.
import type { Database } from './database.ts';

const markUsedSql = 'UPDATE "BackupCode" SET "usedAt" = ? WHERE "accountId" = ? AND "hash" = ? AND "usedAt" IS NULL';
const countUnusedSql = 'SELECT count(*) AS "count" FROM "BackupCode" WHERE "accountId" = ? AND "usedAt" IS NULL';

export class BackupCodeStore {
  readonly #db: Database;
  constructor(db: Database) {
    this.#db = db;
  }

  /**
   * Replaces the account's codes with `hashes` in one transaction: the old set stops working the
   * moment the new one exists. Two replacements at once are serialised (an advisory lock on
   * PostgreSQL, BEGIN IMMEDIATE on SQLite), else under READ COMMITTED neither would see the other's
   * new rows and both sets would stay valid.
   */
  async replace(accountId: string, hashes: string[]): Promise<void> {
    await this.#db.prisma.$transaction(async (tx) => {
      if (this.#db.provider === 'postgresql') {
        await tx.$queryRawUnsafe(`SELECT pg_advisory_xact_lock(hashtext($1))::text AS "locked"`, `backup-codes:${accountId}`);
      }
      await tx.backupCode.deleteMany({ where: { accountId } });
      await tx.backupCode.createMany({ data: hashes.map((hash) => ({ accountId, hash })) });
    });
  }

  /** True for the one caller that turned an unused code into a used one. */
  async markUsed(accountId: string, hash: string, at: Date = new Date()): Promise<boolean> {
    return (await this.#db.sql.run(markUsedSql, [at, accountId, hash])) === 1;
  }

  async countUnused(accountId: string): Promise<number> {
    return Number((await this.#db.sql.query<{ count: number }>(countUnusedSql, [accountId]))[0]?.count ?? 0);
  }

  async deleteAll(accountId: string): Promise<void> {
    await this.#db.prisma.backupCode.deleteMany({ where: { accountId } });
  }
}
