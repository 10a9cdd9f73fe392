// Single-use backup codes for when the authenticator is lost. Ten at a time, shown once, stored
// only as HMAC-SHA256 under a server-side pepper: a copy of the database alone does not allow
// testing guesses offline (50 bits would not resist that for long with a plain hash).
import { createHmac, randomBytes } from 'node:crypto';
import { ConfigError } from '../errors.ts';
import type { BackupCodeStore } from '../store/backup-codes.ts';

export const backupCodeCount = 10;

/**
 * Crockford's base32 in lower case: digits and letters without i, l, o and u, so nothing reads as
 * something else. 32 symbols, 5 bits each: ten of them carry 50 bits.
 */
const alphabet = '0123456789abcdefghjkmnpqrstvwxyz';
const codeLength = 10;

/** A fresh code, `xxxxx-xxxxx`. */
function newCode(): string {
  // 256 is a multiple of 32, so the low five bits of a random byte are uniform.
  const chars = [...randomBytes(codeLength)].map((byte) => alphabet[byte & 31]!).join('');
  return `${chars.slice(0, 5)}-${chars.slice(5)}`;
}

/**
 * The canonical form of what a user typed: case, spaces and dashes ignored, and the letters the
 * alphabet leaves out read as the digits they resemble (o → 0, i and l → 1). Undefined when it
 * cannot be a code at all.
 */
export function normaliseBackupCode(input: string): string | undefined {
  const compact = input
    .toLowerCase()
    .replace(/[\s\-\u2010-\u2015]/g, '')
    .replace(/o/g, '0')
    .replace(/[il]/g, '1');
  return compact.length === codeLength && [...compact].every((c) => alphabet.includes(c)) ? compact : undefined;
}

export class BackupCodes {
  readonly #store: BackupCodeStore;
  readonly #pepper: Buffer;

  constructor(store: BackupCodeStore, pepper: Buffer) {
    if (pepper.length < 32) throw new ConfigError('the backup-code pepper must be at least 32 bytes');
    this.#store = store;
    this.#pepper = Buffer.from(pepper);
  }

  #hash(normalised: string): string {
    return createHmac('sha256', this.#pepper).update(normalised, 'utf8').digest('base64url');
  }

  /** A new set of codes, replacing (and so revoking) any earlier set. The clear codes exist only in the return value. */
  async generate(accountId: string): Promise<string[]> {
    const codes = new Set<string>();
    while (codes.size < backupCodeCount) codes.add(newCode());
    const list = [...codes];
    await this.#store.replace(accountId, list.map((code) => this.#hash(normaliseBackupCode(code)!)));
    return list;
  }

  /** True when `input` is an unused code of the account; it is used up by this call. */
  async consume(accountId: string, input: string): Promise<boolean> {
    const normalised = normaliseBackupCode(input);
    if (normalised === undefined) return false;
    return this.#store.markUsed(accountId, this.#hash(normalised));
  }

  remaining(accountId: string): Promise<number> {
    return this.#store.countUnused(accountId);
  }

  clear(accountId: string): Promise<void> {
    return this.#store.deleteAll(accountId);
  }
}
