// Atomic counters with a window, shared by every node: Redis when configured, else the database.
// `hit` increments and returns the new count in one step, so parallel requests never lose a count.
import { systemClock, type Clock } from '../clock.ts';
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

// A hash of the count (c) and the end of its window (e, epoch ms of the injected clock). The
// window is judged by that clock, so tests move time instead of sleeping; Redis's own expiry,
// set to the window in real time, only collects the key afterwards. (Keys named `counter:`, not
// the `count:` strings of earlier versions: those are left to expire.)
const hitScript = `local e = tonumber(redis.call('HGET', KEYS[1], 'e'))
local now = tonumber(ARGV[1])
if not e or e <= now then
  redis.call('HSET', KEYS[1], 'c', 1, 'e', now + tonumber(ARGV[2]))
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return redis.call('HINCRBY', KEYS[1], 'c', 1)`;
const peekScript = `local v = redis.call('HMGET', KEYS[1], 'c', 'e')
if v[2] and tonumber(v[2]) > tonumber(ARGV[1]) then return tonumber(v[1]) end
return 0`;
const extendScript = `if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'e', tonumber(ARGV[1]) + tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`;

export class RedisAttemptCounters implements AttemptCounters {
  readonly #redis: Redis;
  readonly #clock: Clock;
  constructor(redis: Redis, clock: Clock = systemClock) {
    this.#redis = redis;
    this.#clock = clock;
  }

  async hit(key: string, windowSeconds: number): Promise<number> {
    return Number(await this.#redis.eval(hitScript, 1, `counter:${key}`, String(this.#clock.now()), String(Math.max(1, Math.ceil(windowSeconds * 1000)))));
  }

  async peek(key: string): Promise<number> {
    return Number(await this.#redis.eval(peekScript, 1, `counter:${key}`, String(this.#clock.now())));
  }

  async extend(key: string, seconds: number): Promise<void> {
    await this.#redis.eval(extendScript, 1, `counter:${key}`, String(this.#clock.now()), String(Math.max(1, Math.ceil(seconds * 1000))));
  }

  async reset(key: string): Promise<void> {
    await this.#redis.del(`counter:${key}`);
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
  readonly #clock: Clock;
  constructor(db: Database, clock: Clock = systemClock) {
    this.#db = db;
    this.#clock = clock;
  }

  async hit(key: string, windowSeconds: number): Promise<number> {
    const now = this.#clock.now() / 1000;
    // One statement: a new row, a fresh window if the old one ended, or one more in the window.
    const rows = await this.#db.sql.query<{ count: number }>(hitSql, [key, now + windowSeconds, now, now]);
    return Number(rows[0]!.count);
  }

  async peek(key: string): Promise<number> {
    const row = (await this.#db.sql.query<{ count: number; expiresAt: number }>(peekSql, [key]))[0];
    return row && row.expiresAt > this.#clock.now() / 1000 ? Number(row.count) : 0;
  }

  async extend(key: string, seconds: number): Promise<void> {
    await this.#db.sql.run(extendSql, [this.#clock.now() / 1000 + seconds, key]);
  }

  async reset(key: string): Promise<void> {
    await this.#db.sql.run(resetSql, [key]);
  }
}
