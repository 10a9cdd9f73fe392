// Short-lived values of our own (login flows, later rate-limit state): Redis when configured,
// else the ExpiringValue table. Values are JSON; every write carries a TTL.
import { randomUUID } from 'node:crypto';
import { databaseOf, readDate, type Database, type PrismaClient, type SqlRunner } from './database.ts';
import type { Redis } from './redis.ts';

export interface ExpiringValues {
  get<T>(key: string): Promise<T | undefined>;
  set(key: string, value: unknown, ttlSeconds: number): Promise<void>;
  delete(key: string): Promise<void>;
  /** Reads and deletes in one step: of two concurrent readers, exactly one gets the value. */
  take<T>(key: string): Promise<T | undefined>;
  /** Takes a lock that expires on its own; returns a token to release it, or undefined if it is held. */
  acquire(key: string, ttlSeconds: number): Promise<string | undefined>;
  /** Gives the lock `ttlSeconds` more from now if `token` still holds it; false when it does not. */
  extend(key: string, token: string, ttlSeconds: number): Promise<boolean>;
  /** Releases the lock if `token` still holds it. */
  release(key: string, token: string): Promise<void>;
}

const releaseScript = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;
const extendScript = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;

export class RedisExpiringValues implements ExpiringValues {
  readonly #redis: Redis;
  constructor(redis: Redis) {
    this.#redis = redis;
  }

  async get<T>(key: string): Promise<T | undefined> {
    const value = await this.#redis.get(`kv:${key}`);
    return value === null ? undefined : (JSON.parse(value) as T);
  }

  async set(key: string, value: unknown, ttlSeconds: number): Promise<void> {
    await this.#redis.set(`kv:${key}`, JSON.stringify(value), 'EX', Math.max(1, Math.ceil(ttlSeconds)));
  }

  async delete(key: string): Promise<void> {
    await this.#redis.del(`kv:${key}`);
  }

  async take<T>(key: string): Promise<T | undefined> {
    const value = await this.#redis.getdel(`kv:${key}`);
    return value === null ? undefined : (JSON.parse(value) as T);
  }

  async acquire(key: string, ttlSeconds: number): Promise<string | undefined> {
    const token = randomUUID();
    const ok = await this.#redis.set(`lock:${key}`, token, 'EX', Math.max(1, Math.ceil(ttlSeconds)), 'NX');
    return ok === 'OK' ? token : undefined;
  }

  async extend(key: string, token: string, ttlSeconds: number): Promise<boolean> {
    return (await this.#redis.eval(extendScript, 1, `lock:${key}`, token, String(Math.ceil(ttlSeconds * 1000)))) === 1;
  }

  async release(key: string, token: string): Promise<void> {
    await this.#redis.eval(releaseScript, 1, `lock:${key}`, token);
  }
}

// Plain SQL (Database.sql): login flows and their locks are read and written several times per
// sign-in request. Every check-and-write is one statement, so it holds across nodes.
const getSql = 'SELECT "value", "expiresAt" FROM "ExpiringValue" WHERE "key" = ?';
const setSql = `INSERT INTO "ExpiringValue" ("key", "value", "expiresAt") VALUES (?, ?, ?)
  ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value", "expiresAt" = excluded."expiresAt"`;
const deleteSql = 'DELETE FROM "ExpiringValue" WHERE "key" = ?';
const takeSql = 'DELETE FROM "ExpiringValue" WHERE "key" = ? AND "expiresAt" > ? RETURNING "value"';
// A new lock, or one whose holder let it expire (a crashed holder): the conflicting row is only
// replaced when its time is up, so of concurrent callers exactly one changes a row.
const acquireSql = `INSERT INTO "ExpiringValue" ("key", "value", "expiresAt") VALUES (?, ?, ?)
  ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value", "expiresAt" = excluded."expiresAt" WHERE "ExpiringValue"."expiresAt" <= ?`;
const extendSql = 'UPDATE "ExpiringValue" SET "expiresAt" = ? WHERE "key" = ? AND "value" = ?';
const releaseSql = 'DELETE FROM "ExpiringValue" WHERE "key" = ? AND "value" = ?';

export class DatabaseExpiringValues implements ExpiringValues {
  readonly #sql: SqlRunner;
  /** `db`: the Database, or its Prisma client. */
  constructor(db: Database | PrismaClient) {
    this.#sql = databaseOf(db).sql;
  }

  async get<T>(key: string): Promise<T | undefined> {
    const row = (await this.#sql.query<{ value: string; expiresAt: unknown }>(getSql, [key]))[0];
    if (!row || readDate(row.expiresAt).getTime() <= Date.now()) return undefined;
    return JSON.parse(row.value) as T;
  }

  async set(key: string, value: unknown, ttlSeconds: number): Promise<void> {
    await this.#sql.run(setSql, [key, JSON.stringify(value), new Date(Date.now() + ttlSeconds * 1000)]);
  }

  async delete(key: string): Promise<void> {
    await this.#sql.run(deleteSql, [key]);
  }

  async take<T>(key: string): Promise<T | undefined> {
    // One DELETE … RETURNING: only the reader whose delete removed the row gets the value.
    const row = (await this.#sql.query<{ value: string }>(takeSql, [key, new Date()]))[0];
    return row ? (JSON.parse(row.value) as T) : undefined;
  }

  async acquire(key: string, ttlSeconds: number): Promise<string | undefined> {
    const token = randomUUID();
    const now = Date.now();
    const changed = await this.#sql.run(acquireSql, [`lock:${key}`, token, new Date(now + ttlSeconds * 1000), new Date(now)]);
    return changed === 1 ? token : undefined;
  }

  async extend(key: string, token: string, ttlSeconds: number): Promise<boolean> {
    return (await this.#sql.run(extendSql, [new Date(Date.now() + ttlSeconds * 1000), `lock:${key}`, token])) === 1;
  }

  async release(key: string, token: string): Promise<void> {
    await this.#sql.run(releaseSql, [`lock:${key}`, token]);
  }
}
