import { randomBytes } from 'node:crypto';
import type { ServerSecretStore } from '../store/server-secrets.ts';
import { decryptEnvelope, encryptEnvelope } from './envelope.ts';
import type { KeyEncryptionProvider } from './key-encryption.ts';

/**
 * A secret every node must share (cookie keys, the backup-code pepper): generated once by
 * whichever node comes first, stored wrapped, and read by all nodes.
 */
async function sharedSecret(store: ServerSecretStore, kms: KeyEncryptionProvider, name: string, purpose: string, generate: () => Buffer): Promise<Buffer> {
  const context = { purpose, name };
  let envelope = await store.find(name);
  if (!envelope) envelope = await store.insertOrGet(name, await encryptEnvelope(kms, generate(), context));
  return decryptEnvelope(kms, envelope, context);
}

/** Keys that sign the provider's cookies (a login started on one node finishes on another). */
export async function loadCookieKeys(store: ServerSecretStore, kms: KeyEncryptionProvider): Promise<string[]> {
  const secret = await sharedSecret(store, kms, 'cookie-keys', 'cookie-signing', () => Buffer.from(JSON.stringify([randomBytes(32).toString('base64url')])));
  return JSON.parse(secret.toString('utf8')) as string[];
}

/** The key of the backup codes' HMAC: without it a copy of the table cannot be brute-forced. */
export function loadBackupCodePepper(store: ServerSecretStore, kms: KeyEncryptionProvider): Promise<Buffer> {
  return sharedSecret(store, kms, 'backup-code-pepper', 'backup-code-hmac', () => randomBytes(32));
}
