// Applies the SQL migrations kept per provider under prisma/migrations/<provider>/, in name
// order, each in its own transaction, recording name and checksum in _idp_migrations. A migration
// whose file changed after it was applied stops the run: history is never rewritten silently.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createClient } from '@libsql/client';
import pg from 'pg';
import { IdpError } from '../errors.ts';
import { databaseProvider, sqliteFileUrl, type DatabaseProvider } from './database.ts';

export interface Migration {
  name: string;
  sql: string;
  checksum: string;
}

const migrationsRoot = fileURLToPath(new URL('../../prisma/migrations/', import.meta.url));
const ledger = 'CREATE TABLE IF NOT EXISTS "_idp_migrations" ("name" TEXT PRIMARY KEY, "checksum" TEXT NOT NULL, "appliedAt" TEXT NOT NULL)';
// Any constant works; it keeps two nodes that start together from migrating at the same time.
const pgMigrationLock = 4_127_001;

export function listMigrations(provider: DatabaseProvider): Migration[] {
  const dir = `${migrationsRoot}${provider}/`;
  return readdirSync(dir)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((name) => {
      const sql = readFileSync(dir + name, 'utf8');
      return { name, sql, checksum: createHash('sha256').update(sql).digest('hex') };
    });
}

function pending(all: Migration[], applied: Map<string, string>): Migration[] {
  for (const m of all) {
    const checksum = applied.get(m.name);
    if (checksum !== undefined && checksum !== m.checksum) {
      throw new IdpError('ERR_MIGRATION_CHANGED', `migration ${m.name} was changed after it was applied; restore it and add a new migration instead`, { status: 500 });
    }
  }
  return all.filter((m) => !applied.has(m.name));
}

async function migrateSqlite(url: string, migrations: Migration[]): Promise<string[]> {
  const client = createClient({ url: sqliteFileUrl(url) });
  try {
    await client.execute('PRAGMA busy_timeout = 5000');
    await client.execute(ledger);
    const rows = (await client.execute('SELECT "name", "checksum" FROM "_idp_migrations"')).rows;
    const todo = pending(migrations, new Map(rows.map((r) => [String(r.name), String(r.checksum)])));
    for (const m of todo) {
      const tx = await client.transaction('write');
      try {
        await tx.executeMultiple(m.sql);
        await tx.execute({ sql: 'INSERT INTO "_idp_migrations" ("name", "checksum", "appliedAt") VALUES (?, ?, ?)', args: [m.name, m.checksum, new Date().toISOString()] });
        await tx.commit();
      } catch (error) {
        await tx.rollback().catch(() => undefined);
        throw new IdpError('ERR_MIGRATION_FAILED', `migration ${m.name} failed: ${(error as Error).message}`, { status: 500, cause: error });
      } finally {
        tx.close();
      }
    }
    return todo.map((m) => m.name);
  } finally {
    client.close();
  }
}

async function migratePostgres(url: string, migrations: Migration[]): Promise<string[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [pgMigrationLock]);
    await client.query(ledger);
    const { rows } = await client.query<{ name: string; checksum: string }>('SELECT "name", "checksum" FROM "_idp_migrations"');
    const todo = pending(migrations, new Map(rows.map((r) => [r.name, r.checksum])));
    for (const m of todo) {
      try {
        await client.query('BEGIN');
        await client.query(m.sql);
        await client.query('INSERT INTO "_idp_migrations" ("name", "checksum", "appliedAt") VALUES ($1, $2, $3)', [m.name, m.checksum, new Date().toISOString()]);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw new IdpError('ERR_MIGRATION_FAILED', `migration ${m.name} failed: ${(error as Error).message}`, { status: 500, cause: error });
      }
    }
    return todo.map((m) => m.name);
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [pgMigrationLock]).catch(() => undefined);
    await client.end();
  }
}

/** Names of migrations not yet applied (all of them on an empty database). */
export async function pendingMigrations(url: string): Promise<string[]> {
  const provider = databaseProvider(url);
  const all = listMigrations(provider);
  let rows: { name: string; checksum: string }[] = [];
  if (provider === 'sqlite') {
    const client = createClient({ url: sqliteFileUrl(url) });
    try {
      // Another process may be opening (recovering) the same WAL database this very moment.
      await client.execute('PRAGMA busy_timeout = 5000');
      const exists = await client.execute(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_idp_migrations'`);
      if (exists.rows.length) rows = (await client.execute('SELECT "name", "checksum" FROM "_idp_migrations"')).rows.map((r) => ({ name: String(r.name), checksum: String(r.checksum) }));
    } finally {
      client.close();
    }
  } else {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const exists = await client.query(`SELECT to_regclass('"_idp_migrations"') AS t`);
      if (exists.rows[0]?.t) rows = (await client.query<{ name: string; checksum: string }>('SELECT "name", "checksum" FROM "_idp_migrations"')).rows;
    } finally {
      await client.end();
    }
  }
  return pending(all, new Map(rows.map((r) => [r.name, r.checksum]))).map((m) => m.name);
}

/** Applies what is pending; returns the names applied now (empty when up to date). */
export async function migrate(url: string): Promise<string[]> {
  const provider = databaseProvider(url);
  const migrations = listMigrations(provider);
  return provider === 'sqlite' ? migrateSqlite(url, migrations) : migratePostgres(url, migrations);
}
