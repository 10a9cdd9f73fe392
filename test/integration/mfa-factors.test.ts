// Second factors against real databases, on a fresh SQLite file and a fresh PostgreSQL database:
// TOTP enrolment and sign-in (each code once, never an older one after a newer one, even when
// requests race), the secret at rest, and backup codes (single use under concurrency, replaced
// as a set).
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.ts';
import { decryptEnvelope } from '../../src/keys/envelope.ts';
import { LocalMasterKey } from '../../src/keys/local-master-key.ts';
import { BackupCodes, normaliseBackupCode } from '../../src/mfa/backup-codes.ts';
import { TotpFactors } from '../../src/mfa/totp-factors.ts';
import { totpCodeAt, totpStep } from '../../src/mfa/totp.ts';
import { BackupCodeStore } from '../../src/store/backup-codes.ts';
import { openDatabase, type Database } from '../../src/store/database.ts';
import { MfaFactorStore } from '../../src/store/mfa-factors.ts';
import { freshDatabase, tempDir, type TestDatabase } from '../helpers/databases.ts';
import { rejection } from '../helpers/assertions.ts';

// Midway through a 30-second step, fixed, so the tests never straddle a step boundary.
const t0 = Math.floor(Date.now() / 30_000) * 30_000 + 15_000;

/** Every column of every row of a table, as strings. */
async function allValues(db: Database, table: string): Promise<string[]> {
  const rows = await db.prisma.$queryRawUnsafe<Record<string, unknown>[]>(`SELECT * FROM "${table}"`);
  return rows.flatMap((row) => Object.values(row).map((v) => (v instanceof Date ? v.toISOString() : String(v))));
}

describe.each(['sqlite', 'postgresql'] as const)('MFA factors on %s', (kind) => {
  let t: TestDatabase;
  let db: Database;
  let keyDir: ReturnType<typeof tempDir>;
  let kms: LocalMasterKey;
  let store: MfaFactorStore;
  let totp: TotpFactors;
  let backup: BackupCodes;

  beforeAll(async () => {
    t = await freshDatabase(kind);
    db = await openDatabase(t.url);
    keyDir = tempDir('idp-mfa-keys-');
    kms = LocalMasterKey.load(join(keyDir.path, 'master.key'), { create: true });
    store = new MfaFactorStore(db.prisma);
    totp = new TotpFactors(store, kms, 'Acme IdP');
    backup = new BackupCodes(new BackupCodeStore(db), randomBytes(32));
  });

  afterAll(async () => {
    await db?.close();
    await t?.drop();
    keyDir?.remove();
  });

  /** A fresh account with one confirmed authenticator (confirmed with the code of `at`). */
  async function enrolled(at = t0 - 5 * 30_000): Promise<{ accountId: string; factorId: string; secret: string }> {
    const accountId = randomUUID();
    const enrolment = await totp.startEnrolment(accountId, `${accountId}@example.com`);
    expect(await totp.confirmEnrolment(accountId, enrolment.factorId, totpCodeAt(enrolment.secret, at), at)).toEqual({ ok: true, factorId: enrolment.factorId });
    return { accountId, factorId: enrolment.factorId, secret: enrolment.secret };
  }

  describe('TOTP enrolment', () => {
    it('starts with a pending factor, a scannable URI and a QR code', async () => {
      const accountId = randomUUID();
      const enrolment = await totp.startEnrolment(accountId, 'ada@example.com');
      expect(enrolment.secret).toMatch(/^[A-Z2-7]{32}$/);
      expect(enrolment.uri).toContain(`otpauth://totp/Acme%20IdP:ada%40example.com?secret=${enrolment.secret}&issuer=Acme%20IdP`);
      expect(enrolment.qrDataUrl.startsWith('data:image/png;base64,')).toBe(true);
      const row = await store.findById(enrolment.factorId);
      expect(row).toMatchObject({ accountId, type: 'totp', confirmedAt: null, lastUsedStep: null });
      // Pending factors do not count at sign-in.
      expect(await totp.verify(accountId, totpCodeAt(enrolment.secret, t0), t0)).toEqual({ ok: false, reason: 'no_factor' });
    });

    it('is confirmed by the first valid code, which is then spent', async () => {
      const accountId = randomUUID();
      const { factorId, secret } = await totp.startEnrolment(accountId, 'bob@example.com');
      expect(await totp.confirmEnrolment(accountId, factorId, '000000', t0)).toMatchObject({ ok: false });
      const code = totpCodeAt(secret, t0);
      expect(await totp.confirmEnrolment(accountId, factorId, code, t0)).toEqual({ ok: true, factorId });
      const row = await store.findById(factorId);
      expect(row?.confirmedAt).toBeInstanceOf(Date);
      expect(row?.lastUsedStep).toBe(totpStep(t0));
      // Confirming again, and signing in with the code that confirmed, both fail.
      expect(await totp.confirmEnrolment(accountId, factorId, totpCodeAt(secret, t0 + 30_000), t0 + 30_000)).toEqual({ ok: false, reason: 'no_factor' });
      expect(await totp.verify(accountId, code, t0)).toEqual({ ok: false, reason: 'replayed' });
      expect(await totp.verify(accountId, totpCodeAt(secret, t0 + 30_000), t0 + 30_000)).toEqual({ ok: true, factorId });
    });

    it('cannot be confirmed by another account, nor a factor id that does not exist', async () => {
      const accountId = randomUUID();
      const { factorId, secret } = await totp.startEnrolment(accountId, 'carol@example.com');
      expect(await totp.confirmEnrolment(randomUUID(), factorId, totpCodeAt(secret, t0), t0)).toEqual({ ok: false, reason: 'no_factor' });
      expect(await totp.confirmEnrolment(accountId, randomUUID(), totpCodeAt(secret, t0), t0)).toEqual({ ok: false, reason: 'no_factor' });
      expect((await store.findById(factorId))?.confirmedAt).toBeNull();
    });

    it('a new enrolment drops the earlier pending one, never a confirmed one', async () => {
      const { accountId, factorId: confirmed } = await enrolled();
      const first = await totp.startEnrolment(accountId, 'x@example.com');
      const second = await totp.startEnrolment(accountId, 'x@example.com');
      expect(await store.findById(first.factorId)).toBeNull();
      const ids = (await store.listForAccount(accountId)).map((f) => f.id);
      expect(ids).toEqual([confirmed, second.factorId]);
    });
  });

  describe('TOTP sign-in', () => {
    it('accepts a code once; the same code again is a replay', async () => {
      const { accountId, factorId, secret } = await enrolled();
      const code = totpCodeAt(secret, t0);
      expect(await totp.verify(accountId, code, t0)).toEqual({ ok: true, factorId });
      expect(await totp.verify(accountId, code, t0)).toEqual({ ok: false, reason: 'replayed' });
      // Still a replay 30 s later, while the code is inside the drift window.
      expect(await totp.verify(accountId, code, t0 + 30_000)).toEqual({ ok: false, reason: 'replayed' });
    });

    it('refuses an older code once a newer one was used, though both are in the window', async () => {
      const { accountId, factorId, secret } = await enrolled();
      expect(await totp.verify(accountId, totpCodeAt(secret, t0 + 30_000), t0)).toEqual({ ok: true, factorId });
      expect(await totp.verify(accountId, totpCodeAt(secret, t0), t0)).toEqual({ ok: false, reason: 'replayed' });
      expect(await totp.verify(accountId, totpCodeAt(secret, t0 - 30_000), t0)).toEqual({ ok: false, reason: 'replayed' });
      expect((await store.findById(factorId))?.lastUsedStep).toBe(totpStep(t0) + 1);
    });

    it('refuses wrong, malformed and out-of-window codes as invalid', async () => {
      const { accountId, secret } = await enrolled();
      const window = new Set([-1, 0, 1].map((d) => totpCodeAt(secret, t0 + d * 30_000)));
      const wrong = ['000000', '111111', '222222', '333333'].find((c) => !window.has(c))!;
      expect(await totp.verify(accountId, wrong, t0)).toEqual({ ok: false, reason: 'invalid' });
      expect(await totp.verify(accountId, '12345', t0)).toEqual({ ok: false, reason: 'invalid' });
      expect(await totp.verify(accountId, 'abcdef', t0)).toEqual({ ok: false, reason: 'invalid' });
      const far = totpCodeAt(secret, t0 + 60_000);
      if (!window.has(far)) expect(await totp.verify(accountId, far, t0)).toEqual({ ok: false, reason: 'invalid' });
    });

    it('an account without a confirmed authenticator has no factor', async () => {
      expect(await totp.verify(randomUUID(), '123456', t0)).toEqual({ ok: false, reason: 'no_factor' });
    });

    it('parallel sign-ins with the same code: exactly one succeeds', async () => {
      const { accountId, factorId, secret } = await enrolled();
      const code = totpCodeAt(secret, t0);
      const results = await Promise.all(Array.from({ length: 10 }, () => totp.verify(accountId, code, t0)));
      expect(results.filter((r) => r.ok)).toEqual([{ ok: true, factorId }]);
      expect(results.filter((r) => !r.ok).every((r) => !r.ok && r.reason === 'replayed')).toBe(true);
    });

    // Defined for PostgreSQL only: SQLite serves one node, and a second connection in this process
    // would wait for the lock synchronously (libsql) and so stall the first, which never releases it.
    const onServerDatabase = kind === 'sqlite' ? () => undefined : it;
    onServerDatabase('parallel claims through two connections (two nodes): one winner per step', async () => {
      const { factorId } = await enrolled();
      const other = await openDatabase(t.url);
      try {
        const stores = [store, new MfaFactorStore(other.prisma)];
        const step = totpStep(t0);
        const claims = await Promise.all(Array.from({ length: 12 }, (_, i) => stores[i % 2]!.claimTotpStep(factorId, step)));
        expect(claims.filter(Boolean)).toHaveLength(1);
        expect(await store.claimTotpStep(factorId, step - 1)).toBe(false);
        expect(await store.claimTotpStep(factorId, step + 1)).toBe(true);
      } finally {
        await other.close();
      }
    });

    it('tries each confirmed authenticator of the account', async () => {
      const first = await enrolled();
      const enrolment = await totp.startEnrolment(first.accountId, 'x@example.com');
      expect(await totp.confirmEnrolment(first.accountId, enrolment.factorId, totpCodeAt(enrolment.secret, t0 - 60_000), t0 - 60_000)).toMatchObject({ ok: true });
      expect(await totp.verify(first.accountId, totpCodeAt(enrolment.secret, t0), t0)).toEqual({ ok: true, factorId: enrolment.factorId });
      expect(await totp.verify(first.accountId, totpCodeAt(first.secret, t0), t0)).toEqual({ ok: true, factorId: first.factorId });
    });

    it('a deleted authenticator no longer signs in', async () => {
      const { accountId, factorId, secret } = await enrolled();
      expect(await store.delete(randomUUID(), factorId)).toBe(false);
      expect(await store.delete(accountId, factorId)).toBe(true);
      expect(await totp.verify(accountId, totpCodeAt(secret, t0), t0)).toEqual({ ok: false, reason: 'no_factor' });
    });
  });

  describe('TOTP secret at rest', () => {
    it('is stored only in an envelope: no column of the row holds the base32 secret or its bytes', async () => {
      const { accountId, factorId, secret } = await enrolled();
      const row = await store.findById(factorId);
      const values = await allValues(db, 'MfaFactor');
      expect(values.some((v) => v.includes(secret))).toBe(false);
      expect(values.some((v) => v.toUpperCase().includes(secret))).toBe(false);
      const envelope = JSON.parse(row!.secret!) as Record<string, unknown>;
      expect(envelope).toMatchObject({ v: 1, provider: 'local' });
      expect(Object.keys(envelope)).not.toContain('secret');
      const context = { purpose: 'totp-secret', factor: factorId, account: accountId };
      expect((await decryptEnvelope(kms, row!.secret!, context)).toString('utf8')).toBe(secret);
    });

    it('moved to another account or another factor, it no longer decrypts', async () => {
      const victim = randomUUID();
      const attacker = await enrolled();
      await db.prisma.mfaFactor.update({ where: { id: attacker.factorId }, data: { accountId: victim } });
      // The local master key refuses to unwrap the data key under the wrong context.
      expect((await rejection(totp.verify(victim, totpCodeAt(attacker.secret, t0), t0))).name).toMatch(/^(MasterKeyError|EnvelopeError)$/);

      const other = await enrolled();
      const stolen = (await store.findById(attacker.factorId))!.secret!;
      await db.prisma.mfaFactor.update({ where: { id: other.factorId }, data: { secret: stolen } });
      expect((await rejection(totp.verify(other.accountId, totpCodeAt(attacker.secret, t0), t0))).name).toMatch(/^(MasterKeyError|EnvelopeError)$/);
    });
  });

  describe('factor store', () => {
    it('renames and lists only for the owner; deleteAllForAccount leaves other accounts alone', async () => {
      const a = await enrolled();
      const b = await enrolled();
      expect(await store.rename(b.accountId, a.factorId, 'stolen')).toBe(false);
      expect(await store.rename(a.accountId, a.factorId, 'Phone')).toBe(true);
      expect((await store.listForAccount(a.accountId, { type: 'totp', confirmed: true })).map((f) => f.name)).toEqual(['Phone']);
      expect(await store.deleteAllForAccount(a.accountId)).toBe(1);
      expect(await store.listForAccount(a.accountId)).toEqual([]);
      expect(await store.listForAccount(b.accountId)).toHaveLength(1);
    });

    it('finds WebAuthn factors by credential id and only moves the counter forward', async () => {
      const accountId = randomUUID();
      const credentialId = randomBytes(16).toString('base64url');
      const created = await store.create({ id: randomUUID(), accountId, type: 'webauthn', name: 'Key', credentialId, publicKey: 'pk', counter: 5, confirmedAt: new Date() });
      expect((await store.findByCredentialId(credentialId))?.id).toBe(created.id);
      expect(await store.findByCredentialId('nope')).toBeNull();
      expect(await store.updateCounter(created.id, 5)).toBe(false);
      expect(await store.updateCounter(created.id, 4)).toBe(false);
      expect(await store.updateCounter(created.id, 0)).toBe(false);
      expect(await store.updateCounter(created.id, 6)).toBe(true);
      const row = await store.findById(created.id);
      expect(row?.counter).toBe(6);
      expect(row?.lastUsedAt).toBeInstanceOf(Date);
      const results = await Promise.all([7, 7, 7, 7].map((n) => store.updateCounter(created.id, n)));
      expect(results.filter(Boolean)).toHaveLength(1);
    });

    it('accepts a counter that stays 0 (authenticators without a counter)', async () => {
      const created = await store.create({ id: randomUUID(), accountId: randomUUID(), type: 'webauthn', name: 'Passkey', credentialId: randomBytes(16).toString('base64url'), publicKey: 'pk' });
      expect(await store.updateCounter(created.id, 0)).toBe(true);
      expect(await store.updateCounter(created.id, 0)).toBe(true);
    });
  });

  describe('backup codes', () => {
    it('generates ten distinct codes of the form xxxxx-xxxxx and stores none of them', async () => {
      const accountId = randomUUID();
      const codes = await backup.generate(accountId);
      expect(codes).toHaveLength(10);
      expect(new Set(codes).size).toBe(10);
      for (const code of codes) expect(code).toMatch(/^[0-9abcdefghjkmnpqrstvwxyz]{5}-[0-9abcdefghjkmnpqrstvwxyz]{5}$/);
      expect(await backup.remaining(accountId)).toBe(10);
      const values = await allValues(db, 'BackupCode');
      for (const code of codes) {
        expect(values.some((v) => v.includes(code) || v.includes(code.replace('-', '')))).toBe(false);
      }
    });

    it('a code works once; case, spaces and dashes do not matter', async () => {
      const accountId = randomUUID();
      const [first, second, third] = await backup.generate(accountId);
      expect(await backup.consume(accountId, first!)).toBe(true);
      expect(await backup.consume(accountId, first!)).toBe(false);
      expect(await backup.consume(accountId, ` ${second!.toUpperCase().replace('-', ' ')} `)).toBe(true);
      expect(await backup.consume(accountId, third!.replace('-', ''))).toBe(true);
      expect(await backup.remaining(accountId)).toBe(7);
    });

    it('reads o as 0 and i, l as 1', () => {
      expect(normaliseBackupCode('O0IL1-abcde')).toBe('00111abcde');
      expect(normaliseBackupCode('uuuuu-uuuuu')).toBeUndefined();
      expect(normaliseBackupCode('abcd')).toBeUndefined();
    });

    it('a code of one account does nothing for another; garbage is refused', async () => {
      const a = randomUUID();
      const b = randomUUID();
      const [code] = await backup.generate(a);
      await backup.generate(b);
      expect(await backup.consume(b, code!)).toBe(false);
      expect(await backup.consume(a, '')).toBe(false);
      expect(await backup.consume(a, 'not a code at all')).toBe(false);
      expect(await backup.remaining(a)).toBe(10);
    });

    it('regenerating invalidates every old code', async () => {
      const accountId = randomUUID();
      const old = await backup.generate(accountId);
      await backup.consume(accountId, old[0]!);
      const fresh = await backup.generate(accountId);
      expect(await backup.remaining(accountId)).toBe(10);
      for (const code of old) expect(await backup.consume(accountId, code)).toBe(false);
      expect(await backup.consume(accountId, fresh[0]!)).toBe(true);
    });

    it('parallel use of the same code: exactly one succeeds', async () => {
      const accountId = randomUUID();
      const [code] = await backup.generate(accountId);
      const results = await Promise.all(Array.from({ length: 10 }, () => backup.consume(accountId, code!)));
      expect(results.filter(Boolean)).toHaveLength(1);
      expect(await backup.remaining(accountId)).toBe(9);
    });

    it('parallel regenerations leave exactly one set of ten', async () => {
      const accountId = randomUUID();
      const sets = await Promise.all(Array.from({ length: 4 }, () => backup.generate(accountId)));
      expect(await backup.remaining(accountId)).toBe(10);
      const working = [];
      for (const set of sets) if (await backup.consume(accountId, set[0]!)) working.push(set);
      expect(working).toHaveLength(1);
    });

    it('clear removes them all', async () => {
      const accountId = randomUUID();
      const [code] = await backup.generate(accountId);
      await backup.clear(accountId);
      expect(await backup.remaining(accountId)).toBe(0);
      expect(await backup.consume(accountId, code!)).toBe(false);
    });

    it('codes depend on the pepper: another pepper accepts none of them', async () => {
      const accountId = randomUUID();
      const [code] = await backup.generate(accountId);
      const otherPepper = new BackupCodes(new BackupCodeStore(db), randomBytes(32));
      expect(await otherPepper.consume(accountId, code!)).toBe(false);
      expect(await backup.consume(accountId, code!)).toBe(true);
    });

    it('refuses a short pepper', () => {
      expect(() => new BackupCodes(new BackupCodeStore(db), randomBytes(16))).toThrow(ConfigError);
    });
  });
});
