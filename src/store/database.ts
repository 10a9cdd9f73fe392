// The database connection: one Prisma client over a driver adapter, SQLite (libsql) for the
// embedded default or PostgreSQL (pg) in production. Prisma generates one client per provider;
// both expose the same model API, so the rest of the code sees a single PrismaClient type.
//
// Beside Prisma, `Database.sql` runs plain SQL on the same connections (the one libsql connection,
// the one pg pool) for the hot paths, where Prisma's per-query work (its query compiler and
// runtime, about 0.5 ms of CPU per query) costs twenty times the statement itself.
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import type { Client as LibsqlClient, Config as LibsqlConfig, InValue, Transaction } from '@libsql/client';
import { Sqlite3Client } from '@libsql/client/sqlite3';
import { PrismaLibSQL } from '@prisma/adapter-libsql';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
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
  /** Plain SQL beside Prisma, on the same connection(s); see SqlRunner. */
  readonly sql: SqlRunner;
  close(): Promise<void>;
}

/**
 * A value bound to a placeholder. Dates are written in the form Prisma writes and reads back
 * (SQLite: ISO text with `+00:00`; PostgreSQL: UTC in `timestamp(3)`), booleans as SQLite's 0/1.
 */
export type SqlValue = string | number | bigint | boolean | Date | null;

/**
 * Statements outside Prisma, written once for both databases: `?` placeholders (turned into `$n`
 * for PostgreSQL) and double-quoted identifiers. Rows come by column name, as the driver gives
 * them: PostgreSQL timestamps as Dates (read as UTC), booleans as booleans, integers (count(*)
 * included) as numbers; SQLite dates as text and booleans as 0/1. Read them with `readDate`,
 * `readOptionalDate` and `readBoolean` so a store sees the same values on both. Statements are
 * prepared once and reused (a cache per libsql connection; named statements per pg connection).
 */
export interface SqlRunner {
  /** A statement that returns rows (SELECT, or a write with RETURNING). */
  query<T extends object = Record<string, unknown>>(text: string, args?: readonly SqlValue[]): Promise<T[]>;
  /** A write without RETURNING; resolves to the number of rows it changed. */
  run(text: string, args?: readonly SqlValue[]): Promise<number>;
}

/** A DateTime column as Prisma returns it: a Date from PostgreSQL, ISO text (or epoch ms) from SQLite. */
export function readDate(value: unknown): Date {
  if (value instanceof Date) return value;
  if (typeof value === 'number' || typeof value === 'bigint') return new Date(Number(value));
  if (typeof value === 'string') {
    // CURRENT_TIMESTAMP defaults of SQLite write "YYYY-MM-DD HH:MM:SS", which is UTC.
    return new Date(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?$/.test(value) ? `${value.replace(' ', 'T')}Z` : value);
  }
  throw new TypeError(`not a stored date: ${String(value)}`);
}

export function readOptionalDate(value: unknown): Date | null {
  return value === null || value === undefined ? null : readDate(value);
}

/** A Boolean column: a boolean from PostgreSQL, 0/1 from SQLite. */
export function readBoolean(value: unknown): boolean {
  return value === true || value === 1 || value === 1n;
}

// The libsql native connection and statement, the part of its API we use. Only all() and run()
// are used on a reused statement: in libsql 0.3 a get() after an all() on the same statement
// runs with the previous call's arguments.
interface NativeStatement {
  safeIntegers(on?: boolean): NativeStatement;
  all(args: unknown[]): Record<string, unknown>[];
  run(args: unknown[]): { changes: number };
}
interface NativeDatabase {
  prepare(sql: string): NativeStatement;
}
type NativeDatabaseClass = new (path: string, options: object) => NativeDatabase;
// `libsql` is @libsql/client's own dependency (the native binding it opens files with); resolved
// from there so that this module opens the connection itself and can reuse prepared statements.
const NativeDatabase = createRequire(createRequire(import.meta.url).resolve('@libsql/client'))('libsql') as NativeDatabaseClass;

/** A bounded map of prepared statements, least recently used out first. */
class StatementCache {
  readonly #statements = new Map<string, NativeStatement>();
  readonly #limit: number;
  readonly #prepare: (sql: string) => NativeStatement;
  constructor(prepare: (sql: string) => NativeStatement, limit: number) {
    this.#prepare = prepare;
    this.#limit = limit;
  }
  get(sql: string): NativeStatement {
    let statement = this.#statements.get(sql);
    if (statement) {
      this.#statements.delete(sql);
    } else {
      statement = this.#prepare(sql);
      if (this.#statements.size >= this.#limit) this.#statements.delete(this.#statements.keys().next().value!);
    }
    this.#statements.set(sql, statement);
    return statement;
  }
  clear(): void {
    this.#statements.clear();
  }
}

function sqliteValue(value: SqlValue): unknown {
  if (value instanceof Date) return value.toISOString().replace('Z', '+00:00');
  if (typeof value === 'boolean') return value ? 1 : 0;
  if (value === undefined) throw new TypeError('undefined cannot be bound to a statement');
  return value;
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
export class SqliteConnection implements SqlRunner {
  #client: LibsqlClient | undefined;
  #statements: StatementCache | undefined;
  #transactionEnded: Promise<void> | undefined;

  /**
   * Opens the connection: libsql's native database, wrapped in the same client `createClient`
   * gives, but holding on to the native handle so our statements are prepared once. Prisma's
   * statements are cached too: libsql's client (0.8) prepares every statement again, and a
   * reused statement runs in about a fifth of the time; the client only uses all() and run().
   */
  open(config: LibsqlConfig): LibsqlClient {
    if (!config.url.startsWith('file:')) throw new Error(`not a SQLite file URL: ${config.url}`);
    const path = config.url.slice('file:'.length);
    const native = new NativeDatabase(path, {});
    const prepare = native.prepare.bind(native);
    // Two caches: the client sets raw mode and safe integers on its statements at every use.
    const own = new StatementCache((sql) => prepare(sql).safeIntegers(false), 200);
    const prisma = new StatementCache(prepare, 500);
    native.prepare = (sql) => prisma.get(sql);
    const client = new Sqlite3Client(path, {}, native as never, config.intMode ?? 'number') as unknown as LibsqlClient;
    const close = client.close.bind(client);
    client.close = () => {
      own.clear();
      prisma.clear();
      this.#statements = undefined;
      close();
    };
    this.#statements = own;
    return this.attach(client);
  }

  attach(client: LibsqlClient): LibsqlClient {
    this.#client = client;
    client.transaction = (async () => {
      while (this.#transactionEnded) await this.#transactionEnded;
      // Marked open before BEGIN: a direct statement resuming while BEGIN is awaited would
      // otherwise run inside this transaction (and be rolled back with it).
      let ended!: () => void;
      this.#transactionEnded = new Promise((resolve) => (ended = resolve));
      try {
        await client.execute('BEGIN IMMEDIATE');
      } catch (error) {
        this.#transactionEnded = undefined;
        ended();
        throw error;
      }
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

  /** SqlRunner: waits for any open transaction to end, then runs synchronously on the connection. */
  async query<T extends object = Record<string, unknown>>(text: string, args: readonly SqlValue[] = []): Promise<T[]> {
    while (this.#transactionEnded) await this.#transactionEnded;
    return this.#statement(text).all(args.map(sqliteValue)) as T[];
  }

  async run(text: string, args: readonly SqlValue[] = []): Promise<number> {
    while (this.#transactionEnded) await this.#transactionEnded;
    return this.#statement(text).run(args.map(sqliteValue)).changes;
  }

  #statement(text: string): NativeStatement {
    if (!this.#statements) throw new Error('the SQLite connection is not open');
    return this.#statements.get(text);
  }
}

/** `?` → `$1`, `$2`, … outside quoted strings and identifiers. */
export function numberedPlaceholders(text: string): string {
  let n = 0;
  let out = '';
  let quote: string | undefined;
  for (const ch of text) {
    if (quote) {
      if (ch === quote) quote = undefined;
      out += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      out += ch;
    } else {
      out += ch === '?' ? `$${++n}` : ch;
    }
  }
  return out;
}

// node-postgres would read "timestamp without time zone" in the process's local zone; Prisma
// keeps UTC there. int8 (count(*)) as a number, as SQLite gives it.
const pgTimestamp = 1114;
const pgInt8 = 20;
const pgTypes = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === pgTimestamp) return (text: string) => new Date(`${text.replace(' ', 'T')}Z`);
    if (oid === pgInt8) return (text: string) => Number(text);
    return pg.types.getTypeParser(oid, format as 'text');
  }) as typeof pg.types.getTypeParser,
};

function pgValue(value: SqlValue): unknown {
  // An ISO string, not a Date: node-postgres would write a Date in the local zone, and a
  // timestamp(3) column takes the string's UTC digits (ignoring the Z), as Prisma writes them.
  if (value instanceof Date) return value.toISOString();
  if (value === undefined) throw new TypeError('undefined cannot be bound to a statement');
  return value;
}

/** SqlRunner on the pg pool Prisma uses too: each text a named statement, prepared once per connection. */
class PostgresSql implements SqlRunner {
  readonly #pool: pg.Pool;
  readonly #prepared = new Map<string, { name: string; text: string }>();
  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  #statement(text: string): { name: string; text: string } {
    let statement = this.#prepared.get(text);
    if (!statement) {
      const numbered = numberedPlaceholders(text);
      statement = { name: `idp_${createHash('sha256').update(numbered).digest('hex').slice(0, 24)}`, text: numbered };
      if (this.#prepared.size < 1000) this.#prepared.set(text, statement);
    }
    return statement;
  }

  async query<T extends object = Record<string, unknown>>(text: string, args: readonly SqlValue[] = []): Promise<T[]> {
    const result = await this.#pool.query<T & pg.QueryResultRow>({ ...this.#statement(text), values: args.map(pgValue), types: pgTypes });
    return result.rows;
  }

  async run(text: string, args: readonly SqlValue[] = []): Promise<number> {
    const result = await this.#pool.query({ ...this.#statement(text), values: args.map(pgValue), types: pgTypes });
    return result.rowCount ?? 0;
  }
}

class SqliteAdapterFactory extends PrismaLibSQL {
  readonly #connection: SqliteConnection;
  constructor(config: LibsqlConfig, connection: SqliteConnection) {
    super(config);
    this.#connection = connection;
  }
  override createClient(config: LibsqlConfig): LibsqlClient {
    return this.#connection.open(config);
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
    return registered({ provider: 'sqlite', prisma, url: fileUrl, sqlite, sql: sqlite, close: () => prisma.$disconnect() });
  }
  // One pool for Prisma and our own statements.
  const pool = new pg.Pool({ connectionString: url, max: options.poolSize ?? 10 });
  // An idle connection that breaks is dropped by the pool; without a listener it would crash the process.
  pool.on('error', () => undefined);
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      try {
        await prisma.$disconnect();
      } finally {
        await pool.end();
      }
    })());
  return registered({ provider: 'postgresql', prisma, url, sql: new PostgresSql(pool), close });
}

const databasesByClient = new WeakMap<object, Database>();

function registered(db: Database): Database {
  databasesByClient.set(db.prisma, db);
  return db;
}

/**
 * The Database a store works on, from either the Database itself or its Prisma client (stores
 * that were handed `db.prisma` find the SQL runner of the same connection this way).
 */
export function databaseOf(source: Database | PrismaClient): Database {
  const db = databasesByClient.get(source);
  if (db) return db;
  if (typeof (source as Partial<Database>).sql?.query === 'function' && (source as Partial<Database>).prisma) return source as Database;
  throw new TypeError('not a client of a database opened with openDatabase()');
}

/**
 * The base of the stores that read their hot paths as plain SQL (`sql`) and do the rest through
 * Prisma (`prisma`), both on the connections of one opened database.
 */
export abstract class DatabaseStore {
  protected readonly prisma: PrismaClient;
  protected readonly sql: SqlRunner;
  /** `db`: the Database, or its Prisma client. */
  constructor(db: Database | PrismaClient) {
    const database = databaseOf(db);
    this.prisma = database.prisma;
    this.sql = database.sql;
  }
}

/**
 * A unique-constraint violation, from a Prisma model query (P2002), a Prisma raw one (P2010 with
 * the driver's code) or a `Database.sql` statement (PostgreSQL 23505, SQLite's constraint codes).
 */
export function isUniqueViolation(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const { code, meta } = error as { code?: string; meta?: { driverAdapterError?: { cause?: { kind?: string } } } };
  if (code === 'P2002' || code === '23505' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE') return true;
  return code === 'P2010' && meta?.driverAdapterError?.cause?.kind === 'UniqueConstraintViolation';
}
