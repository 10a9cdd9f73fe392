// Real databases for tests: a fresh SQLite file, or a fresh PostgreSQL database on the machine's
// server (TEST_DATABASE_URL, default the local one), and Redis with a key prefix of its own.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { migrate } from '../../src/store/migrate.ts';

export const postgresAdminUrl = process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';
export const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export interface TestDatabase {
  url: string;
  kind: 'sqlite' | 'postgresql';
  drop(): Promise<void>;
}

export function tempDir(prefix = 'idp-test-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export async function freshSqlite(): Promise<TestDatabase> {
  const database = emptySqlite();
  await migrate(database.url);
  return database;
}

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: postgresAdminUrl });
  try {
    await client.connect();
  } catch (error) {
    throw new Error(`PostgreSQL is not reachable at ${postgresAdminUrl} (${(error as Error).message}); start it or set TEST_DATABASE_URL (Debian: apt-get install postgresql)`);
  }
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** A new PostgreSQL database on the test server, not migrated. */
export async function emptyPostgres(): Promise<TestDatabase & { name: string }> {
  const name = `idp_test_${randomBytes(6).toString('hex')}`;
  await adminQuery(`CREATE DATABASE ${name}`);
  const url = new URL(postgresAdminUrl);
  url.pathname = `/${name}`;
  return { url: url.href, name, kind: 'postgresql', drop: () => adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

/** A SQLite file path in a new temp dir, not created or migrated. */
export function emptySqlite(): TestDatabase {
  const dir = tempDir();
  return { url: `file:${join(dir.path, 'idp.db')}`, kind: 'sqlite', drop: async () => dir.remove() };
}

export async function emptyDatabase(kind: 'sqlite' | 'postgresql'): Promise<TestDatabase> {
  return kind === 'sqlite' ? emptySqlite() : emptyPostgres();
}

export async function freshPostgres(): Promise<TestDatabase> {
  const database = await emptyPostgres();
  await migrate(database.url);
  return database;
}

export async function freshDatabase(kind: 'sqlite' | 'postgresql'): Promise<TestDatabase> {
  return kind === 'sqlite' ? freshSqlite() : freshPostgres();
}

/** A key prefix of its own on the shared Redis; `clear` removes every key under it. */
export async function redisNamespace(): Promise<{ url: string; prefix: string; clear(): Promise<void> }> {
  const prefix = `idp-test-${randomBytes(6).toString('hex')}:`;
  const probe = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await probe.connect();
    await probe.ping();
  } catch (error) {
    probe.disconnect();
    throw new Error(`Redis is not reachable at ${redisUrl} (${(error as Error).message}); start it or set TEST_REDIS_URL (Debian: apt-get install redis-server)`);
  }
  return {
    url: redisUrl,
    prefix,
    async clear() {
      let cursor = '0';
      do {
        const [next, keys] = await probe.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
        cursor = next;
        if (keys.length) await probe.del(...keys);
      } while (cursor !== '0');
      probe.disconnect();
    },
  };
}
