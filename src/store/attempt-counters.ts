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

export class DatabaseAttemptCounters implements AttemptCounters {
  readonly #db: Database;
  constructor(db: Database) {
    this.#db = db;
  }

  async hit(key: string, windowSeconds: number): Promise<number> {
    const now = Date.now() / 1000;
    const p = this.#db.provider === 'postgresql' ? ['$1', '$2', '$3'] : ['?1', '?2', '?3'];
    // One statement: a new row, a fresh window if the old one ended, or one more in the window.
    const rows = await this.#db.prisma.$queryRawUnsafe<{ count: number | bigint }[]>(
      `INSERT INTO "AttemptCounter" ("key", "count", "expiresAt") VALUES (${p[0]}, 1, ${p[1]})
       ON CONFLICT ("key") DO UPDATE SET
         "count" = CASE WHEN "AttemptCounter"."expiresAt" <= ${p[2]} THEN 1 ELSE "AttemptCounter"."count" + 1 END,
         "expiresAt" = CASE WHEN "AttemptCounter"."expiresAt" <= ${p[2]} THEN EXCLUDED."expiresAt" ELSE "AttemptCounter"."expiresAt" END
       RETURNING "count"`,
      key,
      now + windowSeconds,
      now,
    );
    return Number(rows[0]!.count);
  }

  async peek(key: string): Promise<number> {
    const row = await this.#db.prisma.attemptCounter.findUnique({ where: { key } });
    return row && row.expiresAt > Date.now() / 1000 ? row.count : 0;
  }

  async extend(key: string, seconds: number): Promise<void> {
    await this.#db.prisma.attemptCounter.updateMany({ where: { key }, data: { expiresAt: Date.now() / 1000 + seconds } });
  }

  async reset(key: string): Promise<void> {
    await this.#db.prisma.attemptCounter.deleteMany({ where: { key } });
  }
}
