// Appends to the AuditEvent chain. Writers serialise on a lock (an advisory lock on PostgreSQL,
// the write transaction itself on SQLite) only for throughput; correctness does not depend on it:
// prevHash is unique, so two writers chaining onto the same row cannot both commit.
import { chainHash, genesisHash, type ChainedFields, type StoredRow } from '../audit/chain.ts';
import type { InValue } from '@libsql/client';
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

const columns = ['time', 'requestId', 'actor', 'subject', 'clientId', 'ip', 'userAgent', 'type', 'outcome', 'details', 'prevHash', 'hash'] as const;

export class AuditEventStore {
  readonly #db: Database;
  // SQLite only: the last hash this process wrote. If another process appended meanwhile, the
  // unique prevHash refuses our insert and we re-read the head from the database.
  #sqliteHead: string | undefined;

  constructor(db: Database) {
    this.#db = db;
  }

  /** Appends rows in order, atomically; retries when another writer moved the head meanwhile. */
  async append(rows: ChainedFields[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        if (this.#db.provider === 'postgresql') await this.#appendPostgres(rows);
        else await this.#appendSqlite(rows);
        return;
      } catch (error) {
        this.#sqliteHead = undefined;
        if (!isUniqueViolation(error) || attempt >= 10) throw error;
      }
    }
  }

  async #appendPostgres(rows: ChainedFields[]): Promise<void> {
    await this.#db.prisma.$transaction(async (tx) => {
      await tx.$executeRawUnsafe(`SELECT pg_advisory_xact_lock(${auditLockKey})`);
      await tx.auditEvent.createMany({ data: chain(await head(tx), rows) });
    });
  }

  /**
   * One multi-row INSERT, atomic on its own, sent straight to the shared connection: this runs for
   * every token the embedded server issues, and Prisma's per-query work costs more than the insert.
   */
  async #appendSqlite(rows: ChainedFields[]): Promise<void> {
    const data = chain(this.#sqliteHead ?? (await head(this.#db.prisma)), rows);
    const values: unknown[] = [];
    for (const row of data) {
      // The text form Prisma itself writes for DateTime on SQLite, so Prisma reads these rows back.
      values.push(row.time.toISOString().replace('Z', '+00:00'));
      for (const column of columns.slice(1)) values.push(row[column]);
    }
    const placeholders = data.map(() => `(${columns.map(() => '?').join(', ')})`).join(', ');
    const sql = `INSERT INTO "AuditEvent" (${columns.map((c) => `"${c}"`).join(', ')}) VALUES ${placeholders}`;
    try {
      await this.#db.sqlite!.execute(sql, values as InValue[]);
    } catch (error) {
      // Same contract as Prisma's errors, so append() retries a lost race on prevHash.
      if (/SQLITE_CONSTRAINT/.test(String((error as { code?: string }).code ?? (error as Error).message))) throw Object.assign(new Error((error as Error).message), { code: 'P2002' });
      throw error;
    }
    this.#sqliteHead = data[data.length - 1]!.hash;
  }

  async page(afterSeq: number, limit: number): Promise<StoredRow[]> {
    return this.#db.prisma.auditEvent.findMany({ where: { seq: { gt: afterSeq } }, orderBy: { seq: 'asc' }, take: limit });
  }

  async recent(limit: number, type?: string): Promise<StoredRow[]> {
    return this.#db.prisma.auditEvent.findMany({ where: type ? { type } : {}, orderBy: { seq: 'desc' }, take: limit });
  }
}
