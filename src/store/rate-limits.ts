// Sign-in throttling counters (rate-limiter-flexible): Redis when configured, else the database
// table RateLimiterFlexible. Shared by every node, like everything that matters.
import { RateLimiterPrisma, RateLimiterRedis, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Database } from './database.ts';
import type { Redis } from './redis.ts';

export function rateLimiter(options: { db: Database; redis: Redis | undefined; keyPrefix: string; points: number; durationSeconds: number }): RateLimiterAbstract {
  const common = { keyPrefix: options.keyPrefix, points: options.points, duration: options.durationSeconds };
  if (options.redis) return new RateLimiterRedis({ ...common, storeClient: options.redis, useRedisPackage: false });
  // Its own clean-up timer would keep a CLI process alive; sweepExpiredRecords removes expired rows.
  return new RateLimiterPrisma({ ...common, storeClient: options.db.prisma, tableName: 'rateLimiterFlexible', clearExpiredByTimeout: false });
}
