// Backup codes as keyed hashes, one row each. Using one is a single conditional UPDATE (unused →
// used), so two requests presenting the same code cannot both succeed, on any number of nodes.
import type { Database } from './database.ts';

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
    const { count } = await this.#db.prisma.backupCode.updateMany({ where: { accountId, hash, usedAt: null }, data: { usedAt: at } });
    return count === 1;
  }

  countUnused(accountId: string): Promise<number> {
    return this.#db.prisma.backupCode.count({ where: { accountId, usedAt: null } });
  }

  async deleteAll(accountId: string): Promise<void> {
    await this.#db.prisma.backupCode.deleteMany({ where: { accountId } });
  }
}
