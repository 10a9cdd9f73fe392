// FlowEngine over real storage with the real sign-in methods: flows in the ExpiringValue table of a fresh SQLite database, audit
// events in the real hash-chained AuditEvent table. Only the seams (password check, risk, MFA
// policy, second-factor steps, passkeys, sign-in codes) are test doubles, so each test can choose
// what they answer and see how they were called.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../../src/audit/log.ts';
import { systemClock } from '../../../src/clock.ts';
import { FlowEngine, type FlowDeps, type RequestInfo } from '../../../src/flow/engine.ts';
import type { Flow } from '../../../src/flow/machine.ts';
import { emailCodeMethod, emailCodeMethodId } from '../../../src/flow/methods/email-code.ts';
import { passkeyMethod } from '../../../src/flow/methods/passkey.ts';
import { passwordMethod, type PasswordCheck } from '../../../src/flow/methods/password.ts';
import { MethodRegistry } from '../../../src/flow/methods/types.ts';
import type { MfaDecision, MfaSteps } from '../../../src/flow/second-factor.ts';
import type { RiskContext, RiskVerdict } from '../../../src/risk/engine.ts';
import { AuditEventStore } from '../../../src/store/audit-events.ts';
import { openDatabase, type Database } from '../../../src/store/database.ts';
import { DatabaseExpiringValues } from '../../../src/store/expiring-values.ts';
import { freshSqlite, type TestDatabase } from '../../helpers/databases.ts';

const goodPassword = 'correct horse battery staple';
const badPasswords = ['Tr0ub4dor&3-first-guess', 'Tr0ub4dor&3-second-guess', 'Tr0ub4dor&3-third-guess'];
const request: RequestInfo = { ip: '203.0.113.7', userAgent: 'vitest-agent', requestId: 'req-1', clientId: 'webapp' };

let testDb: TestDatabase;
let db: Database;
let store: DatabaseExpiringValues;
let auditStore: AuditEventStore;
let audit: AuditLog;

beforeAll(async () => {
  testDb = await freshSqlite();
  db = await openDatabase(testDb.url);
  store = new DatabaseExpiringValues(db.prisma);
  auditStore = new AuditEventStore(db);
  audit = new AuditLog(auditStore);
});

afterAll(async () => {
  await db?.close();
  await testDb?.drop();
});

// What the doubles accept.
const totpCode = '246810';
const enrolCode = '135790';
const signinCode = '864209';
const totpSecret = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';
const backupCodes = ['k7m2-p9x4', 'w3q8-z6n1'];
const deviceToken = 'device-token-0123456789abcdef';

interface Seams {
  risk: RiskVerdict;
  decision: MfaDecision;
  passwordCalls: [string, string][];
  riskCalls: RiskContext[];
  decisionCalls: { flow: Flow; request: RequestInfo; riskStepUp: boolean }[];
  /** Every call into the MFA steps, passkey and sign-in code seams, in order. */
  calls: string[];
  sendResult: 'sent' | 'rate_limited' | 'unavailable';
}

let seams: Seams;
let uidCounter = 0;
let tokenCounter = 0;

beforeEach(() => {
  seams = { risk: { verdict: 'allow', reasons: [] }, decision: { action: 'skip', reason: 'none' }, passwordCalls: [], riskCalls: [], decisionCalls: [], calls: [], sendResult: 'sent' };
});

const mfaSteps: MfaSteps = {
  async verify(flow, input) {
    seams.calls.push(`verify:${input.method}:${input.code ?? input.response ?? ''}`);
    if (input.method === 'totp' && input.code === totpCode) return { ok: true, amr: ['otp'] };
    if (input.method === 'webauthn' && input.response === 'assertion-ok') return { ok: true, amr: ['hwk', 'mfa'] };
    return { ok: false, reason: 'invalid' };
  },
  async sendCode(_flow, method) {
    seams.calls.push(`sendCode:${method}`);
    return method === 'email' || method === 'sms' ? seams.sendResult : 'unavailable';
  },
  async startEnrolment(flow, method, destination) {
    seams.calls.push(`startEnrolment:${method}:${destination ?? ''}`);
    if (method === 'totp') return { ok: true, factorId: 'factor-1', display: { totp: { secret: totpSecret, uri: `otpauth://totp/IdP:${flow.email}?secret=${totpSecret}` } } };
    if (method === 'sms' && !destination) return { ok: false, reason: 'a phone number is needed' };
    return { ok: true, display: { codeSentTo: method } };
  },
  async confirmEnrolment(flow, input) {
    seams.calls.push(`confirmEnrolment:${input.method}:${flow.enrolment?.factorId ?? ''}:${input.code ?? ''}`);
    return input.method === 'totp' && input.code === enrolCode ? { ok: true, amr: ['otp'] } : { ok: false, reason: 'the code is not correct', display: { retry: true } };
  },
  async backupCodes(accountId) {
    seams.calls.push(`backupCodes:${accountId}`);
    return [...backupCodes];
  },
  async rememberDevice(accountId, userAgent) {
    seams.calls.push(`rememberDevice:${accountId}:${userAgent ?? ''}`);
    return deviceToken;
  },
};

interface Overrides {
  checkPassword?: (email: string, password: string) => Promise<PasswordCheck>;
  maxAttempts?: number;
  ttlSeconds?: number;
}

/** The engine with the real sign-in methods over test seams (password check, codes, passkeys). */
function engine(overrides: Overrides = {}): FlowEngine {
  const checkPassword = overrides.checkPassword ?? (async (email: string, password: string): Promise<PasswordCheck> => {
    seams.passwordCalls.push([email, password]);
    return email === 'alice@example.com' && password === goodPassword ? { ok: true, accountId: 'acct-alice' } : { ok: false, reason: 'wrong_password' };
  });
  const guard = { check: async () => ({ allowed: true, retryAfterSeconds: 0 }), failed: async () => undefined, succeeded: async () => undefined };
  const methods = new MethodRegistry([
    passwordMethod({ checkPassword, guard, codeMethod: emailCodeMethodId }),
    emailCodeMethod({
      async send(flowUid, email) {
        seams.calls.push(`sendSigninCode:${flowUid}:${email}`);
        return seams.sendResult === 'rate_limited' ? 'rate_limited' : 'sent';
      },
      async check(flowUid, email, code) {
        seams.calls.push(`checkSigninCode:${flowUid}:${email}:${code}`);
        return email === 'alice@example.com' && code === signinCode ? { ok: true, accountId: 'acct-alice' } : { ok: false, reason: 'invalid' };
      },
    }),
    passkeyMethod({
      options: async () => ({ challenge: 'c' }),
      async verify(flowUid, response) {
        seams.calls.push(`verifyPasskey:${flowUid}:${response}`);
        return response === 'passkey-ok' ? { ok: true, accountId: 'acct-alice', email: 'alice@example.com', amr: ['hwk', 'mfa'] } : { ok: false };
      },
    }),
  ]);
  const deps: FlowDeps = {
    store,
    audit,
    clock: systemClock,
    methods,
    risk: {
      async assess(context) {
        seams.riskCalls.push(context);
        return seams.risk;
      },
    },
    secondFactor: {
      async decide(flow, req, risk) {
        seams.decisionCalls.push({ flow, request: req, riskStepUp: risk.verdict === 'step_up' });
        return seams.decision;
      },
    },
    mfa: mfaSteps,
    guard,
    async changePassword() {
      return { ok: true } as const;
    },
    randomToken: () => `token-${++tokenCounter}`,
    maxAttempts: overrides.maxAttempts ?? 3,
    ttlSeconds: overrides.ttlSeconds ?? 600,
  };
  return new FlowEngine(deps);
}

const newUid = () => `interaction-${++uidCounter}-${Date.now()}`;

/** Audit rows this interaction produced, oldest first. */
async function auditFor(uid: string) {
  const rows = await db.prisma.auditEvent.findMany({ orderBy: { seq: 'asc' } });
  return rows.filter((r) => (JSON.parse(r.details) as { interaction?: string }).interaction === uid);
}

async function storedFlow(uid: string): Promise<Flow | undefined> {
  return store.get<Flow>(`flow:${uid}`);
}

describe('begin', () => {
  it('starts a flow at identify, saves it, and returns the same one next time', async () => {
    const e = engine();
    const uid = newUid();
    expect(await e.load(uid)).toBeUndefined();
    const first = await e.begin(uid);
    expect(first).toMatchObject({ uid, stage: 'identify', amr: [], failedAttempts: 0 });
    expect(first.csrf).toMatch(/^token-\d+$/);
    const again = await e.begin(uid);
    expect(again).toEqual(first);
    expect(await storedFlow(uid)).toEqual(first);
    expect(await auditFor(uid)).toHaveLength(0);
  });

  it('saves the flow with the configured TTL', async () => {
    const uid = newUid();
    const before = Date.now();
    await engine({ ttlSeconds: 120 }).begin(uid);
    const row = await db.prisma.expiringValue.findUniqueOrThrow({ where: { key: `flow:${uid}` } });
    expect(row.expiresAt.getTime()).toBeGreaterThanOrEqual(before + 120_000);
    expect(row.expiresAt.getTime()).toBeLessThanOrEqual(Date.now() + 120_000);
  });

  it('discard removes the flow, so the next begin starts afresh', async () => {
    const e = engine();
    const uid = newUid();
    const first = await e.begin(uid);
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    await e.discard(uid);
    expect(await e.load(uid)).toBeUndefined();
    const second = await e.begin(uid);
    expect(second.stage).toBe('identify');
    expect(second.csrf).not.toBe(first.csrf);
  });
});

describe('identify -> password -> done', () => {
  it('reaches done with the account and pwd, and audits each event in order', async () => {
    const e = engine();
    const uid = newUid();
    const afterIdentify = await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    expect(afterIdentify).toMatchObject({ stage: 'authenticate', method: 'password', email: 'alice@example.com' });
    expect(seams.passwordCalls).toEqual([]);

    const done = await e.submit(uid, 'password', { password: goodPassword }, request);
    expect(done).toMatchObject({ uid, stage: 'done', method: 'password', email: 'alice@example.com', accountId: 'acct-alice', amr: ['pwd'], failedAttempts: 0 });
    expect(done.failure).toBeUndefined();
    expect(seams.passwordCalls).toEqual([['alice@example.com', goodPassword]]);
    expect(seams.riskCalls).toHaveLength(1);
    expect(seams.riskCalls[0]).toMatchObject({ accountId: 'acct-alice', email: 'alice@example.com', method: 'password', amr: ['pwd'], ip: request.ip, clientId: 'webapp' });
    expect(await storedFlow(uid)).toEqual(done);

    const rows = await auditFor(uid);
    expect(rows.map((r) => r.type)).toEqual(['login.identified', 'login.password_verified', 'login.risk_allowed']);
    expect(rows.map((r) => r.outcome)).toEqual(['success', 'success', 'success']);
    // seq increases with the order of events
    expect(rows.map((r) => r.seq)).toEqual([...rows.map((r) => r.seq)].sort((a, b) => a - b));
    const details = rows.map((r) => JSON.parse(r.details) as Record<string, unknown>);
    expect(details[0]).toEqual({ interaction: uid, from: 'identify', to: 'authenticate', method: 'password', email: 'alice@example.com' });
    expect(details[1]).toEqual({ interaction: uid, from: 'authenticate', to: 'assess', name: 'password_verified', method: 'password', accountId: 'acct-alice', amr: ['pwd'], email: 'alice@example.com' });
    expect(details[2]).toEqual({ interaction: uid, from: 'assess', to: 'done', reason: 'none', email: 'alice@example.com' });
    // The subject appears once the account is known; request details are carried on every row.
    expect(rows.map((r) => r.subject)).toEqual([null, 'acct-alice', 'acct-alice']);
    for (const row of rows) {
      expect(row).toMatchObject({ clientId: 'webapp', requestId: 'req-1', ip: '203.0.113.7', userAgent: 'vitest-agent' });
    }
    expect(await audit.verify()).toMatchObject({ ok: true });
  });
});

describe('wrong passwords', () => {
  it('a wrong password counts an attempt and stays at password, audited as a failure', async () => {
    const e = engine();
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, 'password', { password: badPasswords[0]! }, request);
    expect(flow).toMatchObject({ stage: 'authenticate', method: 'password', failedAttempts: 1, email: 'alice@example.com', display: { notices: [{ key: 'error.invalidCredentials', kind: 'rejected' }] } });
    expect(flow.accountId).toBeUndefined();
    const { display: _display, ...saved } = flow;
    expect(await storedFlow(uid)).toEqual(saved);
    expect(seams.riskCalls).toHaveLength(0);
    const rows = await auditFor(uid);
    expect(rows.map((r) => [r.type, r.outcome])).toEqual([
      ['login.identified', 'success'],
      ['login.password_rejected', 'failure'],
    ]);

    const second = await e.submit(uid, 'password', { password: badPasswords[1]! }, request);
    expect(second).toMatchObject({ stage: 'authenticate', failedAttempts: 2 });
    // A good password after failures still succeeds while attempts remain.
    const done = await e.submit(uid, 'password', { password: goodPassword }, request);
    expect(done).toMatchObject({ stage: 'done', failedAttempts: 2, accountId: 'acct-alice' });
  });

  it('reaching maxAttempts fails the flow with too_many_attempts, and it stays failed', async () => {
    const e = engine();
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    await e.submit(uid, 'password', { password: badPasswords[0]! }, request);
    await e.submit(uid, 'password', { password: badPasswords[1]! }, request);
    const failed = await e.submit(uid, 'password', { password: badPasswords[2]! }, request);
    expect(failed).toMatchObject({ stage: 'failed', failure: 'too_many_attempts', failedAttempts: 3 });
    const { display: _display, ...failedSaved } = failed;
    expect(await storedFlow(uid)).toEqual(failedSaved);

    const rows = await auditFor(uid);
    expect(rows.map((r) => [r.type, r.outcome])).toEqual([
      ['login.identified', 'success'],
      ['login.password_rejected', 'failure'],
      ['login.password_rejected', 'failure'],
      ['login.password_rejected', 'failure'],
      ['login.attempts_exhausted', 'failure'],
    ]);
    expect(JSON.parse(rows[4]!.details)).toMatchObject({ from: 'authenticate', to: 'failed' });

    // The right password now changes nothing and is not even checked.
    const callsBefore = seams.passwordCalls.length;
    const after = await e.submit(uid, 'password', { password: goodPassword }, request);
    expect(after).toEqual(failedSaved);
    expect(seams.passwordCalls.length).toBe(callsBefore);
    expect(await auditFor(uid)).toHaveLength(5);
  });

  it('concurrent wrong passwords cannot get past maxAttempts (no lost updates of failedAttempts)', async () => {
    // checkPassword takes time, as argon2 does; an attacker posts many guesses at once.
    const e = engine({
      async checkPassword(email, password) {
        seams.passwordCalls.push([email, password]);
        await new Promise((resolve) => setTimeout(resolve, 20));
        return { ok: false, reason: 'wrong_password' };
      },
    });
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    const guesses = Array.from({ length: 8 }, (_, i) => `concurrent-guess-${i}`);
    await Promise.all(guesses.map((password) => e.submit(uid, 'password', { password }, request)));
    const flow = await storedFlow(uid);
    const rejections = (await auditFor(uid)).filter((r) => r.type === 'login.password_rejected').length;
    // Every audited rejection is counted in the stored flow...
    expect(flow?.failedAttempts).toBe(rejections);
    // ...and no more than maxAttempts (3) guesses were ever checked; the flow ended failed.
    expect(seams.passwordCalls.length).toBeLessThanOrEqual(3);
    expect(flow).toMatchObject({ stage: 'failed', failure: 'too_many_attempts' });
  });

  it('maxAttempts 1 fails at the first wrong password', async () => {
    const e = engine({ maxAttempts: 1 });
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, 'password', { password: badPasswords[0]! }, request);
    expect(flow).toMatchObject({ stage: 'failed', failure: 'too_many_attempts', failedAttempts: 1 });
  });
});

describe('stale input', () => {
  it('input meant for another stage changes nothing and audits nothing', async () => {
    const e = engine();
    const uid = newUid();
    const atPassword = await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    const rowsBefore = await auditFor(uid);

    // A replayed identify form with another email.
    const replayed = await e.submit(uid, 'identify', { email: 'mallory@example.com' }, request);
    expect(replayed).toEqual(atPassword);
    expect(await storedFlow(uid)).toEqual(atPassword);
    expect(await auditFor(uid)).toHaveLength(rowsBefore.length);
    expect(seams.passwordCalls).toEqual([]);
  });

  it('a password sent while the flow is at identify is ignored and never checked', async () => {
    const e = engine();
    const uid = newUid();
    const started = await e.begin(uid);
    const flow = await e.submit(uid, 'password', { password: goodPassword }, request);
    expect(flow).toEqual(started);
    expect(seams.passwordCalls).toEqual([]);
    expect(await auditFor(uid)).toHaveLength(0);
  });

  it('a finished flow ignores further input', async () => {
    const e = engine();
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    const done = await e.submit(uid, 'password', { password: goodPassword }, request);
    expect(done.stage).toBe('done');
    expect(await e.submit(uid, 'identify', { email: 'mallory@example.com' }, request)).toEqual(done);
    expect(await e.submit(uid, 'abort', {}, request)).toEqual(done);
    expect(await auditFor(uid)).toHaveLength(3);
  });
});

describe('restart and abort', () => {
  it('restart at the password stage goes back to identify, forgetting the email', async () => {
    const e = engine();
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    await e.submit(uid, 'password', { password: badPasswords[0]! }, request);
    const restarted = await e.submit(uid, 'restart', {}, request);
    expect(restarted.stage).toBe('identify');
    expect(restarted.email).toBeUndefined();
    // The attempt count survives a restart.
    expect(restarted.failedAttempts).toBe(1);
    expect(await storedFlow(uid)).toEqual(restarted);
    const rows = await auditFor(uid);
    expect(rows.map((r) => r.type)).toEqual(['login.identified', 'login.password_rejected', 'login.restarted']);
    // And the user can identify again, with another address.
    const again = await e.submit(uid, 'identify', { email: 'bob@example.com' }, request);
    expect(again).toMatchObject({ stage: 'authenticate', method: 'password', email: 'bob@example.com' });
  });

  it('a restart form replayed once the flow has moved on changes nothing', async () => {
    const e = engine();
    const uid = newUid();
    const started = await e.begin(uid);
    expect(await e.submit(uid, 'restart', {}, request)).toEqual(started);
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    const done = await e.submit(uid, 'password', { password: goodPassword }, request);
    expect(await e.submit(uid, 'restart', {}, request)).toEqual(done);
    expect((await auditFor(uid)).map((r) => r.type)).not.toContain('login.restarted');
  });

  it('abort at identify fails the flow with aborted', async () => {
    const e = engine();
    const uid = newUid();
    await e.begin(uid);
    const flow = await e.submit(uid, 'abort', {}, request);
    expect(flow).toMatchObject({ stage: 'failed', failure: 'aborted' });
    const rows = await auditFor(uid);
    expect(rows.map((r) => [r.type, r.outcome])).toEqual([['login.aborted', 'failure']]);
  });

  it('abort at password fails the flow with aborted', async () => {
    const e = engine();
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, 'abort', {}, request);
    expect(flow).toMatchObject({ stage: 'failed', failure: 'aborted', email: 'alice@example.com' });
    expect(seams.passwordCalls).toEqual([]);
  });
});

describe('risk and MFA seams', () => {
  it('a deny verdict fails the flow with the reasons, audited as a failure', async () => {
    seams.risk = { verdict: 'deny', reasons: ['tor_exit', 'velocity'] };
    const e = engine();
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, 'password', { password: goodPassword }, request);
    expect(flow).toMatchObject({ stage: 'failed', failure: 'risk_denied:tor_exit,velocity', accountId: 'acct-alice' });
    const rows = await auditFor(uid);
    expect(rows.map((r) => [r.type, r.outcome])).toEqual([
      ['login.identified', 'success'],
      ['login.password_verified', 'success'],
      ['login.risk_denied', 'failure'],
    ]);
    expect(JSON.parse(rows[2]!.details)).toMatchObject({ reason: 'tor_exit,velocity', risk: ['tor_exit', 'velocity'], from: 'assess', to: 'failed' });
  });

  it('a deny verdict without reasons still fails, with reason denied', async () => {
    seams.risk = { verdict: 'deny', reasons: [] };
    const e = engine();
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, 'password', { password: goodPassword }, request);
    expect(flow).toMatchObject({ stage: 'failed', failure: 'risk_denied:denied' });
  });

  it('a challenge decision sends the flow to the mfa stage with its methods, not to done', async () => {
    seams.decision = { action: 'challenge', methods: ['totp', 'backup_code'], reason: 'policy' };
    const e = engine();
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, 'password', { password: goodPassword }, request);
    expect(flow).toMatchObject({ stage: 'mfa', accountId: 'acct-alice', amr: ['pwd'], mfaMethods: ['totp', 'backup_code'] });
    expect(await storedFlow(uid)).toEqual(flow);
    // The policy saw the flow at risk, the request, and no risk step-up.
    expect(seams.decisionCalls).toHaveLength(1);
    expect(seams.decisionCalls[0]).toMatchObject({ flow: { stage: 'assess', accountId: 'acct-alice', amr: ['pwd'] }, request, riskStepUp: false });
    const rows = await auditFor(uid);
    expect(rows.map((r) => r.type)).toEqual(['login.identified', 'login.password_verified', 'login.risk_step_up']);
    expect(JSON.parse(rows[2]!.details)).toEqual({ interaction: uid, from: 'assess', to: 'mfa', methods: ['totp', 'backup_code'], reason: 'policy', email: 'alice@example.com' });
    // Password input is stale at the mfa stage; abort still works.
    expect(await e.submit(uid, 'password', { password: goodPassword }, request)).toEqual(flow);
    expect(await e.submit(uid, 'abort', {}, request)).toMatchObject({ stage: 'failed', failure: 'aborted' });
  });

  it('a step_up verdict reaches the MFA policy as riskStepUp, and the policy\'s answer is followed', async () => {
    seams.risk = { verdict: 'step_up', reasons: ['new_device'] };
    seams.decision = { action: 'challenge', methods: ['totp'], reason: 'risk' };
    const e = engine();
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, 'password', { password: goodPassword }, request);
    expect(flow).toMatchObject({ stage: 'mfa', mfaMethods: ['totp'] });
    expect(seams.decisionCalls.map((c) => c.riskStepUp)).toEqual([true]);
  });

  it('a skip decision ends the flow at done, audited as risk_allowed with the reason', async () => {
    seams.decision = { action: 'skip', reason: 'remembered_device' };
    const e = engine();
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, 'password', { password: goodPassword }, request);
    expect(flow).toMatchObject({ stage: 'done', amr: ['pwd'] });
    const rows = await auditFor(uid);
    expect(JSON.parse(rows[2]!.details)).toMatchObject({ from: 'assess', to: 'done', reason: 'remembered_device' });
  });
});

/** A flow brought to the mfa stage by a password sign-in and a challenge decision. */
async function atMfa(e: FlowEngine, methods: MfaDecision & { action: 'challenge' } = { action: 'challenge', methods: ['totp', 'email', 'backup_code'], reason: 'policy' }) {
  seams.decision = methods;
  const uid = newUid();
  await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
  const flow = await e.submit(uid, 'password', { password: goodPassword }, request);
  expect(flow.stage).toBe('mfa');
  seams.calls = [];
  return uid;
}

describe('mfa challenge', () => {
  it('the right code adds the method\'s amr and mfa and reaches done, audited as mfa_verified', async () => {
    const e = engine();
    const uid = await atMfa(e);
    const done = await e.submit(uid, 'mfa', { method: 'totp', code: totpCode }, request);
    expect(done).toMatchObject({ stage: 'done', accountId: 'acct-alice', amr: ['pwd', 'otp', 'mfa'], failedAttempts: 0 });
    expect(done.display).toBeUndefined();
    expect(await storedFlow(uid)).toEqual(done);
    expect(seams.calls).toEqual([`verify:totp:${totpCode}`]);
    const rows = await auditFor(uid);
    expect(rows.map((r) => [r.type, r.outcome])).toEqual([
      ['login.identified', 'success'],
      ['login.password_verified', 'success'],
      ['login.risk_step_up', 'success'],
      ['login.mfa_verified', 'success'],
    ]);
    expect(JSON.parse(rows[3]!.details)).toEqual({ interaction: uid, from: 'mfa', to: 'done', method: 'totp', amr: ['otp'], email: 'alice@example.com' });
    expect(rows[3]!.subject).toBe('acct-alice');
    expect(await audit.verify()).toMatchObject({ ok: true });
  });

  it('a method that was not offered is ignored without being checked', async () => {
    const e = engine();
    const uid = await atMfa(e, { action: 'challenge', methods: ['totp'], reason: 'policy' });
    const before = await storedFlow(uid);
    const after = await e.submit(uid, 'mfa', { method: 'webauthn', response: 'assertion-ok' }, request);
    expect(after).toEqual(before);
    expect(seams.calls).toEqual([]);
    expect((await auditFor(uid)).map((r) => r.type)).not.toContain('login.mfa_verified');
  });

  it('a wrong code counts an attempt; at maxAttempts the flow fails and the right code is no longer checked', async () => {
    const e = engine();
    const uid = await atMfa(e);
    const first = await e.submit(uid, 'mfa', { method: 'totp', code: '000000' }, request);
    expect(first).toMatchObject({ stage: 'mfa', failedAttempts: 1, display: { notices: [{ key: 'error.mfaFailed', kind: 'rejected' }] } });
    const { display: _display, ...firstSaved } = first;
    expect(await storedFlow(uid)).toEqual(firstSaved);
    expect(await e.submit(uid, 'mfa', { method: 'backup_code', code: 'nope-nope' }, request)).toMatchObject({ stage: 'mfa', failedAttempts: 2 });
    const failed = await e.submit(uid, 'mfa', { method: 'totp', code: '111111' }, request);
    expect(failed).toMatchObject({ stage: 'failed', failure: 'too_many_attempts', failedAttempts: 3, amr: ['pwd'] });
    const { display: _failedDisplay, ...failedSaved } = failed;
    expect(await storedFlow(uid)).toEqual(failedSaved);

    const rows = await auditFor(uid);
    expect(rows.slice(3).map((r) => [r.type, r.outcome])).toEqual([
      ['login.mfa_rejected', 'failure'],
      ['login.mfa_rejected', 'failure'],
      ['login.mfa_rejected', 'failure'],
      ['login.attempts_exhausted', 'failure'],
    ]);
    expect(JSON.parse(rows[3]!.details)).toMatchObject({ from: 'mfa', to: 'mfa', method: 'totp', reason: 'invalid' });
    expect(JSON.parse(rows[4]!.details)).toMatchObject({ method: 'backup_code', reason: 'invalid' });
    expect(JSON.parse(rows[6]!.details)).toMatchObject({ from: 'mfa', to: 'failed' });
    // No code ever reaches the audit log.
    for (const row of rows) for (const code of ['000000', 'nope-nope', '111111']) expect(row.details).not.toContain(code);

    seams.calls = [];
    expect(await e.submit(uid, 'mfa', { method: 'totp', code: totpCode }, request)).toEqual(failedSaved);
    expect(seams.calls).toEqual([]);
    expect(await auditFor(uid)).toHaveLength(rows.length);
  });

  it('a send for email says code_sent (or code_rate_limited) and stays; a method without codes sends nothing', async () => {
    const e = engine();
    const uid = await atMfa(e);
    const sent = await e.submit(uid, 'mfa', { method: 'email', send: '1' }, request);
    expect(sent).toMatchObject({ stage: 'mfa', display: { notices: [{ key: 'mfa.codeSent', kind: 'info' }] }, failedAttempts: 0 });
    seams.sendResult = 'rate_limited';
    expect(await e.submit(uid, 'mfa', { method: 'email', send: '1' }, request)).toMatchObject({ stage: 'mfa', display: { notices: [{ key: 'mfa.codeRateLimited' }] } });
    const unavailable = await e.submit(uid, 'mfa', { method: 'totp', send: '1' }, request);
    expect(unavailable.display).toBeUndefined();
    expect(seams.calls).toEqual(['sendCode:email', 'sendCode:email', 'sendCode:totp']);
    const rows = await auditFor(uid);
    expect(rows.slice(3).map((r) => [r.type, r.outcome])).toEqual([
      ['login.mfa_code_sent', 'success'],
      ['login.mfa_code_sent', 'success'],
    ]);
    expect(JSON.parse(rows[4]!.details)).toMatchObject({ method: 'email', rateLimited: true });
  });

  it('remember=1 returns the device token once: in the returned flow, never in the store or the audit log', async () => {
    const e = engine();
    const uid = await atMfa(e);
    const done = await e.submit(uid, 'mfa', { method: 'totp', code: totpCode, remember: '1' }, request);
    expect(done).toMatchObject({ stage: 'done', display: { deviceToken } });
    expect(seams.calls).toEqual([`verify:totp:${totpCode}`, 'rememberDevice:acct-alice:vitest-agent']);
    const stored = await storedFlow(uid);
    expect(stored).not.toHaveProperty('display');
    const { display: _display, ...rest } = done;
    expect(stored).toEqual(rest);
    const row = await db.prisma.expiringValue.findUniqueOrThrow({ where: { key: `flow:${uid}` } });
    expect(row.value).not.toContain(deviceToken);
    for (const r of await auditFor(uid)) expect(r.details).not.toContain(deviceToken);
    // Loading the flow again (the next request) shows no token.
    expect(await e.load(uid)).not.toHaveProperty('display');
  });

  it('a wrong code with remember=1 remembers nothing', async () => {
    const e = engine();
    const uid = await atMfa(e);
    await e.submit(uid, 'mfa', { method: 'totp', code: '999999', remember: '1' }, request);
    expect(seams.calls).toEqual(['verify:totp:999999']);
  });
});

/** A flow brought to the mfa_enrol stage by a password sign-in and an enrol decision. */
async function atEnrolment(e: FlowEngine) {
  seams.decision = { action: 'enrol', methods: ['totp', 'webauthn', 'sms'], reason: 'policy' };
  const uid = newUid();
  await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
  const flow = await e.submit(uid, 'password', { password: goodPassword }, request);
  expect(flow).toMatchObject({ stage: 'mfa_enrol', mfaMethods: ['totp', 'webauthn', 'sms'] });
  seams.calls = [];
  return uid;
}

describe('mfa enrolment', () => {
  it('start shows the TOTP secret in the returned flow only; the stored flow and audit log never hold it', async () => {
    const e = engine();
    const uid = await atEnrolment(e);
    const started = await e.submit(uid, 'mfa-enrol', { method: 'totp', start: '1' }, request);
    expect(started).toMatchObject({ stage: 'mfa_enrol', enrolment: { method: 'totp', factorId: 'factor-1' }, display: { totp: { secret: totpSecret } } });
    expect(seams.calls).toEqual(['startEnrolment:totp:']);

    // Read the store directly: the flow is saved without display.
    const stored = await store.get<Flow>(`flow:${uid}`);
    expect(stored).toBeDefined();
    expect(stored).not.toHaveProperty('display');
    expect(stored).toMatchObject({ stage: 'mfa_enrol', enrolment: { method: 'totp', factorId: 'factor-1' } });
    const row = await db.prisma.expiringValue.findUniqueOrThrow({ where: { key: `flow:${uid}` } });
    expect(row.value).not.toContain(totpSecret);
    expect(await e.load(uid)).not.toHaveProperty('display');

    const rows = await auditFor(uid);
    expect(rows.map((r) => [r.type, r.outcome])).toEqual([
      ['login.identified', 'success'],
      ['login.password_verified', 'success'],
      ['login.mfa_enrolment_required', 'success'],
      ['login.mfa_enrolment_started', 'success'],
    ]);
    expect(JSON.parse(rows[2]!.details)).toEqual({ interaction: uid, from: 'assess', to: 'mfa_enrol', methods: ['totp', 'webauthn', 'sms'], reason: 'policy', email: 'alice@example.com' });
    expect(JSON.parse(rows[3]!.details)).toEqual({ interaction: uid, from: 'mfa_enrol', to: 'mfa_enrol', method: 'totp', factorId: 'factor-1', email: 'alice@example.com' });
    for (const r of rows) expect(r.details).not.toContain(totpSecret);
  });

  it('a wrong first code is refused with a problem; the right one enrols, shows backup codes once, and acknowledging ends at done', async () => {
    const e = engine();
    const uid = await atEnrolment(e);
    await e.submit(uid, 'mfa-enrol', { method: 'totp', start: '1' }, request);
    const refused = await e.submit(uid, 'mfa-enrol', { method: 'totp', code: '000000' }, request);
    // Enrolment refusals are not failed sign-in attempts.
    expect(refused).toMatchObject({ stage: 'mfa_enrol', display: { retry: true, problems: ['the code is not correct'] }, failedAttempts: 0, enrolment: { method: 'totp', factorId: 'factor-1' } });
    expect(await storedFlow(uid)).not.toHaveProperty('display');

    const enrolled = await e.submit(uid, 'mfa-enrol', { method: 'totp', code: enrolCode }, request);
    expect(enrolled).toMatchObject({ stage: 'backup_codes', amr: ['pwd', 'otp', 'mfa'], display: { backupCodes } });
    expect(enrolled).not.toHaveProperty('enrolment');
    expect(seams.calls).toEqual(['startEnrolment:totp:', 'confirmEnrolment:totp:factor-1:000000', 'confirmEnrolment:totp:factor-1:135790', 'backupCodes:acct-alice']);
    const stored = await storedFlow(uid);
    expect(stored).toMatchObject({ stage: 'backup_codes', amr: ['pwd', 'otp', 'mfa'] });
    expect(stored).not.toHaveProperty('display');
    const row = await db.prisma.expiringValue.findUniqueOrThrow({ where: { key: `flow:${uid}` } });
    for (const code of backupCodes) expect(row.value).not.toContain(code);
    // Reloading the screen does not show the codes again.
    expect(await e.begin(uid)).not.toHaveProperty('display');

    const done = await e.submit(uid, 'backup-codes', { acknowledged: '1' }, request);
    expect(done).toMatchObject({ stage: 'done', amr: ['pwd', 'otp', 'mfa'], accountId: 'acct-alice' });

    const rows = await auditFor(uid);
    expect(rows.slice(3).map((r) => [r.type, r.outcome])).toEqual([
      ['login.mfa_enrolment_started', 'success'],
      ['login.mfa_enrolment_rejected', 'failure'],
      ['login.mfa_enrolled', 'success'],
      ['login.backup_codes_acknowledged', 'success'],
    ]);
    expect(JSON.parse(rows[5]!.details)).toMatchObject({ from: 'mfa_enrol', to: 'backup_codes', method: 'totp', amr: ['otp'] });
    expect(JSON.parse(rows[6]!.details)).toMatchObject({ from: 'backup_codes', to: 'done' });
    for (const r of rows) for (const code of [...backupCodes, totpSecret, enrolCode]) expect(r.details).not.toContain(code);
  });

  it('a refused start (an SMS enrolment without a number) is a problem on the same screen', async () => {
    const e = engine();
    const uid = await atEnrolment(e);
    const flow = await e.submit(uid, 'mfa-enrol', { method: 'sms', start: '1' }, request);
    expect(flow).toMatchObject({ stage: 'mfa_enrol', display: { problems: ['a phone number is needed'] } });
    expect(flow).not.toHaveProperty('enrolment');
    expect((await auditFor(uid)).at(-1)).toMatchObject({ type: 'login.mfa_enrolment_rejected', outcome: 'failure' });
  });

  it('a confirmation for another method than the one started, or a method not offered, is ignored', async () => {
    const e = engine();
    const uid = await atEnrolment(e);
    // Nothing started: a code alone changes nothing.
    const before = await storedFlow(uid);
    expect(await e.submit(uid, 'mfa-enrol', { method: 'totp', code: enrolCode }, request)).toEqual(before);
    await e.submit(uid, 'mfa-enrol', { method: 'totp', start: '1' }, request);
    const started = await storedFlow(uid);
    expect(await e.submit(uid, 'mfa-enrol', { method: 'webauthn', response: '{}' }, request)).toEqual(started);
    // email was not among the offered methods.
    expect(await e.submit(uid, 'mfa-enrol', { method: 'email', start: '1' }, request)).toEqual(started);
    expect(seams.calls).toEqual(['startEnrolment:totp:']);
  });
});

describe('step-up of a signed-in session', () => {
  it('starts at assess, asks the policy at once and lands on mfa: no identify or password', async () => {
    seams.decision = { action: 'challenge', methods: ['totp'], reason: 'acr:urn:idp:acr:2fa' };
    const e = engine();
    const uid = newUid();
    const stepUpRequest: RequestInfo = { ...request, acrValues: ['urn:idp:acr:2fa'] };
    const flow = await e.beginStepUp(uid, { accountId: 'acct-alice', email: 'alice@example.com', amr: ['pwd'] }, stepUpRequest);
    expect(flow).toMatchObject({ uid, stage: 'mfa', accountId: 'acct-alice', email: 'alice@example.com', amr: ['pwd'], mfaMethods: ['totp'], failedAttempts: 0 });
    expect(await storedFlow(uid)).toEqual(flow);
    expect(seams.passwordCalls).toEqual([]);
    expect(seams.riskCalls).toHaveLength(1);
    expect(seams.decisionCalls).toHaveLength(1);
    expect(seams.decisionCalls[0]).toMatchObject({ flow: { stage: 'assess', amr: ['pwd'] }, request: { acrValues: ['urn:idp:acr:2fa'] }, riskStepUp: false });
    let rows = await auditFor(uid);
    expect(rows.map((r) => [r.type, r.outcome])).toEqual([['login.risk_step_up', 'success']]);
    expect(JSON.parse(rows[0]!.details)).toEqual({ interaction: uid, from: 'assess', to: 'mfa', methods: ['totp'], reason: 'acr:urn:idp:acr:2fa', email: 'alice@example.com' });
    expect(rows[0]!.subject).toBe('acct-alice');

    // Asking again for the same interaction returns the flow as it is.
    expect(await e.beginStepUp(uid, { accountId: 'acct-alice', email: 'alice@example.com', amr: ['pwd'] }, stepUpRequest)).toEqual(flow);
    expect(seams.decisionCalls).toHaveLength(1);

    const done = await e.submit(uid, 'mfa', { method: 'totp', code: totpCode }, stepUpRequest);
    expect(done).toMatchObject({ stage: 'done', amr: ['pwd', 'otp', 'mfa'] });
    rows = await auditFor(uid);
    expect(rows.map((r) => r.type)).toEqual(['login.risk_step_up', 'login.mfa_verified']);
  });

  it('the session\'s old mfa does not count, and a skip decision finishes at once', async () => {
    seams.decision = { action: 'skip', reason: 'none' };
    const e = engine();
    const uid = newUid();
    const flow = await e.beginStepUp(uid, { accountId: 'acct-alice', email: 'alice@example.com', amr: ['pwd', 'otp', 'mfa'] }, request);
    expect(flow).toMatchObject({ stage: 'done', amr: ['pwd', 'otp'] });
    expect(seams.decisionCalls[0]!.flow.amr).toEqual(['pwd', 'otp']);
    expect((await auditFor(uid)).map((r) => r.type)).toEqual(['login.risk_allowed']);
  });

  it('a step-up that needs enrolment lands on mfa_enrol', async () => {
    seams.decision = { action: 'enrol', methods: ['totp', 'webauthn'], reason: 'acr:urn:idp:acr:2fa' };
    const flow = await engine().beginStepUp(newUid(), { accountId: 'acct-alice', email: 'alice@example.com', amr: ['pwd'] }, request);
    expect(flow).toMatchObject({ stage: 'mfa_enrol', mfaMethods: ['totp', 'webauthn'] });
  });
});

describe('passkey as first factor', () => {
  it('a verified discoverable passkey names the account and skips the password', async () => {
    seams.decision = { action: 'skip', reason: 'first_factor_is_multi_factor' };
    const e = engine();
    const uid = newUid();
    const flow = await e.submit(uid, 'identify', { method: 'passkey', response: 'passkey-ok' }, request);
    expect(flow).toMatchObject({ stage: 'done', accountId: 'acct-alice', email: 'alice@example.com', amr: ['hwk', 'mfa'] });
    expect(seams.calls).toEqual([`verifyPasskey:${uid}:passkey-ok`]);
    expect(seams.passwordCalls).toEqual([]);
    expect(seams.decisionCalls[0]!.flow).toMatchObject({ stage: 'assess', amr: ['hwk', 'mfa'] });
    const rows = await auditFor(uid);
    expect(rows.map((r) => [r.type, r.outcome])).toEqual([
      ['login.method_chosen', 'success'],
      ['login.passkey_verified', 'success'],
      ['login.risk_allowed', 'success'],
    ]);
    expect(JSON.parse(rows[1]!.details)).toEqual({ interaction: uid, from: 'authenticate', to: 'assess', name: 'passkey_verified', method: 'passkey', accountId: 'acct-alice', email: 'alice@example.com', amr: ['hwk', 'mfa'] });
    expect(rows.map((r) => r.subject)).toEqual([null, 'acct-alice', 'acct-alice']);
  });

  it('a failed passkey stays at identify with a one-time notice, counts nothing and audits nothing', async () => {
    const e = engine();
    const uid = newUid();
    const flow = await e.submit(uid, 'identify', { method: 'passkey', response: 'passkey-bad' }, request);
    expect(flow).toMatchObject({ stage: 'identify', failedAttempts: 0, display: { notices: [{ key: 'error.passkeyFailed' }] } });
    expect(await storedFlow(uid)).not.toHaveProperty('display');
    expect(await auditFor(uid)).toHaveLength(0);
    // The user may still type an address.
    expect(await e.submit(uid, 'identify', { email: 'alice@example.com' }, request)).toMatchObject({ stage: 'authenticate', method: 'password' });
  });
});

describe('sign-in by emailed code', () => {
  it('send_code switches to the emailed-code method; a wrong code counts, the right one reaches done with otp only', async () => {
    const e = engine();
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    const sent = await e.submit(uid, 'password', { send_code: '1' }, request);
    expect(sent).toMatchObject({ stage: 'authenticate', method: 'signin_code', display: { notices: [{ key: 'mfa.codeSent' }] }, email: 'alice@example.com' });
    expect(seams.passwordCalls).toEqual([]);
    expect(await e.submit(uid, 'signin-code', { code: '000000' }, request)).toMatchObject({ stage: 'authenticate', failedAttempts: 1, display: { notices: [{ key: 'error.codeInvalid', kind: 'rejected' }] } });
    const resent = await e.submit(uid, 'signin-code', { resend: '1' }, request);
    expect(resent).toMatchObject({ stage: 'authenticate', method: 'signin_code', display: { notices: [{ key: 'mfa.codeSent' }] }, failedAttempts: 1 });
    const done = await e.submit(uid, 'signin-code', { code: signinCode }, request);
    expect(done).toMatchObject({ stage: 'done', accountId: 'acct-alice', amr: ['otp'] });
    expect(seams.calls).toEqual([
      `sendSigninCode:${uid}:alice@example.com`,
      `checkSigninCode:${uid}:alice@example.com:000000`,
      `sendSigninCode:${uid}:alice@example.com`,
      `checkSigninCode:${uid}:alice@example.com:${signinCode}`,
    ]);
    const rows = await auditFor(uid);
    expect(rows.map((r) => [r.type, r.outcome])).toEqual([
      ['login.identified', 'success'],
      ['login.method_switched', 'success'],
      ['login.signin_code_sent', 'success'],
      ['login.signin_code_rejected', 'failure'],
      ['login.signin_code_sent', 'success'],
      ['login.signin_code_verified', 'success'],
      ['login.risk_allowed', 'success'],
    ]);
    for (const r of rows) expect(r.details).not.toContain(signinCode);
  });

  it('a rate-limited send says so; wrong codes up to maxAttempts fail the flow; restart goes back to identify', async () => {
    seams.sendResult = 'rate_limited';
    const e = engine();
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    expect(await e.submit(uid, 'password', { send_code: '1' }, request)).toMatchObject({ stage: 'authenticate', method: 'signin_code', display: { notices: [{ key: 'mfa.codeRateLimited' }] } });
    expect(await e.submit(uid, 'signin-code', { restart: '1' }, request)).toMatchObject({ stage: 'identify' });
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    await e.submit(uid, 'password', { send_code: '1' }, request);
    for (const code of ['1', '2']) await e.submit(uid, 'signin-code', { code }, request);
    const failed = await e.submit(uid, 'signin-code', { code: '3' }, request);
    expect(failed).toMatchObject({ stage: 'failed', failure: 'too_many_attempts', failedAttempts: 3 });
    expect((await auditFor(uid)).at(-1)).toMatchObject({ type: 'login.attempts_exhausted', outcome: 'failure' });
  });
});

describe('secrets in the audit log', () => {
  it('no password ever appears in any stored audit row', async () => {
    // Make sure every kind of password event happened in this database at least once.
    const e = engine();
    const uid = newUid();
    await e.submit(uid, 'identify', { email: 'alice@example.com' }, request);
    for (const p of badPasswords) await e.submit(uid, 'password', { password: p }, request);
    const uid2 = newUid();
    await e.submit(uid2, 'identify', { email: 'alice@example.com' }, request);
    await e.submit(uid2, 'password', { password: goodPassword }, request);

    const rows = await db.prisma.$queryRawUnsafe<Record<string, unknown>[]>('SELECT * FROM "AuditEvent"');
    expect(rows.length).toBeGreaterThan(20);
    const types = new Set(rows.map((r) => r.type));
    for (const t of ['login.password_rejected', 'login.password_verified', 'login.attempts_exhausted']) expect(types).toContain(t);
    for (const row of rows) {
      for (const value of Object.values(row)) {
        const text = String(value);
        expect(text).not.toContain(goodPassword);
        for (const p of badPasswords) expect(text).not.toContain(p);
        expect(text.toLowerCase()).not.toContain('"password":');
      }
    }
    expect(await audit.verify()).toEqual({ ok: true, rows: rows.length });
  });
});

describe('flows saved by the release before the sign-in methods (rolling upgrade)', () => {
  it('a flow stored at the old password stage loads at authenticate(password) and takes the password', async () => {
    const e = engine();
    const uid = newUid();
    await store.set(`flow:${uid}`, { uid, stage: 'password', csrf: 'legacy-csrf', email: 'alice@example.com', amr: [], failedAttempts: 0, startedAt: 1 }, 600);
    expect(await e.load(uid)).toMatchObject({ stage: 'authenticate', method: 'password', email: 'alice@example.com' });
    expect(await e.submit(uid, 'password', { password: goodPassword }, request)).toMatchObject({ stage: 'done', accountId: 'acct-alice' });
  });

  it('old signin_code and risk stages load as their new ones', async () => {
    const e = engine();
    for (const [old, expected] of [['signin_code', { stage: 'authenticate', method: 'signin_code' }], ['risk', { stage: 'assess' }]] as const) {
      const uid = newUid();
      await store.set(`flow:${uid}`, { uid, stage: old, csrf: 'c', email: 'alice@example.com', amr: [], failedAttempts: 0, startedAt: 1 }, 600);
      expect(await e.load(uid)).toMatchObject(expected);
    }
  });
});
