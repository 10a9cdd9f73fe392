// Appends to the AuditEvent chain. prevHash is unique, so two writers chaining onto the same row
// cannot both commit: the loser re-reads the head and chains again.
import { chainHash, genesisHash, type ChainedFields, type StoredRow } from './audit-rows.ts';
import { isUniqueViolation, type Database, type PrismaClient, type SqlValue } from './database.ts';

type AuditReader = Pick<PrismaClient, 'auditEvent'>;

export interface AuditFilter {
  type?: string | undefined;
  subject?: string | undefined;
  since?: Date | undefined;
  /** Older than this sequence number (paging back). */
  beforeSeq?: number | undefined;
  limit: number;
}

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
  // The last hash this process wrote. If another writer (node, CLI) appended meanwhile, the unique
  // prevHash refuses our insert; we then re-read the head from the database and chain again.
  #head: string | undefined;

  constructor(db: Database) {
    this.#db = db;
  }

  /**
   * Appends rows in order with one multi-row INSERT, atomic on its own. No lock is needed for
   * correctness: a writer can only commit rows chained to the current last row (unique prevHash),
   * so the chain never forks and seq order is chain order. Written as plain SQL (Database.sql)
   * because this runs for every token the server issues, and Prisma's per-query work costs more
   * than the insert.
   */
  async append(rows: ChainedFields[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        const data = chain(this.#head ?? (await head(this.#db.prisma)), rows);
        await this.#insert(data);
        this.#head = data[data.length - 1]!.hash;
        return;
      } catch (error) {
        this.#head = undefined;
        if (!isUniqueViolation(error) || attempt >= 20) throw error;
      }
    }
  }

  async #insert(data: (ChainedFields & { prevHash: string; hash: string })[]): Promise<void> {
    const values: SqlValue[] = [];
    // `time` is a Date: the runner writes it as Prisma does, so Prisma reads these rows back.
    for (const row of data) for (const column of columns) values.push(row[column] ?? null);
    const placeholders = data.map(() => `(${columns.map(() => '?').join(', ')})`).join(', ');
    await this.#db.sql.run(`INSERT INTO "AuditEvent" (${columns.map((c) => `"${c}"`).join(', ')}) VALUES ${placeholders}`, values);
  }

  async page(afterSeq: number, limit: number): Promise<StoredRow[]> {
    return this.#db.prisma.auditEvent.findMany({ where: { seq: { gt: afterSeq } }, orderBy: { seq: 'asc' }, take: limit });
  }

  /** The newest events matching the filter (types by exact name or by prefix ending in '.'), newest first. */
  async search(filter: AuditFilter): Promise<StoredRow[]> {
    const type = filter.type === undefined ? {} : filter.type.endsWith('.') ? { type: { startsWith: filter.type } } : { type: filter.type };
    return this.#db.prisma.auditEvent.findMany({
      where: {
        ...type,
        ...(filter.subject ? { subject: filter.subject } : {}),
        ...(filter.since ? { time: { gte: filter.since } } : {}),
        ...(filter.beforeSeq ? { seq: { lt: filter.beforeSeq } } : {}),
      },
      orderBy: { seq: 'desc' },
      take: filter.limit,
    });
  }

}
