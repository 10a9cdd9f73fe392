/**
 * The login state machine: how one interaction's login is satisfied. Pure: no I/O here.
 *
 * ```mermaid
 * stateDiagram-v2
 *   [*] --> identify
 *   [*] --> risk: step-up of a signed-in session
 *   identify --> password: identified
 *   identify --> risk: passkey_verified
 *   password --> password: password_rejected / verification_required
 *   password --> identify: restarted
 *   password --> failed: attempts_exhausted
 *   password --> risk: password_verified
 *   password --> risk: password_expired (a new password is due after the second factor)
 *   password --> signin_code: signin_code_sent
 *   signin_code --> signin_code: signin_code_rejected
 *   signin_code --> risk: signin_code_verified
 *   signin_code --> identify: restarted
 *   signin_code --> failed: attempts_exhausted
 *   change_password --> change_password: password_change_rejected
 *   change_password --> done: password_changed
 *   risk --> done: risk_allowed (change_password instead when the password expired)
 *   risk --> mfa: risk_step_up
 *   risk --> mfa_enrol: mfa_enrolment_required
 *   risk --> failed: risk_denied
 *   mfa --> mfa: mfa_rejected / mfa_code_sent
 *   mfa --> done: mfa_verified (or change_password)
 *   mfa --> failed: attempts_exhausted
 *   mfa_enrol --> mfa_enrol: mfa_enrolment_started / mfa_enrolment_rejected
 *   mfa_enrol --> backup_codes: mfa_enrolled
 *   backup_codes --> done: backup_codes_acknowledged (or change_password)
 *   identify, password, signin_code, change_password, mfa, mfa_enrol --> failed: aborted
 *   done --> [*]
 *   failed --> [*]
 * ```
 *
 * `advance` is the only way a flow changes.
 */
export type Stage = 'identify' | 'password' | 'signin_code' | 'change_password' | 'risk' | 'mfa' | 'mfa_enrol' | 'backup_codes' | 'done' | 'failed';

/** Authentication context classes: one factor, two factors, two with a phishing-resistant one. */
export const acr = { oneFactor: 'urn:idp:acr:1fa', twoFactor: 'urn:idp:acr:2fa', phishingResistant: 'urn:idp:acr:phr' } as const;

export type MfaMethod = 'totp' | 'webauthn' | 'email' | 'sms' | 'backup_code';

export interface Flow {
  uid: string;
  stage: Stage;
  /** Per-flow anti-CSRF token, compared with every form post of this interaction. */
  csrf: string;
  email?: string;
  accountId?: string;
  amr: string[];
  failedAttempts: number;
  failure?: string;
  /** The second-factor methods this sign-in may use (set when MFA is asked for). */
  mfaMethods?: MfaMethod[];
  /** The password was right but expired: a new one is due once every factor is through. */
  passwordExpired?: boolean;
  /** A second-factor enrolment in progress. */
  enrolment?: { method: MfaMethod; factorId?: string };
  /** What the current screen must tell the user (unmet password rules, a notice); cleared by the next event. */
  problems?: string[];
  notice?: 'verify_email' | 'code_sent' | 'code_rate_limited' | 'mfa_locked';
  /**
   * One-time output for the next screen only (a TOTP secret, backup codes, WebAuthn options, a
   * remembered-device token): never saved with the flow, so it is shown once and kept nowhere.
   */
  display?: Record<string, unknown>;
  startedAt: number;
}

export type FlowEvent =
  | { type: 'identified'; email: string }
  | { type: 'passkey_verified'; accountId: string; email: string; amr: string[] }
  | { type: 'restarted' }
  | { type: 'password_rejected'; reason?: string }
  | { type: 'attempts_exhausted' }
  | { type: 'password_verified'; accountId: string }
  | { type: 'verification_required'; accountId: string }
  | { type: 'password_expired'; accountId: string }
  | { type: 'password_change_rejected'; problems: string[] }
  | { type: 'password_changed' }
  | { type: 'signin_code_sent'; rateLimited?: boolean }
  | { type: 'signin_code_rejected'; reason: string }
  | { type: 'signin_code_verified'; accountId: string }
  | { type: 'risk_allowed'; reason?: string }
  | { type: 'risk_step_up'; methods: MfaMethod[]; reason: string }
  | { type: 'mfa_enrolment_required'; methods: MfaMethod[]; reason: string }
  | { type: 'risk_denied'; reason: string }
  | { type: 'mfa_code_sent'; method: MfaMethod; rateLimited?: boolean }
  | { type: 'mfa_rejected'; method: MfaMethod; reason: string }
  | { type: 'mfa_verified'; method: MfaMethod; amr: string[] }
  | { type: 'mfa_enrolment_started'; method: MfaMethod; factorId?: string }
  | { type: 'mfa_enrolment_rejected'; method: MfaMethod; reason: string }
  | { type: 'mfa_enrolled'; method: MfaMethod; amr: string[] }
  | { type: 'backup_codes_acknowledged' }
  | { type: 'aborted' };

export type EventType = FlowEvent['type'];
type Apply<E extends EventType> = (flow: Flow, event: Extract<FlowEvent, { type: E }>) => Flow;
type Edges = { [E in EventType]?: Apply<E> };

export class IllegalTransitionError extends Error {
  readonly from: Stage;
  readonly event: EventType;
  constructor(from: Stage, event: EventType) {
    super(`login flow: ${event} is not allowed in stage ${from}`);
    this.name = 'IllegalTransitionError';
    this.from = from;
    this.event = event;
  }
}

const abort: Apply<'aborted'> = (flow) => ({ ...flow, stage: 'failed', failure: 'aborted' });
const withAmr = (flow: Flow, amr: string[]) => [...new Set([...flow.amr, ...amr])];
const failedOnce = (flow: Flow): Flow => ({ ...flow, failedAttempts: flow.failedAttempts + 1 });
const exhausted: Apply<'attempts_exhausted'> = (flow) => ({ ...flow, stage: 'failed', failure: 'too_many_attempts' });
/** Where a flow goes once every factor is through: done, or the password change that is due. */
const finished = (flow: Flow): Stage => (flow.passwordExpired ? 'change_password' : 'done');
const restart: Apply<'restarted'> = ({ email: _email, ...flow }) => ({ ...flow, stage: 'identify' });

export const transitions: Record<Stage, Edges> = {
  identify: {
    identified: (flow, e) => ({ ...flow, stage: 'password', email: e.email }),
    passkey_verified: (flow, e) => ({ ...flow, stage: 'risk', accountId: e.accountId, email: e.email, amr: withAmr(flow, e.amr) }),
    aborted: abort,
  },
  password: {
    password_rejected: failedOnce,
    attempts_exhausted: exhausted,
    password_verified: (flow, e) => ({ ...flow, stage: 'risk', accountId: e.accountId, amr: withAmr(flow, ['pwd']) }),
    // The password was right but the address is not verified yet: no sign-in, and no failed attempt.
    verification_required: (flow) => ({ ...flow, notice: 'verify_email' }),
    // Only after the second factor: the password alone must not be enough to replace the password.
    password_expired: (flow, e) => ({ ...flow, stage: 'risk', accountId: e.accountId, amr: withAmr(flow, ['pwd']), passwordExpired: true }),
    // Whether or not the address has an account, the next screen asks for the code.
    signin_code_sent: (flow, e) => ({ ...flow, stage: 'signin_code', notice: e.rateLimited ? 'code_rate_limited' : 'code_sent' }),
    restarted: restart,
    aborted: abort,
  },
  signin_code: {
    signin_code_rejected: failedOnce,
    signin_code_sent: (flow, e) => ({ ...flow, notice: e.rateLimited ? 'code_rate_limited' : 'code_sent' }),
    attempts_exhausted: exhausted,
    signin_code_verified: (flow, e) => ({ ...flow, stage: 'risk', accountId: e.accountId, amr: withAmr(flow, ['otp']) }),
    restarted: restart,
    aborted: abort,
  },
  change_password: {
    password_change_rejected: (flow, e) => ({ ...flow, problems: e.problems }),
    password_changed: ({ passwordExpired: _expired, ...flow }) => ({ ...flow, stage: 'done' }),
    aborted: abort,
  },
  risk: {
    risk_allowed: (flow) => ({ ...flow, stage: finished(flow) }),
    risk_step_up: (flow, e) => ({ ...flow, stage: 'mfa', mfaMethods: e.methods }),
    mfa_enrolment_required: (flow, e) => ({ ...flow, stage: 'mfa_enrol', mfaMethods: e.methods }),
    risk_denied: (flow, e) => ({ ...flow, stage: 'failed', failure: `risk_denied:${e.reason}` }),
  },
  mfa: {
    mfa_code_sent: (flow, e) => ({ ...flow, notice: e.rateLimited ? 'code_rate_limited' : 'code_sent' }),
    // A locked second factor says so: more tries cannot help (and the password was right already).
    mfa_rejected: (flow, e) => ({ ...failedOnce(flow), ...(e.reason === 'locked' ? { notice: 'mfa_locked' as const } : {}) }),
    attempts_exhausted: exhausted,
    mfa_verified: (flow, e) => ({ ...flow, stage: finished(flow), amr: withAmr(flow, [...e.amr, 'mfa']) }),
    aborted: abort,
  },
  mfa_enrol: {
    mfa_enrolment_started: (flow, e) => ({ ...flow, enrolment: { method: e.method, ...(e.factorId ? { factorId: e.factorId } : {}) } }),
    mfa_enrolment_rejected: (flow, e) => ({ ...flow, problems: [e.reason] }),
    mfa_enrolled: ({ enrolment: _enrolment, ...flow }, e) => ({ ...flow, stage: 'backup_codes', amr: withAmr(flow, [...e.amr, 'mfa']) }),
    aborted: abort,
  },
  backup_codes: {
    backup_codes_acknowledged: (flow) => ({ ...flow, stage: finished(flow) }),
  },
  done: {},
  failed: {},
};

export function startFlow(uid: string, csrf: string, now = Date.now()): Flow {
  return { uid, stage: 'identify', csrf, amr: [], failedAttempts: 0, startedAt: now };
}

/** A step-up inside a signed-in session: the first factor stands, the risk and MFA stages decide. */
export function startStepUp(uid: string, csrf: string, account: { accountId: string; email: string; amr: string[] }, now = Date.now()): Flow {
  return { uid, stage: 'risk', csrf, accountId: account.accountId, email: account.email, amr: [...account.amr.filter((m) => m !== 'mfa')], failedAttempts: 0, startedAt: now };
}

/** Applies one event; throws IllegalTransitionError when the current stage does not accept it. */
export function advance(flow: Flow, event: FlowEvent): Flow {
  const edge = transitions[flow.stage][event.type] as Apply<typeof event.type> | undefined;
  if (!edge) throw new IllegalTransitionError(flow.stage, event.type);
  const { problems: _problems, notice: _notice, display: _display, ...rest } = flow;
  return edge(rest, event as never);
}

/** The assurance level a finished flow reached. */
export function acrOf(flow: Flow): string {
  if (flow.amr.includes('mfa') && flow.amr.includes('hwk')) return acr.phishingResistant;
  return flow.amr.includes('mfa') ? acr.twoFactor : acr.oneFactor;
}
