// Short-lived values of our own (login flows, later rate-limit state): Redis when configured,
// else the ExpiringValue table. Values are JSON; every write carries a TTL.
import type { PrismaClient } from './database.ts';
import type { Redis } from './redis.ts';

export interface ExpiringValues {
  get<T>(key: string): Promise<T | undefined>;
  set(key: string, value: unknown, ttlSeconds: number): Promise<void>;
  delete(key: string): Promise<void>;
}

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
}

export class DatabaseExpiringValues implements ExpiringValues {
  readonly #prisma: PrismaClient;
  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
  }

  async get<T>(key: string): Promise<T | undefined> {
    const row = await this.#prisma.expiringValue.findUnique({ where: { key } });
    if (!row || row.expiresAt.getTime() <= Date.now()) return undefined;
    return JSON.parse(row.value) as T;
  }

  async set(key: string, value: unknown, ttlSeconds: number): Promise<void> {
    const data = { value: JSON.stringify(value), expiresAt: new Date(Date.now() + ttlSeconds * 1000) };
    await this.#prisma.expiringValue.upsert({ where: { key }, create: { key, ...data }, update: data });
  }

  async delete(key: string): Promise<void> {
    await this.#prisma.expiringValue.deleteMany({ where: { key } });
  }
}
