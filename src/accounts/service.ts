// Accounts: creation and password authentication. The full password policy, lockout and
// self-service build on this (see the accounts issue); here: length bounds and normalisation.
import { randomUUID } from 'node:crypto';
import { ConflictError, NotFoundError, ValidationError } from '../errors.ts';
import type { AccountRecord, AccountStore } from '../store/accounts.ts';
import { isUniqueViolation } from '../store/database.ts';
import { assertPassword, defaultPasswordPolicy, type PasswordPolicy } from './password-policy.ts';
import type { PasswordHasher } from './passwords.ts';

// argon2 accepts any length; the cap only bounds the work an attacker can make us do per attempt.
const passwordMaxLength = 1024;

export function normaliseEmail(input: string): string {
  return input.normalize('NFKC').trim().toLowerCase();
}

const emailPattern = /^[^\s@\p{Cc}]{1,64}@[^\s@\p{Cc}]{1,253}\.[^\s@.\p{Cc}]{1,63}$/u;

export function checkEmail(email: string): string {
  const normalised = normaliseEmail(email);
  if (!emailPattern.test(normalised)) throw new ValidationError(`not a valid email address: ${JSON.stringify(email.slice(0, 100))}`);
  return normalised;
}


export type Authentication =
  | { ok: true; account: AccountRecord }
  | { ok: false; reason: 'unknown_account' | 'wrong_password' | 'no_password' | 'inactive' | 'locked' | 'locked_now' };

/** Temporary lockout after too many wrong passwords in a window (NIST SP 800-63B: ≤ 100). */
export interface LockoutPolicy {
  threshold: number;
  windowSeconds: number;
  durationSeconds: number;
}

/**
 * Atomic counters (src/store/attempt-counters.ts). The lock lives in the counter itself: a count
 * above the threshold means locked, until the counter expires; so parallel requests can never
 * see a half-written lock, and the count starts afresh when the lock ends.
 */
export interface AttemptCounters {
  hit(key: string, windowSeconds: number): Promise<number>;
  peek(key: string): Promise<number>;
  extend(key: string, seconds: number): Promise<void>;
  reset(key: string): Promise<void>;
}

export const defaultLockoutPolicy: LockoutPolicy = { threshold: 5, windowSeconds: 300, durationSeconds: 1800 };
const failuresKey = (accountId: string) => `login-failures:${accountId}`;

export class AccountService {
  readonly #store: AccountStore;
  readonly #hasher: PasswordHasher;
  readonly #policy: PasswordPolicy;
  readonly #lockout: { policy: LockoutPolicy; counters: AttemptCounters } | undefined;

  constructor(store: AccountStore, hasher: PasswordHasher, policy: PasswordPolicy = defaultPasswordPolicy, lockout?: { policy: LockoutPolicy; counters: AttemptCounters }) {
    this.#store = store;
    this.#hasher = hasher;
    this.#policy = policy;
    this.#lockout = lockout;
  }

  /** Lifts a lockout and forgets the failures (operators: `idp users unlock`). */
  async unlock(emailInput: string): Promise<AccountRecord> {
    const account = await this.#store.findByEmail(normaliseEmail(emailInput));
    if (!account) throw new NotFoundError(`no account with email ${normaliseEmail(emailInput)}`);
    await this.#lockout?.counters.reset(failuresKey(account.id));
    return account;
  }

  async isLocked(accountId: string): Promise<boolean> {
    if (!this.#lockout) return false;
    return (await this.#lockout.counters.peek(failuresKey(accountId))) > this.#lockout.policy.threshold;
  }

  async create(input: { email: string; password: string; name?: string | null; emailVerified?: boolean }): Promise<AccountRecord> {
    const email = checkEmail(input.email);
    const name = input.name?.trim() || null;
    if (name && name.length > 200) throw new ValidationError('name must be at most 200 characters');
    assertPassword(input.password, this.#policy, { email, name });
    if (await this.#store.findByEmail(email)) throw new ConflictError(`an account with email ${email} exists`);
    const passwordHash = await this.#hasher.hash(input.password);
    try {
      return await this.#store.create({ id: randomUUID(), email, name, passwordHash, emailVerified: input.emailVerified ?? false });
    } catch (error) {
      // Lost a race with a concurrent create of the same email.
      if (isUniqueViolation(error)) throw new ConflictError(`an account with email ${email} exists`);
      throw error;
    }
  }

  findById(id: string) {
    return this.#store.findById(id);
  }

  list(limit = 100, after?: string) {
    return this.#store.list({ limit, ...(after ? { after } : {}) });
  }

  /** Same work whatever the outcome; the reason is for the audit log, never for the user. */
  async authenticate(emailInput: string, password: string): Promise<Authentication> {
    const email = normaliseEmail(emailInput);
    if (password.length > passwordMaxLength * 4) {
      await this.#hasher.verifyDummy('');
      return { ok: false, reason: 'wrong_password' };
    }
    const account = emailPattern.test(email) ? await this.#store.findByEmail(email) : null;
    if (!account?.passwordHash) {
      await this.#hasher.verifyDummy(password);
      return { ok: false, reason: account ? 'no_password' : 'unknown_account' };
    }
    const lockout = this.#lockout;
    if (lockout) {
      // The attempt is counted before the password is checked, so parallel guesses cannot all be
      // checked: past the threshold they are refused without a check.
      const key = failuresKey(account.id);
      const attempts = await lockout.counters.hit(key, lockout.policy.windowSeconds);
      if (attempts > lockout.policy.threshold) {
        await this.#hasher.verifyDummy(password);
        return { ok: false, reason: 'locked' };
      }
      const check = await this.#hasher.verify(account.passwordHash, password);
      if (check.ok) {
        await lockout.counters.reset(key);
        return this.#finish(account, password, check.needsRehash);
      }
      if (attempts < lockout.policy.threshold) return { ok: false, reason: 'wrong_password' };
      // The last allowed attempt failed: lock by pushing the count past the threshold and
      // keeping it for the lock's duration.
      await lockout.counters.hit(key, lockout.policy.windowSeconds);
      await lockout.counters.extend(key, lockout.policy.durationSeconds);
      return { ok: false, reason: 'locked_now' };
    }
    const check = await this.#hasher.verify(account.passwordHash, password);
    if (!check.ok) return { ok: false, reason: 'wrong_password' };
    return this.#finish(account, password, check.needsRehash);
  }

  async #finish(account: AccountRecord, password: string, needsRehash: boolean): Promise<Authentication> {
    if (account.status !== 'active') return { ok: false, reason: 'inactive' };
    if (needsRehash) await this.#store.setPasswordHash(account.id, await this.#hasher.hash(password));
    return { ok: true, account };
  }
}
