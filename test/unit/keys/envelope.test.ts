// The local master key file and envelope encryption over it: file creation and permissions,
// round trips, and every way a stored envelope can be wrong.
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decryptEnvelope, encryptEnvelope, EnvelopeError } from '../../../src/keys/envelope.ts';
import { canonicalContext } from '../../../src/keys/key-encryption.ts';
import { LocalMasterKey, MasterKeyError } from '../../../src/keys/local-master-key.ts';
import { tempDir } from '../../helpers/databases.ts';
import { rejection } from '../../helpers/assertions.ts';
import { signingContext, wrongContexts } from '../../helpers/keys.ts';

let dir: ReturnType<typeof tempDir>;
let kms: LocalMasterKey;
const context = signingContext;
const secretText = 'PRIVATE-KEY-MATERIAL: the quick brown fox 0123456789';
const plaintext = () => Buffer.from(secretText, 'utf8');

beforeAll(() => {
  dir = tempDir('idp-keys-');
  kms = LocalMasterKey.load(join(dir.path, 'main', 'master.key'), { create: true });
});
afterAll(() => dir.remove());


/** Flips one bit of the first byte of a base64url value. */
function flip(value: string): string {
  const bytes = Buffer.from(value, 'base64url');
  bytes[0] = bytes[0]! ^ 0x01;
  return bytes.toString('base64url');
}

function edit(envelope: string, change: (e: Record<string, unknown>) => void): string {
  const parsed = JSON.parse(envelope) as Record<string, unknown>;
  change(parsed);
  return JSON.stringify(parsed);
}

describe('LocalMasterKey.load', () => {
  it('creates a 0600 file holding 32 bytes in base64, in a new folder', () => {
    const path = join(dir.path, 'fresh', 'nested', 'master.key');
    expect(existsSync(path)).toBe(false);
    LocalMasterKey.load(path, { create: true });
    const stat = statSync(path);
    expect(stat.isFile()).toBe(true);
    expect(stat.mode & 0o777).toBe(0o600);
    expect(Buffer.from(readFileSync(path, 'utf8').trim(), 'base64')).toHaveLength(32);
  });

  it('reads the same key back: what one instance encrypts, another decrypts', async () => {
    const path = join(dir.path, 'reload', 'master.key');
    const first = LocalMasterKey.load(path, { create: true });
    const before = readFileSync(path, 'utf8');
    const second = LocalMasterKey.load(path, { create: true });
    expect(readFileSync(path, 'utf8')).toBe(before);
    const envelope = await encryptEnvelope(first, plaintext(), context);
    expect((await decryptEnvelope(second, envelope, context)).toString('utf8')).toBe(secretText);
  });

  it('refuses a missing file when create is off', () => {
    const path = join(dir.path, 'absent', 'master.key');
    expect(() => LocalMasterKey.load(path, { create: false })).toThrow(MasterKeyError);
    expect(() => LocalMasterKey.load(path, { create: false })).toThrow(/does not exist/);
    expect(existsSync(path)).toBe(false);
  });

  it.each([0o644, 0o640, 0o604, 0o660])('refuses a file with mode %o, telling to chmod 600', (mode) => {
    const path = join(dir.path, `mode-${mode.toString(8)}.key`);
    writeFileSync(path, `${Buffer.alloc(32, 7).toString('base64')}\n`);
    chmodSync(path, mode);
    let thrown: unknown;
    try {
      LocalMasterKey.load(path, { create: true });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(MasterKeyError);
    expect((thrown as Error).message).toContain(`chmod 600 ${path}`);
    expect((thrown as Error).message).toContain(`mode ${mode.toString(8)}`);
    // The file is left as it was: not rewritten, not re-permissioned.
    expect(statSync(path).mode & 0o777).toBe(mode);
  });

  it('accepts a 0400 file', () => {
    const path = join(dir.path, 'readonly.key');
    writeFileSync(path, Buffer.alloc(32, 9).toString('base64'));
    chmodSync(path, 0o400);
    expect(LocalMasterKey.load(path, { create: false })).toBeInstanceOf(LocalMasterKey);
  });

  it.each([
    ['16 bytes', Buffer.alloc(16, 1).toString('base64')],
    ['33 bytes', Buffer.alloc(33, 1).toString('base64')],
    ['an empty file', ''],
  ])('refuses a key of the wrong length (%s)', (_name, content) => {
    const path = join(dir.path, `short-${Math.random().toString(36).slice(2)}.key`);
    writeFileSync(path, content, { mode: 0o600 });
    chmodSync(path, 0o600);
    expect(() => LocalMasterKey.load(path, { create: true })).toThrow(/must hold 32 bytes/);
  });
});

describe('envelopes', () => {
  it('round-trips a secret', async () => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    const parsed = JSON.parse(envelope) as Record<string, unknown>;
    expect(parsed).toMatchObject({ v: 1, provider: 'local' });
    expect(Object.keys(parsed).sort()).toEqual(['data', 'dataKey', 'iv', 'provider', 'tag', 'v']);
    expect((await decryptEnvelope(kms, envelope, context)).toString('utf8')).toBe(secretText);
  });

  it('round-trips empty and binary plaintexts', async () => {
    const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    expect(await decryptEnvelope(kms, await encryptEnvelope(kms, binary, context), context)).toEqual(binary);
    expect(await decryptEnvelope(kms, await encryptEnvelope(kms, Buffer.alloc(0), context), context)).toEqual(Buffer.alloc(0));
  });

  it('uses a fresh data key and IV each time', async () => {
    const a = JSON.parse(await encryptEnvelope(kms, plaintext(), context)) as Record<string, string>;
    const b = JSON.parse(await encryptEnvelope(kms, plaintext(), context)) as Record<string, string>;
    expect(a.dataKey).not.toBe(b.dataKey);
    expect(a.iv).not.toBe(b.iv);
    expect(a.data).not.toBe(b.data);
  });

  it('does not depend on the order of the context keys', async () => {
    const envelope = await encryptEnvelope(kms, plaintext(), { purpose: 'p', kid: 'k' });
    expect((await decryptEnvelope(kms, envelope, { kid: 'k', purpose: 'p' })).toString('utf8')).toBe(secretText);
    expect(canonicalContext({ b: '2', a: '1' })).toEqual(canonicalContext({ a: '1', b: '2' }));
  });

  it.each(wrongContexts)('fails with %s as encryption context', async (_name, wrong) => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    const error = await rejection(decryptEnvelope(kms, envelope, wrong));
    expect(error).toBeInstanceOf(MasterKeyError);
    expect(error.message).toMatch(/failed authentication/);
  });

  it.each(['data', 'tag', 'iv'] as const)('fails when the %s is tampered with', async (field) => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    const tampered = edit(envelope, (e) => {
      e[field] = flip(e[field] as string);
    });
    const error = await rejection(decryptEnvelope(kms, tampered, context));
    expect(error).toBeInstanceOf(EnvelopeError);
    expect(error.message).toMatch(/failed authentication/);
  });

  it('fails when the ciphertext is truncated or extended', async () => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    const shorter = edit(envelope, (e) => {
      e.data = Buffer.from(e.data as string, 'base64url').subarray(1).toString('base64url');
    });
    const longer = edit(envelope, (e) => {
      e.data = Buffer.concat([Buffer.from(e.data as string, 'base64url'), Buffer.from([0])]).toString('base64url');
    });
    expect(await rejection(decryptEnvelope(kms, shorter, context))).toBeInstanceOf(EnvelopeError);
    expect(await rejection(decryptEnvelope(kms, longer, context))).toBeInstanceOf(EnvelopeError);
  });

  it.each(['data', 'tag', 'iv'] as const)('fails when the wrapped data key %s is tampered with', async (field) => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    const tampered = edit(envelope, (e) => {
      const wrapped = JSON.parse(e.dataKey as string) as Record<string, unknown>;
      wrapped[field] = flip(wrapped[field] as string);
      e.dataKey = JSON.stringify(wrapped);
    });
    const error = await rejection(decryptEnvelope(kms, tampered, context));
    expect(error).toBeInstanceOf(MasterKeyError);
    expect(error.message).toMatch(/data key failed authentication/);
  });

  it('fails when the wrapped data key is not JSON', async () => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    const tampered = edit(envelope, (e) => {
      e.dataKey = 'garbage';
    });
    expect((await rejection(decryptEnvelope(kms, tampered, context))).message).toMatch(/wrapped data key is not valid JSON/);
  });

  it('fails when the data key of another envelope is swapped in', async () => {
    const a = await encryptEnvelope(kms, plaintext(), context);
    const b = await encryptEnvelope(kms, Buffer.from('other secret'), context);
    const swapped = edit(a, (e) => {
      e.dataKey = (JSON.parse(b) as Record<string, unknown>).dataKey;
    });
    expect(await rejection(decryptEnvelope(kms, swapped, context))).toBeInstanceOf(EnvelopeError);
  });

  it('an envelope from another master key fails with an error naming both keys', async () => {
    const other = LocalMasterKey.load(join(dir.path, 'other', 'master.key'), { create: true });
    const envelope = await encryptEnvelope(other, plaintext(), context);
    const error = await rejection(decryptEnvelope(kms, envelope, context));
    expect(error).toBeInstanceOf(MasterKeyError);
    const mk = (JSON.parse((JSON.parse(envelope) as { dataKey: string }).dataKey) as { mk: string }).mk;
    expect(mk).toMatch(/^[0-9a-f]{16}$/);
    expect(error.message).toMatch(new RegExp(`^data key was wrapped by master key ${mk}, not by this one \\([0-9a-f]{16}\\)$`));
    // And the other key still opens its own envelope.
    expect((await decryptEnvelope(other, envelope, context)).toString('utf8')).toBe(secretText);
  });

  it('refuses invalid JSON, an unknown version and another provider', async () => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    const notJson = await rejection(decryptEnvelope(kms, 'not json', context));
    expect(notJson).toBeInstanceOf(EnvelopeError);
    expect(notJson.message).toBe('stored envelope is not valid JSON');
    const v2 = await rejection(decryptEnvelope(kms, edit(envelope, (e) => void (e.v = 2)), context));
    expect(v2.message).toBe('unsupported envelope version 2');
    const aws = await rejection(decryptEnvelope(kms, edit(envelope, (e) => void (e.provider = 'aws-kms')), context));
    expect(aws).toBeInstanceOf(EnvelopeError);
    expect(aws.message).toBe('envelope was made by key provider "aws-kms", configured is "local"');
  });

  it('never contains the plaintext, in clear or in a common encoding', async () => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    const forms = [secretText, plaintext().toString('base64'), plaintext().toString('base64url'), plaintext().toString('hex'), 'quick brown fox'];
    for (const form of forms) expect(envelope).not.toContain(form);
    // Nor in the wrapped data key.
    const wrapped = (JSON.parse(envelope) as { dataKey: string }).dataKey;
    for (const form of forms) expect(wrapped).not.toContain(form);
  });

  it('wipes the plaintext data key after use', async () => {
    let handedOut: Buffer | undefined;
    const spy = {
      name: kms.name,
      generateDataKey: async (ctx: Record<string, string>) => {
        const key = await kms.generateDataKey(ctx);
        handedOut = key.plaintext;
        return key;
      },
      decryptDataKey: (wrapped: string, ctx: Record<string, string>) => kms.decryptDataKey(wrapped, ctx),
    };
    const envelope = await encryptEnvelope(spy, plaintext(), context);
    expect(handedOut).toEqual(Buffer.alloc(32));
    expect((await decryptEnvelope(kms, envelope, context)).toString('utf8')).toBe(secretText);
  });
});
