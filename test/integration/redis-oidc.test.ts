// Short-lived oidc-provider models and our expiring values in the real Redis, under a key prefix
// of this suite's own (removed afterwards).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisExpiringValues } from '../../src/store/expiring-values.ts';
import { RedisOidcAdapter } from '../../src/store/redis-oidc.ts';
import { openRedis, type Redis } from '../../src/store/redis.ts';
import { redisNamespace } from '../helpers/databases.ts';

let ns: Awaited<ReturnType<typeof redisNamespace>>;
let redis: Redis;

beforeAll(async () => {
  ns = await redisNamespace();
  redis = openRedis(ns.url, ns.prefix);
  await redis.ping();
});

afterAll(async () => {
  await redis?.quit();
  await ns?.clear();
});

const now = () => Math.floor(Date.now() / 1000);

describe('RedisOidcAdapter', () => {
  it('upsert then find returns the payload; a second upsert replaces it', async () => {
    const tokens = new RedisOidcAdapter(redis, 'AccessToken');
    const payload = { kind: 'AccessToken', accountId: 'acct-1', scope: 'openid', exp: 1_900_000_000, extra: { nested: [1, 2] } };
    await tokens.upsert('at-1', payload, 300);
    expect(await tokens.find('at-1')).toEqual(payload);
    await tokens.upsert('at-1', { ...payload, scope: 'openid email' }, 300);
    expect(await tokens.find('at-1')).toEqual({ ...payload, scope: 'openid email' });
    expect(await tokens.find('at-unknown')).toBeUndefined();
  });

  it('keys live under the prefix and carry the record TTL', async () => {
    const tokens = new RedisOidcAdapter(redis, 'AccessToken');
    await tokens.upsert('at-ttl', { n: 1 }, 120);
    const ttl = await redis.ttl('oidc:AccessToken:at-ttl');
    expect(ttl).toBeGreaterThan(115);
    expect(ttl).toBeLessThanOrEqual(120);
    // The raw client (no prefix) sees the prefixed key, and nothing unprefixed.
    const raw = openRedis(ns.url, '');
    try {
      expect(await raw.exists(`${ns.prefix}oidc:AccessToken:at-ttl`)).toBe(1);
      expect(await raw.exists('oidc:AccessToken:at-ttl')).toBe(0);
    } finally {
      await raw.quit();
    }
  });

  it('expiresIn 0 stores without expiry', async () => {
    const grants = new RedisOidcAdapter(redis, 'Grant');
    await grants.upsert('grant-forever', { kind: 'Grant' }, 0);
    expect(await redis.ttl('oidc:Grant:grant-forever')).toBe(-1);
    expect(await grants.find('grant-forever')).toEqual({ kind: 'Grant' });
  });

  it('a second upsert resets the TTL and clears an earlier consumed mark', async () => {
    const codes = new RedisOidcAdapter(redis, 'AuthorizationCode');
    await codes.upsert('code-re', { n: 1 }, 30);
    await codes.consume('code-re');
    await codes.upsert('code-re', { n: 2 }, 600);
    expect(await codes.find('code-re')).toEqual({ n: 2 });
    expect(await redis.ttl('oidc:AuthorizationCode:code-re')).toBeGreaterThan(590);
  });

  it('a record expires with its TTL', async () => {
    const codes = new RedisOidcAdapter(redis, 'AuthorizationCode');
    await codes.upsert('code-short', { n: 1 }, 1);
    expect(await codes.find('code-short')).toEqual({ n: 1 });
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect(await codes.find('code-short')).toBeUndefined();
  });

  it('findByUid finds by uid within the model, and the index expires with the record', async () => {
    const sessions = new RedisOidcAdapter(redis, 'Session');
    await sessions.upsert('sess-1', { kind: 'Session', uid: 'uid-1', accountId: 'acct-1' }, 300);
    expect(await sessions.findByUid('uid-1')).toEqual({ kind: 'Session', uid: 'uid-1', accountId: 'acct-1' });
    expect(await sessions.findByUid('uid-missing')).toBeUndefined();
    expect(await new RedisOidcAdapter(redis, 'Interaction').findByUid('uid-1')).toBeUndefined();
    const ttl = await redis.ttl('oidc:Session:uid:uid-1');
    expect(ttl).toBeGreaterThan(295);
    expect(ttl).toBeLessThanOrEqual(300);
    // Once the record is gone, the index leads nowhere.
    await sessions.destroy('sess-1');
    expect(await sessions.findByUid('uid-1')).toBeUndefined();
  });

  it('findByUserCode finds by user code within the model', async () => {
    const devices = new RedisOidcAdapter(redis, 'DeviceCode');
    await devices.upsert('dc-1', { kind: 'DeviceCode', userCode: 'WDJB-MJHT' }, 300);
    expect(await devices.findByUserCode('WDJB-MJHT')).toEqual({ kind: 'DeviceCode', userCode: 'WDJB-MJHT' });
    expect(await devices.findByUserCode('XXXX-XXXX')).toBeUndefined();
    expect(await new RedisOidcAdapter(redis, 'Session').findByUserCode('WDJB-MJHT')).toBeUndefined();
    expect(await redis.ttl('oidc:DeviceCode:userCode:WDJB-MJHT')).toBeGreaterThan(0);
  });

  it('consume marks the record consumed (epoch seconds) and keeps its TTL', async () => {
    const codes = new RedisOidcAdapter(redis, 'AuthorizationCode');
    await codes.upsert('code-1', { kind: 'AuthorizationCode', grantId: 'g-consume' }, 60);
    expect((await codes.find('code-1'))?.consumed).toBeUndefined();
    const before = now();
    await codes.consume('code-1');
    const found = await codes.find('code-1');
    expect(found).toMatchObject({ kind: 'AuthorizationCode', grantId: 'g-consume' });
    expect(found?.consumed).toBeGreaterThanOrEqual(before);
    expect(found?.consumed).toBeLessThanOrEqual(now() + 1);
    const ttl = await redis.ttl('oidc:AuthorizationCode:code-1');
    expect(ttl).toBeGreaterThan(55);
    expect(ttl).toBeLessThanOrEqual(60);
  });

  it('consume of a missing record does not create it', async () => {
    const codes = new RedisOidcAdapter(redis, 'AuthorizationCode');
    await codes.consume('code-never');
    expect(await redis.exists('oidc:AuthorizationCode:code-never')).toBe(0);
    expect(await codes.find('code-never')).toBeUndefined();
  });

  it('consume after expiry does not bring the record back', async () => {
    const codes = new RedisOidcAdapter(redis, 'AuthorizationCode');
    await codes.upsert('code-late', { n: 1 }, 1);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    await codes.consume('code-late');
    expect(await redis.exists('oidc:AuthorizationCode:code-late')).toBe(0);
  });

  it('destroy removes the record, and only that one', async () => {
    const codes = new RedisOidcAdapter(redis, 'AuthorizationCode');
    await codes.upsert('code-d1', { n: 1 }, 60);
    await codes.upsert('code-d2', { n: 2 }, 60);
    await codes.destroy('code-d1');
    expect(await codes.find('code-d1')).toBeUndefined();
    expect(await redis.exists('oidc:AuthorizationCode:code-d1')).toBe(0);
    expect(await codes.find('code-d2')).toEqual({ n: 2 });
    await expect(codes.destroy('code-d1')).resolves.toBeUndefined();
  });

  it('revokeByGrantId removes every model of the grant, and nothing of other grants', async () => {
    const access = new RedisOidcAdapter(redis, 'AccessToken');
    const codes = new RedisOidcAdapter(redis, 'AuthorizationCode');
    const refresh = new RedisOidcAdapter(redis, 'RefreshToken');
    await access.upsert('rv-at-1', { grantId: 'grant-A' }, 300);
    await access.upsert('rv-at-2', { grantId: 'grant-A' }, 300);
    await codes.upsert('rv-code-1', { grantId: 'grant-A' }, 60);
    await refresh.upsert('rv-rt-1', { grantId: 'grant-A' }, 3600);
    await access.upsert('rv-at-3', { grantId: 'grant-B' }, 300);
    await codes.upsert('rv-code-2', { grantId: 'grant-B' }, 60);
    await access.upsert('rv-at-4', {}, 300);

    // The grant index lives as long as its longest member.
    const indexTtl = await redis.ttl('oidc:grant:grant-A');
    expect(indexTtl).toBeGreaterThan(3590);
    expect(indexTtl).toBeLessThanOrEqual(3600);
    expect((await redis.smembers('oidc:grant:grant-A')).sort()).toEqual(
      ['oidc:AccessToken:rv-at-1', 'oidc:AccessToken:rv-at-2', 'oidc:AuthorizationCode:rv-code-1', 'oidc:RefreshToken:rv-rt-1'].sort(),
    );

    await codes.revokeByGrantId('grant-A');
    expect(await access.find('rv-at-1')).toBeUndefined();
    expect(await access.find('rv-at-2')).toBeUndefined();
    expect(await codes.find('rv-code-1')).toBeUndefined();
    expect(await refresh.find('rv-rt-1')).toBeUndefined();
    expect(await redis.exists('oidc:grant:grant-A')).toBe(0);

    expect(await access.find('rv-at-3')).toEqual({ grantId: 'grant-B' });
    expect(await codes.find('rv-code-2')).toEqual({ grantId: 'grant-B' });
    expect(await access.find('rv-at-4')).toEqual({});
    expect(await redis.exists('oidc:grant:grant-B')).toBe(1);

    // Revoking an unknown grant is harmless.
    await expect(access.revokeByGrantId('grant-none')).resolves.toBeUndefined();
    expect(await access.find('rv-at-3')).toEqual({ grantId: 'grant-B' });
  });

  it('a shorter-lived member added later does not shorten the grant index', async () => {
    const refresh = new RedisOidcAdapter(redis, 'RefreshToken');
    const access = new RedisOidcAdapter(redis, 'AccessToken');
    await refresh.upsert('gi-rt', { grantId: 'grant-C' }, 3600);
    await access.upsert('gi-at', { grantId: 'grant-C' }, 60);
    expect(await redis.ttl('oidc:grant:grant-C')).toBeGreaterThan(3590);
    // A longer-lived member lengthens it.
    await refresh.upsert('gi-rt-2', { grantId: 'grant-C' }, 7200);
    expect(await redis.ttl('oidc:grant:grant-C')).toBeGreaterThan(7190);
  });
});

describe('RedisExpiringValues', () => {
  it('set, get, overwrite, delete', async () => {
    const values = new RedisExpiringValues(redis);
    expect(await values.get('kv-1')).toBeUndefined();
    await values.set('kv-1', { stage: 'password', n: 2, list: ['x'] }, 60);
    expect(await values.get('kv-1')).toEqual({ stage: 'password', n: 2, list: ['x'] });
    await values.set('kv-1', 'replaced', 60);
    expect(await values.get('kv-1')).toBe('replaced');
    await values.delete('kv-1');
    expect(await values.get('kv-1')).toBeUndefined();
    expect(await redis.exists('kv:kv-1')).toBe(0);
    await expect(values.delete('kv-1')).resolves.toBeUndefined();
  });

  it('every write carries the TTL, rounded up to whole seconds and at least one', async () => {
    const values = new RedisExpiringValues(redis);
    await values.set('kv-ttl', 1, 90);
    const ttl = await redis.ttl('kv:kv-ttl');
    expect(ttl).toBeGreaterThan(85);
    expect(ttl).toBeLessThanOrEqual(90);
    await values.set('kv-frac', 1, 2.2);
    expect(await redis.ttl('kv:kv-frac')).toBe(3);
    await values.set('kv-zero', 1, 0);
    expect(await redis.ttl('kv:kv-zero')).toBe(1);
    // An overwrite sets the new TTL.
    await values.set('kv-ttl', 2, 600);
    expect(await redis.ttl('kv:kv-ttl')).toBeGreaterThan(595);
  });

  it('a value is gone after its TTL', async () => {
    const values = new RedisExpiringValues(redis);
    await values.set('kv-short', { a: 1 }, 1);
    expect(await values.get('kv-short')).toEqual({ a: 1 });
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect(await values.get('kv-short')).toBeUndefined();
  });

  it('values are kept apart from oidc records with the same name', async () => {
    const values = new RedisExpiringValues(redis);
    const tokens = new RedisOidcAdapter(redis, 'AccessToken');
    await values.set('oidc:AccessToken:same', 'value', 60);
    await tokens.upsert('same', { kind: 'AccessToken' }, 60);
    expect(await values.get('oidc:AccessToken:same')).toBe('value');
    expect(await tokens.find('same')).toEqual({ kind: 'AccessToken' });
  });
});
