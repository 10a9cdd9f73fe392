// Signing keys: created on first start, stored only as envelopes, unwrapped into this process's
// memory for oidc-provider. Rotation and the full lifecycle build on this (see docs/keys.md).
import { generateKeyPairSync, type JsonWebKey } from 'node:crypto';
import { calculateJwkThumbprint, type JWK } from 'jose';
import type { AuditSink } from '../audit/types.ts';
import type { NewKey, SigningKeyStore } from '../store/signing-keys.ts';
import { decryptEnvelope, encryptEnvelope } from './envelope.ts';
import type { KeyEncryptionProvider } from './key-encryption.ts';

export const signingContext = (kid: string) => ({ purpose: 'oidc-signing', kid });

const publicMembers = ['kty', 'n', 'e', 'crv', 'x', 'y'] as const;

export function publicPart(jwk: JWK): JWK {
  const out: JWK = {};
  for (const member of publicMembers) if (jwk[member] !== undefined) out[member] = jwk[member];
  return out;
}

function generateFor(alg: string) {
  switch (alg) {
    case 'RS256':
    case 'PS256':
      return generateKeyPairSync('rsa', { modulusLength: 2048 });
    case 'ES256':
      return generateKeyPairSync('ec', { namedCurve: 'P-256' });
    case 'EdDSA':
      return generateKeyPairSync('ed25519');
    default:
      throw new Error(`no key type for signing algorithm ${alg}`);
  }
}

export class Keyring {
  readonly #store: SigningKeyStore;
  readonly #kms: KeyEncryptionProvider;
  readonly #audit: AuditSink;

  constructor(store: SigningKeyStore, kms: KeyEncryptionProvider, audit: AuditSink) {
    this.#store = store;
    this.#kms = kms;
    this.#audit = audit;
  }

  /** A new key pair, sealed in an envelope; nothing is stored yet. */
  async generate(alg = 'RS256'): Promise<NewKey> {
    const { privateKey } = generateFor(alg);
    const jwk = privateKey.export({ format: 'jwk' }) as JsonWebKey as JWK;
    const kid = await calculateJwkThumbprint(jwk);
    const plaintext = Buffer.from(JSON.stringify(jwk));
    const envelope = await encryptEnvelope(this.#kms, plaintext, signingContext(kid));
    plaintext.fill(0);
    return { kid, alg, publicJwk: JSON.stringify({ ...publicPart(jwk), kid, alg, use: 'sig' }), envelope };
  }

  /** Makes sure an active key exists for `alg`; generates one when none does. Returns its kid. */
  async ensureActiveKey(alg = 'RS256'): Promise<string> {
    const existing = await this.#store.findActive(alg);
    if (existing) return existing.kid;
    const key = await this.generate(alg);
    if (await this.#store.insertActive(key)) {
      await this.#audit.record({ type: 'key.generated', outcome: 'success', actor: 'system', details: { kid: key.kid, alg, kms: this.#kms.name } });
      return key.kid;
    }
    // Another node created the key first; use theirs.
    const winner = await this.#store.findActive(alg);
    if (!winner) throw new Error(`no active ${alg} key after a concurrent insert`);
    return winner.kid;
  }

  /** What the JWKS holds right now, as a string that changes whenever a key is added, promoted or removed. */
  async fingerprint(): Promise<string> {
    return (await this.#store.listPublished()).map((k) => `${k.kid}:${k.state}`).join(',');
  }

  /** The private JWK set oidc-provider signs with and publishes (public parts only) at jwks_uri. */
  async privateJwks(): Promise<{ keys: JWK[] }> {
    const rows = await this.#store.listPublished();
    const keys: JWK[] = [];
    for (const row of rows) {
      const plaintext = await decryptEnvelope(this.#kms, row.envelope, signingContext(row.kid));
      const jwk = JSON.parse(plaintext.toString('utf8')) as JWK;
      plaintext.fill(0);
      keys.push({ ...jwk, kid: row.kid, alg: row.alg, use: 'sig' });
      await this.#audit.record({ type: 'key.unwrapped', outcome: 'success', actor: 'system', details: { kid: row.kid, kms: this.#kms.name } });
    }
    return { keys };
  }
}
