// Sign-in throttling counters (rate-limiter-flexible): Redis when configured, else the database
// table RateLimiterFlexible. Shared by every node, like everything that matters.
import { RateLimiterPrisma, RateLimiterRedis, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { readOptionalDate, type Database, type SqlRunner } from './database.ts';
import type { Redis } from './redis.ts';

// RateLimiterPrisma's three storage calls in plain SQL (Database.sql): the sign-in throttle reads
// two counters on every sign-in, each a Prisma query (and a consume two). Same rows, same
// results; the new-window-or-increment is one statement instead of a delete and an upsert.
const getSql = 'SELECT "key", "points", "expire" FROM "RateLimiterFlexible" WHERE "key" = ? AND ("expire" > ? OR "expire" IS NULL) LIMIT 1';
const setSql = `INSERT INTO "RateLimiterFlexible" ("key", "points", "expire") VALUES (?, ?, ?)
  ON CONFLICT ("key") DO UPDATE SET "points" = excluded."points", "expire" = excluded."expire" RETURNING "key", "points", "expire"`;
const addSql = `INSERT INTO "RateLimiterFlexible" ("key", "points", "expire") VALUES (?, ?, ?)
  ON CONFLICT ("key") DO UPDATE SET
    "points" = CASE WHEN "RateLimiterFlexible"."expire" <= ? THEN excluded."points" ELSE "RateLimiterFlexible"."points" + excluded."points" END,
    "expire" = CASE WHEN "RateLimiterFlexible"."expire" <= ? THEN excluded."expire" ELSE "RateLimiterFlexible"."expire" END
  RETURNING "key", "points", "expire"`;
const deleteSql = 'DELETE FROM "RateLimiterFlexible" WHERE "key" = ?';

interface Doc {
  key: string;
  points: number;
  expire: Date | null;
}

const toDoc = (row: { key: string; points: number; expire: unknown }): Doc => ({ key: row.key, points: Number(row.points), expire: readOptionalDate(row.expire) });

class SqlRateLimiter extends RateLimiterPrisma {
  readonly #sql: SqlRunner;
  constructor(opts: ConstructorParameters<typeof RateLimiterPrisma>[0], sql: SqlRunner) {
    super(opts);
    this.#sql = sql;
  }

  async _get(rlKey: string): Promise<Doc | null> {
    const row = (await this.#sql.query<{ key: string; points: number; expire: unknown }>(getSql, [rlKey, new Date()]))[0];
    return row ? toDoc(row) : null;
  }

  async _upsert(rlKey: string, points: number, msDuration: number, forceExpire = false): Promise<Doc> {
    const now = new Date();
    const expire = msDuration > 0 ? new Date(now.getTime() + msDuration) : null;
    const rows = forceExpire ? await this.#sql.query<{ key: string; points: number; expire: unknown }>(setSql, [rlKey, points, expire]) : await this.#sql.query<{ key: string; points: number; expire: unknown }>(addSql, [rlKey, points, expire, now, now]);
    return toDoc(rows[0]!);
  }

  async _delete(rlKey: string): Promise<boolean> {
    return (await this.#sql.run(deleteSql, [rlKey])) > 0;
  }
}

export function rateLimiter(options: { db: Database; redis: Redis | undefined; keyPrefix: string; points: number; durationSeconds: number }): RateLimiterAbstract {
  const common = { keyPrefix: options.keyPrefix, points: options.points, duration: options.durationSeconds };
  if (options.redis) return new RateLimiterRedis({ ...common, storeClient: options.redis, useRedisPackage: false });
  // Its own clean-up timer would keep a CLI process alive; sweepExpiredRecords removes expired rows.
  return new SqlRateLimiter({ ...common, storeClient: options.db.prisma, tableName: 'rateLimiterFlexible', clearExpiredByTimeout: false }, options.db.sql);
}
