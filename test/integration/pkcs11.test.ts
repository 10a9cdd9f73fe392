// The PKCS#11 key-encryption provider against a real SoftHSM2 token, made for this suite in a
// temporary directory through its own SOFTHSM2_CONF. SoftHSM2 comes from Debian's package
// softhsm2; without it every test here fails, saying so.
import { createDecipheriv, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Handle, PKCS11, Template } from 'pkcs11js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decryptEnvelope, encryptEnvelope } from '../../src/keys/envelope.ts';
import { canonicalContext, type EncryptionContext } from '../../src/keys/key-encryption.ts';
import { Pkcs11Error, Pkcs11KeyEncryption, type Pkcs11Options } from '../../src/keys/pkcs11.ts';
import { rejection } from '../helpers/assertions.ts';

type Pkcs11Js = typeof import('pkcs11js');

const TOKEN = 'idp-test';
const PIN = '1234';
const SO_PIN = '5678';
const KEY_LABEL = 'idp-kek';
const LIBRARIES = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so', '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so'];
const INSTALL_HINT = 'install the Debian package softhsm2 (apt-get install -y softhsm2)';

const context = { purpose: 'oidc-signing', kid: 'kid-1' };
const secret = () => Buffer.from('PRIVATE-KEY-MATERIAL: the quick brown fox 0123456789', 'utf8');

let dir: string | undefined;
let library = '';
let setupError: Error | undefined;
const providers: Pkcs11KeyEncryption[] = [];
/** Whether the last withToken() had to C_Initialize the library itself (no provider held it). */
let tokenInitialisedByTest = false;

/** Every test starts here: it fails (never skips) with the reason SoftHSM2 could not be set up. */
function hsm(): { library: string } {
  if (setupError) throw setupError;
  return { library };
}

function provider(options: Partial<Pkcs11Options> = {}): Pkcs11KeyEncryption {
  const made = new Pkcs11KeyEncryption({ library: hsm().library, tokenLabel: TOKEN, pin: PIN, keyLabel: KEY_LABEL, ...options });
  providers.push(made);
  return made;
}

beforeAll(async () => {
  try {
    try {
      execFileSync('softhsm2-util', ['--version'], { stdio: 'pipe' });
    } catch (error) {
      throw new Error(`softhsm2-util is not installed (${(error as Error).message}): ${INSTALL_HINT}`);
    }
    const found = LIBRARIES.find((path) => existsSync(path));
    if (!found) throw new Error(`the SoftHSM2 PKCS#11 library is missing (looked for ${LIBRARIES.join(', ')}): ${INSTALL_HINT}`);
    library = found;
    dir = mkdtempSync(join(tmpdir(), 'idp-softhsm-'));
    const tokens = join(dir, 'tokens');
    execFileSync('mkdir', ['-p', tokens]);
    const conf = join(dir, 'softhsm2.conf');
    writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
    // Read by the library at C_Initialize, so it is set before any provider loads it.
    process.env.SOFTHSM2_CONF = conf;
    execFileSync('softhsm2-util', ['--init-token', '--free', '--label', TOKEN, '--pin', PIN, '--so-pin', SO_PIN], {
      stdio: 'pipe',
      env: { ...process.env, SOFTHSM2_CONF: conf },
    });
    expect(await new Pkcs11KeyEncryption({ library, tokenLabel: TOKEN, pin: PIN, keyLabel: KEY_LABEL }).ensureKey()).toEqual({ created: true });
  } catch (error) {
    setupError = error as Error;
  }
});

afterAll(() => {
  for (const p of providers) p.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});


async function expectPkcs11Error(promise: Promise<unknown>, message: RegExp): Promise<Pkcs11Error> {
  const error = await rejection(promise);
  expect(error).toBeInstanceOf(Pkcs11Error);
  const e = error as Pkcs11Error;
  expect(e.code).toBe('ERR_PKCS11');
  expect(e.status).toBe(500);
  expect(e.expose).toBe(false);
  expect(e.message).toMatch(message);
  return e;
}

/** A session of the test's own on the token, for looking at (and planting) objects directly. */
function withToken<T>(fn: (lib: Pkcs11Js, module: PKCS11, session: Handle, slot: Handle) => T): T {
  const lib = createRequire(import.meta.url)('pkcs11js') as Pkcs11Js;
  const module = new lib.PKCS11();
  module.load(hsm().library);
  let initialised = true;
  try {
    module.C_Initialize({ flags: lib.CKF_OS_LOCKING_OK });
  } catch (error) {
    if ((error as { code?: number }).code !== lib.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw error;
    initialised = false; // a provider holds it; it finalises
  }
  tokenInitialisedByTest = initialised;
  try {
    const slot = module.C_GetSlotList(true).find((s) => module.C_GetTokenInfo(s).label.trim() === TOKEN);
    if (!slot) throw new Error(`token ${TOKEN} not found`);
    const session = module.C_OpenSession(slot, lib.CKF_SERIAL_SESSION | lib.CKF_RW_SESSION);
    try {
      try {
        module.C_Login(session, lib.CKU_USER, PIN);
      } catch (error) {
        if ((error as { code?: number }).code !== lib.CKR_USER_ALREADY_LOGGED_IN) throw error;
      }
      return fn(lib, module, session, slot);
    } finally {
      try {
        module.C_CloseSession(session);
      } catch {
        // fn may have closed every session (C_CloseAllSessions)
      }
    }
  } finally {
    if (initialised) module.C_Finalize();
    module.close();
  }
}

function findByLabel(lib: Pkcs11Js, module: PKCS11, session: Handle, label: string): Handle[] {
  module.C_FindObjectsInit(session, [
    { type: lib.CKA_CLASS, value: lib.CKO_SECRET_KEY },
    { type: lib.CKA_LABEL, value: label },
  ]);
  try {
    return module.C_FindObjects(session, 10);
  } finally {
    module.C_FindObjectsFinal(session);
  }
}

describe('Pkcs11KeyEncryption on SoftHSM2', () => {
  it('SoftHSM2 is installed and a token was initialised (Debian package softhsm2)', () => {
    expect(hsm().library).toMatch(/libsofthsm2\.so$/);
  });

  it('ensureKey finds the key it made instead of making a second', async () => {
    hsm();
    expect(await provider().ensureKey()).toEqual({ created: false });
    expect(withToken((lib, module, session) => findByLabel(lib, module, session, KEY_LABEL).length)).toBe(1);
  });

  it('round trip through encryptEnvelope / decryptEnvelope; the wrapped key is {v, label, iv, data}', async () => {
    const kms = provider();
    const stored = await encryptEnvelope(kms, secret(), context);
    expect(stored).not.toContain('PRIVATE-KEY-MATERIAL');
    const envelope = JSON.parse(stored) as { provider: string; dataKey: string };
    expect(envelope.provider).toBe('pkcs11');
    const wrapped = JSON.parse(envelope.dataKey) as Record<string, unknown>;
    expect(Object.keys(wrapped).sort()).toEqual(['data', 'iv', 'label', 'v']);
    expect(wrapped.v).toBe(1);
    expect(wrapped.label).toBe(KEY_LABEL);
    expect(Buffer.from(wrapped.iv as string, 'base64url')).toHaveLength(12);
    expect(Buffer.from(wrapped.data as string, 'base64url')).toHaveLength(48);
    expect((await decryptEnvelope(kms, stored, context)).toString('utf8')).toBe(secret().toString('utf8'));
    // The context's key order does not matter (it is canonicalised), its content does.
    expect((await decryptEnvelope(kms, stored, { kid: 'kid-1', purpose: 'oidc-signing' })).equals(secret())).toBe(true);
  });

  it('data keys are fresh and 32 bytes; the same data key unwraps to the same bytes', async () => {
    const kms = provider();
    const a = await kms.generateDataKey(context);
    const b = await kms.generateDataKey(context);
    expect(a.plaintext).toHaveLength(32);
    expect(a.plaintext.equals(b.plaintext)).toBe(false);
    expect(a.wrapped).not.toBe(b.wrapped);
    expect((await kms.decryptDataKey(a.wrapped, context)).equals(a.plaintext)).toBe(true);
    expect((await kms.decryptDataKey(b.wrapped, context)).equals(b.plaintext)).toBe(true);
  });

  it('a wrong encryption context fails closed on the token', async () => {
    const kms = provider();
    const stored = await encryptEnvelope(kms, secret(), context);
    const { dataKey } = JSON.parse(stored) as { dataKey: string };
    const wrongs: EncryptionContext[] = [{ purpose: 'oidc-signing', kid: 'kid-2' }, { purpose: 'oidc-signing' }, { ...context, extra: 'x' }, {}];
    for (const wrong of wrongs) {
      await expectPkcs11Error(kms.decryptDataKey(dataKey, wrong), /failed authentication on the token/);
      await expectPkcs11Error(decryptEnvelope(kms, stored, wrong), /failed authentication on the token/);
    }
    // The session is still good for the right context afterwards.
    expect((await decryptEnvelope(kms, stored, context)).equals(secret())).toBe(true);
  });

  it('a tampered wrapped data key fails, and the error carries no key material', async () => {
    const kms = provider();
    const { plaintext, wrapped } = await kms.generateDataKey(context);
    const parsed = JSON.parse(wrapped) as { v: number; label: string; iv: string; data: string };
    const flip = (b64: string, index: number) => {
      const bytes = Buffer.from(b64, 'base64url');
      bytes[index] = (bytes[index] as number) ^ 0x01;
      return bytes.toString('base64url');
    };
    const failures: Pkcs11Error[] = [];
    for (const index of [0, 31, 32, 47]) {
      failures.push(await expectPkcs11Error(kms.decryptDataKey(JSON.stringify({ ...parsed, data: flip(parsed.data, index) }), context), /failed authentication/));
    }
    failures.push(await expectPkcs11Error(kms.decryptDataKey(JSON.stringify({ ...parsed, iv: flip(parsed.iv, 5) }), context), /failed authentication/));
    const short = Buffer.from(parsed.data, 'base64url').subarray(0, 40).toString('base64url');
    failures.push(await expectPkcs11Error(kms.decryptDataKey(JSON.stringify({ ...parsed, data: short }), context), /wrong length/));
    failures.push(await expectPkcs11Error(kms.decryptDataKey(JSON.stringify({ ...parsed, label: 'other-key' }), context), /"other-key", not by the configured "idp-kek"/));
    failures.push(await expectPkcs11Error(kms.decryptDataKey(JSON.stringify({ ...parsed, v: 2 }), context), /not a version 1/));
    failures.push(await expectPkcs11Error(kms.decryptDataKey('{not json', context), /not valid JSON/));
    failures.push(await expectPkcs11Error(kms.decryptDataKey('null', context), /not a version 1/));
    for (const failure of failures) {
      const text = `${failure.message} ${String((failure.cause as Error | undefined)?.message ?? '')}`;
      expect(text).not.toContain(plaintext.toString('base64'));
      expect(text).not.toContain(plaintext.toString('base64url'));
      expect(text).not.toContain(plaintext.toString('hex'));
    }
    expect((await kms.decryptDataKey(wrapped, context)).equals(plaintext)).toBe(true);
  });

  it('a second provider instance, with its own session, decrypts what the first wrapped, also after the first closed', async () => {
    for (const p of providers) p.close();
    const slot = Number(withToken((_lib, _module, _session, s) => s.readBigUInt64LE(0)));
    expect(tokenInitialisedByTest).toBe(true); // no provider holds the library now
    const first = provider();
    const stored = await encryptEnvelope(first, secret(), context);
    const second = new Pkcs11KeyEncryption({ library: hsm().library, slot, pin: PIN, keyLabel: KEY_LABEL });
    providers.push(second);
    expect((await decryptEnvelope(second, stored, context)).equals(secret())).toBe(true);
    first.close();
    await expectPkcs11Error(decryptEnvelope(first, stored, context), /provider is closed/);
    // Closing the first did not finalise the library under the second (nor log it out: no C_Logout).
    expect((await decryptEnvelope(second, stored, context)).equals(secret())).toBe(true);
    withToken(() => undefined);
    expect(tokenInitialisedByTest).toBe(false);
    second.close();
    second.close();
    // With both closed the library was finalised (C_Initialize works again); a new provider starts it again.
    withToken(() => undefined);
    expect(tokenInitialisedByTest).toBe(true);
    const third = provider();
    expect((await decryptEnvelope(third, stored, context)).equals(secret())).toBe(true);
  });

  it('reopens its session when the token dropped it', async () => {
    const kms = provider();
    const stored = await encryptEnvelope(kms, secret(), context);
    withToken((_lib, module, _session, slot) => module.C_CloseAllSessions(slot));
    expect((await decryptEnvelope(kms, stored, context)).equals(secret())).toBe(true);
  });

  it('the token key is sensitive and not extractable: its value cannot be read or wrapped off the token', () => {
    hsm();
    withToken((lib, module, session) => {
      const [key] = findByLabel(lib, module, session, KEY_LABEL);
      if (!key) throw new Error('key not found');
      const attrs = module.C_GetAttributeValue(session, key, [
        { type: lib.CKA_EXTRACTABLE },
        { type: lib.CKA_SENSITIVE },
        { type: lib.CKA_NEVER_EXTRACTABLE },
        { type: lib.CKA_ALWAYS_SENSITIVE },
        { type: lib.CKA_TOKEN },
        { type: lib.CKA_VALUE_LEN },
      ]);
      const byType = (type: number) => attrs.find((a) => a.type === type)?.value as Buffer;
      expect(byType(lib.CKA_EXTRACTABLE)[0]).toBe(0);
      expect(byType(lib.CKA_SENSITIVE)[0]).toBe(1);
      expect(byType(lib.CKA_NEVER_EXTRACTABLE)[0]).toBe(1);
      expect(byType(lib.CKA_ALWAYS_SENSITIVE)[0]).toBe(1);
      expect(byType(lib.CKA_TOKEN)[0]).toBe(1);
      expect(byType(lib.CKA_VALUE_LEN).readUInt32LE(0)).toBe(32);
      expect(() => module.C_GetAttributeValue(session, key, [{ type: lib.CKA_VALUE }])).toThrow(/CKR_ATTRIBUTE_SENSITIVE/);
      // Nor can another key wrap it out.
      const wrapper = module.C_GenerateKey(session, { mechanism: lib.CKM_AES_KEY_GEN }, [
        { type: lib.CKA_CLASS, value: lib.CKO_SECRET_KEY },
        { type: lib.CKA_KEY_TYPE, value: lib.CKK_AES },
        { type: lib.CKA_VALUE_LEN, value: 32 },
        { type: lib.CKA_TOKEN, value: false },
        { type: lib.CKA_WRAP, value: true },
      ]);
      expect(() => module.C_WrapKey(session, { mechanism: lib.CKM_AES_KEY_WRAP_PAD }, wrapper, key, Buffer.alloc(64))).toThrow(/CKR_KEY_UNEXTRACTABLE/);
    });
  });

  it('the token computes standard AES-256-GCM with the canonical context as additional data', async () => {
    // A key of known value (so extractable by construction) lets the wrapped form be checked with node:crypto.
    const known = randomBytes(32);
    const label = 'idp-known-value';
    withToken((lib, module, session) => {
      const template: Template = [
        { type: lib.CKA_CLASS, value: lib.CKO_SECRET_KEY },
        { type: lib.CKA_KEY_TYPE, value: lib.CKK_AES },
        { type: lib.CKA_VALUE, value: known },
        { type: lib.CKA_LABEL, value: label },
        { type: lib.CKA_TOKEN, value: true },
        { type: lib.CKA_PRIVATE, value: true },
        { type: lib.CKA_SENSITIVE, value: true },
        { type: lib.CKA_EXTRACTABLE, value: true },
        { type: lib.CKA_ENCRYPT, value: true },
        { type: lib.CKA_DECRYPT, value: true },
      ];
      module.C_CreateObject(session, template);
    });
    await expectPkcs11Error(provider({ keyLabel: label }).generateDataKey(context), /is CKA_EXTRACTABLE/);
    const kms = provider({ keyLabel: label, allowExtractableKey: true });
    const { plaintext, wrapped } = await kms.generateDataKey(context);
    const { iv, data } = JSON.parse(wrapped) as { iv: string; data: string };
    const bytes = Buffer.from(data, 'base64url');
    const decipher = createDecipheriv('aes-256-gcm', known, Buffer.from(iv, 'base64url'));
    decipher.setAAD(canonicalContext(context));
    decipher.setAuthTag(bytes.subarray(32));
    expect(Buffer.concat([decipher.update(bytes.subarray(0, 32)), decipher.final()]).equals(plaintext)).toBe(true);
  });

  it('refuses keys that are not AES-256 or not sensitive', async () => {
    withToken((lib, module, session) => {
      const base = (label: string, len: number, sensitive: boolean): Template => [
        { type: lib.CKA_CLASS, value: lib.CKO_SECRET_KEY },
        { type: lib.CKA_KEY_TYPE, value: lib.CKK_AES },
        { type: lib.CKA_VALUE_LEN, value: len },
        { type: lib.CKA_LABEL, value: label },
        { type: lib.CKA_TOKEN, value: true },
        { type: lib.CKA_PRIVATE, value: true },
        { type: lib.CKA_SENSITIVE, value: sensitive },
        { type: lib.CKA_EXTRACTABLE, value: false },
        { type: lib.CKA_ENCRYPT, value: true },
        { type: lib.CKA_DECRYPT, value: true },
      ];
      module.C_GenerateKey(session, { mechanism: lib.CKM_AES_KEY_GEN }, base('idp-aes128', 16, true));
      module.C_GenerateKey(session, { mechanism: lib.CKM_AES_KEY_GEN }, base('idp-not-sensitive', 32, false));
    });
    await expectPkcs11Error(provider({ keyLabel: 'idp-aes128' }).generateDataKey(context), /AES-128, expected AES-256/);
    await expectPkcs11Error(provider({ keyLabel: 'idp-not-sensitive', allowExtractableKey: true }).generateDataKey(context), /not CKA_SENSITIVE/);
  });

  it('configuration errors are Pkcs11Errors that name the problem and never the PIN', async () => {
    hsm();
    // Login is per process and token: while any session of this process is logged in, C_Login
    // answers CKR_USER_ALREADY_LOGGED_IN without looking at the PIN. Close them all first.
    for (const p of providers) p.close();
    await expectPkcs11Error(provider({ keyLabel: 'no-such-key' }).generateDataKey(context), /no AES secret key labelled "no-such-key".*idp kms init/);
    await expectPkcs11Error(provider({ tokenLabel: 'no-such-token' }).generateDataKey(context), /no initialised token labelled "no-such-token"/);
    await expectPkcs11Error(provider({ tokenLabel: undefined, slot: 987654 }).generateDataKey(context), /no token present in slot 987654/);
    await expectPkcs11Error(provider({ library: '/nonexistent/libpkcs11.so' }).generateDataKey(context), /cannot load PKCS#11 library \/nonexistent\/libpkcs11\.so/);
    const wrongPin = 'wrong-pin-9876';
    const error = await expectPkcs11Error(provider({ pin: wrongPin }).generateDataKey(context), /login to token "idp-test" failed: .*CKR_PIN_INCORRECT/);
    expect(error.message).not.toContain(wrongPin);
    expect(() => new Pkcs11KeyEncryption({ library, pin: PIN, keyLabel: KEY_LABEL })).toThrow(/exactly one of slot and tokenLabel/);
    expect(() => new Pkcs11KeyEncryption({ library, tokenLabel: TOKEN, slot: 0, pin: PIN, keyLabel: KEY_LABEL })).toThrow(/exactly one of slot and tokenLabel/);
    expect(() => new Pkcs11KeyEncryption({ library, tokenLabel: TOKEN, pin: '', keyLabel: KEY_LABEL })).toThrow(Pkcs11Error);
  });
});
