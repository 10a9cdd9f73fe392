// Client secrets are 256-bit random values we generate, so a fast hash is enough to keep them
// unusable at rest (no dictionary to try); argon2 here would only slow every token request.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

const prefix = 'sha256:';

export function generateClientSecret(): string {
  return randomBytes(32).toString('base64url');
}

export function digestClientSecret(secret: string): string {
  return prefix + createHash('sha256').update(secret, 'utf8').digest('base64url');
}

export function isClientSecretDigest(value: unknown): value is string {
  return typeof value === 'string' && value.startsWith(prefix);
}

/** Constant-time comparison of a presented secret with a stored digest. */
export function clientSecretMatches(storedDigest: string, presented: string): boolean {
  const expected = Buffer.from(storedDigest, 'utf8');
  const actual = Buffer.from(digestClientSecret(presented), 'utf8');
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}
