import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../../src/errors.ts';
import {
  assertPassword,
  commonPasswordStats,
  defaultPasswordPolicy,
  evaluatePassword,
  isCommonPassword,
  loadCommonPasswords,
  PasswordPolicyError,
  passwordPolicyFromSettings,
  resolvePasswordPolicy,
} from '../../../src/accounts/password-policy.ts';

const policy = resolvePasswordPolicy();
const strict = resolvePasswordPolicy({ requireUpper: true, requireLower: true, requireDigit: true, requireSymbol: true });
// A password that no rule objects to, for any policy below.
const good = 'Vexing-Quartz-47-Glimmer';

describe('defaults', () => {
  it('min 12, max 1024, composition and strength off', () => {
    expect(defaultPasswordPolicy).toEqual({
      minLength: 12,
      maxLength: 1024,
      requireUpper: false,
      requireLower: false,
      requireDigit: false,
      requireSymbol: false,
      minStrength: 0,
    });
    expect(evaluatePassword('zqmvtrplkwhx', policy, {})).toEqual({ ok: true, problems: [] });
  });

  it('rejects out-of-bounds policies', () => {
    expect(() => resolvePasswordPolicy({ minLength: 4 })).toThrow(RangeError);
    expect(() => resolvePasswordPolicy({ maxLength: 64 })).toThrow(RangeError);
    expect(() => resolvePasswordPolicy({ maxLength: 2048 })).toThrow(RangeError);
    expect(() => resolvePasswordPolicy({ minStrength: 5 as never })).toThrow(RangeError);
  });

  it('maps the env settings', () => {
    expect(
      passwordPolicyFromSettings({
        PASSWORD_MIN_LENGTH: 15,
        PASSWORD_REQUIRE_UPPER: true,
        PASSWORD_REQUIRE_LOWER: false,
        PASSWORD_REQUIRE_DIGIT: true,
        PASSWORD_REQUIRE_SYMBOL: false,
        PASSWORD_MIN_STRENGTH: 3,
      }),
    ).toEqual({ ...defaultPasswordPolicy, minLength: 15, requireUpper: true, requireDigit: true, minStrength: 3 });
  });
});

describe('length', () => {
  it('rejects fewer than the minimum and accepts exactly the minimum', () => {
    expect(evaluatePassword('zqmvtrplkwh', policy).problems).toEqual(['must be at least 12 characters']);
    expect(evaluatePassword('zqmvtrplkwhx', policy).ok).toBe(true);
    const fifteen = resolvePasswordPolicy({ minLength: 15 });
    expect(evaluatePassword('zqmvtrplkwhxbnd', fifteen).ok).toBe(true);
    expect(evaluatePassword('zqmvtrplkwhxbn', fifteen).problems).toEqual(['must be at least 15 characters']);
  });

  it('accepts 128 and 1024 code points, rejects 1025, never truncates', () => {
    const of = (n: number) => Array.from({ length: n }, (_, i) => 'zqmvtrplkwhxbnd'[(i * 7) % 15]).join('');
    expect(evaluatePassword(of(128), policy).ok).toBe(true);
    expect(evaluatePassword(of(1024), policy).ok).toBe(true);
    expect(evaluatePassword(of(1025), policy).problems).toEqual(['must be at most 1024 characters']);
    const max128 = resolvePasswordPolicy({ maxLength: 128 });
    expect(evaluatePassword(of(128), max128).ok).toBe(true);
    expect(evaluatePassword(of(129), max128).problems).toEqual(['must be at most 128 characters']);
  });

  it('counts an emoji as one code point', () => {
    const emoji = '🔐🦊🌵🎲🚲🧩🪐🍄🛸🎻🧲'; // 11 code points, 22 UTF-16 units
    expect(emoji.length).toBe(22);
    expect(evaluatePassword(emoji, policy).problems).toEqual(['must be at least 12 characters']);
    expect(evaluatePassword(emoji + '🐙', policy).ok).toBe(true);
    const emoji1024 = '😀'.repeat(1024);
    expect(evaluatePassword(emoji1024, policy).ok).toBe(true);
    expect(evaluatePassword(emoji1024 + '😀', policy).problems).toEqual(['must be at most 1024 characters']);
  });

  it('NFC-normalises combining characters before counting', () => {
    const decomposed = 'e\u0301'.repeat(11); // 22 code points, 11 after NFC (é)
    expect([...decomposed].length).toBe(22);
    expect(evaluatePassword(decomposed, policy).problems).toEqual(['must be at least 12 characters']);
    expect(evaluatePassword('e\u0301'.repeat(12), policy).ok).toBe(true);
    // A combining mark with no precomposed form stays a separate code point.
    expect(evaluatePassword('q\u0301'.repeat(6), policy).ok).toBe(true);
  });
});

describe('composition', () => {
  it('accepts a password with every class', () => {
    expect(evaluatePassword(good, strict).ok).toBe(true);
  });

  it('reports each missing class', () => {
    expect(evaluatePassword('vexing-quartz-47-glimmer', strict).problems).toEqual(['must contain an upper-case letter']);
    expect(evaluatePassword('VEXING-QUARTZ-47-GLIMMER', strict).problems).toEqual(['must contain a lower-case letter']);
    expect(evaluatePassword('Vexing-Quartz-Glimmer', strict).problems).toEqual(['must contain a digit']);
    expect(evaluatePassword('VexingQuartz47Glimmer', strict).problems).toEqual(['must contain a symbol or punctuation character']);
  });

  it('each rule only when switched on', () => {
    for (const [rule, password] of [
      ['requireUpper', 'vexing-quartz-47-glimmer'],
      ['requireLower', 'VEXING-QUARTZ-47-GLIMMER'],
      ['requireDigit', 'Vexing-Quartz-Glimmer'],
      ['requireSymbol', 'VexingQuartz47Glimmer'],
    ] as const) {
      expect(evaluatePassword(password, policy).ok).toBe(true);
      expect(evaluatePassword(password, resolvePasswordPolicy({ [rule]: true })).ok).toBe(false);
    }
  });

  it('understands letters, digits and symbols beyond ASCII', () => {
    expect(evaluatePassword('Ünïcödé-Wörter-٤٢-ßind', strict).ok).toBe(true);
    expect(evaluatePassword('VexingQuartz47Glimmer🦊', strict).ok).toBe(true);
    expect(evaluatePassword('VexingQuartz47 Glimmer', strict).ok).toBe(true);
  });
});

describe('common passwords', () => {
  it('holds at least 100,000 entries, lower-case', () => {
    const list = loadCommonPasswords();
    expect(list.size).toBeGreaterThanOrEqual(100_000);
    expect(list.size).toBe(100_000);
    expect(commonPasswordStats().entries).toBe(list.size);
    for (const entry of ['123456', 'password', 'qwerty', 'iloveyou', 'password1234', 'qwertyuiop123']) expect(list.has(entry)).toBe(true);
  });

  it('rejects common passwords whatever their case', () => {
    for (const password of ['password1234', 'qwertyuiop123', 'PassWord1234', 'QWERTYUIOP123']) {
      expect(evaluatePassword(password, policy).problems).toEqual(['is one of the most common passwords']);
    }
    expect(() => assertPassword('password1234', policy)).toThrow('password is one of the most common passwords');
  });

  it("rejects 'iloveyou' by the common rule as well as by length", () => {
    expect(isCommonPassword('iloveyou')).toBe(true);
    expect(evaluatePassword('iloveyou', resolvePasswordPolicy({ minLength: 8 })).problems).toEqual(['is one of the most common passwords']);
    expect(evaluatePassword('iloveyou', policy).problems).toEqual(['must be at least 12 characters', 'is one of the most common passwords']);
  });

  it('matches exactly, not by containment', () => {
    expect(isCommonPassword('password1234-zqmvtrplkwhx')).toBe(false);
    expect(evaluatePassword('password1234-zqmvtrplkwhx', policy).ok).toBe(true);
  });

  it('loads once per process and reuses the first load', () => {
    const first = loadCommonPasswords();
    const second = loadCommonPasswords();
    expect(second).toBe(first);
    evaluatePassword('qwertyuiop123', policy);
    expect(commonPasswordStats().loads).toBe(1);
  });
});

describe('personal information', () => {
  const context = { email: 'Margaret.Hamilton@example.org', name: 'Margaret Heafield Hamilton' };

  it('accepts a password unrelated to the user', () => {
    expect(evaluatePassword(good, policy, context).ok).toBe(true);
  });

  it('rejects the email and its local part, case-insensitively', () => {
    const problem = 'must not contain your email address or name';
    expect(evaluatePassword('margaret.hamilton@example.org', policy, context).problems).toEqual([problem]);
    expect(evaluatePassword('MARGARET.HAMILTON', policy, context).problems).toEqual([problem]);
    expect(evaluatePassword('xx-Margaret.Hamilton-2024', policy, context).problems).toEqual([problem]);
  });

  it('rejects the name, and name words of 4 or more characters contained in the password', () => {
    const problem = 'must not contain your email address or name';
    expect(evaluatePassword('Margaret Heafield Hamilton', policy, context).problems).toEqual([problem]);
    expect(evaluatePassword('MargaretHeafieldHamilton', policy, context).problems).toEqual([problem]);
    expect(evaluatePassword('zqmv-HEAFIELD-trpl', policy, context).problems).toEqual([problem]);
  });

  it('short local parts and name words only count as the whole password', () => {
    const short = { email: 'ann@example.org', name: 'Li Bo' };
    expect(evaluatePassword('ann-zqmvtrplkwhx', policy, short).ok).toBe(true);
    expect(evaluatePassword('li-zqmvtrplkwhx-bo', policy, short).ok).toBe(true);
    expect(evaluatePassword('ANN', policy, short).problems).toContain('must not contain your email address or name');
    expect(evaluatePassword('li bo', policy, short).problems).toContain('must not contain your email address or name');
  });

  it('ignores a missing or null context', () => {
    expect(evaluatePassword(good, policy, {}).ok).toBe(true);
    expect(evaluatePassword(good, policy, { name: null }).ok).toBe(true);
  });
});

describe('strength estimate', () => {
  it('is off by default', () => {
    expect(evaluatePassword('abcabcabcabcabc', policy).ok).toBe(true);
  });

  it('rejects a guessable password when minStrength is set, and accepts a strong one', () => {
    const strong = resolvePasswordPolicy({ minStrength: 3 });
    const weak = evaluatePassword('abcabcabcabcabc', strong);
    expect(weak.ok).toBe(false);
    expect(weak.problems).toHaveLength(1);
    expect(weak.problems[0]).toMatch(/^is too easy to guess \(strength [0-2] of 4, at least 3 needed\)$/);
    expect(evaluatePassword('tundra Oblique 93 marmalade kiln', strong).ok).toBe(true);
  });
});

describe('errors', () => {
  it('reports every problem at once', () => {
    const strong = resolvePasswordPolicy({ ...strict, minLength: 12, minStrength: 3 });
    const { ok, problems } = evaluatePassword('jennifer', strong, { email: 'jennifer@example.org' });
    expect(ok).toBe(false);
    expect(problems).toEqual([
      'must be at least 12 characters',
      'must contain an upper-case letter',
      'must contain a digit',
      'must contain a symbol or punctuation character',
      'is one of the most common passwords',
      'must not contain your email address or name',
      expect.stringMatching(/^is too easy to guess/),
    ]);
  });

  it('PasswordPolicyError is a ValidationError carrying the problems', () => {
    let caught: unknown;
    try {
      assertPassword('password', policy, {});
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(PasswordPolicyError);
    expect(caught).toBeInstanceOf(ValidationError);
    const error = caught as PasswordPolicyError;
    expect(error.problems).toEqual(['must be at least 12 characters', 'is one of the most common passwords']);
    expect(error.message).toBe('password must be at least 12 characters; is one of the most common passwords');
    expect(error.code).toBe('ERR_VALIDATION');
    expect(error.status).toBe(400);
    expect(error.expose).toBe(true);
    expect(() => assertPassword(good, policy, {})).not.toThrow();
  });
});
