// The login state machine as a table: every edge of `transitions` with the stage it leads to and
// the fields it sets, and every other (stage, event) pair refused with IllegalTransitionError.
import { describe, expect, it } from 'vitest';
import { acr, acrOf, advance, IllegalTransitionError, startFlow, transitions, type EventType, type Flow, type FlowEvent, type Stage } from '../../../src/flow/machine.ts';

/** One sample event per type; typed as a Record so a new event type fails to compile until added. */
const sampleEvents: Record<EventType, FlowEvent> = {
  identified: { type: 'identified', email: 'alice@example.com' },
  restarted: { type: 'restarted' },
  password_rejected: { type: 'password_rejected' },
  attempts_exhausted: { type: 'attempts_exhausted' },
  password_verified: { type: 'password_verified', accountId: 'acct-1' },
  verification_required: { type: 'verification_required', accountId: 'acct-1' },
  password_expired: { type: 'password_expired', accountId: 'acct-1' },
  password_change_rejected: { type: 'password_change_rejected', problems: ['must be at least 12 characters'] },
  password_changed: { type: 'password_changed' },
  risk_allowed: { type: 'risk_allowed' },
  risk_step_up: { type: 'risk_step_up' },
  risk_denied: { type: 'risk_denied', reason: 'impossible_travel' },
  mfa_verified: { type: 'mfa_verified', method: 'otp' },
  aborted: { type: 'aborted' },
};
const allStages: Record<Stage, true> = { identify: true, password: true, change_password: true, risk: true, mfa: true, done: true, failed: true };
const stages = Object.keys(allStages) as Stage[];
const eventTypes = Object.keys(sampleEvents) as EventType[];

/** A flow already in `stage`, carrying what a real flow would carry by then. */
function flowAt(stage: Stage, extra: Partial<Flow> = {}): Flow {
  const base = startFlow('uid-1', 'csrf-1', 1_000);
  const byStage: Record<Stage, Partial<Flow>> = {
    identify: {},
    password: { email: 'bob@example.com', failedAttempts: 2 },
    change_password: { email: 'bob@example.com', accountId: 'acct-9', amr: ['pwd'] },
    risk: { email: 'bob@example.com', accountId: 'acct-9', amr: ['pwd'], failedAttempts: 1 },
    mfa: { email: 'bob@example.com', accountId: 'acct-9', amr: ['pwd'] },
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
  { from: 'password', event: sampleEvents.password_expired, expected: (f) => ({ ...f, stage: 'change_password', accountId: 'acct-1', amr: ['pwd'] }) },
  { from: 'change_password', event: sampleEvents.password_change_rejected, expected: (f) => ({ ...f, problems: ['must be at least 12 characters'] }) },
  // The problems of the last attempt do not outlive the next event.
  { from: 'change_password', event: sampleEvents.password_changed, flow: { problems: ['x'] }, expected: ({ problems: _p, ...f }) => ({ ...f, stage: 'risk' }) },
  { from: 'change_password', event: sampleEvents.aborted, expected: (f) => ({ ...f, stage: 'failed', failure: 'aborted' }) },
  { from: 'risk', event: sampleEvents.risk_allowed, expected: (f) => ({ ...f, stage: 'done' }) },
  { from: 'risk', event: sampleEvents.risk_step_up, expected: (f) => ({ ...f, stage: 'mfa' }) },
  { from: 'risk', event: sampleEvents.risk_denied, expected: (f) => ({ ...f, stage: 'failed', failure: 'risk_denied:impossible_travel' }) },
  { from: 'mfa', event: sampleEvents.mfa_verified, expected: (f) => ({ ...f, stage: 'done', amr: ['pwd', 'otp', 'mfa'] }) },
  { from: 'mfa', event: sampleEvents.aborted, expected: (f) => ({ ...f, stage: 'failed', failure: 'aborted' }) },
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
