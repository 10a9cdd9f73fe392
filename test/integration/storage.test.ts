// The storage layer against real databases: one suite, run on a fresh SQLite file and on a fresh
// PostgreSQL database. Migrations, oidc-provider records, expiring values, accounts, clients, the
// audit chain (with its append-only triggers) and wrapped keys.
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { importJWK, jwtVerify, SignJWT, type JWK } from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PasswordHasher } from '../../src/accounts/passwords.ts';
import { AccountService } from '../../src/accounts/service.ts';
import { AuditLog } from '../../src/audit/log.ts';
import { digestClientSecret } from '../../src/clients/secrets.ts';
import { ClientService } from '../../src/clients/service.ts';
import { ConflictError, NotFoundError, ValidationError } from '../../src/errors.ts';
import { Keyring } from '../../src/keys/keyring.ts';
import { LocalMasterKey, MasterKeyError } from '../../src/keys/local-master-key.ts';
import { loadCookieKeys } from '../../src/keys/server-secrets.ts';
import { AccountStore } from '../../src/store/accounts.ts';
import { AuditEventStore } from '../../src/store/audit-events.ts';
import { ClientStore } from '../../src/store/clients.ts';
import { openDatabase, type Database } from '../../src/store/database.ts';
import { DatabaseAttemptCounters, RedisAttemptCounters, type AttemptCounters } from '../../src/store/attempt-counters.ts';
import { DatabaseExpiringValues } from '../../src/store/expiring-values.ts';
import { listMigrations, migrate, pendingMigrations } from '../../src/store/migrate.ts';
import { epochSeconds } from '../../src/store/oidc-adapter-types.ts';
import { DatabaseOidcAdapter, sweepExpiredRecords } from '../../src/store/oidc-records.ts';
import { ServerSecretStore } from '../../src/store/server-secrets.ts';
import { SigningKeyStore } from '../../src/store/signing-keys.ts';
import { openRedis, type Redis } from '../../src/store/redis.ts';
import { emptyDatabase, freshDatabase, freshSqlite, postgresAdminUrl, redisNamespace, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { sleep, TestClock } from '../helpers/time.ts';
import { rejection } from '../helpers/assertions.ts';

type Kind = 'sqlite' | 'postgresql';



/** Every column of every row of a table, as strings. */
async function allValues(db: Database, table: string): Promise<string[]> {
  const rows = await db.prisma.$queryRawUnsafe<Record<string, unknown>[]>(`SELECT * FROM "${table}"`);
  return rows.flatMap((row) => Object.values(row).map((v) => (v instanceof Date ? v.toISOString() : String(v))));
}

// OWASP's minimum argon2id parameters (the configuration's floor), so hashing stays fast.
const argon2Params = { memoryCost: 19456, timeCost: 2, parallelism: 1 };

describe.each(['sqlite', 'postgresql'] as const)('storage on %s', (kind) => {
  let t: TestDatabase;
  let db: Database;
  let keyDir: ReturnType<typeof tempDir>;
  let audit: AuditLog;

  beforeAll(async () => {
    t = await freshDatabase(kind);
    db = await openDatabase(t.url);
    keyDir = tempDir('idp-keyring-');
    audit = new AuditLog(new AuditEventStore(db));
  });

  afterAll(async () => {
    await audit?.flush();
    await db?.close();
    await t?.drop();
    keyDir?.remove();
  });

  describe('migrations', () => {
    it('the database is on the right provider', () => {
      expect(db.provider).toBe(kind);
      expect(t.kind).toBe(kind);
    });

    it('are idempotent: a second and third run apply nothing, nothing is pending', async () => {
      const all = listMigrations(kind).map((m) => m.name);
      expect(all.length).toBeGreaterThanOrEqual(2);
      expect(await migrate(t.url)).toEqual([]);
      expect(await migrate(t.url)).toEqual([]);
      expect(await pendingMigrations(t.url)).toEqual([]);
      const ledger = await db.prisma.$queryRawUnsafe<{ name: string; checksum: string }[]>('SELECT "name", "checksum" FROM "_idp_migrations" ORDER BY "name"');
      expect(ledger.map((r) => r.name)).toEqual(all);
      expect(ledger.map((r) => r.checksum)).toEqual(listMigrations(kind).map((m) => m.checksum));
    });

    it('on an empty database everything is pending, the first run applies all in order, the second nothing', async () => {
      const empty = await emptyDatabase(kind);
      try {
        const all = listMigrations(kind).map((m) => m.name);
        expect(all).toEqual([...all].sort());
        expect(await pendingMigrations(empty.url)).toEqual(all);
        expect(await migrate(empty.url)).toEqual(all);
        expect(await migrate(empty.url)).toEqual([]);
        expect(await pendingMigrations(empty.url)).toEqual([]);
      } finally {
        await empty.drop();
      }
    });

    it('refuses to run when an applied migration changed', async () => {
      const first = listMigrations(kind)[0]!;
      await db.prisma.$executeRawUnsafe(`UPDATE "_idp_migrations" SET "checksum" = 'tampered' WHERE "name" = '${first.name}'`);
      try {
        const error = await rejection(migrate(t.url));
        expect((error as { code?: string }).code).toBe('ERR_MIGRATION_CHANGED');
        expect(error.message).toContain(first.name);
        expect((await rejection(pendingMigrations(t.url))).message).toContain('was changed after it was applied');
      } finally {
        await db.prisma.$executeRawUnsafe(`UPDATE "_idp_migrations" SET "checksum" = '${first.checksum}' WHERE "name" = '${first.name}'`);
      }
      expect(await migrate(t.url)).toEqual([]);
    });
  });

  describe('DatabaseOidcAdapter', () => {
    const payload = (extra: Record<string, unknown> = {}) => ({ kind: 'AccessToken', accountId: 'acct-1', scope: 'openid email', exp: 1_900_000_000, ...extra });

    it('upsert then find returns the payload; a second upsert replaces it', async () => {
      const tokens = new DatabaseOidcAdapter(db.prisma, 'AccessToken');
      await tokens.upsert('at-1', payload({ grantId: 'g-upsert' }), 600);
      expect(await tokens.find('at-1')).toEqual(payload({ grantId: 'g-upsert' }));
      await tokens.upsert('at-1', payload({ grantId: 'g-upsert', scope: 'openid' }), 600);
      expect(await tokens.find('at-1')).toEqual(payload({ grantId: 'g-upsert', scope: 'openid' }));
      const rows = await db.prisma.oidcRecord.findMany({ where: { model: 'AccessToken', id: 'at-1' } });
      expect(rows).toHaveLength(1);
      expect(rows[0]!.grantId).toBe('g-upsert');
      const expires = rows[0]!.expiresAt!.getTime();
      expect(expires).toBeGreaterThan(Date.now() + 590_000);
      expect(expires).toBeLessThanOrEqual(Date.now() + 600_000);
    });

    it('find of an unknown id is undefined', async () => {
      expect(await new DatabaseOidcAdapter(db.prisma, 'AccessToken').find('no-such-id')).toBeUndefined();
    });

    it('models are separate: the same id in two models are two records', async () => {
      const codes = new DatabaseOidcAdapter(db.prisma, 'AuthorizationCode');
      const sessions = new DatabaseOidcAdapter(db.prisma, 'Session');
      await codes.upsert('shared-id', { kind: 'AuthorizationCode' }, 60);
      expect(await sessions.find('shared-id')).toBeUndefined();
      await sessions.upsert('shared-id', { kind: 'Session' }, 60);
      expect(await codes.find('shared-id')).toEqual({ kind: 'AuthorizationCode' });
      expect(await sessions.find('shared-id')).toEqual({ kind: 'Session' });
    });

    it('findByUid finds by uid within the model only', async () => {
      const sessions = new DatabaseOidcAdapter(db.prisma, 'Session');
      const interactions = new DatabaseOidcAdapter(db.prisma, 'Interaction');
      await sessions.upsert('sess-1', { kind: 'Session', uid: 'uid-abc', accountId: 'acct-1' }, 600);
      expect(await sessions.findByUid('uid-abc')).toEqual({ kind: 'Session', uid: 'uid-abc', accountId: 'acct-1' });
      expect(await sessions.findByUid('uid-other')).toBeUndefined();
      expect(await interactions.findByUid('uid-abc')).toBeUndefined();
    });

    it('findByUserCode finds by user code within the model only', async () => {
      const devices = new DatabaseOidcAdapter(db.prisma, 'DeviceCode');
      await devices.upsert('dc-1', { kind: 'DeviceCode', userCode: 'WDJB-MJHT', clientId: 'tv' }, 600);
      expect(await devices.findByUserCode('WDJB-MJHT')).toEqual({ kind: 'DeviceCode', userCode: 'WDJB-MJHT', clientId: 'tv' });
      expect(await devices.findByUserCode('XXXX-XXXX')).toBeUndefined();
      expect(await new DatabaseOidcAdapter(db.prisma, 'Session').findByUserCode('WDJB-MJHT')).toBeUndefined();
    });

    it('consume marks the record consumed (epoch seconds) and keeps it', async () => {
      const codes = new DatabaseOidcAdapter(db.prisma, 'AuthorizationCode');
      await codes.upsert('code-1', { kind: 'AuthorizationCode', grantId: 'g-code' }, 60);
      expect((await codes.find('code-1'))?.consumed).toBeUndefined();
      const before = epochSeconds();
      await codes.consume('code-1');
      const found = await codes.find('code-1');
      expect(found).toMatchObject({ kind: 'AuthorizationCode', grantId: 'g-code' });
      expect(found?.consumed).toBeGreaterThanOrEqual(before);
      expect(found?.consumed).toBeLessThanOrEqual(epochSeconds() + 1);
      // Consuming an unknown id creates nothing.
      await codes.consume('code-missing');
      expect(await codes.find('code-missing')).toBeUndefined();
      expect(await db.prisma.oidcRecord.count({ where: { model: 'AuthorizationCode', id: 'code-missing' } })).toBe(0);
    });

    it('destroy removes the record, and only that one', async () => {
      const codes = new DatabaseOidcAdapter(db.prisma, 'AuthorizationCode');
      await codes.upsert('code-d1', { n: 1 }, 60);
      await codes.upsert('code-d2', { n: 2 }, 60);
      await codes.destroy('code-d1');
      expect(await codes.find('code-d1')).toBeUndefined();
      expect(await codes.find('code-d2')).toEqual({ n: 2 });
      await expect(codes.destroy('code-d1')).resolves.toBeUndefined();
    });

    it('revokeByGrantId removes the rows of that grant in that model only', async () => {
      const access = new DatabaseOidcAdapter(db.prisma, 'AccessToken');
      const refresh = new DatabaseOidcAdapter(db.prisma, 'RefreshToken');
      await access.upsert('rv-at-1', { grantId: 'grant-A' }, 600);
      await access.upsert('rv-at-2', { grantId: 'grant-A' }, 600);
      await access.upsert('rv-at-3', { grantId: 'grant-B' }, 600);
      await access.upsert('rv-at-4', {}, 600);
      await refresh.upsert('rv-rt-1', { grantId: 'grant-A' }, 600);
      await access.revokeByGrantId('grant-A');
      expect(await access.find('rv-at-1')).toBeUndefined();
      expect(await access.find('rv-at-2')).toBeUndefined();
      expect(await access.find('rv-at-3')).toEqual({ grantId: 'grant-B' });
      expect(await access.find('rv-at-4')).toEqual({});
      expect(await refresh.find('rv-rt-1')).toEqual({ grantId: 'grant-A' });
      await refresh.revokeByGrantId('grant-A');
      expect(await refresh.find('rv-rt-1')).toBeUndefined();
    });

    it('expired rows read as missing, by id, uid and user code; sweepExpiredRecords removes them', async () => {
      const sessions = new DatabaseOidcAdapter(db.prisma, 'Session');
      const devices = new DatabaseOidcAdapter(db.prisma, 'DeviceCode');
      await sessions.upsert('exp-sess', { uid: 'exp-uid' }, 600);
      await devices.upsert('exp-dc', { userCode: 'EXPD-CODE' }, 600);
      await sessions.upsert('live-sess', { uid: 'live-uid' }, 600);
      await sessions.upsert('forever-sess', { uid: 'forever-uid' }, 0);
      const past = new Date(Date.now() - 1000);
      await db.prisma.oidcRecord.updateMany({ where: { id: { in: ['exp-sess', 'exp-dc'] } }, data: { expiresAt: past } });

      expect(await sessions.find('exp-sess')).toBeUndefined();
      expect(await sessions.findByUid('exp-uid')).toBeUndefined();
      expect(await devices.find('exp-dc')).toBeUndefined();
      expect(await devices.findByUserCode('EXPD-CODE')).toBeUndefined();
      expect(await sessions.find('live-sess')).toEqual({ uid: 'live-uid' });
      // expiresIn 0: no expiry at all.
      expect((await db.prisma.oidcRecord.findUniqueOrThrow({ where: { model_id: { model: 'Session', id: 'forever-sess' } } })).expiresAt).toBeNull();

      const expiredValues = new DatabaseExpiringValues(db.prisma);
      await expiredValues.set('sweep-me', { a: 1 }, 600);
      await db.prisma.expiringValue.update({ where: { key: 'sweep-me' }, data: { expiresAt: past } });
      const totalExpired = (await db.prisma.oidcRecord.count({ where: { expiresAt: { lte: new Date() } } })) + (await db.prisma.expiringValue.count({ where: { expiresAt: { lte: new Date() } } }));
      expect(totalExpired).toBeGreaterThanOrEqual(3);

      expect(await sweepExpiredRecords(db.prisma)).toBe(totalExpired);
      expect(await db.prisma.oidcRecord.count({ where: { id: { in: ['exp-sess', 'exp-dc'] } } })).toBe(0);
      expect(await db.prisma.expiringValue.count({ where: { key: 'sweep-me' } })).toBe(0);
      expect(await sessions.find('live-sess')).toEqual({ uid: 'live-uid' });
      expect(await sessions.findByUid('forever-uid')).toEqual({ uid: 'forever-uid' });
      expect(await sweepExpiredRecords(db.prisma)).toBe(0);
    });

    it('sweepExpiredRecords removes mailed-link rows a day past expiry and expired remembered devices, nothing live', async () => {
      const hour = 3600_000;
      await db.prisma.accountToken.createMany({ data: [
        { hash: 'old-token', accountId: 'a1', purpose: 'password_reset', expiresAt: new Date(Date.now() - 25 * hour) },
        // Expired an hour ago: still counted by the hourly mail limit, so kept.
        { hash: 'recent-token', accountId: 'a1', purpose: 'password_reset', expiresAt: new Date(Date.now() - hour) },
        { hash: 'live-token', accountId: 'a1', purpose: 'verify_email', expiresAt: new Date(Date.now() + hour) },
      ] });
      await db.prisma.trustedDevice.createMany({ data: [
        { hash: 'old-device', accountId: 'a1', expiresAt: new Date(Date.now() - 1000) },
        { hash: 'live-device', accountId: 'a1', expiresAt: new Date(Date.now() + hour) },
      ] });
      expect(await sweepExpiredRecords(db.prisma)).toBe(2);
      expect((await db.prisma.accountToken.findMany({ orderBy: { hash: 'asc' } })).map((t) => t.hash)).toEqual(['live-token', 'recent-token']);
      expect((await db.prisma.trustedDevice.findMany()).map((d) => d.hash)).toEqual(['live-device']);
    });
  });

  describe('DatabaseExpiringValues', () => {
    it('set, get, overwrite, delete', async () => {
      const values = new DatabaseExpiringValues(db.prisma);
      expect(await values.get('kv-1')).toBeUndefined();
      await values.set('kv-1', { stage: 'identify', n: 1, list: ['a'] }, 60);
      expect(await values.get('kv-1')).toEqual({ stage: 'identify', n: 1, list: ['a'] });
      await values.set('kv-1', 'replaced', 60);
      expect(await values.get('kv-1')).toBe('replaced');
      await values.delete('kv-1');
      expect(await values.get('kv-1')).toBeUndefined();
      await expect(values.delete('kv-1')).resolves.toBeUndefined();
    });

    it('stores the expiry from the TTL, and a write renews it', async () => {
      const values = new DatabaseExpiringValues(db.prisma);
      await values.set('kv-ttl', 1, 30);
      const first = (await db.prisma.expiringValue.findUniqueOrThrow({ where: { key: 'kv-ttl' } })).expiresAt.getTime();
      expect(first).toBeGreaterThan(Date.now() + 25_000);
      expect(first).toBeLessThanOrEqual(Date.now() + 30_000);
      await values.set('kv-ttl', 2, 3600);
      const second = (await db.prisma.expiringValue.findUniqueOrThrow({ where: { key: 'kv-ttl' } })).expiresAt.getTime();
      expect(second).toBeGreaterThan(Date.now() + 3_590_000);
    });

    it('an expired value reads as missing', async () => {
      const values = new DatabaseExpiringValues(db.prisma);
      await values.set('kv-exp', { secret: false }, 60);
      await db.prisma.expiringValue.update({ where: { key: 'kv-exp' }, data: { expiresAt: new Date(Date.now() - 1) } });
      expect(await values.get('kv-exp')).toBeUndefined();
      // A fresh write brings it back.
      await values.set('kv-exp', { secret: true }, 60);
      expect(await values.get('kv-exp')).toEqual({ secret: true });
    });

    it('a value with a sub-second TTL expires', async () => {
      const values = new DatabaseExpiringValues(db.prisma);
      await values.set('kv-short', 'x', 0.05);
      await new Promise((resolve) => setTimeout(resolve, 80));
      expect(await values.get('kv-short')).toBeUndefined();
    });
  });

  describe('accounts', () => {
    const password = 'a long enough passphrase';
    let store: AccountStore;
    let accounts: AccountService;

    beforeAll(() => {
      store = new AccountStore(db.prisma);
      accounts = new AccountService(store, new PasswordHasher(argon2Params));
    });

    it('takes about as long for an unknown account as for a wrong password (argon2 runs on a dummy hash)', async () => {
      await accounts.create({ email: 'timing@example.com', password: 'constant effort 42' });
      const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
      const time = async (email: string) => {
        const start = performance.now();
        const result = await accounts.authenticate(email, 'not the password 1');
        expect(result.ok).toBe(false);
        return performance.now() - start;
      };
      const unknown: number[] = [];
      const wrong: number[] = [];
      // Interleaved, so load on the machine falls on both alike.
      for (let i = 0; i < 9; i++) {
        unknown.push(await time(`nobody-${i}@example.com`));
        wrong.push(await time('timing@example.com'));
      }
      const ratio = median(unknown) / median(wrong);
      expect(ratio, `unknown ${median(unknown).toFixed(1)} ms vs wrong ${median(wrong).toFixed(1)} ms`).toBeGreaterThan(0.6);
      expect(ratio).toBeLessThan(1.6);
    });

    it('create normalises the email to lower case and stores only an argon2id hash', async () => {
      const account = await accounts.create({ email: '  Alice.Example@Example.COM ', password, name: '  Alice  ' });
      expect(account.email).toBe('alice.example@example.com');
      expect(account.name).toBe('Alice');
      expect(account.status).toBe('active');
      expect(account.emailVerified).toBe(false);
      expect(account.passwordHash).toMatch(/^\$argon2id\$v=19\$m=19456,p=1,t=2\$/);
      const stored = await allValues(db, 'Account');
      for (const value of stored) expect(value).not.toContain(password);
      expect(await store.findByEmail('alice.example@example.com')).toMatchObject({ id: account.id });
    });

    it('authenticate: the right password, whatever the case of the email', async () => {
      const result = await accounts.authenticate('ALICE.example@example.com', password);
      expect(result.ok).toBe(true);
      expect(result.ok && result.account.email).toBe('alice.example@example.com');
    });

    it('authenticate: a wrong password and an unknown email fail with the same shape', async () => {
      const wrong = await accounts.authenticate('alice.example@example.com', 'not the passphrase at all');
      const unknown = await accounts.authenticate('nobody@example.com', password);
      expect(wrong).toEqual({ ok: false, reason: 'wrong_password' });
      expect(unknown).toEqual({ ok: false, reason: 'unknown_account' });
      expect(Object.keys(wrong).sort()).toEqual(Object.keys(unknown).sort());
      expect(await accounts.authenticate('not-an-email', password)).toEqual({ ok: false, reason: 'unknown_account' });
      expect(await accounts.authenticate('alice.example@example.com', 'x'.repeat(5000))).toEqual({ ok: false, reason: 'wrong_password' });
    });

    it('authenticate: an inactive account is refused with the right password, and a wrong one tells nothing more', async () => {
      const account = await accounts.create({ email: 'inactive@example.com', password });
      await db.prisma.account.update({ where: { id: account.id }, data: { status: 'disabled' } });
      expect(await accounts.authenticate('inactive@example.com', password)).toEqual({ ok: false, reason: 'disabled' });
      expect(await accounts.authenticate('inactive@example.com', 'another wrong passphrase')).toEqual({ ok: false, reason: 'wrong_password' });
    });

    it('authenticate: an account without a password cannot sign in', async () => {
      await db.prisma.account.create({ data: { id: randomUUID(), email: 'federated@example.com', passwordHash: null } });
      expect(await accounts.authenticate('federated@example.com', password)).toEqual({ ok: false, reason: 'no_password' });
    });

    it('a duplicate email, in any case, is a ConflictError', async () => {
      await expect(accounts.create({ email: 'alice.example@example.com', password })).rejects.toBeInstanceOf(ConflictError);
      await expect(accounts.create({ email: 'ALICE.EXAMPLE@EXAMPLE.COM', password })).rejects.toThrow(/exists/);
      expect(await db.prisma.account.count({ where: { email: 'alice.example@example.com' } })).toBe(1);
    });

    it('two concurrent creates with the same email: one account, and the other gets a ConflictError', async () => {
      const results = await Promise.allSettled([
        accounts.create({ email: 'race@example.com', password }),
        accounts.create({ email: 'Race@Example.com', password }),
      ]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const failure = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
      expect(failure?.reason).toBeInstanceOf(ConflictError);
      expect(await db.prisma.account.count({ where: { email: 'race@example.com' } })).toBe(1);
    });

    it('refuses invalid input', async () => {
      await expect(accounts.create({ email: 'no-at-sign', password })).rejects.toBeInstanceOf(ValidationError);
      await expect(accounts.create({ email: 'short@example.com', password: 'short' })).rejects.toThrow(/at least 12/);
      expect(await store.findByEmail('short@example.com')).toBeNull();
    });

    it('a hash made with weaker parameters is upgraded at the next good sign-in', async () => {
      const account = await accounts.create({ email: 'rehash@example.com', password });
      const stronger = new AccountService(store, new PasswordHasher({ ...argon2Params, timeCost: 3 }));
      expect((await stronger.authenticate('rehash@example.com', password)).ok).toBe(true);
      const after = await store.findById(account.id);
      expect(after?.passwordHash).toMatch(/^\$argon2id\$v=19\$m=19456,p=1,t=3\$/);
      expect((await stronger.authenticate('rehash@example.com', password)).ok).toBe(true);
    });
  });

  describe('clients', () => {
    let clients: ClientService;
    const validated: Record<string, unknown>[] = [];

    beforeAll(() => {
      clients = new ClientService(new ClientStore(db.prisma), async (metadata) => {
        validated.push(metadata);
      });
    });

    it('returns the generated secret once and stores only its digest', async () => {
      const created = await clients.create({ client_id: 'webapp', redirect_uris: ['https://app.example.com/cb'], client_name: 'Web App' });
      const secret = created.clientSecret!;
      expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(created.metadata).toMatchObject({ client_id: 'webapp', redirect_uris: ['https://app.example.com/cb'] });
      expect(created.metadata).not.toHaveProperty('client_secret');
      expect(JSON.stringify(created.metadata)).not.toContain(secret);

      // The validator saw the digest, never the secret.
      expect(validated.at(-1)?.client_secret).toBe(digestClientSecret(secret));

      const row = await db.prisma.client.findUniqueOrThrow({ where: { id: 'webapp' } });
      expect(row.secretHash).toBe(digestClientSecret(secret));
      for (const value of await allValues(db, 'Client')) expect(value).not.toContain(secret);

      // Later reads never give the secret back.
      const listed = await clients.list();
      expect(JSON.stringify(listed)).not.toContain(secret);
      const forProvider = await clients.findForProvider('webapp');
      expect(forProvider?.client_secret).toBe(digestClientSecret(secret));
    });

    it('a client without a secret (none) stores no digest', async () => {
      const created = await clients.create({ client_id: 'spa', redirect_uris: ['http://localhost:8080/cb'], token_endpoint_auth_method: 'none' });
      expect(created.clientSecret).toBeUndefined();
      expect((await db.prisma.client.findUniqueOrThrow({ where: { id: 'spa' } })).secretHash).toBeNull();
      expect(await clients.findForProvider('spa')).not.toHaveProperty('client_secret');
    });

    it('a machine client gets no redirect URIs or response types', async () => {
      const created = await clients.create({ client_id: 'machine', grant_types: ['client_credentials'] });
      expect(created.metadata).toMatchObject({ redirect_uris: [], response_types: [], grant_types: ['client_credentials'] });
      expect(created.clientSecret).toBeDefined();
    });

    it('generates a client_id when none is given', async () => {
      const created = await clients.create({ redirect_uris: ['https://gen.example.com/cb'] });
      expect(created.metadata.client_id).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect(await clients.findForProvider(created.metadata.client_id)).toBeDefined();
    });

    it('a duplicate client_id is a ConflictError and leaves the first client as it was', async () => {
      const before = await db.prisma.client.findUniqueOrThrow({ where: { id: 'webapp' } });
      const error = await rejection(clients.create({ client_id: 'webapp', redirect_uris: ['https://other.example.com/cb'] }));
      expect(error).toBeInstanceOf(ConflictError);
      expect(error.message).toBe('client webapp exists');
      expect(await db.prisma.client.findUniqueOrThrow({ where: { id: 'webapp' } })).toEqual(before);
    });

    it('two concurrent creates with the same client_id: one client, and the other gets a ConflictError', async () => {
      const results = await Promise.allSettled([
        clients.create({ client_id: 'raced', grant_types: ['client_credentials'] }),
        clients.create({ client_id: 'raced', grant_types: ['client_credentials'] }),
      ]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const failure = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
      expect(failure?.reason).toBeInstanceOf(ConflictError);
      expect(await db.prisma.client.count({ where: { id: 'raced' } })).toBe(1);
    });

    it('refuses invalid input before storing anything', async () => {
      await expect(clients.create({ client_id: 'bad id with spaces', redirect_uris: ['https://x.example.com/cb'] })).rejects.toBeInstanceOf(ValidationError);
      await expect(clients.create({ client_id: 'has-secret', client_secret: 'mine' })).rejects.toBeInstanceOf(ValidationError);
      await expect(clients.create(['not', 'an', 'object'])).rejects.toBeInstanceOf(ValidationError);
      const failing = new ClientService(new ClientStore(db.prisma), async () => {
        throw Object.assign(new Error('invalid_client_metadata'), { error_description: 'grant_types must be an array' });
      });
      await expect(failing.create({ client_id: 'rejected-by-schema' })).rejects.toThrow('invalid client metadata: grant_types must be an array');
      expect(await db.prisma.client.count({ where: { id: { in: ['bad id with spaces', 'has-secret', 'rejected-by-schema'] } } })).toBe(0);
    });

    it('delete removes a client; deleting an unknown one is a NotFoundError', async () => {
      await clients.create({ client_id: 'to-delete', grant_types: ['client_credentials'] });
      await clients.delete('to-delete');
      expect(await clients.findForProvider('to-delete')).toBeUndefined();
      const error = await rejection(clients.delete('to-delete'));
      expect(error).toBeInstanceOf(NotFoundError);
      expect(error.message).toBe('no client to-delete');
      await expect(clients.delete('never-existed')).rejects.toBeInstanceOf(NotFoundError);
    });
  });

  describe('keys and server secrets', () => {
    let kms: LocalMasterKey;
    let keys: SigningKeyStore;
    let kid: string;

    beforeAll(() => {
      kms = LocalMasterKey.load(join(keyDir.path, 'master.key'), { create: true });
      keys = new SigningKeyStore(db);
    });

    it('two concurrent ensureActiveKey calls on an empty table leave exactly one active key', async () => {
      expect(await keys.findActive('RS256')).toBeNull();
      const [a, b] = await Promise.all([new Keyring(keys, kms, audit).ensureActiveKey(), new Keyring(keys, kms, audit).ensureActiveKey()]);
      expect(a).toBe(b);
      kid = a;
      const rows = await db.prisma.signingKey.findMany();
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ kid, alg: 'RS256', state: 'active', activeFor: 'RS256' });
      await audit.flush();
      const generated = await db.prisma.auditEvent.findMany({ where: { type: 'key.generated' } });
      expect(generated).toHaveLength(1);
      expect(JSON.parse(generated[0]!.details)).toEqual({ kid, alg: 'RS256', kms: 'local' });
    });

    it('ensureActiveKey again returns the same kid and creates nothing', async () => {
      const keyring = new Keyring(keys, kms, audit);
      expect(await keyring.ensureActiveKey()).toBe(kid);
      expect(await keyring.ensureActiveKey('RS256')).toBe(kid);
      expect(await db.prisma.signingKey.count()).toBe(1);
    });

    it('refuses to generate keys for an algorithm it has no key type for', async () => {
      await expect(new Keyring(keys, kms, audit).ensureActiveKey('HS256')).rejects.toThrow(/no key type for signing algorithm HS256/);
      expect(await db.prisma.signingKey.count()).toBe(1);
    });

    it('privateJwks returns the private RSA JWK, matching the stored public key, able to sign', async () => {
      const { keys: jwks } = await new Keyring(keys, kms, audit).privateJwks();
      expect(jwks).toHaveLength(1);
      const jwk = jwks[0]!;
      expect(jwk).toMatchObject({ kty: 'RSA', kid, alg: 'RS256', use: 'sig', e: 'AQAB' });
      for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi'] as const) expect(typeof jwk[member]).toBe('string');
      const row = await db.prisma.signingKey.findUniqueOrThrow({ where: { kid } });
      const publicJwk = JSON.parse(row.publicJwk) as JWK;
      expect(publicJwk).toEqual({ kty: 'RSA', n: jwk.n, e: jwk.e, kid, alg: 'RS256', use: 'sig' });
      const token = await new SignJWT({ sub: 'x' }).setProtectedHeader({ alg: 'RS256', kid }).sign(await importJWK(jwk, 'RS256'));
      const verified = await jwtVerify(token, await importJWK(publicJwk, 'RS256'));
      expect(verified.payload.sub).toBe('x');
    });

    it('another master key cannot unwrap the stored key', async () => {
      const other = LocalMasterKey.load(join(keyDir.path, 'other', 'master.key'), { create: true });
      expect(await rejection(new Keyring(keys, other, audit).privateJwks())).toBeInstanceOf(MasterKeyError);
    });

    it('loadCookieKeys: concurrent first calls agree, and a second call returns the same keys', async () => {
      const store = new ServerSecretStore(db.prisma);
      const [a, b] = await Promise.all([loadCookieKeys(store, kms), loadCookieKeys(new ServerSecretStore(db.prisma), kms)]);
      expect(a).toEqual(b);
      expect(a).toHaveLength(1);
      expect(a[0]).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(await loadCookieKeys(store, kms)).toEqual(a);
      const rows = await db.prisma.serverSecret.findMany();
      expect(rows.map((r) => r.name)).toEqual(['cookie-keys']);
      for (const value of await allValues(db, 'ServerSecret')) expect(value).not.toContain(a[0]!);
      await expect(loadCookieKeys(store, LocalMasterKey.load(join(keyDir.path, 'other', 'master.key'), { create: false }))).rejects.toBeInstanceOf(MasterKeyError);
    });

    it('no stored row holds private key material', async () => {
      const { keys: jwks } = await new Keyring(keys, kms, audit).privateJwks();
      const jwk = jwks[0]!;
      await audit.flush();
      const privateValues = (['d', 'p', 'q', 'dp', 'dq', 'qi'] as const).map((m) => jwk[m]!);
      for (const table of ['SigningKey', 'ServerSecret', 'AuditEvent']) {
        const values = await allValues(db, table);
        expect(values.length).toBeGreaterThan(0);
        for (const value of values) {
          expect(value).not.toContain('"d":');
          for (const secret of privateValues) expect(value).not.toContain(secret);
        }
      }
    });
  });

  // Last: the tamper test breaks the chain of this database on purpose.
  describe('audit log', () => {
    it('50 concurrent record() calls are all committed, in one intact chain', async () => {
      await audit.flush();
      const before = await db.prisma.auditEvent.count();
      const marker = randomBytes(4).toString('hex');
      await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          audit.record({ type: 'client.created', outcome: i % 5 ? 'success' : 'failure', actor: 'vitest', subject: `s-${i}`, details: { marker, i } }),
        ),
      );
      const rows = await db.prisma.auditEvent.findMany({ where: { type: 'client.created' }, orderBy: { seq: 'asc' } });
      expect(rows).toHaveLength(50);
      expect(rows.map((r) => (JSON.parse(r.details) as { i: number }).i).sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i));
      expect(await db.prisma.auditEvent.count()).toBe(before + 50);
      const total = await db.prisma.auditEvent.count();
      expect(await audit.verify()).toEqual({ ok: true, rows: total });
      // Each row links to the one before it.
      const all = await db.prisma.auditEvent.findMany({ orderBy: { seq: 'asc' } });
      for (let i = 1; i < all.length; i++) expect(all[i]!.prevHash).toBe(all[i - 1]!.hash);
    });

    it('two writers (two connections, as two nodes) chain onto each other without forking', async () => {
      const second = await openDatabase(t.url);
      try {
        const otherLog = new AuditLog(new AuditEventStore(second));
        for (let round = 0; round < 5; round++) {
          await audit.record({ type: 'client.deleted', outcome: 'success', details: { writer: 'a', round } });
          await otherLog.record({ type: 'client.deleted', outcome: 'success', details: { writer: 'b', round } });
        }
        expect(await db.prisma.auditEvent.count({ where: { type: 'client.deleted' } })).toBe(10);
        expect(await otherLog.verify()).toMatchObject({ ok: true });
      } finally {
        await second.close();
      }
    });

    it('UPDATE, DELETE on "AuditEvent" are refused by triggers', async () => {
      const first = await db.prisma.auditEvent.findFirstOrThrow({ orderBy: { seq: 'asc' } });
      await expect(db.prisma.$executeRawUnsafe(`UPDATE "AuditEvent" SET "outcome" = 'failure' WHERE "seq" = ${first.seq}`)).rejects.toThrow(/append-only/);
      await expect(db.prisma.$executeRawUnsafe(`DELETE FROM "AuditEvent" WHERE "seq" = ${first.seq}`)).rejects.toThrow(/append-only/);
      await expect(db.prisma.auditEvent.deleteMany({})).rejects.toThrow(/append-only/);
      expect(await db.prisma.auditEvent.findUniqueOrThrow({ where: { seq: first.seq } })).toEqual(first);
      expect(await audit.verify()).toMatchObject({ ok: true });
    });

    it('with the triggers out of the way, a changed row is reported at its seq', async () => {
      const rows = await db.prisma.auditEvent.findMany({ where: { type: 'client.created' }, orderBy: { seq: 'asc' } });
      const target = rows[10]!;
      const flipped = target.outcome === 'success' ? 'failure' : 'success';
      if (kind === 'postgresql') await db.prisma.$executeRawUnsafe('ALTER TABLE "AuditEvent" DISABLE TRIGGER USER');
      else await db.prisma.$executeRawUnsafe('DROP TRIGGER audit_event_no_update');
      expect(await db.prisma.$executeRawUnsafe(`UPDATE "AuditEvent" SET "outcome" = '${flipped}' WHERE "seq" = ${target.seq}`)).toBe(1);
      const result = await audit.verify();
      expect(result).toMatchObject({ ok: false, seq: target.seq });
      expect(result.ok || result.reason).toMatch(/row was changed/);
    });
  });
});

describe('PostgreSQL: two nodes migrating at once', () => {
  it('apply each migration exactly once', async () => {
    const empty = await emptyDatabase('postgresql');
    try {
      const [a, b] = await Promise.all([migrate(empty.url), migrate(empty.url)]);
      expect([...a, ...b].sort()).toEqual(listMigrations('postgresql').map((m) => m.name));
      expect(await pendingMigrations(empty.url)).toEqual([]);
    } finally {
      await empty.drop();
    }
  });
});

describe('SQLite connection settings', () => {
  let t: TestDatabase;
  let db: Database;
  beforeAll(async () => {
    t = await freshSqlite();
    db = await openDatabase(t.url);
  });
  afterAll(async () => {
    await db?.close();
    await t?.drop();
  });

  const pragma = async (name: string) => Object.values((await db.prisma.$queryRawUnsafe<Record<string, unknown>[]>(`PRAGMA ${name}`))[0]!)[0];

  it('openDatabase sets WAL, busy_timeout and synchronous=NORMAL', async () => {
    expect(await pragma('journal_mode')).toBe('wal');
    expect(Number(await pragma('busy_timeout'))).toBe(5000);
    expect(Number(await pragma('synchronous'))).toBe(1);
  });

  it('keeps busy_timeout and synchronous after an interactive transaction (as the audit log runs one per batch)', async () => {
    await new AuditLog(new AuditEventStore(db)).record({ type: 'user.created', outcome: 'success' });
    expect(Number(await pragma('busy_timeout'))).toBe(5000);
    expect(Number(await pragma('synchronous'))).toBe(1);
  });
});

// Both kinds of counters on one contract, judged by an injected clock: windows end when the
// clock says so, so these move time instead of sleeping (only the sweeper reads real time).
describe.each(['sqlite', 'postgresql', 'redis'] as const)('attempt counters on %s', (kind) => {
  let database: TestDatabase | undefined;
  let db: Database | undefined;
  let redis: Redis | undefined;
  let namespace: Awaited<ReturnType<typeof redisNamespace>> | undefined;
  const clock = new TestClock();
  let counters: AttemptCounters;
  beforeAll(async () => {
    if (kind === 'redis') {
      namespace = await redisNamespace();
      redis = openRedis(namespace.url, namespace.prefix);
      counters = new RedisAttemptCounters(redis, clock);
    } else {
      database = await freshDatabase(kind);
      db = await openDatabase(database.url);
      counters = new DatabaseAttemptCounters(db, clock);
    }
  });
  afterAll(async () => {
    await namespace?.clear();
    redis?.disconnect();
    await db?.close();
    await database?.drop();
  });

  it('counts 50 parallel hits exactly, each getting a distinct count', async () => {
    const counts = await Promise.all(Array.from({ length: 50 }, () => counters.hit('parallel', 60)));
    expect(counts.sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(await counters.peek('parallel')).toBe(50);
  });

  it('starts a new window once the clock passes the old one; extend and reset work', async () => {
    expect(await counters.hit('window', 1)).toBe(1);
    expect(await counters.hit('window', 1)).toBe(2);
    clock.advance(1100);
    expect(await counters.peek('window')).toBe(0);
    expect(await counters.hit('window', 1)).toBe(1);
    await counters.extend('window', 60);
    clock.advance(1100);
    expect(await counters.peek('window')).toBe(1);
    expect(await counters.hit('window', 1)).toBe(2);
    clock.advance(60_000);
    expect(await counters.peek('window')).toBe(0);
    await counters.hit('window', 1);
    await counters.reset('window');
    expect(await counters.peek('window')).toBe(0);
    await counters.extend('never-hit', 60);
    expect(await counters.peek('never-hit')).toBe(0);
  });

  // Each backend's own part, declared only where it applies (nothing is reported as skipped).
  if (kind !== 'redis') it('the sweeper removes counters whose window ended in real time', async () => {
    await new DatabaseAttemptCounters(db!).hit('stale', 1);
    await sleep(1100);
    await sweepExpiredRecords(db!.prisma);
    expect(await db!.prisma.attemptCounter.count({ where: { key: 'stale' } })).toBe(0);
  });

  if (kind === 'redis') it('Redis collects a counter after its window, and shares the counts of an earlier version during an upgrade', async () => {
    await counters.hit('collected', 60);
    expect(await redis!.pttl('count:collected')).toBeGreaterThan(59_000);
    expect(await redis!.pttl('count-end:collected')).toBeGreaterThan(59_000);
    // A count an earlier version wrote (INCR with EXPIRE, no end key): this version goes on
    // counting it within its window, and an earlier version reading the key sees the new counts.
    await redis!.set('count:legacy', '7', 'EX', 60);
    expect(await counters.peek('legacy')).toBe(7);
    expect(await counters.hit('legacy', 60)).toBe(8);
    expect(await redis!.incr('count:legacy')).toBe(9);
    expect(await counters.peek('legacy')).toBe(9);
    clock.advance(61_000);
    expect(await counters.peek('legacy')).toBe(0);
    expect(await counters.hit('legacy', 60)).toBe(1);
  });
});
