// Short-lived oidc-provider models in Redis. Each record is a hash {payload, consumed?} with the
// record's TTL; uid and user-code lookups and the per-grant index are separate keys.
import type { Redis } from './redis.ts';
import { type OidcAdapter, type OidcPayload } from './oidc-adapter-types.ts';

// Only token models join a grant's index: revoking a grant must not delete, say, the pending
// interaction of the login that replaced it (oidc-provider revokes the old grant mid-login).
const grantIndexed = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest']);

// Marks a record consumed only if it still exists (a late consume cannot resurrect it without a
// TTL) and only if nobody consumed it first: HSETNX answers 1 to exactly one caller.
const consumeScript = `if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSETNX', KEYS[1], 'consumed', ARGV[1]) end return 0`;

export class RedisOidcAdapter implements OidcAdapter {
  readonly #redis: Redis;
  readonly #model: string;

  constructor(redis: Redis, model: string) {
    this.#redis = redis;
    this.#model = model;
  }

  #key(id: string) {
    return `oidc:${this.#model}:${id}`;
  }

  async upsert(id: string, payload: OidcPayload, expiresIn: number): Promise<void> {
    const key = this.#key(id);
    const multi = this.#redis.multi();
    multi.del(key);
    multi.hset(key, 'payload', JSON.stringify(payload));
    if (expiresIn) multi.expire(key, expiresIn);
    if (payload.grantId && grantIndexed.has(this.#model)) {
      const grantKey = `oidc:grant:${payload.grantId}`;
      multi.sadd(grantKey, key);
      // The index lives as long as its longest member.
      if (expiresIn) multi.expire(grantKey, expiresIn, 'GT');
      multi.expire(grantKey, expiresIn || 365 * 24 * 3600, 'NX');
    }
    for (const [field, value] of [['uid', payload.uid], ['userCode', payload.userCode]] as const) {
      if (value) {
        const indexKey = `oidc:${this.#model}:${field}:${value}`;
        if (expiresIn) multi.set(indexKey, id, 'EX', expiresIn);
        else multi.set(indexKey, id);
      }
    }
    await multi.exec();
  }

  async find(id: string): Promise<OidcPayload | undefined> {
    const record = await this.#redis.hgetall(this.#key(id));
    if (!record.payload) return undefined;
    const payload = JSON.parse(record.payload) as OidcPayload;
    return record.consumed ? { ...payload, consumed: Number(record.consumed) } : payload;
  }

  async #findByIndex(field: string, value: string) {
    const id = await this.#redis.get(`oidc:${this.#model}:${field}:${value}`);
    return id ? this.find(id) : undefined;
  }

  findByUid(uid: string) {
    return this.#findByIndex('uid', uid);
  }

  findByUserCode(userCode: string) {
    return this.#findByIndex('userCode', userCode);
  }

  async consume(id: string): Promise<boolean> {
    return (await this.#redis.eval(consumeScript, 1, this.#key(id), String(Math.floor(Date.now() / 1000)))) === 1;
  }

  async destroy(id: string): Promise<void> {
    await this.#redis.del(this.#key(id));
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    const grantKey = `oidc:grant:${grantId}`;
    // Members are unprefixed key names (ioredis prefixes key arguments, not values), as del expects.
    const members = await this.#redis.smembers(grantKey);
    const multi = this.#redis.multi();
    for (const member of members) multi.del(member);
    multi.del(grantKey);
    await multi.exec();
  }
}
