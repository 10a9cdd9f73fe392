import { Redis } from 'ioredis';

export type { Redis };

/** A Redis client whose keys all start with `prefix`, so several deployments or tests can share one server. */
export function openRedis(url: string, prefix: string): Redis {
  return new Redis(url, {
    keyPrefix: prefix,
    lazyConnect: false,
    maxRetriesPerRequest: 2,
    enableOfflineQueue: true,
    connectTimeout: 5000,
  });
}
