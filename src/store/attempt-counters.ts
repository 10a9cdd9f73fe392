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

// The count stays the `count:KEY` string earlier versions wrote (INCR, with Redis's expiry as the
// window), so nodes of both versions share every count during a rolling upgrade. Beside it,
// `count-end:KEY` holds the end of the window in epoch ms of the injected clock, which decides
// when the window is over (tests move that clock instead of sleeping); a count without an end
// (written by an earlier version) gets the end its expiry says. Redis's expiry then only
// collects the keys.
const hitScript = `local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local e = tonumber(redis.call('GET', KEYS[2]))
if not e then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    e = now + ttl
    redis.call('SET', KEYS[2], e, 'PX', ttl)
  end
end
if not e or e <= now or redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], 1, 'PX', window)
  redis.call('SET', KEYS[2], now + window, 'PX', window)
  return 1
end
return redis.call('INCR', KEYS[1])`;
const peekScript = `local c = redis.call('GET', KEYS[1])
if not c then return 0 end
local e = tonumber(redis.call('GET', KEYS[2]))
if e and e <= tonumber(ARGV[1]) then return 0 end
return tonumber(c)`;
const extendScript = `if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], tonumber(ARGV[1]) + tonumber(ARGV[2]), 'PX', ARGV[2])
return 1`;

const milliseconds = (seconds: number) => Math.max(1, Math.ceil(seconds * 1000));

export class RedisAttemptCounters implements AttemptCounters {
  readonly #redis: Redis;
  readonly #clock: Clock;
  constructor(redis: Redis, clock: Clock = systemClock) {
    this.#redis = redis;
    this.#clock = clock;
  }

  async hit(key: string, windowSeconds: number): Promise<number> {
    return Number(await this.#redis.eval(hitScript, 2, `count:${key}`, `count-end:${key}`, String(this.#clock.now()), String(milliseconds(windowSeconds))));
  }

  async peek(key: string): Promise<number> {
    return Number(await this.#redis.eval(peekScript, 2, `count:${key}`, `count-end:${key}`, String(this.#clock.now())));
  }

  async extend(key: string, seconds: number): Promise<void> {
    await this.#redis.eval(extendScript, 2, `count:${key}`, `count-end:${key}`, String(this.#clock.now()), String(milliseconds(seconds)));
  }

  async reset(key: string): Promise<void> {
    await this.#redis.del(`count:${key}`, `count-end:${key}`);
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
