// The stores' plain-SQL paths (Database.sql) against real databases, on a fresh SQLite file and a
// fresh PostgreSQL database: the runner itself, rows written by plain SQL and read by Prisma (and
// the reverse) compared value for value and in their stored form, and the conditional writes
// under N parallel callers, of which exactly one wins. The process runs in a time zone far from
// UTC, so a date read or written in local time shows.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccountStore } from '../../src/store/accounts.ts';
import { DatabaseAttemptCounters } from '../../src/store/attempt-counters.ts';
import { BackupCodeStore } from '../../src/store/backup-codes.ts';
import { ClientStore } from '../../src/store/clients.ts';
import { ConsentStore } from '../../src/store/consents.ts';
import { databaseOf, numberedPlaceholders, openDatabase, readDate, type Database } from '../../src/store/database.ts';
import { DatabaseExpiringValues } from '../../src/store/expiring-values.ts';
import { MfaFactorStore } from '../../src/store/mfa-factors.ts';
import { epochSeconds } from '../../src/store/oidc-adapter-types.ts';
import { DatabaseOidcAdapter } from '../../src/store/oidc-records.ts';
import { rateLimiter } from '../../src/store/rate-limits.ts';
import { TrustedDeviceStore } from '../../src/store/trusted-devices.ts';
import { UserSessionStore } from '../../src/store/user-sessions.ts';
import { WebAuthnCredentialStore } from '../../src/store/webauthn-credentials.ts';
import { freshDatabase, type TestDatabase } from '../helpers/databases.ts';
import { sleep } from '../helpers/time.ts';

const parallel = 20;
const hour = 3_600_000;
// A time with milliseconds, so a lost or shifted millisecond or hour shows.
const sample = new Date(Date.UTC(2031, 2, 30, 1, 30, 45, 678));

describe('numberedPlaceholders', () => {
  it('numbers ? outside quotes only', () => {
    expect(numberedPlaceholders(`SELECT "a?" FROM "t" WHERE "x" = ? AND "y" = '?' AND "z" IN (?, ?)`)).toBe(`SELECT "a?" FROM "t" WHERE "x" = $1 AND "y" = '?' AND "z" IN ($2, $3)`);
  });
});

describe('readDate', () => {
  it('reads Prisma text, SQLite CURRENT_TIMESTAMP text, epoch ms and Dates as UTC', () => {
    expect(readDate('2031-03-30T01:30:45.678+00:00')).toEqual(sample);
    expect(readDate('2031-03-30 01:30:45')).toEqual(new Date(Date.UTC(2031, 2, 30, 1, 30, 45)));
    expect(readDate(sample.getTime())).toEqual(sample);
    expect(readDate(sample)).toBe(sample);
  });
});

describe.each(['sqlite', 'postgresql'] as const)('plain-SQL stores on %s', (kind) => {
  let t: TestDatabase;
  let db: Database;
  let tz: string | undefined;

  beforeAll(async () => {
    tz = process.env.TZ;
    // +13:45 in (southern) summer: any local-time handling shifts dates by hours and minutes.
    process.env.TZ = 'Pacific/Chatham';
    t = await freshDatabase(kind);
    db = await openDatabase(t.url);
  });

  afterAll(async () => {
    await db?.close();
    await t?.drop();
    if (tz === undefined) delete process.env.TZ;
    else process.env.TZ = tz;
  });

  /** The stored form of a column: SQLite's type and text, PostgreSQL's text output. */
  async function stored(table: string, column: string, where: string, args: unknown[]): Promise<string> {
    const cast = kind === 'sqlite' ? `typeof("${column}") || ':' || CAST("${column}" AS TEXT)` : `"${column}"::text`;
    const p = kind === 'sqlite' ? args.map(() => '?') : args.map((_, i) => `$${i + 1}`);
    const rows = await db.prisma.$queryRawUnsafe<{ v: string | null }[]>(`SELECT ${cast} AS "v" FROM "${table}" WHERE ${where.replace(/\?/g, () => p.shift()!)}`, ...args);
    return String(rows[0]?.v);
  }

  describe('the runner', () => {
    it('runs on the process local zone far from UTC', () => {
      expect(new Date(0).getTimezoneOffset()).not.toBe(0);
    });

    it('query gives rows by column name, run the rows changed', async () => {
      await db.sql.run('INSERT INTO "ExpiringValue" ("key", "value", "expiresAt") VALUES (?, ?, ?)', ['runner-1', 'one', sample]);
      await db.sql.run('INSERT INTO "ExpiringValue" ("key", "value", "expiresAt") VALUES (?, ?, ?)', ['runner-2', 'two', sample]);
      const rows = await db.sql.query<{ key: string; value: string }>(`SELECT "key", "value" FROM "ExpiringValue" WHERE "key" LIKE 'runner-%' AND "value" <> '?' ORDER BY "key"`);
      expect(rows).toEqual([{ key: 'runner-1', value: 'one' }, { key: 'runner-2', value: 'two' }]);
      expect(await db.sql.run('UPDATE "ExpiringValue" SET "value" = ? WHERE "key" LIKE ?', ['x', 'runner-%'])).toBe(2);
      expect(await db.sql.run('DELETE FROM "ExpiringValue" WHERE "key" = ?', ['runner-none'])).toBe(0);
      expect(await db.sql.query('SELECT count(*) AS "n" FROM "ExpiringValue" WHERE "key" LIKE ?', ['runner-%'])).toEqual([{ n: 2 }]);
    });

    it('a date written by the runner is the one Prisma writes, and each reads the other exactly', async () => {
      await db.sql.run('INSERT INTO "ExpiringValue" ("key", "value", "expiresAt") VALUES (?, ?, ?)', ['date-raw', 'r', sample]);
      await db.prisma.expiringValue.create({ data: { key: 'date-prisma', value: 'p', expiresAt: sample } });
      expect(await stored('ExpiringValue', 'expiresAt', '"key" = ?', ['date-raw'])).toBe(await stored('ExpiringValue', 'expiresAt', '"key" = ?', ['date-prisma']));
      expect((await db.prisma.expiringValue.findUniqueOrThrow({ where: { key: 'date-raw' } })).expiresAt).toEqual(sample);
      const [row] = await db.sql.query<{ expiresAt: unknown }>('SELECT "expiresAt" FROM "ExpiringValue" WHERE "key" = ?', ['date-prisma']);
      expect(readDate(row!.expiresAt)).toEqual(sample);
      // Compared in the database, against a bound date: the row written by Prisma matches exactly.
      expect(await db.sql.query(`SELECT "key" FROM "ExpiringValue" WHERE "expiresAt" = ? AND "key" LIKE 'date-%' ORDER BY "key"`, [sample])).toEqual([{ key: 'date-prisma' }, { key: 'date-raw' }]);
    });

    it('a boolean written by the runner is the one Prisma writes', async () => {
      const a = randomUUID();
      const b = randomUUID();
      await db.prisma.account.create({ data: { id: a, email: `${a}@example.com`, emailVerified: true } });
      await db.prisma.account.create({ data: { id: b, email: `${b}@example.com` } });
      expect(await db.sql.run('UPDATE "Account" SET "emailVerified" = ? WHERE "id" = ?', [true, b])).toBe(1);
      expect(await stored('Account', 'emailVerified', '"id" = ?', [b])).toBe(await stored('Account', 'emailVerified', '"id" = ?', [a]));
      expect((await db.prisma.account.findUniqueOrThrow({ where: { id: b } })).emailVerified).toBe(true);
    });

    it('a unique violation is one for isUniqueViolation', async () => {
      const { isUniqueViolation } = await import('../../src/store/database.ts');
      await db.sql.run('INSERT INTO "ExpiringValue" ("key", "value", "expiresAt") VALUES (?, ?, ?)', ['unique-1', 'a', sample]);
      const error = await db.sql.run('INSERT INTO "ExpiringValue" ("key", "value", "expiresAt") VALUES (?, ?, ?)', ['unique-1', 'b', sample]).then(() => undefined, (e: unknown) => e);
      expect(isUniqueViolation(error)).toBe(true);
    });

    it('a statement and the same text through Prisma keep their own shapes; many distinct statements stay correct', async () => {
      for (let i = 0; i < 3; i++) {
        expect(await db.sql.query('SELECT 1 AS "x"')).toEqual([{ x: 1 }]);
        expect((await db.prisma.$queryRawUnsafe<{ x: unknown }[]>('SELECT 1 AS "x"')).map((row) => Number(row.x))).toEqual([1]);
      }
      // More distinct texts than the statement caches hold.
      for (let i = 0; i < 260; i++) expect(await db.sql.query(`SELECT ${i} AS "n", ? AS "s"`, [`s${i}`])).toEqual([{ n: i, s: `s${i}` }]);
      for (let i = 0; i < 260; i += 37) expect(await db.sql.query(`SELECT ${i} AS "n", ? AS "s"`, [`again${i}`])).toEqual([{ n: i, s: `again${i}` }]);
    });

    it('a statement issued during a Prisma transaction waits for it and is not rolled back with it', async () => {
      let entered!: () => void;
      const inside = new Promise<void>((resolve) => (entered = resolve));
      const transaction = db.prisma.$transaction(async (tx) => {
        await tx.expiringValue.create({ data: { key: 'tx-rolled-back', value: 'tx', expiresAt: sample } });
        entered();
        await sleep(100);
        throw new Error('roll back');
      }).catch((error: Error) => error.message);
      await inside;
      const outside = db.sql.run('INSERT INTO "ExpiringValue" ("key", "value", "expiresAt") VALUES (?, ?, ?)', ['tx-outside', 'out', sample]);
      expect(await transaction).toBe('roll back');
      expect(await outside).toBe(1);
      expect(await db.prisma.expiringValue.findMany({ where: { key: { startsWith: 'tx-' } }, select: { key: true } })).toEqual([{ key: 'tx-outside' }]);
    });

    it('stores find the runner of the Database their Prisma client belongs to', () => {
      expect(databaseOf(db.prisma)).toBe(db);
      expect(databaseOf(db)).toBe(db);
      expect(() => databaseOf({} as never)).toThrow(/openDatabase/);
    });
  });

  describe('DatabaseOidcAdapter', () => {
    it('a row written by upsert is the row Prisma wrote, field for field and in its stored form', async () => {
      const tokens = new DatabaseOidcAdapter(db, 'AccessToken');
      const payload = { kind: 'AccessToken', grantId: 'g-rt', uid: 'u-rt', userCode: 'UC-RT', accountId: 'a', nested: { list: [1, 'two'], none: null } };
      const before = Date.now();
      await tokens.upsert('rt-raw', payload, 600);
      const raw = await db.prisma.oidcRecord.findUniqueOrThrow({ where: { model_id: { model: 'AccessToken', id: 'rt-raw' } } });
      expect(raw).toMatchObject({ model: 'AccessToken', id: 'rt-raw', grantId: 'g-rt', uid: 'u-rt', userCode: 'UC-RT', consumedAt: null });
      expect(JSON.parse(raw.payload)).toEqual(payload);
      expect(raw.expiresAt!.getTime()).toBeGreaterThanOrEqual(before + 600_000);
      expect(raw.expiresAt!.getTime()).toBeLessThanOrEqual(Date.now() + 600_000);
      await db.prisma.oidcRecord.create({ data: { model: 'AccessToken', id: 'rt-prisma', payload: raw.payload, grantId: 'g-rt', uid: 'u-rt-2', userCode: 'UC-RT-2', expiresAt: raw.expiresAt } });
      expect(await stored('OidcRecord', 'expiresAt', '"id" = ?', ['rt-raw'])).toBe(await stored('OidcRecord', 'expiresAt', '"id" = ?', ['rt-prisma']));
      expect(await stored('OidcRecord', 'consumedAt', '"id" = ?', ['rt-raw'])).toBe(await stored('OidcRecord', 'consumedAt', '"id" = ?', ['rt-prisma']));
      // No expiry: NULL, as Prisma writes it.
      await tokens.upsert('rt-forever', { kind: 'AccessToken' }, 0);
      expect((await db.prisma.oidcRecord.findUniqueOrThrow({ where: { model_id: { model: 'AccessToken', id: 'rt-forever' } } })).expiresAt).toBeNull();
    });

    it('find, findByUid and findByUserCode read rows Prisma wrote, consumed ones with their epoch seconds', async () => {
      const consumedAt = new Date(Date.now() - 5_000);
      await db.prisma.oidcRecord.create({ data: { model: 'DeviceCode', id: 'rt-dc', payload: '{"kind":"DeviceCode"}', uid: 'rt-dc-uid', userCode: 'RTDC-CODE', expiresAt: new Date(Date.now() + hour), consumedAt } });
      const devices = new DatabaseOidcAdapter(db.prisma, 'DeviceCode');
      const expected = { kind: 'DeviceCode', consumed: epochSeconds(consumedAt) };
      expect(await devices.find('rt-dc')).toEqual(expected);
      expect(await devices.findByUid('rt-dc-uid')).toEqual(expected);
      expect(await devices.findByUserCode('RTDC-CODE')).toEqual(expected);
    });

    it('upsert replaces payload, grant, uid, user code and expiry but keeps consumedAt', async () => {
      const codes = new DatabaseOidcAdapter(db, 'AuthorizationCode');
      await codes.upsert('rt-keep', { grantId: 'g1', uid: 'u1', userCode: 'c1' }, 60);
      expect(await codes.consume('rt-keep')).toBe(true);
      const consumedAt = (await db.prisma.oidcRecord.findUniqueOrThrow({ where: { model_id: { model: 'AuthorizationCode', id: 'rt-keep' } } })).consumedAt;
      await codes.upsert('rt-keep', { n: 2 }, 120);
      const row = await db.prisma.oidcRecord.findUniqueOrThrow({ where: { model_id: { model: 'AuthorizationCode', id: 'rt-keep' } } });
      expect(row).toMatchObject({ payload: '{"n":2}', grantId: null, uid: null, userCode: null, consumedAt });
      expect(row.expiresAt!.getTime()).toBeGreaterThan(Date.now() + 110_000);
    });

    it(`consume: of ${parallel} parallel callers on two connections exactly one wins; consumedAt is now`, async () => {
      const other = await openDatabase(t.url);
      try {
        const codes = [new DatabaseOidcAdapter(db, 'AuthorizationCode'), new DatabaseOidcAdapter(other.prisma, 'AuthorizationCode')];
        await codes[0]!.upsert('rt-race', { kind: 'AuthorizationCode' }, 60);
        const before = Date.now();
        const wins = await Promise.all(Array.from({ length: parallel }, (_, i) => codes[i % 2]!.consume('rt-race')));
        expect(wins.filter(Boolean)).toHaveLength(1);
        const row = await db.prisma.oidcRecord.findUniqueOrThrow({ where: { model_id: { model: 'AuthorizationCode', id: 'rt-race' } } });
        expect(row.consumedAt!.getTime()).toBeGreaterThanOrEqual(before - 1);
        expect(row.consumedAt!.getTime()).toBeLessThanOrEqual(Date.now());
        expect(await codes[1]!.consume('rt-race')).toBe(false);
      } finally {
        await other.close();
      }
    });

    it('an expired row reads as missing; impossible ids (NUL) are refused without a query', async () => {
      const tokens = new DatabaseOidcAdapter(db, 'AccessToken');
      await tokens.upsert('rt-short', { uid: 'rt-short-uid' }, 0.05);
      expect(await tokens.find('rt-short')).toEqual({ uid: 'rt-short-uid' });
      await sleep(80);
      expect(await tokens.find('rt-short')).toBeUndefined();
      expect(await tokens.findByUid('rt-short-uid')).toBeUndefined();
      expect(await tokens.find('a\u0000b')).toBeUndefined();
      expect(await tokens.findByUid('a\u0000b')).toBeUndefined();
      expect(await tokens.findByUserCode('a\u0000b')).toBeUndefined();
      expect(await tokens.consume('a\u0000b')).toBe(false);
      await expect(tokens.destroy('a\u0000b')).resolves.toBeUndefined();
      await expect(tokens.revokeByGrantId('a\u0000b')).resolves.toBeUndefined();
    });

    it('destroy and revokeByGrantId remove rows Prisma wrote', async () => {
      await db.prisma.oidcRecord.createMany({ data: [
        { model: 'RefreshToken', id: 'rt-del-1', payload: '{}', grantId: 'rt-grant' },
        { model: 'RefreshToken', id: 'rt-del-2', payload: '{}', grantId: 'rt-grant' },
        { model: 'AccessToken', id: 'rt-del-3', payload: '{}', grantId: 'rt-grant' },
      ] });
      const refresh = new DatabaseOidcAdapter(db, 'RefreshToken');
      await refresh.destroy('rt-del-1');
      expect(await db.prisma.oidcRecord.count({ where: { id: 'rt-del-1' } })).toBe(0);
      await refresh.revokeByGrantId('rt-grant');
      expect((await db.prisma.oidcRecord.findMany({ where: { grantId: 'rt-grant' } })).map((r) => r.id)).toEqual(['rt-del-3']);
    });
  });

  describe('DatabaseExpiringValues', () => {
    it('set writes what Prisma reads; get reads what Prisma wrote', async () => {
      const values = new DatabaseExpiringValues(db);
      const before = Date.now();
      await values.set('ev-rt', { a: [1, 'b'], c: null }, 60);
      const row = await db.prisma.expiringValue.findUniqueOrThrow({ where: { key: 'ev-rt' } });
      expect(JSON.parse(row.value)).toEqual({ a: [1, 'b'], c: null });
      expect(row.expiresAt.getTime()).toBeGreaterThanOrEqual(before + 60_000);
      expect(row.expiresAt.getTime()).toBeLessThanOrEqual(Date.now() + 60_000);
      await db.prisma.expiringValue.update({ where: { key: 'ev-rt' }, data: { value: '"from prisma"' } });
      expect(await values.get('ev-rt')).toBe('from prisma');
    });

    it(`take: of ${parallel} parallel readers on two connections exactly one gets the value; an expired value is not taken`, async () => {
      const other = await openDatabase(t.url);
      try {
        const stores = [new DatabaseExpiringValues(db), new DatabaseExpiringValues(other.prisma)];
        await stores[0]!.set('ev-take', { once: true }, 60);
        const got = await Promise.all(Array.from({ length: parallel }, (_, i) => stores[i % 2]!.take('ev-take')));
        expect(got.filter((v) => v !== undefined)).toEqual([{ once: true }]);
        expect(await db.prisma.expiringValue.count({ where: { key: 'ev-take' } })).toBe(0);
      } finally {
        await other.close();
      }
      const values = new DatabaseExpiringValues(db);
      await db.prisma.expiringValue.create({ data: { key: 'ev-take-old', value: '1', expiresAt: new Date(Date.now() - 1) } });
      expect(await values.take('ev-take-old')).toBeUndefined();
      expect(await values.take('ev-none')).toBeUndefined();
    });

    it(`acquire: of ${parallel} parallel callers on two connections exactly one holds the lock; release lets the next in`, async () => {
      const other = await openDatabase(t.url);
      try {
        const stores = [new DatabaseExpiringValues(db), new DatabaseExpiringValues(other.prisma)];
        const tokens = await Promise.all(Array.from({ length: parallel }, (_, i) => stores[i % 2]!.acquire('ev-lock', 30)));
        const held = tokens.filter((token): token is string => token !== undefined);
        expect(held).toHaveLength(1);
        const row = await db.prisma.expiringValue.findUniqueOrThrow({ where: { key: 'lock:ev-lock' } });
        expect(row.value).toBe(held[0]);
        expect(row.expiresAt.getTime()).toBeGreaterThan(Date.now() + 25_000);
        // A wrong token neither extends nor releases.
        expect(await stores[1]!.extend('ev-lock', 'not-the-token', 60)).toBe(false);
        await stores[1]!.release('ev-lock', 'not-the-token');
        expect(await stores[0]!.acquire('ev-lock', 30)).toBeUndefined();
        // The holder extends, then releases; then one of the next parallel callers gets it.
        expect(await stores[1]!.extend('ev-lock', held[0]!, 120)).toBe(true);
        expect((await db.prisma.expiringValue.findUniqueOrThrow({ where: { key: 'lock:ev-lock' } })).expiresAt.getTime()).toBeGreaterThan(Date.now() + 110_000);
        await stores[0]!.release('ev-lock', held[0]!);
        expect(await db.prisma.expiringValue.count({ where: { key: 'lock:ev-lock' } })).toBe(0);
        const next = await Promise.all(Array.from({ length: parallel }, (_, i) => stores[i % 2]!.acquire('ev-lock', 30)));
        expect(next.filter(Boolean)).toHaveLength(1);
      } finally {
        await other.close();
      }
    });

    it(`acquire: an expired lock (a crashed holder) is taken over by exactly one of ${parallel}; the old token no longer extends`, async () => {
      const values = new DatabaseExpiringValues(db);
      const crashed = await values.acquire('ev-stale', 30);
      expect(crashed).toBeDefined();
      await db.prisma.expiringValue.update({ where: { key: 'lock:ev-stale' }, data: { expiresAt: new Date(Date.now() - 1) } });
      const tokens = await Promise.all(Array.from({ length: parallel }, () => values.acquire('ev-stale', 30)));
      const held = tokens.filter(Boolean);
      expect(held).toHaveLength(1);
      expect(held[0]).not.toBe(crashed);
      expect(await values.extend('ev-stale', crashed!, 30)).toBe(false);
      // A lock with a sub-second TTL can be taken again once it ran out.
      expect(await values.acquire('ev-short', 0.05)).toBeDefined();
      expect(await values.acquire('ev-short', 0.05)).toBeUndefined();
      await sleep(80);
      expect(await values.acquire('ev-short', 30)).toBeDefined();
    });
  });

  describe('accounts, clients, consents', () => {
    it('findById, findByEmail and findBySkeleton return what Prisma returns, with roles and attributes as values', async () => {
      const store = new AccountStore(db.prisma);
      const full = await store.create({ id: randomUUID(), email: 'full@example.com', emailSkeleton: 'fu11@example.com', name: 'Full', passwordHash: '$argon2id$x', emailVerified: true, status: 'active', userType: 'external', roles: ['admin'], approval: 'verified', attributes: { team: 'a' } });
      const bare = await db.prisma.account.create({ data: { id: randomUUID(), email: 'bare@example.com' } });
      expect(full).toMatchObject({ roles: ['admin'], attributes: { team: 'a' }, approval: 'verified', status: 'active' });
      const asPrismaReads = async (id: string) => {
        const row = await db.prisma.account.findUniqueOrThrow({ where: { id } });
        return { ...row, roles: JSON.parse(row.roles) as unknown, attributes: JSON.parse(row.attributes) as unknown };
      };
      for (const account of [full, bare]) {
        const prisma = await asPrismaReads(account.id);
        expect(await store.findById(account.id)).toEqual(prisma);
        expect(await store.findByEmail(account.email)).toEqual(prisma);
      }
      expect(await store.findById(bare.id)).toMatchObject({ roles: [], attributes: {}, approval: null });
      expect(await store.findBySkeleton('fu11@example.com')).toEqual(await asPrismaReads(full.id));
      expect((await store.findById(full.id))!.passwordChangedAt).toBeInstanceOf(Date);
      expect(await store.findById('no-such-id')).toBeNull();
      expect(await store.findByEmail('nobody@example.com')).toBeNull();
      expect(await store.findBySkeleton('nobody@example.com')).toBeNull();
    });

    it('a row written by hand or by another version reads safely: broken JSON as none, an unknown status as disabled', async () => {
      const store = new AccountStore(db.prisma);
      const odd = await db.prisma.account.create({ data: { id: randomUUID(), email: 'odd@example.com', roles: '{"not":"a list"}', attributes: '[1,2]', status: 'frozen', approval: 'maybe' } });
      const broken = await db.prisma.account.create({ data: { id: randomUUID(), email: 'broken@example.com', roles: '["admin"', attributes: 'not json', passwordHash: null } });
      expect(await store.findById(odd.id)).toMatchObject({ roles: [], attributes: {}, status: 'disabled', approval: null });
      expect(await store.findByEmail('broken@example.com')).toMatchObject({ roles: [], attributes: {}, status: broken.status });
      expect((await store.list({ limit: 10 })).find((a) => a.id === odd.id)).toMatchObject({ roles: [], status: 'disabled' });
    });

    it('ClientStore.find returns what Prisma returns', async () => {
      const store = new ClientStore(db.prisma);
      await store.create({ id: 'sql-client', metadata: '{"client_id":"sql-client"}', secretHash: 'abc' });
      await store.create({ id: 'sql-public', metadata: '{}', secretHash: null });
      for (const id of ['sql-client', 'sql-public']) expect(await store.find(id)).toEqual(await db.prisma.client.findUniqueOrThrow({ where: { id } }));
      expect(await store.find('sql-none')).toBeNull();
    });

    it('ConsentStore.find returns what Prisma returns, and nothing once expired', async () => {
      const store = new ConsentStore(db.prisma);
      await store.save({ accountId: 'c-acct', clientId: 'c-client', scopes: '["openid"]', claims: '["email"]', resources: '{}', expiresAt: new Date(Date.now() + hour) });
      const prisma = await db.prisma.consent.findUniqueOrThrow({ where: { accountId_clientId: { accountId: 'c-acct', clientId: 'c-client' } } });
      expect(await store.find('c-acct', 'c-client', new Date())).toEqual(prisma);
      expect(await store.find('c-acct', 'c-client', new Date(Date.now() + 2 * hour))).toBeNull();
      expect(await store.find('c-acct', 'other', new Date())).toBeNull();
    });
  });

  describe('second factors', () => {
    it('MfaFactorStore: listForAccount (each filter), findById and findByCredentialId return what Prisma returns', async () => {
      const store = new MfaFactorStore(db.prisma);
      const accountId = randomUUID();
      const totp = await store.create({ id: randomUUID(), accountId, type: 'totp', name: 'App', secret: '{"env":1}' });
      await sleep(5);
      const key = await store.create({ id: randomUUID(), accountId, type: 'webauthn', name: 'Key', credentialId: `cred-${accountId}`, publicKey: 'pk', counter: 7, transports: '["usb"]', discoverable: true, confirmedAt: sample });
      await sleep(5);
      await store.create({ id: randomUUID(), accountId, type: 'sms', name: 'Phone', destination: '+15550100', confirmedAt: new Date() });
      await store.create({ id: randomUUID(), accountId: randomUUID(), type: 'totp', name: 'Someone else' });
      const order = [{ createdAt: 'asc' as const }, { id: 'asc' as const }];
      expect(await store.listForAccount(accountId)).toEqual(await db.prisma.mfaFactor.findMany({ where: { accountId }, orderBy: order }));
      expect(await store.listForAccount(accountId, { type: 'totp' })).toEqual(await db.prisma.mfaFactor.findMany({ where: { accountId, type: 'totp' }, orderBy: order }));
      expect(await store.listForAccount(accountId, { confirmed: true })).toEqual(await db.prisma.mfaFactor.findMany({ where: { accountId, confirmedAt: { not: null } }, orderBy: order }));
      expect(await store.listForAccount(accountId, { confirmed: false })).toEqual([await db.prisma.mfaFactor.findUniqueOrThrow({ where: { id: totp.id } })]);
      expect(await store.listForAccount(accountId, { type: 'webauthn', confirmed: true })).toEqual([await db.prisma.mfaFactor.findUniqueOrThrow({ where: { id: key.id } })]);
      expect((await store.listForAccount(accountId)).map((f) => f.type)).toEqual(['totp', 'webauthn', 'sms']);
      expect(await store.findById(key.id)).toEqual(await db.prisma.mfaFactor.findUniqueOrThrow({ where: { id: key.id } }));
      expect((await store.findById(key.id))!.confirmedAt).toEqual(sample);
      expect(await store.findByCredentialId(`cred-${accountId}`)).toEqual(await db.prisma.mfaFactor.findUniqueOrThrow({ where: { id: key.id } }));
      expect(await store.findById('none')).toBeNull();
      expect(await store.findByCredentialId('none')).toBeNull();
    });

    it(`MfaFactorStore.claimTotpStep: of ${parallel} parallel claims of one step exactly one wins; older steps lose`, async () => {
      const store = new MfaFactorStore(db);
      const factor = await store.create({ id: randomUUID(), accountId: randomUUID(), type: 'totp', name: 'App' });
      const before = Date.now();
      const wins = await Promise.all(Array.from({ length: parallel }, () => store.claimTotpStep(factor.id, 1000)));
      expect(wins.filter(Boolean)).toHaveLength(1);
      const row = await db.prisma.mfaFactor.findUniqueOrThrow({ where: { id: factor.id } });
      expect(row.lastUsedStep).toBe(1000);
      expect(row.lastUsedAt!.getTime()).toBeGreaterThanOrEqual(before - 1);
      expect(row.lastUsedAt!.getTime()).toBeLessThanOrEqual(Date.now());
      expect(await store.claimTotpStep(factor.id, 999)).toBe(false);
      expect(await store.claimTotpStep(factor.id, 1001)).toBe(true);
    });

    it(`MfaFactorStore.updateCounter and touch: counters only move forward (0 over 0 allowed), ${parallel} racing one counter, one wins`, async () => {
      const store = new MfaFactorStore(db);
      const factor = await store.create({ id: randomUUID(), accountId: randomUUID(), type: 'webauthn', name: 'Key', credentialId: randomUUID(), publicKey: 'pk' });
      expect(await store.updateCounter(factor.id, 0)).toBe(true);
      const wins = await Promise.all(Array.from({ length: parallel }, () => store.updateCounter(factor.id, 5)));
      expect(wins.filter(Boolean)).toHaveLength(1);
      expect(await store.updateCounter(factor.id, 0)).toBe(false);
      expect(await store.updateCounter(factor.id, 5)).toBe(false);
      expect((await db.prisma.mfaFactor.findUniqueOrThrow({ where: { id: factor.id } })).counter).toBe(5);
      await store.touch(factor.id, sample);
      expect((await db.prisma.mfaFactor.findUniqueOrThrow({ where: { id: factor.id } })).lastUsedAt).toEqual(sample);
    });

    it('WebAuthnCredentialStore: listForAccount, findByCredentialId, updateCounter (racing) and markUsed', async () => {
      const store = new WebAuthnCredentialStore(db.prisma);
      const accountId = randomUUID();
      const created = await store.create({ id: randomUUID(), accountId, name: 'Passkey', credentialId: `wa-${accountId}`, publicKey: 'pk', counter: 3, transports: ['internal', 'hybrid'], discoverable: true, confirmedAt: sample });
      const totp = await new MfaFactorStore(db).create({ id: randomUUID(), accountId, type: 'totp', name: 'App', credentialId: `totp-${accountId}` });
      expect(await store.listForAccount(accountId)).toEqual([created]);
      expect(await store.findByCredentialId(`wa-${accountId}`)).toEqual(created);
      expect(await store.findByCredentialId(`totp-${accountId}`)).toBeNull();
      const wins = await Promise.all(Array.from({ length: parallel }, () => store.updateCounter(created.id, 4)));
      expect(wins.filter(Boolean)).toHaveLength(1);
      expect(await store.updateCounter(totp.id, 10)).toBe(false);
      const before = Date.now();
      await store.markUsed(created.id);
      const row = await db.prisma.mfaFactor.findUniqueOrThrow({ where: { id: created.id } });
      expect(row.counter).toBe(4);
      expect(row.lastUsedAt!.getTime()).toBeGreaterThanOrEqual(before - 1);
      await store.markUsed(totp.id);
      expect((await db.prisma.mfaFactor.findUniqueOrThrow({ where: { id: totp.id } })).lastUsedAt).toBeNull();
    });

    it(`BackupCodeStore: countUnused, and markUsed of one code by ${parallel} parallel callers: one wins, usedAt as given`, async () => {
      const store = new BackupCodeStore(db);
      const accountId = randomUUID();
      await store.replace(accountId, ['h1', 'h2', 'h3']);
      expect(await store.countUnused(accountId)).toBe(3);
      const wins = await Promise.all(Array.from({ length: parallel }, () => store.markUsed(accountId, 'h2', sample)));
      expect(wins.filter(Boolean)).toHaveLength(1);
      expect((await db.prisma.backupCode.findUniqueOrThrow({ where: { accountId_hash: { accountId, hash: 'h2' } } })).usedAt).toEqual(sample);
      expect(await store.countUnused(accountId)).toBe(2);
      expect(await store.markUsed(accountId, 'nope')).toBe(false);
      expect(await store.markUsed(randomUUID(), 'h1')).toBe(false);
      expect(await store.countUnused(randomUUID())).toBe(0);
    });

    it('TrustedDeviceStore.isTrusted: the account, the hash and the expiry all count', async () => {
      const store = new TrustedDeviceStore(db.prisma);
      await store.add('td-live', 'td-acct', new Date(Date.now() + hour), 'UA');
      await store.add('td-old', 'td-acct', new Date(Date.now() - 1), null);
      expect(await store.isTrusted('td-live', 'td-acct')).toBe(true);
      expect(await store.isTrusted('td-live', 'other-acct')).toBe(false);
      expect(await store.isTrusted('td-old', 'td-acct')).toBe(false);
      expect(await store.isTrusted('td-none', 'td-acct')).toBe(false);
    });
  });

  describe('UserSessionStore', () => {
    const session = (sid: string, extra: Partial<Parameters<UserSessionStore['save']>[0]> = {}) => ({
      sid, storageId: `st-${sid}`, accountId: 'us-acct', createdAt: sample, lastSeenAt: new Date(), expiresAt: new Date(Date.now() + hour),
      ip: '192.0.2.1', userAgent: 'Browser/1', location: null, amr: '["pwd"]', clients: '{"app":{}}', ...extra,
    });

    it('save writes the row Prisma reads; find returns what Prisma returns', async () => {
      const store = new UserSessionStore(db.prisma);
      const row = session('us-1');
      await store.save(row);
      const prisma = await db.prisma.userSession.findUniqueOrThrow({ where: { sid: 'us-1' } });
      expect(prisma).toEqual({ ...row, endedAt: null, endReason: null });
      expect(await store.find('us-1')).toEqual(prisma);
      expect(await store.find('us-none')).toBeNull();
    });

    it('a second save moves storage id, times, amr and clients, keeps ip, user agent and location, and reopens an ended row', async () => {
      const store = new UserSessionStore(db);
      await store.save(session('us-2'));
      await db.prisma.userSession.update({ where: { sid: 'us-2' }, data: { location: 'Berlin' } });
      expect(await store.end('us-2', 'logout')).toMatchObject({ sid: 'us-2', endReason: 'logout' });
      const later = session('us-2', { storageId: 'st-new', createdAt: new Date(sample.getTime() + 1000), ip: '198.51.100.9', userAgent: 'Other/2', location: 'Paris', amr: '["pwd","otp"]', clients: '{}' });
      await store.save(later);
      expect(await db.prisma.userSession.findUniqueOrThrow({ where: { sid: 'us-2' } })).toEqual({ ...later, ip: '192.0.2.1', userAgent: 'Browser/1', location: 'Berlin', endedAt: null, endReason: null });
    });

    it(`end: of ${parallel} parallel endings exactly one gets the row; endByStorageId ends the open ones; active is what Prisma finds`, async () => {
      const store = new UserSessionStore(db);
      await store.save(session('us-3', { accountId: 'us-active' }));
      await store.save(session('us-4', { accountId: 'us-active', createdAt: new Date(sample.getTime() + 5000) }));
      await store.save(session('us-5', { accountId: 'us-active', expiresAt: new Date(Date.now() - 1) }));
      const before = Date.now();
      const ended = await Promise.all(Array.from({ length: parallel }, () => store.end('us-3', 'revoked')));
      const winners = ended.filter(Boolean);
      expect(winners).toHaveLength(1);
      expect(winners[0]).toEqual(await db.prisma.userSession.findUniqueOrThrow({ where: { sid: 'us-3' } }));
      expect(winners[0]!.endedAt!.getTime()).toBeGreaterThanOrEqual(before - 1);
      const now = new Date();
      expect(await store.active('us-active', now)).toEqual(await db.prisma.userSession.findMany({ where: { accountId: 'us-active', endedAt: null, expiresAt: { gt: now } }, orderBy: { createdAt: 'desc' } }));
      expect((await store.active('us-active', now)).map((s) => s.sid)).toEqual(['us-4']);
      await store.endByStorageId('st-us-4', 'logout');
      expect(await db.prisma.userSession.findUniqueOrThrow({ where: { sid: 'us-4' } })).toMatchObject({ endReason: 'logout' });
      await store.endByStorageId('st-us-3', 'logout');
      expect(await db.prisma.userSession.findUniqueOrThrow({ where: { sid: 'us-3' } })).toMatchObject({ endReason: 'revoked' });
      expect(await store.active('us-active')).toEqual([]);
    });
  });

  describe('counters and rate limits', () => {
    it('attempt counters: peek reads a row Prisma wrote, extend writes one Prisma reads', async () => {
      const counters = new DatabaseAttemptCounters(db);
      await db.prisma.attemptCounter.create({ data: { key: 'ac-rt', count: 4, expiresAt: Date.now() / 1000 + 60 } });
      expect(await counters.peek('ac-rt')).toBe(4);
      expect(await counters.hit('ac-rt', 60)).toBe(5);
      const at = Date.now() / 1000;
      await counters.extend('ac-rt', 600);
      const row = await db.prisma.attemptCounter.findUniqueOrThrow({ where: { key: 'ac-rt' } });
      expect(row.expiresAt).toBeGreaterThanOrEqual(at + 600);
      expect(row.expiresAt).toBeLessThan(at + 601);
      await counters.reset('ac-rt');
      expect(await counters.peek('ac-rt')).toBe(0);
    });

    it(`the sign-in rate limiter: ${parallel} parallel penalties all count, get and delete, a new window after expiry, block`, async () => {
      const limiter = rateLimiter({ db, redis: undefined, keyPrefix: `rl-${kind}`, points: 5, durationSeconds: 1 });
      expect(await limiter.get('ip')).toBeNull();
      await Promise.all(Array.from({ length: parallel }, () => limiter.penalty('ip', 1)));
      const res = await limiter.get('ip');
      expect(res?.consumedPoints).toBe(parallel);
      expect(res?.msBeforeNext).toBeGreaterThan(0);
      expect(res?.msBeforeNext).toBeLessThanOrEqual(1000);
      const row = await db.prisma.rateLimiterFlexible.findUniqueOrThrow({ where: { key: `rl-${kind}:ip` } });
      expect(row.points).toBe(parallel);
      expect(row.expire!.getTime()).toBeGreaterThan(Date.now());
      await expect(limiter.consume('ip')).rejects.toMatchObject({ consumedPoints: parallel + 1 });
      await sleep(1100);
      expect(await limiter.get('ip')).toBeNull();
      expect((await limiter.consume('ip')).consumedPoints).toBe(1);
      expect(await limiter.delete('ip')).toBe(true);
      expect(await limiter.delete('ip')).toBe(false);
      expect(await db.prisma.rateLimiterFlexible.count({ where: { key: `rl-${kind}:ip` } })).toBe(0);
      await limiter.block('blocked', 60);
      const blocked = await limiter.get('blocked');
      expect(blocked?.consumedPoints).toBe(6);
      expect(blocked?.msBeforeNext).toBeGreaterThan(55_000);
    });
  });
});
