// Codes sent by email or SMS: 6 digits, 10 minutes, 3 attempts per code, 3 codes per hour per
// destination, single use. Codes live in the shared short-lived store (hashed) and the counts in
// the atomic counters, so any node can check a code another node sent.
import { createHash, randomInt, randomUUID, timingSafeEqual } from 'node:crypto';
import type { AttemptCounters } from '../accounts/service.ts';
import type { ExpiringValues } from '../store/expiring-values.ts';

export interface CodeRules {
  digits: number;
  ttlSeconds: number;
  maxAttempts: number;
  perHour: number;
}

export const defaultCodeRules: CodeRules = { digits: 6, ttlSeconds: 600, maxAttempts: 3, perHour: 3 };

export type CodeCheck = 'ok' | 'invalid' | 'expired' | 'exhausted';

/**
 * Each purpose has its own hourly share per destination: requests for passwordless sign-in codes
 * (which anyone can make for any address) cannot use up the second-factor codes of its owner.
 */
export type CodePurpose = 'mfa' | 'signin';

interface StoredCode {
  id: string;
  hash: string;
}

const digest = (code: string) => createHash('sha256').update(code).digest();

export class OneTimeCodes {
  readonly #store: ExpiringValues;
  readonly #counters: AttemptCounters;
  readonly #rules: CodeRules;

  constructor(store: ExpiringValues, counters: AttemptCounters, rules: CodeRules = defaultCodeRules) {
    this.#store = store;
    this.#counters = counters;
    this.#rules = rules;
  }

  get rules(): CodeRules {
    return this.#rules;
  }

  /**
   * A new code for `key` (one pending code per key: a new one replaces it), unless the destination
   * had its hourly share already.
   */
  async issue(key: string, destination: string, purpose: CodePurpose = 'mfa'): Promise<{ ok: true; code: string } | { ok: false; reason: 'rate_limited' }> {
    if (!(await this.allowSend(destination, purpose))) return { ok: false, reason: 'rate_limited' };
    const code = String(randomInt(0, 10 ** this.#rules.digits)).padStart(this.#rules.digits, '0');
    const stored: StoredCode = { id: randomUUID(), hash: digest(code).toString('base64url') };
    await this.#store.set(`otp:${key}`, stored, this.#rules.ttlSeconds);
    return { ok: true, code };
  }

  /**
   * Counts one send to a destination against its hourly share. Also for addresses that get no
   * code (no account): the limit then answers the same whether or not an account exists.
   */
  async allowSend(destination: string, purpose: CodePurpose = 'mfa'): Promise<boolean> {
    return (await this.#counters.hit(`otp-sent:${purpose}:${destination.toLowerCase()}`, 3600)) <= this.#rules.perHour;
  }

  async verify(key: string, input: string): Promise<CodeCheck> {
    const stored = await this.#store.get<StoredCode>(`otp:${key}`);
    if (!stored) return 'expired';
    // Counted before the comparison, atomically: parallel guesses cannot exceed the limit.
    const attempts = await this.#counters.hit(`otp-attempts:${stored.id}`, this.#rules.ttlSeconds);
    if (attempts > this.#rules.maxAttempts) {
      await this.#store.delete(`otp:${key}`);
      return 'exhausted';
    }
    const code = input.replace(/\s+/g, '');
    const matches = code.length === this.#rules.digits && /^\d+$/.test(code) && timingSafeEqual(digest(code), Buffer.from(stored.hash, 'base64url'));
    if (!matches) {
      if (attempts >= this.#rules.maxAttempts) await this.#store.delete(`otp:${key}`);
      return 'invalid';
    }
    // Single use, even when two requests carry the right code at once.
    const claimed = await this.#store.acquire(`otp-used:${stored.id}`, this.#rules.ttlSeconds);
    await this.#store.delete(`otp:${key}`);
    return claimed ? 'ok' : 'expired';
  }
}
