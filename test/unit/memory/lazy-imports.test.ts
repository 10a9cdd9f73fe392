// The packages only some configurations or some requests need are loaded at their first use, not
// at start (docs/performance.md, bench/memory-startup.ts): the AWS SDK, PKCS#11, zxcvbn and its
// dictionaries, the password blocklist, @simplewebauthn/server, otplib, qrcode and nodemailer.
// Each check runs in a fresh Node process that records every module it resolves.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

const deferred = ['@aws-sdk/client-kms', 'pkcs11js', '@zxcvbn-ts/core', '@zxcvbn-ts/language-common', '@simplewebauthn/server', 'otplib', 'qrcode', 'nodemailer'] as const;
type Deferred = (typeof deferred)[number];
type Loaded = Record<Deferred, boolean>;

// Runs as an ES module in the child. Only dynamic imports: the hook must be in place first.
const prelude = `
import { registerHooks } from 'node:module';
const seen = new Set();
registerHooks({ resolve(specifier, context, next) { const result = next(specifier, context); seen.add(result.url); return result; } });
const packages = ${JSON.stringify(deferred)};
const out = {};
const note = (label, extra = {}) => { out[label] = { ...Object.fromEntries(packages.map((p) => [p, [...seen].some((u) => u.includes('/node_modules/' + p + '/'))])), ...extra }; };
const src = (path) => import(new URL(path, ${JSON.stringify(`file://${repoRoot}`)}).href);
`;

function runChild(body: string): Promise<Record<string, Loaded & Record<string, unknown>>> {
  const script = `${prelude}\n${body}\nprocess.stdout.write(JSON.stringify(out));\nprocess.exit(0);\n`;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], {
      cwd: repoRoot,
      timeout: 60_000,
      // Static credentials, so the SDK's default chain never waits for an instance metadata service.
      env: { ...process.env, AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'secret', AWS_EC2_METADATA_DISABLED: 'true' },
    }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${error.message}\n${stderr}`));
      else resolve(JSON.parse(stdout));
    });
  });
}

const none = Object.fromEntries(deferred.map((p) => [p, false])) as Loaded;

describe('lazily loaded packages', () => {
  it('importing and constructing the custody providers, the password policy, WebAuthn, TOTP and the mailer loads none of them; each loads at its first use', async () => {
    const out = await runChild(`
      const { keyEncryptionProvider } = await src('src/keys/custody.ts');
      const policy = await src('src/accounts/password-policy.ts');
      const { WebAuthnService } = await src('src/mfa/webauthn.ts');
      const totp = await src('src/mfa/totp.ts');
      await src('src/mfa/totp-factors.ts');
      await src('src/mfa/otp-senders.ts');
      const { Mailer } = await src('src/email/mailer.ts');
      const { createLogger } = await src('src/log.ts');
      note('imported', { blocklistLoads: policy.commonPasswordStats().loads });

      const kms = keyEncryptionProvider({ KMS_PROVIDER: 'aws', AWS_KMS_KEY_ID: 'alias/idp', AWS_REGION: 'eu-west-1', AWS_KMS_ENDPOINT: 'http://127.0.0.1:9' });
      const mailer = new Mailer({ transportUrl: 'smtp://127.0.0.1:9', from: 'idp@example.test', log: createLogger('silent') });
      const challenges = new Map();
      const webauthn = new WebAuthnService({
        rpId: 'idp.example.test', rpName: 'IdP', origin: 'https://idp.example.test', userVerification: 'preferred', failOnCounterRegression: true,
        challenges: { set: async (k, v) => void challenges.set(k, v), get: async (k) => challenges.get(k), delete: async (k) => void challenges.delete(k), acquire: async () => true },
        store: {},
      });
      const weak = policy.evaluatePassword('password', policy.resolvePasswordPolicy());
      note('constructed', { blocklistLoads: policy.commonPasswordStats().loads, weakRefused: !weak.ok });

      const strength = policy.evaluatePassword('abcabcabcabcabc', policy.resolvePasswordPolicy({ minStrength: 3 }));
      note('strength', { strengthProblems: strength.problems });
      const secret = totp.newTotpSecret();
      const matched = totp.matchTotp(secret, totp.totpCodeAt(secret, 1_700_000_000_000), 1_700_000_000_000);
      note('totp', { matched });
      const qr = await totp.qrCodeDataUrl(totp.otpauthUri({ secret, account: 'a@example.test', issuer: 'IdP' }));
      note('qrcode', { qr: qr.slice(0, 22) });
      const options = await webauthn.authenticationOptions('flow-1');
      note('webauthn', { challenge: typeof options.challenge });
      const mail = await mailer.send({ to: 'a@example.test', subject: 's', text: 't' }).then(() => 'sent', (e) => e.name);
      await mailer.close();
      note('mail', { mail });
      const kmsError = await kms.check().then(() => 'ok', (e) => e.name);
      kms.close();
      note('kms', { kmsError });
    `);

    expect(out.imported).toEqual({ ...none, blocklistLoads: 0 });
    // The blocklist is read at the first password check, and applies to it.
    expect(out.constructed).toEqual({ ...none, blocklistLoads: 1, weakRefused: true });
    expect(out.strength).toMatchObject({ ...none, '@zxcvbn-ts/core': true, '@zxcvbn-ts/language-common': true });
    expect((out.strength!.strengthProblems as string[]).some((p) => p.startsWith('is too easy to guess'))).toBe(true);
    expect(out.totp).toMatchObject({ otplib: true, qrcode: false, '@simplewebauthn/server': false, nodemailer: false, matched: Math.floor(1_700_000_000 / 30) });
    expect(out.qrcode).toMatchObject({ qrcode: true, '@simplewebauthn/server': false, nodemailer: false, qr: 'data:image/png;base64,' });
    expect(out.webauthn).toMatchObject({ '@simplewebauthn/server': true, nodemailer: false, '@aws-sdk/client-kms': false, challenge: 'string' });
    expect(out.mail).toMatchObject({ nodemailer: true, '@aws-sdk/client-kms': false, mail: 'MailError' });
    expect(out.kms).toMatchObject({ '@aws-sdk/client-kms': true, pkcs11js: false, kmsError: 'KmsError' });
  });

  it('importing src/main.ts (and with it src/app.ts) loads none of them', async () => {
    const out = await runChild(`
      await src('src/main.ts');
      note('imported');
    `);
    expect(out.imported).toEqual(none);
  });
});
