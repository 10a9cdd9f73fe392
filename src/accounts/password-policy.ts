// Password policy: length, optional composition rules, a common-password blocklist, the user's own
// email and name, and an optional zxcvbn strength estimate. evaluatePassword reports every unmet
// rule at once, in plain words, so a form can show them all; assertPassword throws them as one
// PasswordPolicyError. Password history and maximum age are not here (they need schema changes).
//
// Passwords are NFC-normalised before they are counted and checked, and counted per code point
// (an emoji is one character). Nothing is ever truncated: a password over the maximum is refused.
// The blocklist is data in ./blocklist/ (see its README for source and licence), read once per
// process at first use.
//
// zxcvbn-ts and its dictionaries (@zxcvbn-ts/language-common: about 3 MB of heap once loaded) are
// required at the first strength estimate, so a policy without a strength rule (minStrength 0,
// the default) never loads them.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { gunzipSync } from 'node:zlib';
import type { ZxcvbnFactory } from '@zxcvbn-ts/core';
import { ValidationError } from '../errors.ts';

export type PasswordStrength = 0 | 1 | 2 | 3 | 4;

export type PasswordPolicy = {
  /** Code points after NFC normalisation. */
  minLength: number;
  /** Code points after NFC normalisation; never below 128 and never above 1024. */
  maxLength: number;
  requireUpper: boolean;
  requireLower: boolean;
  requireDigit: boolean;
  /** Anything that is not a letter, a combining mark or a number: punctuation, symbols, spaces, emoji. */
  requireSymbol: boolean;
  /** Minimum zxcvbn score (1–4); 0 turns the estimate off. */
  minStrength: PasswordStrength;
};

export type PasswordContext = { email?: string; name?: string | null };

export type PasswordEvaluation = { ok: boolean; problems: string[] };

/** Bounds a configured policy must respect (also the bounds of the env settings). */
export const passwordPolicyBounds = {
  minLength: { min: 8, max: 128 },
  maxLength: { min: 128, max: 1024 },
  minStrength: { min: 0, max: 4 },
} as const;

export const defaultPasswordPolicy: Readonly<PasswordPolicy> = Object.freeze({
  minLength: 12,
  maxLength: 1024,
  requireUpper: false,
  requireLower: false,
  requireDigit: false,
  requireSymbol: false,
  minStrength: 0,
});

/**
 * The env settings, for src/config.ts (`flag` is the helper defined there):
 *
 *   PASSWORD_MIN_LENGTH: z.coerce.number().int().min(8).max(128).default(12),
 *   PASSWORD_REQUIRE_UPPER: flag(false),
 *   PASSWORD_REQUIRE_LOWER: flag(false),
 *   PASSWORD_REQUIRE_DIGIT: flag(false),
 *   PASSWORD_REQUIRE_SYMBOL: flag(false),
 *   PASSWORD_MIN_STRENGTH: z.coerce.number().int().min(0).max(4).default(0),
 */
export type PasswordPolicySettings = {
  PASSWORD_MIN_LENGTH: number;
  PASSWORD_REQUIRE_UPPER: boolean;
  PASSWORD_REQUIRE_LOWER: boolean;
  PASSWORD_REQUIRE_DIGIT: boolean;
  PASSWORD_REQUIRE_SYMBOL: boolean;
  PASSWORD_MIN_STRENGTH: number;
};

export function passwordPolicyFromSettings(settings: PasswordPolicySettings): PasswordPolicy {
  return resolvePasswordPolicy({
    minLength: settings.PASSWORD_MIN_LENGTH,
    requireUpper: settings.PASSWORD_REQUIRE_UPPER,
    requireLower: settings.PASSWORD_REQUIRE_LOWER,
    requireDigit: settings.PASSWORD_REQUIRE_DIGIT,
    requireSymbol: settings.PASSWORD_REQUIRE_SYMBOL,
    minStrength: settings.PASSWORD_MIN_STRENGTH as PasswordStrength,
  });
}

/** The default policy with `overrides` applied, checked against passwordPolicyBounds. */
export function resolvePasswordPolicy(overrides: Partial<PasswordPolicy> = {}): PasswordPolicy {
  const policy: PasswordPolicy = { ...defaultPasswordPolicy, ...overrides };
  const within = (value: number, bounds: { min: number; max: number }) => Number.isInteger(value) && value >= bounds.min && value <= bounds.max;
  const { minLength, maxLength, minStrength } = passwordPolicyBounds;
  if (!within(policy.minLength, minLength)) throw new RangeError(`password minLength must be an integer from ${minLength.min} to ${minLength.max}`);
  if (!within(policy.maxLength, maxLength)) throw new RangeError(`password maxLength must be an integer from ${maxLength.min} to ${maxLength.max}`);
  if (!within(policy.minStrength, minStrength)) throw new RangeError(`password minStrength must be an integer from ${minStrength.min} to ${minStrength.max}`);
  return policy;
}

export class PasswordPolicyError extends ValidationError {
  readonly problems: readonly string[];

  constructor(problems: readonly string[]) {
    super(`password ${problems.join('; ')}`);
    this.name = 'PasswordPolicyError';
    this.problems = [...problems];
  }
}

// ---- Common-password blocklist -------------------------------------------------------------
// A Set of lower-case, NFC entries. 100,000 short strings are a few MB of heap and an exact lookup
// is O(1); SHA-1 prefixes (as with the Pwned Passwords range API) would only matter for a list too
// large to hold, or a secret one, and this list is public.

const blocklistFile = new URL('./blocklist/common-passwords.txt.gz', import.meta.url);
let blocklist: ReadonlySet<string> | undefined;
const blocklistStats = { loads: 0, entries: 0, loadMs: 0 };

/** The blocklist, read and decompressed at the first call only (synchronously, ~40 ms and ~6 MB of heap, once). */
export function loadCommonPasswords(): ReadonlySet<string> {
  if (!blocklist) {
    const started = performance.now();
    const text = gunzipSync(readFileSync(blocklistFile)).toString('utf8');
    const entries = new Set<string>();
    for (const line of text.split('\n')) if (line) entries.add(line);
    blocklist = entries;
    blocklistStats.loads += 1;
    blocklistStats.entries = entries.size;
    blocklistStats.loadMs = performance.now() - started;
  }
  return blocklist;
}

/** How often the blocklist was read (1 after any use), its size, and how long the read took. */
export function commonPasswordStats(): Readonly<typeof blocklistStats> {
  return { ...blocklistStats };
}

export function isCommonPassword(password: string): boolean {
  return loadCommonPasswords().has(password.normalize('NFC').toLowerCase());
}

// ---- Strength estimate (zxcvbn-ts, loaded and built on first use) -------------------------

let zxcvbn: ZxcvbnFactory | undefined;

/** The estimator, loaded (synchronously: evaluatePassword is synchronous) and built at the first call. */
function strengthEstimator(): ZxcvbnFactory {
  if (!zxcvbn) {
    // Both packages ship CommonJS builds; `import` of them loads the same files.
    const require = createRequire(import.meta.url);
    const core = require('@zxcvbn-ts/core') as typeof import('@zxcvbn-ts/core');
    const common = require('@zxcvbn-ts/language-common') as typeof import('@zxcvbn-ts/language-common');
    zxcvbn = new core.ZxcvbnFactory({ dictionary: { ...common.dictionary }, graphs: common.adjacencyGraphs });
  }
  return zxcvbn;
}

function strengthOf(password: string, userInputs: string[]): PasswordStrength {
  return strengthEstimator().check(password, userInputs).score;
}

// ---- Personal information ----------------------------------------------------------------

const personalMinLength = 4;
const fold = (s: string) => s.normalize('NFKC').trim().toLowerCase();
const codePoints = (s: string) => [...s].length;
const words = (s: string) => s.split(/[^\p{L}\p{M}\p{N}]+/u).filter(Boolean);

/** Email, its local part, the name, and the pieces of each; `exact` must not equal the password, `contained` must not occur in it. */
function personalTerms(context: PasswordContext): { exact: Set<string>; contained: Set<string> } {
  const exact = new Set<string>();
  const contained = new Set<string>();
  const add = (term: string) => {
    if (!term) return;
    exact.add(term);
    if (codePoints(term) >= personalMinLength) contained.add(term);
  };
  const email = fold(context.email ?? '');
  if (email) {
    add(email);
    const at = email.lastIndexOf('@');
    const local = at > 0 ? email.slice(0, at) : email;
    add(local);
    for (const piece of words(local)) add(piece);
  }
  const name = fold(context.name ?? '');
  if (name) {
    add(name);
    add(name.replace(/\s+/gu, ''));
    for (const word of words(name)) add(word);
  }
  return { exact, contained };
}

function mentionsPersonalInfo(password: string, context: PasswordContext): boolean {
  const folded = fold(password);
  const compact = folded.replace(/\s+/gu, '');
  const { exact, contained } = personalTerms(context);
  if (exact.has(folded) || exact.has(compact)) return true;
  for (const term of contained) if (folded.includes(term) || compact.includes(term)) return true;
  return false;
}

// ---- Evaluation --------------------------------------------------------------------------

const upper = /[\p{Lu}\p{Lt}]/u;
const lower = /\p{Ll}/u;
const digit = /\p{Nd}/u;
const symbol = /[^\p{L}\p{M}\p{N}]/u;

/** Every unmet rule, in plain words meant to follow "password " (see PasswordPolicyError). */
export function evaluatePassword(password: string, policy: PasswordPolicy, context: PasswordContext = {}): PasswordEvaluation {
  const problems: string[] = [];
  const normalised = password.normalize('NFC');
  const length = codePoints(normalised);
  const tooLong = length > policy.maxLength;

  if (length < policy.minLength) problems.push(`must be at least ${policy.minLength} characters`);
  if (tooLong) problems.push(`must be at most ${policy.maxLength} characters`);
  if (policy.requireUpper && !upper.test(normalised)) problems.push('must contain an upper-case letter');
  if (policy.requireLower && !lower.test(normalised)) problems.push('must contain a lower-case letter');
  if (policy.requireDigit && !digit.test(normalised)) problems.push('must contain a digit');
  if (policy.requireSymbol && !symbol.test(normalised)) problems.push('must contain a symbol or punctuation character');
  // Nothing on the blocklist is anywhere near the maximum; skip the work for oversized input.
  if (!tooLong && isCommonPassword(normalised)) problems.push('is one of the most common passwords');
  if (mentionsPersonalInfo(normalised, context)) problems.push('must not contain your email address or name');
  if (policy.minStrength > 0 && !tooLong) {
    const userInputs = [...personalTerms(context).exact];
    const score = strengthOf(normalised, userInputs);
    if (score < policy.minStrength) problems.push(`is too easy to guess (strength ${score} of 4, at least ${policy.minStrength} needed)`);
  }
  return { ok: problems.length === 0, problems };
}

/** Throws a PasswordPolicyError listing every unmet rule. */
export function assertPassword(password: string, policy: PasswordPolicy, context: PasswordContext = {}): void {
  const { ok, problems } = evaluatePassword(password, policy, context);
  if (!ok) throw new PasswordPolicyError(problems);
}
