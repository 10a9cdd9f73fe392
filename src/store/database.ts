// The database connection: one Prisma client over a driver adapter, SQLite (libsql) for the
// embedded default or PostgreSQL (pg) in production. Prisma generates one client per provider;
// both expose the same model API, so the rest of the code sees a single PrismaClient type.
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { createClient, type Client as LibsqlClient, type Config as LibsqlConfig } from '@libsql/client';
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
  close(): Promise<void>;
}

// WAL lets readers proceed during a write; busy_timeout makes a writer from another process
// (the CLI beside a running server) wait instead of failing at once.
// journal_mode is stored in the file; the other two hold per connection.
const sqlitePragmas = ['PRAGMA journal_mode = WAL', 'PRAGMA busy_timeout = 5000', 'PRAGMA synchronous = NORMAL'];
const perConnectionPragmas = sqlitePragmas.slice(1);

/**
 * libsql hands its connection to each transaction and opens a fresh one for what follows, which
 * would lose per-connection PRAGMAs; this client re-applies them to every connection it opens.
 */
class SqliteAdapterFactory extends PrismaLibSQL {
  override createClient(config: LibsqlConfig): LibsqlClient {
    const client = createClient(config);
    const transaction = client.transaction.bind(client);
    client.transaction = (async (...args: Parameters<LibsqlClient['transaction']>) => {
      const tx = await transaction(...args);
      for (const pragma of perConnectionPragmas) await client.execute(pragma);
      return tx;
    }) as LibsqlClient['transaction'];
    return client;
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
    const client = new SqlitePrismaClient({ adapter: new SqliteAdapterFactory({ url: fileUrl }) });
    const prisma = client as unknown as PrismaClient;
    for (const pragma of sqlitePragmas) await prisma.$queryRawUnsafe(pragma);
    return { provider: 'sqlite', prisma, url: fileUrl, close: () => prisma.$disconnect() };
  }
  const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: url, max: options.poolSize ?? 10 }) });
  return { provider: 'postgresql', prisma, url, close: () => prisma.$disconnect() };
}

/** Prisma's error code for a unique-constraint violation, whatever the adapter. */
export function isUniqueViolation(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: string }).code === 'P2002';
}
