// The login state machine as a table: every edge of `transitions` with the stage it leads to and
// the fields it sets, and every other (stage, event) pair refused with IllegalTransitionError.
import { describe, expect, it } from 'vitest';
import { acr, acrOf, advance, eventName, IllegalTransitionError, startFlow, startStepUp, transitions, type EventType, type Flow, type FlowEvent, type Stage } from '../../../src/flow/machine.ts';

/** One sample event per type; typed as a Record so a new event type fails to compile until added. */
const sampleEvents: Record<EventType, FlowEvent> = {
  identified: { type: 'identified', email: 'alice@example.com', method: 'password' },
  method_chosen: { type: 'method_chosen', method: 'passkey' },
  method_switched: { type: 'method_switched', method: 'signin_code' },
  restarted: { type: 'restarted' },
  authenticated: { type: 'authenticated', name: 'password_verified', method: 'password', accountId: 'acct-1', amr: ['pwd'] },
  authentication_rejected: { type: 'authentication_rejected', name: 'password_rejected', method: 'password', reason: 'wrong_password' },
  authentication_pending: { type: 'authentication_pending', name: 'verification_required', method: 'password' },
  throttled: { type: 'throttled', retryAfterSeconds: 60 },
  attempts_exhausted: { type: 'attempts_exhausted' },
  password_change_rejected: { type: 'password_change_rejected', problems: ['must be at least 12 characters'] },
  password_changed: { type: 'password_changed' },
  risk_allowed: { type: 'risk_allowed', reason: 'none' },
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
  identify: true, authenticate: true, assess: true, mfa: true, mfa_enrol: true, backup_codes: true, change_password: true, done: true, failed: true,
};
const stages = Object.keys(allStages) as Stage[];
const eventTypes = Object.keys(sampleEvents) as EventType[];

/** A flow already in `stage`, carrying what a real flow would carry by then. */
function flowAt(stage: Stage, extra: Partial<Flow> = {}): Flow {
  const base = startFlow('uid-1', 'csrf-1', 1_000);
  const byStage: Record<Stage, Partial<Flow>> = {
    identify: {},
    authenticate: { email: 'bob@example.com', method: 'password', failedAttempts: 2 },
    assess: { email: 'bob@example.com', method: 'password', accountId: 'acct-9', amr: ['pwd'], failedAttempts: 1 },
    change_password: { email: 'bob@example.com', accountId: 'acct-9', amr: ['pwd'] },
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
  { from: 'identify', event: sampleEvents.identified, expected: (f) => ({ ...f, stage: 'authenticate', email: 'alice@example.com', method: 'password' }) },
  // A method that names the account itself: no email typed.
  { from: 'identify', event: sampleEvents.method_chosen, flow: { display: { notices: [] } }, expected: ({ display: _d, ...f }) => ({ ...f, stage: 'authenticate', method: 'passkey' }) },
  { from: 'identify', event: sampleEvents.aborted, expected: (f) => ({ ...f, stage: 'failed', failure: 'aborted' }) },
  { from: 'authenticate', event: sampleEvents.authentication_rejected, expected: (f) => ({ ...f, failedAttempts: 3 }) },
  // Right password, unverified address (or a code sent): no failed attempt counted.
  { from: 'authenticate', event: sampleEvents.authentication_pending, expected: (f) => f },
  { from: 'authenticate', event: sampleEvents.throttled, expected: (f) => f },
  { from: 'authenticate', event: sampleEvents.attempts_exhausted, expected: (f) => ({ ...f, stage: 'failed', failure: 'too_many_attempts' }) },
  { from: 'authenticate', event: sampleEvents.method_switched, expected: (f) => ({ ...f, method: 'signin_code' }) },
  { from: 'authenticate', event: sampleEvents.authenticated, expected: (f) => ({ ...f, stage: 'assess', accountId: 'acct-1', amr: ['pwd'] }) },
  {
    // The email and method are forgotten; the failed-attempt count is kept, so a restart cannot reset the limit.
    from: 'authenticate',
    event: sampleEvents.restarted,
    expected: ({ email: _email, method: _method, ...f }) => ({ ...f, stage: 'identify', failedAttempts: 2 }),
  },
  { from: 'authenticate', event: sampleEvents.aborted, expected: (f) => ({ ...f, stage: 'failed', failure: 'aborted' }) },
  { from: 'change_password', event: sampleEvents.password_change_rejected, expected: (f) => f },
  { from: 'change_password', event: sampleEvents.password_changed, flow: { passwordExpired: true }, expected: ({ passwordExpired: _e, ...f }) => ({ ...f, stage: 'done' }) },
  { from: 'change_password', event: sampleEvents.aborted, expected: (f) => ({ ...f, stage: 'failed', failure: 'aborted' }) },
  { from: 'assess', event: sampleEvents.risk_allowed, expected: (f) => ({ ...f, stage: 'done' }) },
  { from: 'assess', event: sampleEvents.risk_step_up, expected: (f) => ({ ...f, stage: 'mfa', mfaMethods: ['totp', 'webauthn'] }) },
  { from: 'assess', event: sampleEvents.mfa_enrolment_required, expected: (f) => ({ ...f, stage: 'mfa_enrol', mfaMethods: ['totp', 'webauthn', 'email'] }) },
  { from: 'assess', event: sampleEvents.risk_denied, expected: (f) => ({ ...f, stage: 'failed', failure: 'risk_denied:impossible_travel' }) },
  { from: 'mfa', event: sampleEvents.mfa_code_sent, expected: (f) => f },
  { from: 'mfa', event: sampleEvents.mfa_rejected, expected: (f) => ({ ...f, failedAttempts: 2 }) },
  { from: 'mfa', event: sampleEvents.throttled, expected: (f) => f },
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
  { from: 'mfa_enrol', event: sampleEvents.mfa_enrolment_rejected, expected: (f) => f },
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

describe('a hand-over from an upstream method', () => {
  it('switches to the proving method with the address, remembers who handed over, and a restart forgets it', () => {
    const at = flowAt('authenticate', { method: 'oidc', email: undefined });
    const handed = advance(at, { type: 'method_switched', method: 'password', email: 'owner@example.com', handedOverBy: 'oidc' });
    expect(handed).toMatchObject({ stage: 'authenticate', method: 'password', email: 'owner@example.com', handedOverBy: 'oidc' });
    const restarted = advance(handed, { type: 'restarted' });
    expect(restarted.stage).toBe('identify');
    expect(restarted).not.toHaveProperty('handedOverBy');
    expect(restarted).not.toHaveProperty('email');
  });
});

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
  it('authenticated adds the method\'s amr once, even when already present', () => {
    const flow = advance(flowAt('authenticate', { amr: ['pwd'] }), sampleEvents.authenticated);
    expect(flow.amr).toEqual(['pwd']);
  });

  it('mfa_verified keeps earlier methods and adds the method and mfa without duplicates', () => {
    const flow = advance(flowAt('mfa', { amr: ['pwd', 'otp'] }), sampleEvents.mfa_verified);
    expect(flow.amr).toEqual(['pwd', 'otp', 'mfa']);
  });

  it('a whole one-factor login: identify, password (one wrong), assess allows', () => {
    let flow = startFlow('u', 'c', 5);
    flow = advance(flow, { type: 'identified', email: 'carol@example.com', method: 'password' });
    flow = advance(flow, { type: 'authentication_rejected', name: 'password_rejected', method: 'password', reason: 'wrong_password' });
    flow = advance(flow, { type: 'authenticated', name: 'password_verified', method: 'password', accountId: 'acct-c', amr: ['pwd'] });
    flow = advance(flow, { type: 'risk_allowed', reason: 'none' });
    expect(flow).toEqual({ uid: 'u', csrf: 'c', startedAt: 5, stage: 'done', email: 'carol@example.com', method: 'password', accountId: 'acct-c', amr: ['pwd'], failedAttempts: 1 });
    expect(acrOf(flow)).toBe(acr.oneFactor);
  });
});

describe('event variants', () => {
  it('with an expired password, every way through the factors ends at change_password, not done', () => {
    const expired = advance(flowAt('authenticate'), { type: 'authenticated', name: 'password_expired', method: 'password', accountId: 'acct-1', amr: ['pwd'], passwordExpired: true });
    expect(expired).toMatchObject({ stage: 'assess', passwordExpired: true });
    expect(advance(expired, { type: 'risk_allowed', reason: 'none' }).stage).toBe('change_password');
    expect(advance(flowAt('mfa', { passwordExpired: true, mfaMethods: ['totp'] }), { type: 'mfa_verified', method: 'totp', amr: ['otp'] }).stage).toBe('change_password');
    expect(advance(flowAt('backup_codes', { passwordExpired: true }), { type: 'backup_codes_acknowledged' }).stage).toBe('change_password');
    expect(advance(flowAt('assess'), { type: 'risk_allowed', reason: 'none' }).stage).toBe('done');
  });

  it('an enrolment without a factor id (webauthn, email, sms) records only the method', () => {
    const flow = advance(flowAt('mfa_enrol', { enrolment: undefined }), { type: 'mfa_enrolment_started', method: 'webauthn' });
    expect(flow.enrolment).toStrictEqual({ method: 'webauthn' });
  });

  it('a method that names the account brings its address along', () => {
    const flow = advance(flowAt('authenticate', { email: undefined, method: 'passkey' }), { type: 'authenticated', name: 'passkey_verified', method: 'passkey', accountId: 'a', email: 'e@example.com', amr: ['hwk'] });
    expect(flow).toMatchObject({ email: 'e@example.com', amr: ['hwk'] });
    expect(acrOf(flow)).toBe(acr.oneFactor);
  });

  it('every event clears the one-time display of the screen before', () => {
    for (const edge of edges) {
      const after = advance(flowAt(edge.from, { ...edge.flow, display: { secret: 'S', notices: [{ key: 'k', kind: 'info' }] } }), edge.event);
      expect(after.display, `${edge.from}:${edge.event.type}`).toBeUndefined();
    }
  });

  it('a method event is audited under the method\'s own name, any other under its type', () => {
    expect(eventName(sampleEvents.authenticated)).toBe('password_verified');
    expect(eventName(sampleEvents.authentication_pending)).toBe('verification_required');
    expect(eventName(sampleEvents.risk_allowed)).toBe('risk_allowed');
  });
});

describe('whole sign-ins', () => {
  it('password, forced enrolment of TOTP, backup codes shown, done at 2fa', () => {
    let flow = startFlow('u', 'c', 5);
    flow = advance(flow, { type: 'identified', email: 'erin@example.com', method: 'password' });
    flow = advance(flow, { type: 'authenticated', name: 'password_verified', method: 'password', accountId: 'acct-e', amr: ['pwd'] });
    flow = advance(flow, { type: 'mfa_enrolment_required', methods: ['totp', 'webauthn'], reason: 'policy' });
    flow = advance(flow, { type: 'mfa_enrolment_started', method: 'totp', factorId: 'f-1' });
    flow = advance(flow, { type: 'mfa_enrolment_rejected', method: 'totp', reason: 'wrong' });
    expect(flow).toMatchObject({ stage: 'mfa_enrol', enrolment: { method: 'totp', factorId: 'f-1' } });
    flow = advance(flow, { type: 'mfa_enrolled', method: 'totp', amr: ['otp'] });
    flow = { ...flow, display: { backupCodes: ['x'] } };
    flow = advance(flow, { type: 'backup_codes_acknowledged' });
    expect(flow).toStrictEqual({ uid: 'u', csrf: 'c', startedAt: 5, stage: 'done', email: 'erin@example.com', method: 'password', accountId: 'acct-e', amr: ['pwd', 'otp', 'mfa'], mfaMethods: ['totp', 'webauthn'], failedAttempts: 0 });
    expect(acrOf(flow)).toBe(acr.twoFactor);
  });

  it('sign-in by emailed code is one factor: otp without mfa', () => {
    let flow = startFlow('u', 'c', 5);
    flow = advance(flow, { type: 'identified', email: 'fay@example.com', method: 'password' });
    flow = advance(flow, { type: 'method_switched', method: 'signin_code' });
    flow = advance(flow, { type: 'authentication_pending', name: 'signin_code_sent', method: 'signin_code' });
    flow = advance(flow, { type: 'authentication_rejected', name: 'signin_code_rejected', method: 'signin_code', reason: 'invalid' });
    flow = advance(flow, { type: 'authenticated', name: 'signin_code_verified', method: 'signin_code', accountId: 'acct-f', amr: ['otp'] });
    flow = advance(flow, { type: 'risk_allowed', reason: 'none' });
    expect(flow).toStrictEqual({ uid: 'u', csrf: 'c', startedAt: 5, stage: 'done', email: 'fay@example.com', method: 'signin_code', accountId: 'acct-f', amr: ['otp'], failedAttempts: 1 });
    expect(acrOf(flow)).toBe(acr.oneFactor);
  });

  it('a user-verified passkey as first factor is phishing resistant', () => {
    let flow = startFlow('u', 'c', 5);
    flow = advance(flow, { type: 'method_chosen', method: 'passkey' });
    flow = advance(flow, { type: 'authenticated', name: 'passkey_verified', method: 'passkey', accountId: 'acct-g', email: 'gil@example.com', amr: ['hwk', 'mfa'] });
    flow = advance(flow, { type: 'risk_allowed', reason: 'first_factor_is_multi_factor' });
    expect(flow).toStrictEqual({ uid: 'u', csrf: 'c', startedAt: 5, stage: 'done', method: 'passkey', email: 'gil@example.com', accountId: 'acct-g', amr: ['hwk', 'mfa'], failedAttempts: 0 });
    expect(acrOf(flow)).toBe(acr.phishingResistant);
  });

  it('password then webauthn as second factor is phishing resistant', () => {
    const flow = advance(flowAt('mfa'), { type: 'mfa_verified', method: 'webauthn', amr: ['hwk'] });
    expect(flow.amr).toEqual(['pwd', 'hwk', 'mfa']);
    expect(acrOf(flow)).toBe(acr.phishingResistant);
  });
});

describe('startStepUp', () => {
  it('starts at assess with the session\'s account and first factor, without its mfa', () => {
    const flow = startStepUp('uid-s', 'csrf-s', { accountId: 'acct-s', email: 's@example.com', amr: ['pwd', 'otp', 'mfa'] }, 77);
    expect(flow).toStrictEqual({ uid: 'uid-s', stage: 'assess', csrf: 'csrf-s', accountId: 'acct-s', email: 's@example.com', amr: ['pwd', 'otp'], failedAttempts: 0, startedAt: 77 });
    expect(acrOf(flow)).toBe(acr.oneFactor);
  });

  it('does not share the session\'s amr array, and goes on to mfa and done', () => {
    const amr = ['pwd'];
    let flow = startStepUp('uid-s', 'csrf-s', { accountId: 'acct-s', email: 's@example.com', amr }, 1);
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
  it('starts at identify with nothing known, at the time it is given', () => {
    expect(startFlow('uid-x', 'token-x', 42)).toEqual({ uid: 'uid-x', stage: 'identify', csrf: 'token-x', amr: [], failedAttempts: 0, startedAt: 42 });
  });

  it('has no email, method, account or failure', () => {
    const flow = startFlow('uid-y', 'token-y', 1);
    for (const field of ['email', 'method', 'accountId', 'failure']) expect(flow).not.toHaveProperty(field);
  });

  it('gives each flow its own amr array', () => {
    const a = startFlow('a', 'x', 1);
    const b = startFlow('b', 'y', 1);
    expect(a.amr).not.toBe(b.amr);
  });
});
