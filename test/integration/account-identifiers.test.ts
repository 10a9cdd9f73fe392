// Account identifiers against real databases (SQLite and PostgreSQL): the skeleton column added
// over existing accounts (the migration never fails on their data, and the skeletons are filled
// in before the next account is created), look-alikes refused by the database itself when two
// nodes create them at the same moment, and names that used to reach the database and break it.
import { randomUUID } from 'node:crypto';
import { createClient } from '@libsql/client';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PasswordHasher } from '../../src/accounts/passwords.ts';
import { AccountService, ConfusableEmailError } from '../../src/accounts/service.ts';
import { ConflictError, NotFoundError, ValidationError } from '../../src/errors.ts';
import { AccountStore } from '../../src/store/accounts.ts';
import { openDatabase, sqliteFileUrl, type Database } from '../../src/store/database.ts';
import { listMigrations, migrate } from '../../src/store/migrate.ts';
import { emptyDatabase, freshDatabase, type TestDatabase } from '../helpers/databases.ts';

const argon2Params = { memoryCost: 19456, timeCost: 2, parallelism: 1 };
const password = 'a long enough passphrase';
const skeletonMigration = '0008_account_email_skeleton.sql';

/** Runs statements (one string each, or a whole migration file) on the database, outside Prisma. */
async function runSql(database: TestDatabase, statements: { sql: string; args?: unknown[] }[]): Promise<void> {
  if (database.kind === 'sqlite') {
    const client = createClient({ url: sqliteFileUrl(database.url) });
    try {
      for (const s of statements) {
        if (s.args) await client.execute({ sql: s.sql.replace(/\$\d+/g, '?'), args: s.args as never });
        else await client.executeMultiple(s.sql);
      }
    } finally {
      client.close();
    }
    return;
  }
  const client = new pg.Client({ connectionString: database.url });
  await client.connect();
  try {
    for (const s of statements) await client.query(s.sql, s.args);
  } finally {
    await client.end();
  }
}

describe.each(['sqlite', 'postgresql'] as const)('account identifiers on %s', (kind) => {
  describe('the skeleton migration over existing accounts', () => {
    let database: TestDatabase;
    let db: Database;
    let accounts: AccountService;
    // Rows as the code before the skeleton stored them (NFKC, lower case, domain as typed),
    // including the kinds the new rules refuse.
    const legacy = [
      { email: 'pаypal@example.com', at: '2024-01-01T00:00:00.000Z' }, // Cyrillic а, the older of a look-alike pair
      { email: 'paypal@example.com', at: '2024-02-01T00:00:00.000Z' },
      { email: 'bad\u200binput@example.com', at: '2024-03-01T00:00:00.000Z' }, // an invisible character
      { email: 'ana@xn--bcher-kva.example', at: '2024-04-01T00:00:00.000Z' }, // a punycode domain
      { email: 'plain@example.com', at: '2024-05-01T00:00:00.000Z' },
    ];
    const ids = new Map<string, string>();

    beforeAll(async () => {
      database = await emptyDatabase(kind);
      const before = listMigrations(kind).filter((m) => m.name < skeletonMigration);
      expect(before.length).toBeGreaterThan(0);
      await runSql(database, [
        { sql: 'CREATE TABLE IF NOT EXISTS "_idp_migrations" ("name" TEXT PRIMARY KEY, "checksum" TEXT NOT NULL, "appliedAt" TEXT NOT NULL)' },
        ...before.flatMap((m) => [{ sql: m.sql }, { sql: 'INSERT INTO "_idp_migrations" ("name", "checksum", "appliedAt") VALUES ($1, $2, $3)', args: [m.name, m.checksum, new Date().toISOString()] }]),
        ...legacy.map((row) => {
          const id = randomUUID();
          ids.set(row.email, id);
          const at = kind === 'sqlite' ? row.at : new Date(row.at);
          return { sql: 'INSERT INTO "Account" ("id", "email", "createdAt", "updatedAt") VALUES ($1, $2, $3, $4)', args: [id, row.email, at, at] };
        }),
      ]);
      expect((await migrate(database.url))[0]).toBe(skeletonMigration);
      db = await openDatabase(database.url);
      accounts = new AccountService(new AccountStore(db.prisma), new PasswordHasher(argon2Params));
    });

    afterAll(async () => {
      await db?.close();
      await database?.drop();
    });

    const skeletons = async () => Object.fromEntries((await db.prisma.account.findMany({ select: { email: true, emailSkeleton: true } })).map((r) => [r.email, r.emailSkeleton]));

    it('leaves every existing account in place, without a skeleton until the next account is created', async () => {
      const before = await skeletons();
      expect(Object.keys(before).sort()).toEqual(legacy.map((r) => r.email).sort());
      expect(Object.values(before).every((s) => s === null)).toBe(true);
    });

    it('the next creation fills them in: the older of two look-alikes keeps the skeleton; a refused address and the younger look-alike stay NULL', async () => {
      await accounts.create({ email: 'newbie@example.com', password });
      expect(await skeletons()).toEqual({
        'pаypal@example.com': 'paypal@example.com',
        'paypal@example.com': null,
        'bad\u200binput@example.com': null,
        // Skeletons are in NFD (UTS #39), so a composed and a decomposed ü are one.
        'ana@xn--bcher-kva.example': 'ana@bücher.example'.normalize('NFD'),
        'plain@example.com': 'plain@example.com',
        'newbie@example.com': 'newbie@example.com',
      });
    });

    it('a look-alike of an existing account is refused, a punycode form of one too', async () => {
      await expect(accounts.create({ email: 'plаin@example.com', password })).rejects.toBeInstanceOf(ConfusableEmailError);
      await expect(accounts.create({ email: 'paypal@exаmple.com', password })).rejects.toThrow(/looks the same .* exists: pаypal@example\.com$/);
      await expect(accounts.create({ email: 'ana@bücher.example', password })).rejects.toThrow(/exists: ana@xn--bcher-kva\.example$/);
      await expect(accounts.create({ email: 'plain@example.com', password })).rejects.toThrow('an account with email plain@example.com exists');
    });

    it('existing accounts are still found by the address they were stored under, except through a refused character', async () => {
      expect(await accounts.findByEmail('Ana@XN--BCHER-KVA.example')).toMatchObject({ id: ids.get('ana@xn--bcher-kva.example') });
      expect(await accounts.findByEmail('paypal@example.com')).toMatchObject({ id: ids.get('paypal@example.com') });
      expect(await accounts.findByEmail('bad\u200binput@example.com')).toBeNull();
      expect(await accounts.authenticate('bad\u200binput@example.com', password)).toEqual({ ok: false, reason: 'unknown_account' });
      // Operators can still reach it by its exact address, to show or disable it.
      expect(await accounts.setStatus('bad\u200binput@example.com', 'disabled')).toMatchObject({ id: ids.get('bad\u200binput@example.com'), status: 'disabled' });
      await expect(accounts.requireByEmail('bad\u202einput@example.com')).rejects.toBeInstanceOf(NotFoundError);
    });
  });

  describe('on a migrated database', () => {
    let database: TestDatabase;
    let nodes: Database[];
    let accounts: AccountService[];

    beforeAll(async () => {
      database = await freshDatabase(kind);
      // Two connections with an account service each: two nodes on one database.
      nodes = [await openDatabase(database.url), await openDatabase(database.url)];
      accounts = nodes.map((node) => new AccountService(new AccountStore(node.prisma), new PasswordHasher(argon2Params)));
    });

    afterAll(async () => {
      for (const node of nodes ?? []) await node.close();
      await database?.drop();
    });

    it('look-alikes created at the same moment on two nodes: the database keeps exactly one', async () => {
      for (let round = 0; round < 3; round++) {
        const variants = [`paypal${round}@example.com`, `pаypal${round}@example.com`, `paypаl${round}@example.com`, `ραypal${round}@example.com`];
        const results = await Promise.allSettled(variants.map((email, i) => accounts[i % 2]!.create({ email, password })));
        expect(results.filter((r) => r.status === 'fulfilled'), `round ${round}`).toHaveLength(1);
        for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(ConflictError);
        expect(await nodes[0]!.prisma.account.count({ where: { emailSkeleton: `paypal${round}@example.com` } })).toBe(1);
      }
    });

    it('an address with a hostile character is refused before the database sees it; lookups find nothing', async () => {
      for (const email of ['bad\u200binput@example.com', 'bad\u202einput@example.com', 'bad\ud800input@example.com', 'bad\u0000input@example.com']) {
        await expect(accounts[0]!.create({ email, password })).rejects.toBeInstanceOf(ValidationError);
        expect(await accounts[0]!.findByEmail(email)).toBeNull();
        await expect(accounts[0]!.requireByEmail(email)).rejects.toBeInstanceOf(NotFoundError);
      }
      expect(await nodes[0]!.prisma.account.count({ where: { email: { contains: 'input' } } })).toBe(0);
    });

    it('a name with a lone surrogate or a bidi override is a ValidationError on create and update, not a database error', async () => {
      const account = await accounts[0]!.create({ email: 'named@example.com', password, name: 'Named' });
      for (const name of ['Lone \ud800', '\udc00', 'Bob\u202emoc.evil']) {
        await expect(accounts[0]!.create({ email: 'other-named@example.com', password, name })).rejects.toBeInstanceOf(ValidationError);
        await expect(accounts[0]!.update('named@example.com', { name })).rejects.toBeInstanceOf(ValidationError);
      }
      expect(await accounts[0]!.findById(account.id)).toMatchObject({ name: 'Named' });
      expect(await accounts[0]!.findByEmail('other-named@example.com')).toBeNull();
    });
  });
});
