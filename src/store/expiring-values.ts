// Short-lived values of our own (login flows, later rate-limit state): Redis when configured,
// else the ExpiringValue table. Values are JSON; every write carries a TTL.
import { randomUUID } from 'node:crypto';
import { isUniqueViolation, type PrismaClient } from './database.ts';
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

  async take<T>(key: string): Promise<T | undefined> {
    const row = await this.#prisma.expiringValue.findUnique({ where: { key } });
    if (!row || row.expiresAt.getTime() <= Date.now()) return undefined;
    // Only the reader whose delete removed the row gets the value.
    const { count } = await this.#prisma.expiringValue.deleteMany({ where: { key, value: row.value } });
    return count === 1 ? (JSON.parse(row.value) as T) : undefined;
  }

  async acquire(key: string, ttlSeconds: number): Promise<string | undefined> {
    const lockKey = `lock:${key}`;
    const token = randomUUID();
    // A lock left behind by a crashed holder is cleared once it has expired.
    await this.#prisma.expiringValue.deleteMany({ where: { key: lockKey, expiresAt: { lte: new Date() } } });
    try {
      await this.#prisma.expiringValue.create({ data: { key: lockKey, value: token, expiresAt: new Date(Date.now() + ttlSeconds * 1000) } });
      return token;
    } catch (error) {
      if (isUniqueViolation(error)) return undefined;
      throw error;
    }
  }

  async extend(key: string, token: string, ttlSeconds: number): Promise<boolean> {
    const { count } = await this.#prisma.expiringValue.updateMany({ where: { key: `lock:${key}`, value: token }, data: { expiresAt: new Date(Date.now() + ttlSeconds * 1000) } });
    return count === 1;
  }

  async release(key: string, token: string): Promise<void> {
    await this.#prisma.expiringValue.deleteMany({ where: { key: `lock:${key}`, value: token } });
  }
}
