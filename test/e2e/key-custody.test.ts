// The server on each key-custody provider, through the real `idp` command: AWS KMS (against a
// local server speaking the KMS wire protocol, since AWS cannot be reached from here) and a
// PKCS#11 token (SoftHSM2, Debian package softhsm2). Keys are created, wrapped, stored, and
// unwrapped again by a second process; an unreachable KMS stops start-up with a clear error.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { emptySqlite, tempDir } from '../helpers/databases.ts';
import { startFakeKms } from '../helpers/fake-kms.ts';
import { jsonOf, runIdp } from '../helpers/processes.ts';
import { startIdp } from '../helpers/server.ts';

const keysOf = (stdout: string) => JSON.parse(stdout) as { kid: string; state: string }[];

describe('KMS_PROVIDER=aws', () => {
  it('creates, stores and reopens keys through KMS, and refuses to start when KMS is unreachable', async () => {
    const kms = await startFakeKms();
    const database = emptySqlite();
    const env = {
      DATABASE_URL: database.url, LOG_LEVEL: 'silent', KMS_PROVIDER: 'aws', AWS_KMS_KEY_ID: kms.keyId, AWS_REGION: kms.region,
      AWS_KMS_ENDPOINT: kms.endpoint, AWS_ACCESS_KEY_ID: kms.accessKeyId, AWS_SECRET_ACCESS_KEY: kms.secretAccessKey,
    };
    try {
      expect((await runIdp(['migrate'], { env })).code).toBe(0);
      const first = await runIdp(['keys', 'list'], { env });
      expect(first.code, first.stderr).toBe(0);
      expect(keysOf(first.stdout).filter((k) => k.state === 'active')).toHaveLength(1);
      // A second process opens the stored envelopes through KMS Decrypt.
      const second = await runIdp(['keys', 'rotate', '--now'], { env });
      expect(second.code, second.stderr).toBe(0);
      expect(kms.calls.GenerateDataKey).toBeGreaterThanOrEqual(3);
      expect(kms.calls.Decrypt).toBeGreaterThanOrEqual(2);
      await kms.close();
      const down = await runIdp(['keys', 'list'], { env, timeoutMs: 30_000 });
      expect(down.code).toBe(1);
      expect(down.stderr).toMatch(/^idp: KMS (Decrypt|GenerateDataKey|DescribeKey) failed/m);
    } finally {
      await kms.close().catch(() => undefined);
      await database.drop();
    }
  });
});

describe('KMS outage during operation', () => {
  it('keeps signing with the keys in memory, and fails readiness after three missed key refreshes', async () => {
    const kms = await startFakeKms();
    // The AWS SDK reads credentials from the environment (its default chain), as in production.
    process.env.AWS_ACCESS_KEY_ID = kms.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = kms.secretAccessKey;
    const t = await startIdp('sqlite', { KMS_PROVIDER: 'aws', AWS_KMS_KEY_ID: kms.keyId, AWS_REGION: kms.region, AWS_KMS_ENDPOINT: kms.endpoint, KEY_REFRESH_SECONDS: '1', KEY_PREPUBLICATION_SECONDS: '5' });
    try {
      const secret = (await t.idp.clients.create({ client_id: 'machine', grant_types: ['client_credentials'] })).clientSecret!;
      const token = () => fetch(`${t.url}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`machine:${secret}`).toString('base64')}` }, body: 'grant_type=client_credentials' });
      expect((await token()).status).toBe(200);
      expect((await fetch(`${t.url}/readyz`)).status).toBe(200);
      await kms.close();
      await expect(t.idp.refreshKeys()).rejects.toThrow(/KMS DescribeKey failed/);
      expect((await token()).status).toBe(200);
      await expect.poll(async () => (await fetch(`${t.url}/readyz`)).status, { timeout: 8000, interval: 250 }).toBe(503);
      const body = (await (await fetch(`${t.url}/readyz`)).json()) as { checks: Record<string, string> };
      expect(body.checks.keys).toMatch(/^failing: signing keys not refreshed/);
      expect((await token()).status).toBe(200);
    } finally {
      await t.stop();
      await kms.close().catch(() => undefined);
    }
  }, 30_000);
});

const softhsmLibraries = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'];

describe('KMS_PROVIDER=pkcs11', () => {
  const dir = tempDir('idp-hsm-');
  afterAll(() => dir.remove());

  it('initialises the wrapping key on the token, then serves keys wrapped by it', async () => {
    const library = softhsmLibraries.find((path) => existsSync(path));
    expect(library, 'the SoftHSM2 library is installed (Debian package softhsm2)').toBeTruthy();
    const tokens = join(dir.path, 'tokens');
    mkdirSync(tokens);
    const conf = join(dir.path, 'softhsm2.conf');
    writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`);
    execFileSync('softhsm2-util', ['--init-token', '--free', '--label', 'idp', '--pin', '1234', '--so-pin', '5678'], { env: { ...process.env, SOFTHSM2_CONF: conf }, stdio: 'pipe' });
    const pinFile = join(dir.path, 'pin');
    writeFileSync(pinFile, '1234\n', { mode: 0o600 });
    const database = emptySqlite();
    const env = {
      DATABASE_URL: database.url, LOG_LEVEL: 'silent', SOFTHSM2_CONF: conf, KMS_PROVIDER: 'pkcs11',
      PKCS11_LIBRARY: library!, PKCS11_TOKEN_LABEL: 'idp', PKCS11_PIN_FILE: pinFile, PKCS11_KEY_LABEL: 'idp-wrapping',
    };
    try {
      expect((await runIdp(['migrate'], { env })).code).toBe(0);
      const missing = await runIdp(['keys', 'list'], { env });
      expect(missing.code).toBe(1);
      expect(missing.stderr).toContain('idp kms init');
      expect(jsonOf<{ created: boolean }>(await runIdp(['kms', 'init'], { env }))).toEqual({ created: true });
      expect(jsonOf<{ created: boolean }>(await runIdp(['kms', 'init'], { env }))).toEqual({ created: false });
      const listed = await runIdp(['keys', 'list'], { env });
      expect(listed.code, listed.stderr).toBe(0);
      expect(keysOf(listed.stdout).filter((k) => k.state === 'active')).toHaveLength(1);
      const rotated = await runIdp(['keys', 'rotate', '--now'], { env });
      expect(rotated.code, rotated.stderr).toBe(0);
      const wrongPin = join(dir.path, 'wrong-pin');
      writeFileSync(wrongPin, '9999\n', { mode: 0o600 });
      const refused = await runIdp(['keys', 'list'], { env: { ...env, PKCS11_PIN_FILE: wrongPin } });
      expect(refused.code).toBe(1);
      expect(refused.stderr).not.toContain('9999');
    } finally {
      await database.drop();
    }
  });
});
