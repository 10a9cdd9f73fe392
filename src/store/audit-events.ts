// Appends to the AuditEvent chain. Writers serialise on a lock (an advisory lock on PostgreSQL,
// the write transaction itself on SQLite) only for throughput; correctness does not depend on it:
// prevHash is unique, so two writers chaining onto the same row cannot both commit.
import { chainHash, genesisHash, type ChainedFields, type StoredRow } from '../audit/chain.ts';
import { isUniqueViolation, type Database, type PrismaClient } from './database.ts';

const auditLockKey = 4_127_002;

type AuditReader = Pick<PrismaClient, 'auditEvent'>;

async function head(db: AuditReader): Promise<string> {
  const last = await db.auditEvent.findFirst({ orderBy: { seq: 'desc' }, select: { hash: true } });
  return last?.hash ?? genesisHash;
}

function chain(prevHash: string, rows: ChainedFields[]) {
  return rows.map((row) => {
    const hash = chainHash(prevHash, row);
    const stored = { ...row, prevHash, hash };
    prevHash = hash;
    return stored;
  });
}

export class AuditEventStore {
  readonly #db: Database;
  constructor(db: Database) {
    this.#db = db;
  }

  /** Appends rows in order, atomically; retries when another writer moved the head meanwhile. */
  async append(rows: ChainedFields[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        if (this.#db.provider === 'postgresql') {
          await this.#db.prisma.$transaction(async (tx) => {
            await tx.$executeRawUnsafe(`SELECT pg_advisory_xact_lock(${auditLockKey})`);
            await tx.auditEvent.createMany({ data: chain(await head(tx), rows) });
          });
        } else {
          // SQLite: one multi-row INSERT is atomic on its own. An interactive transaction here
          // would make the libsql adapter open a new connection without our PRAGMAs.
          await this.#db.prisma.auditEvent.createMany({ data: chain(await head(this.#db.prisma), rows) });
        }
        return;
      } catch (error) {
        if (!isUniqueViolation(error) || attempt >= 10) throw error;
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
