// FlowEngine over real storage: flows in the ExpiringValue table of a fresh SQLite database, audit
// events in the real hash-chained AuditEvent table. Only the decision seams (password check, risk,
// MFA policy) are fakes, so each test can choose what they answer.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../../src/audit/log.ts';
import { FlowEngine, type FlowDeps, type PasswordCheck, type RequestInfo, type RiskVerdict } from '../../../src/flow/engine.ts';
import type { Flow } from '../../../src/flow/machine.ts';
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

interface Seams {
  risk: RiskVerdict;
  mfa: boolean;
  passwordCalls: [string, string][];
  riskCalls: Flow[];
}

let seams: Seams;
let uidCounter = 0;
let tokenCounter = 0;

beforeEach(() => {
  seams = { risk: { verdict: 'allow' }, mfa: false, passwordCalls: [], riskCalls: [] };
});

function engine(overrides: Partial<FlowDeps> = {}): FlowEngine {
  return new FlowEngine({
    store,
    audit,
    async checkPassword(email, password): Promise<PasswordCheck> {
      seams.passwordCalls.push([email, password]);
      return email === 'alice@example.com' && password === goodPassword ? { ok: true, accountId: 'acct-alice' } : { ok: false, reason: 'wrong_password' };
    },
    async assessRisk(flow) {
      seams.riskCalls.push(flow);
      return seams.risk;
    },
    async mfaRequired() {
      return seams.mfa;
    },
    async changePassword() {
      return { ok: true } as const;
    },
    randomToken: () => `token-${++tokenCounter}`,
    maxAttempts: 3,
    ttlSeconds: 600,
    ...overrides,
  });
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
    await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
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
    const afterIdentify = await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    expect(afterIdentify).toMatchObject({ stage: 'password', email: 'alice@example.com' });
    expect(seams.passwordCalls).toEqual([]);

    const done = await e.submit(uid, { stage: 'password', password: goodPassword }, request);
    expect(done).toMatchObject({ uid, stage: 'done', email: 'alice@example.com', accountId: 'acct-alice', amr: ['pwd'], failedAttempts: 0 });
    expect(done.failure).toBeUndefined();
    expect(seams.passwordCalls).toEqual([['alice@example.com', goodPassword]]);
    expect(seams.riskCalls).toHaveLength(1);
    expect(seams.riskCalls[0]).toMatchObject({ stage: 'risk', accountId: 'acct-alice' });
    expect(await storedFlow(uid)).toEqual(done);

    const rows = await auditFor(uid);
    expect(rows.map((r) => r.type)).toEqual(['login.identified', 'login.password_verified', 'login.risk_allowed']);
    expect(rows.map((r) => r.outcome)).toEqual(['success', 'success', 'success']);
    // seq increases with the order of events
    expect(rows.map((r) => r.seq)).toEqual([...rows.map((r) => r.seq)].sort((a, b) => a - b));
    const details = rows.map((r) => JSON.parse(r.details) as Record<string, unknown>);
    expect(details[0]).toEqual({ interaction: uid, from: 'identify', to: 'password', email: 'alice@example.com' });
    expect(details[1]).toEqual({ interaction: uid, from: 'password', to: 'risk', accountId: 'acct-alice', email: 'alice@example.com' });
    expect(details[2]).toEqual({ interaction: uid, from: 'risk', to: 'done', email: 'alice@example.com' });
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
    await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, { stage: 'password', password: badPasswords[0]! }, request);
    expect(flow).toMatchObject({ stage: 'password', failedAttempts: 1, email: 'alice@example.com' });
    expect(flow.accountId).toBeUndefined();
    expect(await storedFlow(uid)).toEqual(flow);
    expect(seams.riskCalls).toHaveLength(0);
    const rows = await auditFor(uid);
    expect(rows.map((r) => [r.type, r.outcome])).toEqual([
      ['login.identified', 'success'],
      ['login.password_rejected', 'failure'],
    ]);

    const second = await e.submit(uid, { stage: 'password', password: badPasswords[1]! }, request);
    expect(second).toMatchObject({ stage: 'password', failedAttempts: 2 });
    // A good password after failures still succeeds while attempts remain.
    const done = await e.submit(uid, { stage: 'password', password: goodPassword }, request);
    expect(done).toMatchObject({ stage: 'done', failedAttempts: 2, accountId: 'acct-alice' });
  });

  it('reaching maxAttempts fails the flow with too_many_attempts, and it stays failed', async () => {
    const e = engine();
    const uid = newUid();
    await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    await e.submit(uid, { stage: 'password', password: badPasswords[0]! }, request);
    await e.submit(uid, { stage: 'password', password: badPasswords[1]! }, request);
    const failed = await e.submit(uid, { stage: 'password', password: badPasswords[2]! }, request);
    expect(failed).toMatchObject({ stage: 'failed', failure: 'too_many_attempts', failedAttempts: 3 });
    expect(await storedFlow(uid)).toEqual(failed);

    const rows = await auditFor(uid);
    expect(rows.map((r) => [r.type, r.outcome])).toEqual([
      ['login.identified', 'success'],
      ['login.password_rejected', 'failure'],
      ['login.password_rejected', 'failure'],
      ['login.password_rejected', 'failure'],
      ['login.attempts_exhausted', 'failure'],
    ]);
    expect(JSON.parse(rows[4]!.details)).toMatchObject({ from: 'password', to: 'failed' });

    // The right password now changes nothing and is not even checked.
    const callsBefore = seams.passwordCalls.length;
    const after = await e.submit(uid, { stage: 'password', password: goodPassword }, request);
    expect(after).toEqual(failed);
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
    await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    const guesses = Array.from({ length: 8 }, (_, i) => `concurrent-guess-${i}`);
    await Promise.all(guesses.map((password) => e.submit(uid, { stage: 'password', password }, request)));
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
    await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, { stage: 'password', password: badPasswords[0]! }, request);
    expect(flow).toMatchObject({ stage: 'failed', failure: 'too_many_attempts', failedAttempts: 1 });
  });
});

describe('stale input', () => {
  it('input meant for another stage changes nothing and audits nothing', async () => {
    const e = engine();
    const uid = newUid();
    const atPassword = await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    const rowsBefore = await auditFor(uid);

    // A replayed identify form with another email.
    const replayed = await e.submit(uid, { stage: 'identify', email: 'mallory@example.com' }, request);
    expect(replayed).toEqual(atPassword);
    expect(await storedFlow(uid)).toEqual(atPassword);
    expect(await auditFor(uid)).toHaveLength(rowsBefore.length);
    expect(seams.passwordCalls).toEqual([]);
  });

  it('a password sent while the flow is at identify is ignored and never checked', async () => {
    const e = engine();
    const uid = newUid();
    const started = await e.begin(uid);
    const flow = await e.submit(uid, { stage: 'password', password: goodPassword }, request);
    expect(flow).toEqual(started);
    expect(seams.passwordCalls).toEqual([]);
    expect(await auditFor(uid)).toHaveLength(0);
  });

  it('a finished flow ignores further input', async () => {
    const e = engine();
    const uid = newUid();
    await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    const done = await e.submit(uid, { stage: 'password', password: goodPassword }, request);
    expect(done.stage).toBe('done');
    expect(await e.submit(uid, { stage: 'identify', email: 'mallory@example.com' }, request)).toEqual(done);
    expect(await e.submit(uid, { stage: 'abort' }, request)).toEqual(done);
    expect(await auditFor(uid)).toHaveLength(3);
  });
});

describe('restart and abort', () => {
  it('restart at the password stage goes back to identify, forgetting the email', async () => {
    const e = engine();
    const uid = newUid();
    await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    await e.submit(uid, { stage: 'password', password: badPasswords[0]! }, request);
    const restarted = await e.submit(uid, { stage: 'password', restart: true }, request);
    expect(restarted.stage).toBe('identify');
    expect(restarted.email).toBeUndefined();
    // The attempt count survives a restart.
    expect(restarted.failedAttempts).toBe(1);
    expect(await storedFlow(uid)).toEqual(restarted);
    const rows = await auditFor(uid);
    expect(rows.map((r) => r.type)).toEqual(['login.identified', 'login.password_rejected', 'login.restarted']);
    // And the user can identify again, with another address.
    const again = await e.submit(uid, { stage: 'identify', email: 'bob@example.com' }, request);
    expect(again).toMatchObject({ stage: 'password', email: 'bob@example.com' });
  });

  it('a restart form replayed once the flow has moved on changes nothing', async () => {
    const e = engine();
    const uid = newUid();
    const started = await e.begin(uid);
    expect(await e.submit(uid, { stage: 'password', restart: true }, request)).toEqual(started);
    await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    const done = await e.submit(uid, { stage: 'password', password: goodPassword }, request);
    expect(await e.submit(uid, { stage: 'password', restart: true }, request)).toEqual(done);
    expect((await auditFor(uid)).map((r) => r.type)).not.toContain('login.restarted');
  });

  it('abort at identify fails the flow with aborted', async () => {
    const e = engine();
    const uid = newUid();
    await e.begin(uid);
    const flow = await e.submit(uid, { stage: 'abort' }, request);
    expect(flow).toMatchObject({ stage: 'failed', failure: 'aborted' });
    const rows = await auditFor(uid);
    expect(rows.map((r) => [r.type, r.outcome])).toEqual([['login.aborted', 'failure']]);
  });

  it('abort at password fails the flow with aborted', async () => {
    const e = engine();
    const uid = newUid();
    await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, { stage: 'abort' }, request);
    expect(flow).toMatchObject({ stage: 'failed', failure: 'aborted', email: 'alice@example.com' });
    expect(seams.passwordCalls).toEqual([]);
  });
});

describe('risk and MFA seams', () => {
  it('a deny verdict fails the flow with the reasons, audited as a failure', async () => {
    seams.risk = { verdict: 'deny', reasons: ['tor_exit', 'velocity'] };
    const e = engine();
    const uid = newUid();
    await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, { stage: 'password', password: goodPassword }, request);
    expect(flow).toMatchObject({ stage: 'failed', failure: 'risk_denied:tor_exit,velocity', accountId: 'acct-alice' });
    const rows = await auditFor(uid);
    expect(rows.map((r) => [r.type, r.outcome])).toEqual([
      ['login.identified', 'success'],
      ['login.password_verified', 'success'],
      ['login.risk_denied', 'failure'],
    ]);
    expect(JSON.parse(rows[2]!.details)).toMatchObject({ reason: 'tor_exit,velocity', from: 'risk', to: 'failed' });
  });

  it('a deny verdict without reasons still fails, with reason denied', async () => {
    seams.risk = { verdict: 'deny', reasons: [] };
    const e = engine();
    const uid = newUid();
    await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, { stage: 'password', password: goodPassword }, request);
    expect(flow).toMatchObject({ stage: 'failed', failure: 'risk_denied:denied' });
  });

  it('mfaRequired sends the flow to the mfa stage, not to done', async () => {
    seams.mfa = true;
    const e = engine();
    const uid = newUid();
    await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, { stage: 'password', password: goodPassword }, request);
    expect(flow).toMatchObject({ stage: 'mfa', accountId: 'acct-alice', amr: ['pwd'] });
    expect(await storedFlow(uid)).toEqual(flow);
    const rows = await auditFor(uid);
    expect(rows.map((r) => r.type)).toEqual(['login.identified', 'login.password_verified', 'login.risk_step_up']);
    // The mfa stage has no method yet: password input is stale there, abort still works.
    expect(await e.submit(uid, { stage: 'password', password: goodPassword }, request)).toEqual(flow);
    expect(await e.submit(uid, { stage: 'abort' }, request)).toMatchObject({ stage: 'failed', failure: 'aborted' });
  });

  it('a step_up verdict sends the flow to mfa even when the policy does not require it', async () => {
    seams.risk = { verdict: 'step_up', reasons: ['new_device'] };
    seams.mfa = false;
    const e = engine();
    const uid = newUid();
    await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    const flow = await e.submit(uid, { stage: 'password', password: goodPassword }, request);
    expect(flow.stage).toBe('mfa');
  });
});

describe('secrets in the audit log', () => {
  it('no password ever appears in any stored audit row', async () => {
    // Make sure every kind of password event happened in this database at least once.
    const e = engine();
    const uid = newUid();
    await e.submit(uid, { stage: 'identify', email: 'alice@example.com' }, request);
    for (const p of badPasswords) await e.submit(uid, { stage: 'password', password: p }, request);
    const uid2 = newUid();
    await e.submit(uid2, { stage: 'identify', email: 'alice@example.com' }, request);
    await e.submit(uid2, { stage: 'password', password: goodPassword }, request);

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
