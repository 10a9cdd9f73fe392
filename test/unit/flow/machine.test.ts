// The login state machine as a table: every edge of `transitions` with the stage it leads to and
// the fields it sets, and every other (stage, event) pair refused with IllegalTransitionError.
import { describe, expect, it } from 'vitest';
import { acr, acrOf, advance, IllegalTransitionError, startFlow, startStepUp, transitions, type EventType, type Flow, type FlowEvent, type Stage } from '../../../src/flow/machine.ts';

/** One sample event per type; typed as a Record so a new event type fails to compile until added. */
const sampleEvents: Record<EventType, FlowEvent> = {
  identified: { type: 'identified', email: 'alice@example.com' },
  passkey_verified: { type: 'passkey_verified', accountId: 'acct-2', email: 'dave@example.com', amr: ['hwk', 'mfa'] },
  restarted: { type: 'restarted' },
  password_rejected: { type: 'password_rejected' },
  attempts_exhausted: { type: 'attempts_exhausted' },
  password_verified: { type: 'password_verified', accountId: 'acct-1' },
  verification_required: { type: 'verification_required', accountId: 'acct-1' },
  password_expired: { type: 'password_expired', accountId: 'acct-1' },
  password_change_rejected: { type: 'password_change_rejected', problems: ['must be at least 12 characters'] },
  password_changed: { type: 'password_changed' },
  signin_code_sent: { type: 'signin_code_sent' },
  signin_code_rejected: { type: 'signin_code_rejected', reason: 'invalid' },
  signin_code_verified: { type: 'signin_code_verified', accountId: 'acct-1' },
  risk_allowed: { type: 'risk_allowed' },
  risk_step_up: { type: 'risk_step_up', methods: ['totp', 'webauthn'], reason: 'policy' },
  mfa_enrolment_required: { type: 'mfa_enrolment_required', methods: ['totp', 'webauthn', 'email'], reason: 'acr:urn:idp:acr:2fa' },
  risk_denied: { type: 'risk_denied', reason: 'impossible_travel' },
  mfa_code_sent: { type: 'mfa_code_sent', method: 'email' },
  mfa_rejected: { type: 'mfa_rejected', method: 'totp', reason: 'invalid' },
  mfa_verified: { type: 'mfa_verified', method: 'totp', amr: ['otp'] },
  mfa_enrolment_started: { type: 'mfa_enrolment_started', method: 'totp', factorId: 'factor-2' },
  mfa_enrolment_rejected: { type: 'mfa_enrolment_rejected', method: 'totp', reason: 'the code is not correct' },
  mfa_enrolled: { type: 'mfa_enrolled', method: 'totp', amr: ['otp'] },
  backup_codes_acknowledged: { type: 'backup_codes_acknowledged' },
  aborted: { type: 'aborted' },
};
const allStages: Record<Stage, true> = {
  identify: true, password: true, signin_code: true, change_password: true, risk: true, mfa: true, mfa_enrol: true, backup_codes: true, done: true, failed: true,
};
const stages = Object.keys(allStages) as Stage[];
const eventTypes = Object.keys(sampleEvents) as EventType[];

/** A flow already in `stage`, carrying what a real flow would carry by then. */
function flowAt(stage: Stage, extra: Partial<Flow> = {}): Flow {
  const base = startFlow('uid-1', 'csrf-1', 1_000);
  const byStage: Record<Stage, Partial<Flow>> = {
    identify: {},
    password: { email: 'bob@example.com', failedAttempts: 2 },
    signin_code: { email: 'bob@example.com', failedAttempts: 1 },
    change_password: { email: 'bob@example.com', accountId: 'acct-9', amr: ['pwd'] },
    risk: { email: 'bob@example.com', accountId: 'acct-9', amr: ['pwd'], failedAttempts: 1 },
    mfa: { email: 'bob@example.com', accountId: 'acct-9', amr: ['pwd'], mfaMethods: ['totp', 'email', 'backup_code'], failedAttempts: 1 },
    mfa_enrol: { email: 'bob@example.com', accountId: 'acct-9', amr: ['pwd'], mfaMethods: ['totp', 'webauthn'], enrolment: { method: 'totp', factorId: 'factor-1' } },
    backup_codes: { email: 'bob@example.com', accountId: 'acct-9', amr: ['pwd', 'otp', 'mfa'], mfaMethods: ['totp', 'webauthn'] },
    done: { email: 'bob@example.com', accountId: 'acct-9', amr: ['pwd'] },
    failed: { email: 'bob@example.com', failure: 'aborted' },
  };
  return { ...base, ...byStage[stage], stage, ...extra };
}

interface Edge {
  from: Stage;
  event: FlowEvent;
  flow?: Partial<Flow>;
  /** The whole expected flow after the event (every field, so unexpected changes show up). */
  expected: (before: Flow) => Flow;
}

const edges: Edge[] = [
  { from: 'identify', event: sampleEvents.identified, expected: (f) => ({ ...f, stage: 'password', email: 'alice@example.com' }) },
  // A discoverable passkey names the account itself: no email typed, no password asked.
  {
    from: 'identify',
    event: sampleEvents.passkey_verified,
    flow: { display: { passkeyFailed: true } },
    expected: ({ display: _d, ...f }) => ({ ...f, stage: 'risk', accountId: 'acct-2', email: 'dave@example.com', amr: ['hwk', 'mfa'] }),
  },
  { from: 'identify', event: sampleEvents.aborted, expected: (f) => ({ ...f, stage: 'failed', failure: 'aborted' }) },
  { from: 'password', event: sampleEvents.password_rejected, expected: (f) => ({ ...f, stage: 'password', failedAttempts: 3 }) },
  { from: 'password', event: sampleEvents.attempts_exhausted, expected: (f) => ({ ...f, stage: 'failed', failure: 'too_many_attempts' }) },
  {
    from: 'password',
    event: sampleEvents.password_verified,
    expected: (f) => ({ ...f, stage: 'risk', accountId: 'acct-1', amr: ['pwd'] }),
  },
  {
    // The email is forgotten; the failed-attempt count is kept, so a restart cannot reset the limit.
    from: 'password',
    event: sampleEvents.restarted,
    expected: ({ email: _email, ...f }) => ({ ...f, stage: 'identify', failedAttempts: 2 }),
  },
  { from: 'password', event: sampleEvents.aborted, expected: (f) => ({ ...f, stage: 'failed', failure: 'aborted' }) },
  // Right password, unverified address: a notice, and no failed attempt counted.
  { from: 'password', event: sampleEvents.verification_required, expected: (f) => ({ ...f, notice: 'verify_email' }) },
  // An expired password is changed only after every factor: first the risk (and MFA) stages.
  { from: 'password', event: sampleEvents.password_expired, expected: (f) => ({ ...f, stage: 'risk', accountId: 'acct-1', amr: ['pwd'], passwordExpired: true }) },
  // Sign-in by emailed code: the next screen asks for the code, whether or not the address has an account.
  { from: 'password', event: sampleEvents.signin_code_sent, expected: (f) => ({ ...f, stage: 'signin_code', notice: 'code_sent' }) },
  { from: 'signin_code', event: sampleEvents.signin_code_rejected, expected: (f) => ({ ...f, failedAttempts: 2 }) },
  // A resend stays on the screen with a fresh notice (the previous one is cleared first).
  { from: 'signin_code', event: sampleEvents.signin_code_sent, flow: { notice: 'code_rate_limited' }, expected: (f) => ({ ...f, notice: 'code_sent' }) },
  { from: 'signin_code', event: sampleEvents.attempts_exhausted, expected: (f) => ({ ...f, stage: 'failed', failure: 'too_many_attempts' }) },
  {
    from: 'signin_code',
    event: sampleEvents.signin_code_verified,
    flow: { notice: 'code_sent' },
    expected: ({ notice: _n, ...f }) => ({ ...f, stage: 'risk', accountId: 'acct-1', amr: ['otp'] }),
  },
  { from: 'signin_code', event: sampleEvents.restarted, expected: ({ email: _email, ...f }) => ({ ...f, stage: 'identify', failedAttempts: 1 }) },
  { from: 'signin_code', event: sampleEvents.aborted, expected: (f) => ({ ...f, stage: 'failed', failure: 'aborted' }) },
  { from: 'change_password', event: sampleEvents.password_change_rejected, expected: (f) => ({ ...f, problems: ['must be at least 12 characters'] }) },
  // The problems of the last attempt do not outlive the next event.
  { from: 'change_password', event: sampleEvents.password_changed, flow: { problems: ['x'], passwordExpired: true }, expected: ({ problems: _p, passwordExpired: _e, ...f }) => ({ ...f, stage: 'done' }) },
  { from: 'change_password', event: sampleEvents.aborted, expected: (f) => ({ ...f, stage: 'failed', failure: 'aborted' }) },
  { from: 'risk', event: sampleEvents.risk_allowed, expected: (f) => ({ ...f, stage: 'done' }) },
  { from: 'risk', event: sampleEvents.risk_step_up, expected: (f) => ({ ...f, stage: 'mfa', mfaMethods: ['totp', 'webauthn'] }) },
  { from: 'risk', event: sampleEvents.mfa_enrolment_required, expected: (f) => ({ ...f, stage: 'mfa_enrol', mfaMethods: ['totp', 'webauthn', 'email'] }) },
  { from: 'risk', event: sampleEvents.risk_denied, expected: (f) => ({ ...f, stage: 'failed', failure: 'risk_denied:impossible_travel' }) },
  { from: 'mfa', event: sampleEvents.mfa_code_sent, expected: (f) => ({ ...f, notice: 'code_sent' }) },
  { from: 'mfa', event: sampleEvents.mfa_rejected, flow: { notice: 'code_sent' }, expected: ({ notice: _n, ...f }) => ({ ...f, failedAttempts: 2 }) },
  { from: 'mfa', event: sampleEvents.attempts_exhausted, expected: (f) => ({ ...f, stage: 'failed', failure: 'too_many_attempts' }) },
  { from: 'mfa', event: sampleEvents.mfa_verified, expected: (f) => ({ ...f, stage: 'done', amr: ['pwd', 'otp', 'mfa'] }) },
  { from: 'mfa', event: sampleEvents.aborted, expected: (f) => ({ ...f, stage: 'failed', failure: 'aborted' }) },
  // A new start replaces an enrolment in progress; its one-time display is gone.
  {
    from: 'mfa_enrol',
    event: sampleEvents.mfa_enrolment_started,
    flow: { display: { totp: { secret: 'OLD' } } },
    expected: ({ display: _d, ...f }) => ({ ...f, enrolment: { method: 'totp', factorId: 'factor-2' } }),
  },
  { from: 'mfa_enrol', event: sampleEvents.mfa_enrolment_rejected, expected: (f) => ({ ...f, problems: ['the code is not correct'] }) },
  // Enrolled: the enrolment is forgotten, the method and mfa are added, backup codes come next.
  { from: 'mfa_enrol', event: sampleEvents.mfa_enrolled, expected: ({ enrolment: _e, ...f }) => ({ ...f, stage: 'backup_codes', amr: ['pwd', 'otp', 'mfa'] }) },
  { from: 'mfa_enrol', event: sampleEvents.aborted, expected: (f) => ({ ...f, stage: 'failed', failure: 'aborted' }) },
  {
    from: 'backup_codes',
    event: sampleEvents.backup_codes_acknowledged,
    flow: { display: { backupCodes: ['aaaa-bbbb'] } },
    expected: ({ display: _d, ...f }) => ({ ...f, stage: 'done' }),
  },
];

describe('transitions table', () => {
  it('the edge list below covers exactly the edges of `transitions`', () => {
    const declared = stages.flatMap((s) => Object.keys(transitions[s]).map((e) => `${s}:${e}`)).sort();
    const tested = edges.map((e) => `${e.from}:${e.event.type}`).sort();
    expect(tested).toEqual(declared);
    expect(new Set(tested).size).toBe(tested.length);
    // The stage list used to generate the illegal pairs is the table's own.
    expect(Object.keys(transitions).sort()).toEqual([...stages].sort());
  });

  it.each(edges.map((e) => [`${e.from} --${e.event.type}--> `, e] as const))('%s', (_name, edge) => {
    const before = flowAt(edge.from, edge.flow);
    const snapshot = structuredClone(before);
    const after = advance(before, edge.event);
    expect(after).toStrictEqual(edge.expected(snapshot));
    // Pure: the input flow is untouched and a new object comes back.
    expect(before).toEqual(snapshot);
    expect(after).not.toBe(before);
    // uid, csrf and start time never change.
    expect([after.uid, after.csrf, after.startedAt]).toEqual(['uid-1', 'csrf-1', 1_000]);
  });

  const legal = new Set(edges.map((e) => `${e.from}:${e.event.type}`));
  const illegal = stages.flatMap((s) => eventTypes.filter((t) => !legal.has(`${s}:${t}`)).map((t) => [s, t] as const));

  it('generates every illegal pair (stages x events minus the edges)', () => {
    expect(illegal.length).toBe(stages.length * eventTypes.length - edges.length);
    expect(illegal.length).toBeGreaterThan(40);
  });

  it.each(illegal)('%s refuses %s with IllegalTransitionError', (stage, type) => {
    const flow = flowAt(stage);
    const snapshot = structuredClone(flow);
    let thrown: unknown;
    try {
      advance(flow, sampleEvents[type]);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(IllegalTransitionError);
    const e = thrown as IllegalTransitionError;
    expect(e.from).toBe(stage);
    expect(e.event).toBe(type);
    expect(e.name).toBe('IllegalTransitionError');
    expect(e.message).toBe(`login flow: ${type} is not allowed in stage ${stage}`);
    expect(flow).toEqual(snapshot);
  });

  it('terminal stages accept nothing', () => {
    expect(Object.keys(transitions.done)).toEqual([]);
    expect(Object.keys(transitions.failed)).toEqual([]);
  });
});

describe('amr bookkeeping', () => {
  it('password_verified adds pwd once, even when already present', () => {
    const flow = advance(flowAt('password', { amr: ['pwd'] }), sampleEvents.password_verified);
    expect(flow.amr).toEqual(['pwd']);
  });

  it('mfa_verified keeps earlier methods and adds the method and mfa without duplicates', () => {
    const flow = advance(flowAt('mfa', { amr: ['pwd', 'otp'] }), sampleEvents.mfa_verified);
    expect(flow.amr).toEqual(['pwd', 'otp', 'mfa']);
  });

  it('a whole one-factor login: identify, password, risk allowed', () => {
    let flow = startFlow('u', 'c', 5);
    flow = advance(flow, { type: 'identified', email: 'carol@example.com' });
    flow = advance(flow, { type: 'password_rejected' });
    flow = advance(flow, { type: 'password_verified', accountId: 'acct-c' });
    flow = advance(flow, { type: 'risk_allowed' });
    expect(flow).toEqual({ uid: 'u', csrf: 'c', startedAt: 5, stage: 'done', email: 'carol@example.com', accountId: 'acct-c', amr: ['pwd'], failedAttempts: 1 });
    expect(acrOf(flow)).toBe(acr.oneFactor);
  });
});

describe('event variants', () => {
  it('a rate-limited code send says so instead of code_sent, at each stage that sends codes', () => {
    expect(advance(flowAt('password'), { type: 'signin_code_sent', rateLimited: true })).toMatchObject({ stage: 'signin_code', notice: 'code_rate_limited' });
    expect(advance(flowAt('signin_code'), { type: 'signin_code_sent', rateLimited: true })).toMatchObject({ stage: 'signin_code', notice: 'code_rate_limited' });
    expect(advance(flowAt('mfa'), { type: 'mfa_code_sent', method: 'sms', rateLimited: true })).toMatchObject({ stage: 'mfa', notice: 'code_rate_limited' });
  });

  it('with an expired password, every way through the factors ends at change_password, not done', () => {
    const expired = { passwordExpired: true };
    expect(advance(flowAt('risk', expired), { type: 'risk_allowed' }).stage).toBe('change_password');
    expect(advance(flowAt('mfa', { ...expired, mfaMethods: ['totp'] }), { type: 'mfa_verified', method: 'totp', amr: ['otp'] }).stage).toBe('change_password');
    expect(advance(flowAt('backup_codes', expired), { type: 'backup_codes_acknowledged' }).stage).toBe('change_password');
    expect(advance(flowAt('risk'), { type: 'risk_allowed' }).stage).toBe('done');
  });

  it('a second factor refused because it is locked says so; any other refusal does not', () => {
    const before = flowAt('mfa');
    expect(advance(before, { type: 'mfa_rejected', method: 'totp', reason: 'locked' })).toMatchObject({ stage: 'mfa', notice: 'mfa_locked', failedAttempts: before.failedAttempts + 1 });
    expect(advance(flowAt('mfa'), { type: 'mfa_rejected', method: 'totp', reason: 'invalid' })).not.toHaveProperty('notice');
  });

  it('an enrolment without a factor id (webauthn, email, sms) records only the method', () => {
    const flow = advance(flowAt('mfa_enrol', { enrolment: undefined }), { type: 'mfa_enrolment_started', method: 'webauthn' });
    expect(flow.enrolment).toStrictEqual({ method: 'webauthn' });
  });

  it('a passkey without user verification is one factor (hwk only)', () => {
    const flow = advance(flowAt('identify'), { type: 'passkey_verified', accountId: 'a', email: 'e@example.com', amr: ['hwk'] });
    expect(flow.amr).toEqual(['hwk']);
    expect(acrOf(flow)).toBe(acr.oneFactor);
  });

  it('every event clears the one-time display, problems and notice of the screen before', () => {
    const noisy = { display: { secret: 'S' }, problems: ['p'], notice: 'code_sent' as const };
    for (const edge of edges) {
      const after = advance(flowAt(edge.from, { ...edge.flow, ...noisy }), edge.event);
      expect(after.display, `${edge.from}:${edge.event.type}`).toBeUndefined();
      // Only the edges that set a notice or problems of their own have one afterwards.
      const own = edge.expected(flowAt(edge.from, edge.flow));
      expect(after.problems).toEqual(own.problems);
      expect(after.notice).toEqual(own.notice);
    }
  });
});

describe('whole sign-ins', () => {
  it('password, forced enrolment of TOTP, backup codes shown, done at 2fa', () => {
    let flow = startFlow('u', 'c', 5);
    flow = advance(flow, { type: 'identified', email: 'erin@example.com' });
    flow = advance(flow, { type: 'password_verified', accountId: 'acct-e' });
    flow = advance(flow, { type: 'mfa_enrolment_required', methods: ['totp', 'webauthn'], reason: 'policy' });
    flow = advance(flow, { type: 'mfa_enrolment_started', method: 'totp', factorId: 'f-1' });
    flow = advance(flow, { type: 'mfa_enrolment_rejected', method: 'totp', reason: 'wrong' });
    expect(flow).toMatchObject({ stage: 'mfa_enrol', problems: ['wrong'], enrolment: { method: 'totp', factorId: 'f-1' } });
    flow = advance(flow, { type: 'mfa_enrolled', method: 'totp', amr: ['otp'] });
    flow = { ...flow, display: { backupCodes: ['x'] } };
    flow = advance(flow, { type: 'backup_codes_acknowledged' });
    expect(flow).toStrictEqual({ uid: 'u', csrf: 'c', startedAt: 5, stage: 'done', email: 'erin@example.com', accountId: 'acct-e', amr: ['pwd', 'otp', 'mfa'], mfaMethods: ['totp', 'webauthn'], failedAttempts: 0 });
    expect(acrOf(flow)).toBe(acr.twoFactor);
  });

  it('sign-in by emailed code is one factor: otp without mfa', () => {
    let flow = startFlow('u', 'c', 5);
    flow = advance(flow, { type: 'identified', email: 'fay@example.com' });
    flow = advance(flow, { type: 'signin_code_sent' });
    flow = advance(flow, { type: 'signin_code_rejected', reason: 'invalid' });
    flow = advance(flow, { type: 'signin_code_verified', accountId: 'acct-f' });
    flow = advance(flow, { type: 'risk_allowed' });
    expect(flow).toStrictEqual({ uid: 'u', csrf: 'c', startedAt: 5, stage: 'done', email: 'fay@example.com', accountId: 'acct-f', amr: ['otp'], failedAttempts: 1 });
    expect(acrOf(flow)).toBe(acr.oneFactor);
  });

  it('a user-verified passkey as first factor is phishing resistant', () => {
    let flow = startFlow('u', 'c', 5);
    flow = advance(flow, { type: 'passkey_verified', accountId: 'acct-g', email: 'gil@example.com', amr: ['hwk', 'mfa'] });
    flow = advance(flow, { type: 'risk_allowed' });
    expect(flow).toStrictEqual({ uid: 'u', csrf: 'c', startedAt: 5, stage: 'done', email: 'gil@example.com', accountId: 'acct-g', amr: ['hwk', 'mfa'], failedAttempts: 0 });
    expect(acrOf(flow)).toBe(acr.phishingResistant);
  });

  it('password then webauthn as second factor is phishing resistant', () => {
    const flow = advance(flowAt('mfa'), { type: 'mfa_verified', method: 'webauthn', amr: ['hwk'] });
    expect(flow.amr).toEqual(['pwd', 'hwk', 'mfa']);
    expect(acrOf(flow)).toBe(acr.phishingResistant);
  });
});

describe('startStepUp', () => {
  it('starts at risk with the session\'s account and first factor, without its mfa', () => {
    const flow = startStepUp('uid-s', 'csrf-s', { accountId: 'acct-s', email: 's@example.com', amr: ['pwd', 'otp', 'mfa'] }, 77);
    expect(flow).toStrictEqual({ uid: 'uid-s', stage: 'risk', csrf: 'csrf-s', accountId: 'acct-s', email: 's@example.com', amr: ['pwd', 'otp'], failedAttempts: 0, startedAt: 77 });
    expect(acrOf(flow)).toBe(acr.oneFactor);
  });

  it('does not share the session\'s amr array, and goes on to mfa and done', () => {
    const amr = ['pwd'];
    let flow = startStepUp('uid-s', 'csrf-s', { accountId: 'acct-s', email: 's@example.com', amr });
    expect(flow.amr).not.toBe(amr);
    flow = advance(flow, { type: 'risk_step_up', methods: ['totp'], reason: 'acr_step_up' });
    expect(flow.stage).toBe('mfa');
    flow = advance(flow, { type: 'mfa_verified', method: 'totp', amr: ['otp'] });
    expect(flow).toMatchObject({ stage: 'done', amr: ['pwd', 'otp', 'mfa'] });
    expect(amr).toEqual(['pwd']);
  });
});

describe('acrOf', () => {
  it('is one-factor without mfa in amr', () => {
    expect(acrOf(flowAt('done', { amr: [] }))).toBe('urn:idp:acr:1fa');
    expect(acrOf(flowAt('done', { amr: ['pwd'] }))).toBe('urn:idp:acr:1fa');
    expect(acrOf(flowAt('done', { amr: ['pwd', 'otp'] }))).toBe('urn:idp:acr:1fa');
  });

  it('is two-factor once mfa is in amr', () => {
    expect(acrOf(flowAt('done', { amr: ['pwd', 'otp', 'mfa'] }))).toBe('urn:idp:acr:2fa');
    expect(acrOf(advance(flowAt('mfa'), sampleEvents.mfa_verified))).toBe(acr.twoFactor);
  });

  it('is phishing resistant with mfa and hwk, and one-factor with hwk alone', () => {
    expect(acrOf(flowAt('done', { amr: ['pwd', 'hwk', 'mfa'] }))).toBe('urn:idp:acr:phr');
    expect(acrOf(flowAt('done', { amr: ['hwk', 'mfa'] }))).toBe(acr.phishingResistant);
    expect(acrOf(flowAt('done', { amr: ['hwk'] }))).toBe(acr.oneFactor);
    expect(acrOf(flowAt('done', { amr: ['pwd', 'sms', 'mfa'] }))).toBe(acr.twoFactor);
  });
});

describe('startFlow', () => {
  it('starts at identify with nothing known', () => {
    expect(startFlow('uid-x', 'token-x', 42)).toEqual({ uid: 'uid-x', stage: 'identify', csrf: 'token-x', amr: [], failedAttempts: 0, startedAt: 42 });
  });

  it('has no email, account or failure, and stamps the current time by default', () => {
    const before = Date.now();
    const flow = startFlow('uid-y', 'token-y');
    const after = Date.now();
    expect(flow).not.toHaveProperty('email');
    expect(flow).not.toHaveProperty('accountId');
    expect(flow).not.toHaveProperty('failure');
    expect(flow.startedAt).toBeGreaterThanOrEqual(before);
    expect(flow.startedAt).toBeLessThanOrEqual(after);
  });

  it('gives each flow its own amr array', () => {
    const a = startFlow('a', 'x');
    const b = startFlow('b', 'y');
    expect(a.amr).not.toBe(b.amr);
  });
});
