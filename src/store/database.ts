// The database connection: one Prisma client over a driver adapter, SQLite (libsql) for the
// embedded default or PostgreSQL (pg) in production. Prisma generates one client per provider;
// both expose the same model API, so the rest of the code sees a single PrismaClient type.
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { createClient, type Client as LibsqlClient, type Config as LibsqlConfig, type InValue, type Transaction } from '@libsql/client';
import { PrismaLibSQL } from '@prisma/adapter-libsql';
import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from './generated/postgresql/client.ts';
import { PrismaClient as SqlitePrismaClient } from './generated/sqlite/client.ts';

export type { PrismaClient };
export type DatabaseProvider = 'sqlite' | 'postgresql';

export interface Database {
  readonly provider: DatabaseProvider;
  readonly prisma: PrismaClient;
  /** The URL the raw drivers use (SQLite paths made absolute). */
  readonly url: string;
  /** SQLite only: the shared connection, for the few statements that bypass Prisma. */
  readonly sqlite?: SqliteConnection;
  close(): Promise<void>;
}

// WAL lets readers proceed during a write; busy_timeout makes a writer from another process
// (the CLI beside a running server) wait instead of failing at once.
const sqlitePragmas = ['PRAGMA journal_mode = WAL', 'PRAGMA busy_timeout = 5000', 'PRAGMA synchronous = NORMAL'];

/**
 * The one libsql connection of an SQLite database, shared by Prisma and our direct statements.
 *
 * Prisma's transactions run on it too. libsql's own `transaction()` hands its connection to the
 * transaction and opens a fresh one afterwards: a new file handle (freed only by the garbage
 * collector) and lost per-connection PRAGMAs on every write. Sharing is safe: the Prisma adapter
 * holds its lock from BEGIN to COMMIT, and direct statements wait for an open transaction to end
 * (libsql runs each statement synchronously, so nothing interleaves inside one). BEGIN IMMEDIATE
 * takes the write lock up front, so a writer in another process makes us wait (busy_timeout)
 * instead of failing on a lock upgrade.
 */
export class SqliteConnection {
  #client: LibsqlClient | undefined;
  #transactionEnded: Promise<void> | undefined;

  attach(client: LibsqlClient): LibsqlClient {
    this.#client = client;
    client.transaction = (async () => {
      while (this.#transactionEnded) await this.#transactionEnded;
      await client.execute('BEGIN IMMEDIATE');
      let ended!: () => void;
      this.#transactionEnded = new Promise((resolve) => (ended = resolve));
      let closed = false;
      const end = async (sql: string) => {
        if (closed) return;
        closed = true;
        try {
          await client.execute(sql);
        } finally {
          this.#transactionEnded = undefined;
          ended();
        }
      };
      const tx: Transaction = {
        execute: (stmt) => client.execute(stmt),
        batch: async (stmts) => {
          const results = [];
          for (const stmt of stmts) results.push(await client.execute(stmt));
          return results;
        },
        executeMultiple: (sql) => client.executeMultiple(sql),
        commit: () => end('COMMIT'),
        rollback: () => end('ROLLBACK'),
        close: () => void end('ROLLBACK').catch(() => undefined),
        get closed() {
          return closed;
        },
      };
      return tx;
    }) as LibsqlClient['transaction'];
    return client;
  }

  /**
   * Runs one statement outside Prisma, for the hottest write (the audit log), where Prisma's
   * per-query work costs more than SQLite's. Waits for any open transaction to end first.
   */
  async execute(sql: string, args: InValue[]): Promise<void> {
    while (this.#transactionEnded) await this.#transactionEnded;
    if (!this.#client) throw new Error('the SQLite connection is not open yet');
    await this.#client.execute({ sql, args });
  }
}

class SqliteAdapterFactory extends PrismaLibSQL {
  readonly #connection: SqliteConnection;
  constructor(config: LibsqlConfig, connection: SqliteConnection) {
    super(config);
    this.#connection = connection;
  }
  override createClient(config: LibsqlConfig): LibsqlClient {
    return this.#connection.attach(createClient(config));
  }
}

export function databaseProvider(url: string): DatabaseProvider {
  return url.startsWith('file:') ? 'sqlite' : 'postgresql';
}

/** Resolves `file:./x.db` against the working directory and creates its folder. */
export function sqliteFileUrl(url: string): string {
  const path = resolve(url.slice('file:'.length));
  mkdirSync(dirname(path), { recursive: true });
  return `file:${path}`;
}

export async function openDatabase(url: string, options: { poolSize?: number } = {}): Promise<Database> {
  if (databaseProvider(url) === 'sqlite') {
    const fileUrl = sqliteFileUrl(url);
    const sqlite = new SqliteConnection();
    const client = new SqlitePrismaClient({ adapter: new SqliteAdapterFactory({ url: fileUrl }, sqlite) });
    const prisma = client as unknown as PrismaClient;
    for (const pragma of sqlitePragmas) await prisma.$queryRawUnsafe(pragma);
    return { provider: 'sqlite', prisma, url: fileUrl, sqlite, close: () => prisma.$disconnect() };
  }
  const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: url, max: options.poolSize ?? 10 }) });
  return { provider: 'postgresql', prisma, url, close: () => prisma.$disconnect() };
}

/** A unique-constraint violation, from a Prisma model query (P2002) or a raw one (P2010 with the driver's code). */
export function isUniqueViolation(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const { code, meta } = error as { code?: string; meta?: { driverAdapterError?: { cause?: { kind?: string } } } };
  if (code === 'P2002') return true;
  return code === 'P2010' && meta?.driverAdapterError?.cause?.kind === 'UniqueConstraintViolation';
}
