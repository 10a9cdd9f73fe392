// Appends to the AuditEvent chain. Writers serialise on a lock (an advisory lock on PostgreSQL,
// the write transaction itself on SQLite) only for throughput; correctness does not depend on it:
// prevHash is unique, so two writers chaining onto the same row cannot both commit.
import { chainHash, genesisHash, type ChainedFields, type StoredRow } from '../audit/chain.ts';
import { isUniqueViolation, type Database } from './database.ts';

const auditLockKey = 4_127_002;

export class AuditEventStore {
  readonly #db: Database;
  constructor(db: Database) {
    this.#db = db;
  }

  /** Appends rows in order, in one transaction; retries when another writer moved the head. */
  async append(rows: ChainedFields[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#db.prisma.$transaction(async (tx) => {
          if (this.#db.provider === 'postgresql') await tx.$executeRawUnsafe(`SELECT pg_advisory_xact_lock(${auditLockKey})`);
          const head = await tx.auditEvent.findFirst({ orderBy: { seq: 'desc' }, select: { hash: true } });
          let prevHash = head?.hash ?? genesisHash;
          const data = rows.map((row) => {
            const hash = chainHash(prevHash, row);
            const stored = { ...row, prevHash, hash };
            prevHash = hash;
            return stored;
          });
          await tx.auditEvent.createMany({ data });
        });
        return;
      } catch (error) {
        if (!isUniqueViolation(error) || attempt >= 5) throw error;
      }
    }
  }

  async page(afterSeq: number, limit: number): Promise<StoredRow[]> {
    return this.#db.prisma.auditEvent.findMany({ where: { seq: { gt: afterSeq } }, orderBy: { seq: 'asc' }, take: limit });
  }

  async recent(limit: number, type?: string): Promise<StoredRow[]> {
    return this.#db.prisma.auditEvent.findMany({ where: type ? { type } : {}, orderBy: { seq: 'desc' }, take: limit });
  }
}
