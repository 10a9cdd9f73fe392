// Accounts: creation, password authentication with lockout, password changes under the policy
// (rules per user type, history, maximum age), status and approval, roles and attributes.
// Every address that identifies an account goes through identifiers.ts: created in its canonical
// form (look-alikes of existing accounts refused), looked up the same way (hostile ones find nothing).
import { randomUUID } from 'node:crypto';
import { systemClock, type Clock } from '../clock.ts';
import { ConflictError, NotFoundError, ValidationError } from '../errors.ts';
import type { AccountChanges, AccountRecord, AccountStatus, AccountStore, Approval } from '../store/accounts.ts';
import { isUniqueViolation } from '../store/database.ts';
import { canonicalEmail, emailSkeleton, legacyEmailForm, nameCharacterProblem, printable } from './identifiers.ts';
import { defaultPasswordPolicy, evaluatePassword, PasswordPolicyError, type PasswordPolicy } from './password-policy.ts';
import type { PasswordHasher } from './passwords.ts';

// argon2 accepts any length; the cap only bounds the work an attacker can make us do per attempt.
const passwordMaxLength = 1024;

/**
 * The canonical address (see identifiers.ts) when the input is a valid one; otherwise a folded
 * form of the input that is good for a rate-limit key but matches no account. Never throws.
 */
export function normaliseEmail(input: string): string {
  const canonical = canonicalEmail(input);
  return canonical.ok ? canonical.email : legacyEmailForm(input);
}

/** The canonical address, or a ValidationError saying what is wrong with it (never echoing hostile characters). */
export function checkEmail(email: string): string {
  const canonical = canonicalEmail(email);
  if (!canonical.ok) throw new ValidationError(`not a valid email address: ${canonical.problem}`);
  return canonical.email;
}

/** A look-alike of an existing account's address (Cyrillic а for Latin a, say). */
export class ConfusableEmailError extends ConflictError {
  constructor(email: string, existing: string) {
    super(`an account with an email address that looks the same as ${email} exists: ${existing}`);
    this.name = 'ConfusableEmailError';
  }
}

const skeletonOf = (email: string): string | undefined => {
  const canonical = canonicalEmail(email);
  return canonical.ok ? emailSkeleton(canonical.email) : undefined;
};

export type AuthenticationFailure = 'unknown_account' | 'wrong_password' | 'no_password' | 'locked' | 'locked_now' | 'locked_permanently' | 'disabled' | 'unverified';

export type Authentication =
  | { ok: true; account: AccountRecord; passwordExpired: boolean }
  // Only an unverified account (the right password) says which account it is: to mail a new link.
  | { ok: false; reason: AuthenticationFailure; accountId?: string };

/** Temporary lockout after too many wrong passwords in a window (NIST SP 800-63B: ≤ 100). */
export interface LockoutPolicy {
  threshold: number;
  windowSeconds: number;
  durationSeconds: number;
  /** Temporary lockouts within `permanentWindowSeconds` that lock the account for good; 0: never. */
  permanentAfter?: number;
  permanentWindowSeconds?: number;
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

/** The password rules of one user type. */
export interface PasswordRules {
  policy: PasswordPolicy;
  /** Earlier passwords that cannot be used again. */
  historySize: number;
  /** 0: passwords do not expire. */
  maxAgeDays: number;
}

export const defaultLockoutPolicy: LockoutPolicy = { threshold: 5, windowSeconds: 300, durationSeconds: 1800 };
export const defaultPasswordRules: PasswordRules = { policy: defaultPasswordPolicy, historySize: 12, maxAgeDays: 0 };
const failuresKey = (accountId: string) => `login-failures:${accountId}`;
const lockoutsKey = (accountId: string) => `lockouts:${accountId}`;

export interface NewAccountInput {
  email: string;
  /** Absent for invited accounts: they set one through the invitation link. */
  password?: string | undefined;
  name?: string | null | undefined;
  emailVerified?: boolean | undefined;
  status?: AccountStatus | undefined;
  userType?: string | undefined;
  roles?: string[] | undefined;
  attributes?: Record<string, unknown> | undefined;
}

export interface AccountServiceOptions {
  /** Password rules for a user type (the global ones unless overridden for that type). */
  rulesFor?: (userType: string) => PasswordRules;
  lockout?: { policy: LockoutPolicy; counters: AttemptCounters } | undefined;
  /** User types whose accounts go through the approval workflow. */
  approvalUserTypes?: readonly string[];
  /** For the age of passwords. */
  clock?: Clock;
}

const namePattern = /^[\p{L}\p{M}\p{N}_.:-]{1,64}$/u;

function checkName(input: string | null | undefined): string | null {
  const name = input?.trim() || null;
  if (name && name.length > 200) throw new ValidationError('name must be at most 200 characters');
  const problem = name ? nameCharacterProblem(name) : undefined;
  if (problem) throw new ValidationError(problem);
  return name;
}

function checkRoles(roles: string[]): string[] {
  for (const role of roles) if (!namePattern.test(role)) throw new ValidationError(`not a valid role name: ${JSON.stringify(role.slice(0, 80))}`);
  return [...new Set(roles)];
}

function checkUserType(userType: string): string {
  if (!namePattern.test(userType)) throw new ValidationError(`not a valid user type: ${JSON.stringify(userType.slice(0, 80))}`);
  return userType;
}

function checkAttributes(attributes: Record<string, unknown>): Record<string, unknown> {
  if (typeof attributes !== 'object' || attributes === null || Array.isArray(attributes)) throw new ValidationError('attributes must be a JSON object');
  for (const key of Object.keys(attributes)) if (!namePattern.test(key)) throw new ValidationError(`not a valid attribute name: ${JSON.stringify(key.slice(0, 80))}`);
  if (JSON.stringify(attributes).length > 16_384) throw new ValidationError('attributes must be at most 16 KiB of JSON');
  return attributes;
}

export class AccountService {
  readonly #store: AccountStore;
  readonly #hasher: PasswordHasher;
  readonly #rulesFor: (userType: string) => PasswordRules;
  readonly #lockout: { policy: LockoutPolicy; counters: AttemptCounters } | undefined;
  readonly #approvalUserTypes: ReadonlySet<string>;
  readonly #clock: Clock;
  #skeletonsFilled: Promise<unknown> | undefined;

  constructor(store: AccountStore, hasher: PasswordHasher, options: AccountServiceOptions = {}) {
    this.#store = store;
    this.#hasher = hasher;
    this.#rulesFor = options.rulesFor ?? (() => defaultPasswordRules);
    this.#lockout = options.lockout;
    this.#approvalUserTypes = new Set(options.approvalUserTypes ?? []);
    this.#clock = options.clock ?? systemClock;
  }

  rulesFor(userType: string): PasswordRules {
    return this.#rulesFor(userType);
  }

  needsApproval(userType: string): boolean {
    return this.#approvalUserTypes.has(userType);
  }

  async #require(id: string): Promise<AccountRecord> {
    const account = await this.#store.findById(id);
    if (!account) throw new NotFoundError(`no account ${id}`);
    return account;
  }

  /** The account an address identifies; null for an unknown or an invalid address (hostile ones included). */
  async findByEmail(emailInput: string): Promise<AccountRecord | null> {
    const canonical = canonicalEmail(emailInput);
    if (!canonical.ok) return null;
    const account = await this.#store.findByEmail(canonical.email);
    if (account) return account;
    // Accounts created before domains were stored in their IDNA Unicode form (user@xn--…).
    const legacy = legacyEmailForm(emailInput);
    return legacy === canonical.email ? null : this.#store.findByEmail(legacy);
  }

  /**
   * For operators: like findByEmail, and besides finds an account stored before today's rules
   * under an address they refuse (an invisible character, say) by that exact address, so it can
   * still be shown, disabled or updated.
   */
  async requireByEmail(emailInput: string): Promise<AccountRecord> {
    const account = (await this.findByEmail(emailInput)) ?? (await this.#findLegacyExactly(emailInput));
    if (!account) throw new NotFoundError(`no account with email ${printable(normaliseEmail(emailInput))}`);
    return account;
  }

  async #findLegacyExactly(emailInput: string): Promise<AccountRecord | null> {
    const legacy = legacyEmailForm(emailInput);
    // A NUL or a lone surrogate could never have been stored, and would break PostgreSQL.
    if (/[\p{Cc}\p{Cs}]/u.test(legacy) || !legacy.includes('@') || legacy.length > 320) return null;
    return this.#store.findByEmail(legacy);
  }

  /** Skeletons for rows from before the column, once per process (again after a failure). */
  #fillSkeletons(): Promise<unknown> {
    this.#skeletonsFilled ??= this.#store.fillMissingSkeletons(skeletonOf).catch((error: unknown) => {
      this.#skeletonsFilled = undefined;
      throw error;
    });
    return this.#skeletonsFilled;
  }

  /** Lifts a temporary or permanent lockout and forgets the failures (`idp users unlock`). */
  async unlock(emailInput: string): Promise<AccountRecord> {
    const account = await this.requireByEmail(emailInput);
    await this.#lockout?.counters.reset(failuresKey(account.id));
    await this.#lockout?.counters.reset(lockoutsKey(account.id));
    await this.#store.transitionStatus(account.id, 'locked', 'active');
    return (await this.#store.findById(account.id))!;
  }

  async isLocked(accountId: string): Promise<boolean> {
    if (!this.#lockout) return false;
    return (await this.#lockout.counters.peek(failuresKey(accountId))) > this.#lockout.policy.threshold;
  }

  /** The time a new account's password hash takes, spent for an address that is taken. */
  async spendHashingTime(password: string): Promise<void> {
    await this.#hasher.hash(password.slice(0, passwordMaxLength * 4));
  }

  /** Forgets failed attempts (after a password reset proved control of the mailbox). */
  async clearFailures(accountId: string): Promise<void> {
    await this.#lockout?.counters.reset(failuresKey(accountId));
  }

  /** Every unmet rule for a new password of this account, history included. */
  async problemsWithNewPassword(account: { id?: string; email: string; name: string | null; userType: string; passwordHash?: string | null }, password: string): Promise<string[]> {
    const rules = this.#rulesFor(account.userType);
    const { problems } = evaluatePassword(password, rules.policy, { email: account.email, name: account.name });
    if (problems.length || !account.id || rules.historySize <= 0) return problems;
    const earlier = [account.passwordHash, ...(await this.#store.previousPasswordHashes(account.id, rules.historySize - 1))].filter((h): h is string => !!h);
    for (const hash of earlier) {
      if ((await this.#hasher.verify(hash, password)).ok) return [`must not be one of your last ${rules.historySize} passwords`];
    }
    return [];
  }

  async create(input: NewAccountInput): Promise<AccountRecord> {
    const email = checkEmail(input.email);
    const name = checkName(input.name);
    const userType = checkUserType(input.userType ?? 'internal');
    const roles = checkRoles(input.roles ?? []);
    const attributes = checkAttributes(input.attributes ?? {});
    if (input.password !== undefined) {
      const problems = await this.problemsWithNewPassword({ email, name, userType }, input.password);
      if (problems.length) throw new PasswordPolicyError(problems);
    }
    const skeleton = emailSkeleton(email);
    // Before the check: a look-alike of an account from before the skeleton column is refused too.
    await this.#fillSkeletons();
    if (await this.findByEmail(email)) throw new ConflictError(`an account with email ${email} exists`);
    const lookalike = await this.#store.findBySkeleton(skeleton);
    if (lookalike) throw new ConfusableEmailError(email, lookalike.email);
    const passwordHash = input.password === undefined ? null : await this.#hasher.hash(input.password);
    const emailVerified = input.emailVerified ?? false;
    try {
      return await this.#store.create({
        id: randomUUID(), email, emailSkeleton: skeleton, name, passwordHash, emailVerified, userType, roles, attributes,
        status: input.status ?? 'active',
        approval: this.needsApproval(userType) ? (emailVerified ? 'pending' : 'unverified') : null,
      });
    } catch (error) {
      // Lost a race with a concurrent create of the same address or of a look-alike (the skeleton
      // is unique), on this node or another.
      if (isUniqueViolation(error)) throw new ConflictError(`an account with email ${email} (or one that looks the same) exists`);
      throw error;
    }
  }

  findById(id: string) {
    return this.#store.findById(id);
  }

  list(limit = 100, after?: string, approval?: Approval) {
    return this.#store.list({ limit, ...(after ? { after } : {}), ...(approval ? { approval } : {}) });
  }

  /** Same work whatever the outcome; the reason is for the audit log, never for the user. */
  async authenticate(emailInput: string, password: string): Promise<Authentication> {
    if (password.length > passwordMaxLength * 4) {
      await this.#hasher.verifyDummy('');
      return { ok: false, reason: 'wrong_password' };
    }
    const account = await this.findByEmail(emailInput);
    if (!account?.passwordHash) {
      await this.#hasher.verifyDummy(password);
      return { ok: false, reason: account ? 'no_password' : 'unknown_account' };
    }
    if (account.status === 'locked') {
      await this.#hasher.verifyDummy(password);
      return { ok: false, reason: 'locked_permanently' };
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
      const { permanentAfter = 0, permanentWindowSeconds = 86400 } = lockout.policy;
      if (permanentAfter > 0) {
        const lockouts = await lockout.counters.hit(lockoutsKey(account.id), permanentWindowSeconds);
        if (lockouts >= permanentAfter && (await this.#store.transitionStatus(account.id, 'active', 'locked'))) {
          return { ok: false, reason: 'locked_permanently' };
        }
      }
      return { ok: false, reason: 'locked_now' };
    }
    const check = await this.#hasher.verify(account.passwordHash, password);
    if (!check.ok) return { ok: false, reason: 'wrong_password' };
    return this.#finish(account, password, check.needsRehash);
  }

  async #finish(account: AccountRecord, password: string, needsRehash: boolean): Promise<Authentication> {
    if (account.status === 'pending_verification') return { ok: false, reason: 'unverified', accountId: account.id };
    if (account.status !== 'active') return { ok: false, reason: account.status === 'locked' ? 'locked_permanently' : 'disabled' };
    if (needsRehash) await this.#store.setPasswordHash(account.id, await this.#hasher.hash(password));
    return { ok: true, account, passwordExpired: this.passwordExpired(account) };
  }

  passwordExpired(account: AccountRecord, now = this.#clock.now()): boolean {
    const { maxAgeDays } = this.#rulesFor(account.userType);
    if (maxAgeDays <= 0) return false;
    const since = (account.passwordChangedAt ?? account.createdAt).getTime();
    return now - since >= maxAgeDays * 86_400_000;
  }

  /**
   * Sets a new password under the account's rules (policy and history); with `currentPassword`,
   * that must match first. Throws a PasswordPolicyError listing every unmet rule.
   */
  async changePassword(accountId: string, password: string, options: { currentPassword?: string; changes?: AccountChanges } = {}): Promise<AccountRecord> {
    const account = await this.#require(accountId);
    if (options.currentPassword !== undefined) {
      const check = account.passwordHash ? await this.#hasher.verify(account.passwordHash, options.currentPassword) : await this.#hasher.verifyDummy(options.currentPassword);
      if (!check.ok) throw new ValidationError('the current password is not correct');
    }
    if (password.length > passwordMaxLength * 4) throw new PasswordPolicyError([`must be at most ${this.#rulesFor(account.userType).policy.maxLength} characters`]);
    const problems = await this.problemsWithNewPassword(account, password);
    if (problems.length) throw new PasswordPolicyError(problems);
    return this.#store.replacePassword(account.id, await this.#hasher.hash(password), this.#rulesFor(account.userType).historySize, options.changes);
  }

  /** The mailbox is proven: verified email, a pending account becomes active, approval moves on. */
  async markEmailVerified(accountId: string): Promise<AccountRecord> {
    const account = await this.#require(accountId);
    return this.#store.update(accountId, {
      emailVerified: true,
      ...(account.status === 'pending_verification' ? { status: 'active' as const } : {}),
      ...(account.approval === 'unverified' ? { approval: 'pending' as const } : {}),
    });
  }

  async setStatus(emailInput: string, status: AccountStatus): Promise<AccountRecord> {
    const account = await this.requireByEmail(emailInput);
    return this.#store.update(account.id, { status });
  }

  /** An administrator's decision on an account waiting for approval. */
  async decideApproval(emailInput: string, decision: 'verified' | 'rejected'): Promise<AccountRecord> {
    const account = await this.requireByEmail(emailInput);
    if (account.approval === null) throw new ValidationError(`${account.email} is of user type "${account.userType}", which needs no approval`);
    if (account.approval === 'unverified') throw new ValidationError(`${account.email} has not verified the email address yet`);
    return this.#store.update(account.id, { approval: decision });
  }

  async update(emailInput: string, changes: { name?: string | null; userType?: string; roles?: string[]; attributes?: Record<string, unknown> }): Promise<AccountRecord> {
    const account = await this.requireByEmail(emailInput);
    const next: AccountChanges = {};
    if (changes.name !== undefined) next.name = checkName(changes.name);
    if (changes.roles) next.roles = checkRoles(changes.roles);
    if (changes.attributes) next.attributes = checkAttributes(changes.attributes);
    if (changes.userType) {
      next.userType = checkUserType(changes.userType);
      // Moving into a type with approval starts its workflow; moving out ends it.
      if (this.needsApproval(next.userType) && account.approval === null) next.approval = account.emailVerified ? 'pending' : 'unverified';
      if (!this.needsApproval(next.userType)) next.approval = null;
    }
    return this.#store.update(account.id, next);
  }
}
