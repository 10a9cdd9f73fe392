// Atomic counters with a window, shared by every node: Redis when configured, else the database.
// `hit` increments and returns the new count in one step, so parallel requests never lose a count.
import type { Database } from './database.ts';
import type { Redis } from './redis.ts';

export interface AttemptCounters {
  /** Counts one attempt in the key's current window (a new window starts after `windowSeconds`). */
  hit(key: string, windowSeconds: number): Promise<number>;
  /** The count in the current window (0 when none). */
  peek(key: string): Promise<number>;
  /** Moves the end of the current window to `seconds` from now. */
  extend(key: string, seconds: number): Promise<void>;
  reset(key: string): Promise<void>;
}

const hitScript = `local c = redis.call('INCR', KEYS[1]) if c == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end return c`;

export class RedisAttemptCounters implements AttemptCounters {
  readonly #redis: Redis;
  constructor(redis: Redis) {
    this.#redis = redis;
  }

  async hit(key: string, windowSeconds: number): Promise<number> {
    return Number(await this.#redis.eval(hitScript, 1, `count:${key}`, String(Math.max(1, Math.ceil(windowSeconds)))));
  }

  async peek(key: string): Promise<number> {
    return Number((await this.#redis.get(`count:${key}`)) ?? 0);
  }

  async extend(key: string, seconds: number): Promise<void> {
    await this.#redis.expire(`count:${key}`, Math.max(1, Math.ceil(seconds)));
  }

  async reset(key: string): Promise<void> {
    await this.#redis.del(`count:${key}`);
  }
}

// Plain SQL (Database.sql) on both databases; `expiresAt` is epoch seconds (a double).
const hitSql = `INSERT INTO "AttemptCounter" ("key", "count", "expiresAt") VALUES (?, 1, ?)
  ON CONFLICT ("key") DO UPDATE SET
    "count" = CASE WHEN "AttemptCounter"."expiresAt" <= ? THEN 1 ELSE "AttemptCounter"."count" + 1 END,
    "expiresAt" = CASE WHEN "AttemptCounter"."expiresAt" <= ? THEN EXCLUDED."expiresAt" ELSE "AttemptCounter"."expiresAt" END
  RETURNING "count"`;
const peekSql = 'SELECT "count", "expiresAt" FROM "AttemptCounter" WHERE "key" = ?';
const extendSql = 'UPDATE "AttemptCounter" SET "expiresAt" = ? WHERE "key" = ?';
const resetSql = 'DELETE FROM "AttemptCounter" WHERE "key" = ?';

export class DatabaseAttemptCounters implements AttemptCounters {
  readonly #db: Database;
  constructor(db: Database) {
    this.#db = db;
  }

  async hit(key: string, windowSeconds: number): Promise<number> {
    const now = Date.now() / 1000;
    // One statement: a new row, a fresh window if the old one ended, or one more in the window.
    const rows = await this.#db.sql.query<{ count: number }>(hitSql, [key, now + windowSeconds, now, now]);
    return Number(rows[0]!.count);
  }

  async peek(key: string): Promise<number> {
    const row = (await this.#db.sql.query<{ count: number; expiresAt: number }>(peekSql, [key]))[0];
    return row && row.expiresAt > Date.now() / 1000 ? Number(row.count) : 0;
  }

  async extend(key: string, seconds: number): Promise<void> {
    await this.#db.sql.run(extendSql, [Date.now() / 1000 + seconds, key]);
  }

  async reset(key: string): Promise<void> {
    await this.#db.sql.run(resetSql, [key]);
  }
}
