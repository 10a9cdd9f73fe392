// The `aws` key-encryption provider (AWS KMS through @aws-sdk/client-kms) under envelope encryption.
//
// AWS KMS cannot be reached from this machine (and there is no KMS emulator in npm or Debian), so
// these tests run the real SDK against test/helpers/fake-kms.ts: a local HTTP server speaking the
// real KMS wire protocol (JSON 1.1, `X-Amz-Target: TrentService.GenerateDataKey|Decrypt|DescribeKey`,
// SigV4-signed requests), which binds each CiphertextBlob to its key and encryption context with
// AES-256-GCM the way KMS does. What this proves is the provider's use of the SDK and the protocol
// and that it fails closed; it does not prove anything about a real AWS account, its IAM policy or
// its network path.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { IdpError } from '../../src/errors.ts';
import { AwsKmsKeyEncryption, KmsError, type AwsKmsOptions } from '../../src/keys/aws-kms.ts';
import { decryptEnvelope, encryptEnvelope, EnvelopeError } from '../../src/keys/envelope.ts';
import type { EncryptionContext, KeyEncryptionProvider } from '../../src/keys/key-encryption.ts';
import { startFakeKms, type FakeKms } from '../helpers/fake-kms.ts';
import { rejection } from '../helpers/assertions.ts';
import { signingContext, wrongContexts } from '../helpers/keys.ts';

const context = signingContext;
const secretText = 'PRIVATE-KEY-MATERIAL: the quick brown fox 0123456789';
const plaintext = () => Buffer.from(secretText, 'utf8');

let fake: FakeKms;
let kms: AwsKmsKeyEncryption;
const providers: AwsKmsKeyEncryption[] = [];

function provider(fakeKms: FakeKms, overrides: Partial<AwsKmsOptions> = {}): AwsKmsKeyEncryption {
  const created = new AwsKmsKeyEncryption({
    keyId: fakeKms.keyId,
    region: fakeKms.region,
    endpoint: fakeKms.endpoint,
    credentials: { accessKeyId: fakeKms.accessKeyId, secretAccessKey: fakeKms.secretAccessKey },
    timeoutMs: 1000,
    ...overrides,
  });
  providers.push(created);
  return created;
}

beforeAll(async () => {
  fake = await startFakeKms();
  kms = provider(fake);
});
afterAll(async () => {
  for (const p of providers) p.close();
  await fake.close();
});
beforeEach(() => {
  fake.stall = false;
  fake.resetCounts();
});


function edit(envelope: string, change: (e: Record<string, unknown>) => void): string {
  const parsed = JSON.parse(envelope) as Record<string, unknown>;
  change(parsed);
  return JSON.stringify(parsed);
}

/** Rewrites the wrapped data key ({ v, keyId, blob }) inside an envelope. */
function editWrapped(envelope: string, change: (w: { v: number; keyId: string; blob: string }) => void): string {
  return edit(envelope, (e) => {
    const wrapped = JSON.parse(e.dataKey as string) as { v: number; keyId: string; blob: string };
    change(wrapped);
    e.dataKey = JSON.stringify(wrapped);
  });
}

function flipBase64url(value: string): string {
  const bytes = Buffer.from(value, 'base64url');
  bytes[0] = bytes[0]! ^ 0x01;
  return bytes.toString('base64url');
}

/** Wraps a provider to keep a copy of every plaintext data key it hands out (before the caller wipes it). */
function recording(inner: KeyEncryptionProvider): { spy: KeyEncryptionProvider; handedOut: Buffer[]; copies: Buffer[] } {
  const handedOut: Buffer[] = [];
  const copies: Buffer[] = [];
  const spy: KeyEncryptionProvider = {
    name: inner.name,
    generateDataKey: async (ctx: EncryptionContext) => {
      const key = await inner.generateDataKey(ctx);
      handedOut.push(key.plaintext);
      copies.push(Buffer.from(key.plaintext));
      return key;
    },
    decryptDataKey: (wrapped: string, ctx: EncryptionContext) => inner.decryptDataKey(wrapped, ctx),
  };
  return { spy, handedOut, copies };
}

function expectKmsError(error: Error, pattern: RegExp): void {
  expect(error).toBeInstanceOf(KmsError);
  expect(error).toBeInstanceOf(IdpError);
  expect(error.name).toBe('KmsError');
  expect((error as KmsError).code).toBe('ERR_KMS');
  expect((error as KmsError).status).toBe(500);
  expect((error as KmsError).expose).toBe(false);
  expect(error.message).toMatch(pattern);
}

describe('AwsKmsKeyEncryption against a local KMS-protocol server', () => {
  it('round-trips a secret through an envelope, one GenerateDataKey per seal and one Decrypt per open', async () => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    expect(fake.calls).toEqual({ GenerateDataKey: 1, Decrypt: 0, DescribeKey: 0 });

    const parsed = JSON.parse(envelope) as Record<string, unknown>;
    expect(parsed).toMatchObject({ v: 1, provider: 'aws' });
    expect(Object.keys(parsed).sort()).toEqual(['data', 'dataKey', 'iv', 'provider', 'tag', 'v']);
    const wrapped = JSON.parse(parsed.dataKey as string) as Record<string, unknown>;
    expect(Object.keys(wrapped).sort()).toEqual(['blob', 'keyId', 'v']);
    expect(wrapped).toMatchObject({ v: 1, keyId: fake.arn(fake.keyId) });
    expect(Buffer.from(wrapped.blob as string, 'base64').length).toBeGreaterThan(32);

    expect((await decryptEnvelope(kms, envelope, context)).toString('utf8')).toBe(secretText);
    expect(fake.calls).toEqual({ GenerateDataKey: 1, Decrypt: 1, DescribeKey: 0 });
    expect((await decryptEnvelope(kms, envelope, context)).toString('utf8')).toBe(secretText);
    expect(fake.calls).toEqual({ GenerateDataKey: 1, Decrypt: 2, DescribeKey: 0 });
  });

  it('sends the key id and the { purpose, kid } encryption context to KMS, over SigV4-signed requests', async () => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    await decryptEnvelope(kms, envelope, context);
    expect(fake.requests.map((r) => r.operation)).toEqual(['GenerateDataKey', 'Decrypt']);
    const [generate, decrypt] = fake.requests;
    expect(generate!.keyId).toBe(fake.keyId);
    expect(generate!.encryptionContext).toEqual(context);
    expect(decrypt!.keyId).toBe(fake.arn(fake.keyId));
    expect(decrypt!.encryptionContext).toEqual(context);
    for (const request of fake.requests) {
      expect(request.authorization).toMatch(new RegExp(`^AWS4-HMAC-SHA256 Credential=${fake.accessKeyId}/\\d{8}/${fake.region}/kms/aws4_request, SignedHeaders=[^,]+, Signature=[0-9a-f]{64}$`));
    }
  });

  it('round-trips empty and binary plaintexts, with a fresh data key each time', async () => {
    const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    expect(await decryptEnvelope(kms, await encryptEnvelope(kms, binary, context), context)).toEqual(binary);
    expect(await decryptEnvelope(kms, await encryptEnvelope(kms, Buffer.alloc(0), context), context)).toEqual(Buffer.alloc(0));
    const a = JSON.parse(await encryptEnvelope(kms, plaintext(), context)) as Record<string, string>;
    const b = JSON.parse(await encryptEnvelope(kms, plaintext(), context)) as Record<string, string>;
    expect(a.dataKey).not.toBe(b.dataKey);
    expect(a.data).not.toBe(b.data);
  });

  it('hands out a 32-byte Buffer data key, which the envelope wipes after use', async () => {
    const { spy, handedOut, copies } = recording(kms);
    const envelope = await encryptEnvelope(spy, plaintext(), context);
    expect(handedOut).toHaveLength(1);
    expect(Buffer.isBuffer(handedOut[0])).toBe(true);
    expect(copies[0]).toHaveLength(32);
    expect(copies[0]).not.toEqual(Buffer.alloc(32));
    expect(handedOut[0]).toEqual(Buffer.alloc(32));
    // decryptDataKey gives back the same key KMS generated.
    const wrapped = (JSON.parse(envelope) as { dataKey: string }).dataKey;
    expect(await kms.decryptDataKey(wrapped, context)).toEqual(copies[0]);
  });

  it('does not depend on the order of the context keys', async () => {
    const envelope = await encryptEnvelope(kms, plaintext(), { purpose: 'oidc-signing', kid: 'k' });
    expect((await decryptEnvelope(kms, envelope, { kid: 'k', purpose: 'oidc-signing' })).toString('utf8')).toBe(secretText);
  });

  it.each(wrongContexts)('fails closed with %s as encryption context (KMS refuses to unwrap)', async (_name, wrong) => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    fake.resetCounts();
    const error = await rejection(decryptEnvelope(kms, envelope, wrong));
    expectKmsError(error, /^KMS Decrypt failed for key arn:aws:kms:\S+: InvalidCiphertextException$/);
    expect(fake.calls.Decrypt).toBe(1);
  });

  it('fails closed when any single byte of the CiphertextBlob is altered', async () => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    const blob = Buffer.from((JSON.parse((JSON.parse(envelope) as { dataKey: string }).dataKey) as { blob: string }).blob, 'base64');
    for (let i = 0; i < blob.length; i += 1) {
      const tampered = editWrapped(envelope, (w) => {
        const bytes = Buffer.from(w.blob, 'base64');
        bytes[i] = bytes[i]! ^ 0x01;
        w.blob = bytes.toString('base64');
      });
      const error = await rejection(decryptEnvelope(kms, tampered, context));
      expectKmsError(error, /^KMS Decrypt failed for key /);
    }
    // The last byte is in the encrypted data key itself: KMS reports the ciphertext as invalid.
    const lastByte = editWrapped(envelope, (w) => {
      const bytes = Buffer.from(w.blob, 'base64');
      bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0x80;
      w.blob = bytes.toString('base64');
    });
    expectKmsError(await rejection(decryptEnvelope(kms, lastByte, context)), /InvalidCiphertextException/);
  });

  it('fails closed when the CiphertextBlob is truncated, extended or empty', async () => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    const shorter = editWrapped(envelope, (w) => void (w.blob = Buffer.from(w.blob, 'base64').subarray(0, -1).toString('base64')));
    const longer = editWrapped(envelope, (w) => void (w.blob = Buffer.concat([Buffer.from(w.blob, 'base64'), Buffer.from([0])]).toString('base64')));
    expectKmsError(await rejection(decryptEnvelope(kms, shorter, context)), /InvalidCiphertextException/);
    expectKmsError(await rejection(decryptEnvelope(kms, longer, context)), /InvalidCiphertextException/);
    const empty = editWrapped(envelope, (w) => void (w.blob = ''));
    expectKmsError(await rejection(decryptEnvelope(kms, empty, context)), /not a version 1 AWS KMS data key/);
  });

  it('fails closed when the wrapped key names another KMS key than the one that made the blob', async () => {
    const otherKey = fake.createKey();
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    const tampered = editWrapped(envelope, (w) => void (w.keyId = otherKey));
    expectKmsError(await rejection(decryptEnvelope(kms, tampered, context)), /^KMS Decrypt failed for key .*: IncorrectKeyException/);
  });

  it.each(['data', 'tag', 'iv'] as const)('fails when the envelope %s is tampered with (KMS unwraps, AES-GCM refuses)', async (field) => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    fake.resetCounts();
    const tampered = edit(envelope, (e) => void (e[field] = flipBase64url(e[field] as string)));
    const error = await rejection(decryptEnvelope(kms, tampered, context));
    expect(error).toBeInstanceOf(EnvelopeError);
    expect(error.message).toMatch(/failed authentication/);
    expect(fake.calls.Decrypt).toBe(1);
  });

  it('fails when the data key of another envelope is swapped in', async () => {
    const a = await encryptEnvelope(kms, plaintext(), context);
    const b = await encryptEnvelope(kms, Buffer.from('other secret'), context);
    const swapped = edit(a, (e) => void (e.dataKey = (JSON.parse(b) as Record<string, unknown>).dataKey));
    expect(await rejection(decryptEnvelope(kms, swapped, context))).toBeInstanceOf(EnvelopeError);
  });

  it('refuses a malformed wrapped data key without calling KMS', async () => {
    const envelope = await encryptEnvelope(kms, plaintext(), context);
    fake.resetCounts();
    const notJson = edit(envelope, (e) => void (e.dataKey = 'garbage'));
    expectKmsError(await rejection(decryptEnvelope(kms, notJson, context)), /^wrapped data key is not valid JSON$/);
    for (const change of [(w: Record<string, unknown>) => void (w.v = 2), (w: Record<string, unknown>) => void delete w.keyId, (w: Record<string, unknown>) => void (w.blob = 7)]) {
      const bad = editWrapped(envelope, change as (w: { v: number; keyId: string; blob: string }) => void);
      expectKmsError(await rejection(decryptEnvelope(kms, bad, context)), /^wrapped data key is not a version 1 AWS KMS data key$/);
    }
    const literalNull = edit(envelope, (e) => void (e.dataKey = 'null'));
    expectKmsError(await rejection(decryptEnvelope(kms, literalNull, context)), /not a version 1 AWS KMS data key/);
    expect(fake.calls).toEqual({ GenerateDataKey: 0, Decrypt: 0, DescribeKey: 0 });
  });

  it('an envelope made by the local provider is refused by name', async () => {
    const envelope = edit(await encryptEnvelope(kms, plaintext(), context), (e) => void (e.provider = 'local'));
    const error = await rejection(decryptEnvelope(kms, envelope, context));
    expect(error).toBeInstanceOf(EnvelopeError);
    expect(error.message).toBe('envelope was made by key provider "local", configured is "aws"');
  });

  it('an unknown key id fails with a clear error, on seal and on check()', async () => {
    const missing = '00000000-0000-4000-8000-000000000000';
    const unknown = provider(fake, { keyId: missing });
    const error = await rejection(encryptEnvelope(unknown, plaintext(), context));
    expectKmsError(error, new RegExp(`^KMS GenerateDataKey failed for key ${missing}: NotFoundException: Key '.*${missing}' does not exist$`));
    expectKmsError(await rejection(unknown.check()), new RegExp(`^KMS DescribeKey failed for key ${missing}: NotFoundException`));
  });

  it('credentials KMS does not recognise fail with a clear error', async () => {
    const stranger = provider(fake, { credentials: { accessKeyId: 'AKIAOTHERACCOUNT0000', secretAccessKey: 'x' } });
    expectKmsError(await rejection(stranger.generateDataKey(context)), /^KMS GenerateDataKey failed for key .*: UnrecognizedClientException/);
    expect(fake.calls.GenerateDataKey).toBe(0);
  });

  it('without credentials, the SDK default chain applies (here: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)', async () => {
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY, token: process.env.AWS_SESSION_TOKEN };
    process.env.AWS_ACCESS_KEY_ID = fake.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = fake.secretAccessKey;
    delete process.env.AWS_SESSION_TOKEN;
    try {
      const fromEnv = provider(fake, { credentials: undefined });
      const envelope = await encryptEnvelope(fromEnv, plaintext(), context);
      expect((await decryptEnvelope(kms, envelope, context)).toString('utf8')).toBe(secretText);
      expect(fake.requests[0]!.authorization).toContain(`Credential=${fake.accessKeyId}/`);
    } finally {
      for (const [name, value] of [['AWS_ACCESS_KEY_ID', saved.id], ['AWS_SECRET_ACCESS_KEY', saved.secret], ['AWS_SESSION_TOKEN', saved.token]] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });

  it('the stored envelope holds neither the secret nor the plaintext data key, in clear, base64 or hex', async () => {
    const { spy, copies } = recording(kms);
    const envelope = await encryptEnvelope(spy, plaintext(), context);
    const dataKey = copies[0]!;
    const forms = [
      secretText,
      'quick brown fox',
      plaintext().toString('base64'),
      plaintext().toString('base64url'),
      plaintext().toString('hex'),
      dataKey.toString('base64'),
      dataKey.toString('base64url'),
      dataKey.toString('hex'),
      dataKey.toString('hex').toUpperCase(),
      // A 12-byte stretch of the key, so a shifted base64 encoding would still be caught.
      dataKey.subarray(3, 15).toString('base64'),
      dataKey.subarray(3, 15).toString('hex'),
    ];
    const wrapped = (JSON.parse(envelope) as { dataKey: string }).dataKey;
    const blob = Buffer.from((JSON.parse(wrapped) as { blob: string }).blob, 'base64');
    for (const form of forms) {
      expect(envelope).not.toContain(form);
      expect(wrapped).not.toContain(form);
    }
    expect(blob.includes(dataKey)).toBe(false);
    expect(blob.includes(dataKey.subarray(0, 8))).toBe(false);
  });

  it('error messages never carry key material', async () => {
    const { spy, copies } = recording(kms);
    const envelope = await encryptEnvelope(spy, plaintext(), context);
    const dataKey = copies[0]!;
    const blob = (JSON.parse((JSON.parse(envelope) as { dataKey: string }).dataKey) as { blob: string }).blob;
    const error = await rejection(decryptEnvelope(kms, envelope, { purpose: 'oidc-signing', kid: 'kid-2' }));
    expectKmsError(error, /InvalidCiphertextException/);
    for (const form of [dataKey.toString('base64'), dataKey.toString('hex'), blob, secretText]) expect(error.message).not.toContain(form);
  });

  it('check() resolves against a reachable, enabled key', async () => {
    await expect(kms.check()).resolves.toBeUndefined();
    expect(fake.calls.DescribeKey).toBe(1);
  });
});

describe('AwsKmsKeyEncryption when KMS is unreachable', () => {
  it('a closed server gives a KmsError quickly, not a hang, on seal, open and check()', async () => {
    const down = await startFakeKms();
    const unreachable = provider(down, { timeoutMs: 500 });
    const reachable = provider(down, { timeoutMs: 500 });
    const envelope = await encryptEnvelope(reachable, plaintext(), context);
    await down.close();

    const started = Date.now();
    expectKmsError(await rejection(encryptEnvelope(unreachable, plaintext(), context)), /^KMS GenerateDataKey failed for key \S+: ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:\d+$/);
    expectKmsError(await rejection(decryptEnvelope(unreachable, envelope, context)), /^KMS Decrypt failed for key .*ECONNREFUSED/);
    expectKmsError(await rejection(unreachable.check()), /^KMS DescribeKey failed for key .*ECONNREFUSED/);
    expect(Date.now() - started).toBeLessThan(10_000);
  }, 15_000);

  it('a server that accepts but never answers times out into a KmsError, after two attempts', async () => {
    const hung = await startFakeKms();
    try {
      hung.stall = true;
      const slow = provider(hung, { timeoutMs: 300 });
      const started = Date.now();
      expectKmsError(await rejection(slow.check()), /^KMS DescribeKey failed for key .*TimeoutError/);
      expectKmsError(await rejection(slow.generateDataKey(context)), /^KMS GenerateDataKey failed for key .*TimeoutError/);
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(hung.requests.map((r) => r.operation)).toEqual(['DescribeKey', 'DescribeKey', 'GenerateDataKey', 'GenerateDataKey']);
    } finally {
      await hung.close();
    }
  }, 15_000);
});
