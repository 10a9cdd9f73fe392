import { randomBytes } from 'node:crypto';
import type { ServerSecretStore } from '../store/server-secrets.ts';
import { decryptEnvelope, encryptEnvelope } from './envelope.ts';
import type { KeyEncryptionProvider } from './key-encryption.ts';

/**
 * Keys that sign the provider's cookies. Every node must share them (a login started on one node
 * finishes on another), so they are generated once, stored wrapped, and read by all nodes.
 */
export async function loadCookieKeys(store: ServerSecretStore, kms: KeyEncryptionProvider): Promise<string[]> {
  const name = 'cookie-keys';
  const context = { purpose: 'cookie-signing', name };
  let envelope = await store.find(name);
  if (!envelope) {
    const fresh = Buffer.from(JSON.stringify([randomBytes(32).toString('base64url')]));
    envelope = await store.insertOrGet(name, await encryptEnvelope(kms, fresh, context));
  }
  return JSON.parse((await decryptEnvelope(kms, envelope, context)).toString('utf8')) as string[];
}
