/**
 * The login state machine: how one interaction's login is satisfied. Pure: no I/O here.
 * The stages are generic; what varies is the sign-in method (src/flow/methods/), named in
 * `flow.method` while the flow is at `authenticate`.
 *
 * ```mermaid
 * stateDiagram-v2
 *   [*] --> identify
 *   [*] --> assess: step-up of a signed-in session
 *   identify --> authenticate: identified (the method for this identifier) / method_chosen (a button)
 *   authenticate --> authenticate: authentication_rejected / authentication_pending / throttled / method_switched
 *   authenticate --> identify: restarted
 *   authenticate --> assess: authenticated
 *   authenticate --> failed: attempts_exhausted
 *   assess --> done: risk_allowed (change_password first when the password expired)
 *   assess --> mfa: risk_step_up
 *   assess --> mfa_enrol: mfa_enrolment_required
 *   assess --> failed: risk_denied
 *   mfa --> mfa: mfa_rejected / mfa_code_sent / throttled
 *   mfa --> done: mfa_verified (or change_password)
 *   mfa --> failed: attempts_exhausted
 *   mfa_enrol --> mfa_enrol: mfa_enrolment_started / mfa_enrolment_rejected
 *   mfa_enrol --> backup_codes: mfa_enrolled
 *   backup_codes --> done: backup_codes_acknowledged (or change_password)
 *   change_password --> change_password: password_change_rejected
 *   change_password --> done: password_changed
 *   identify, authenticate, change_password, mfa, mfa_enrol --> failed: aborted
 *   done --> [*]
 *   failed --> [*]
 * ```
 *
 * `advance` is the only way a flow changes.
 */
import type { SecondFactor } from '../mfa/service.ts';

export type Stage = 'identify' | 'authenticate' | 'assess' | 'mfa' | 'mfa_enrol' | 'backup_codes' | 'change_password' | 'done' | 'failed';

/** Authentication context classes: one factor, two factors, two with a phishing-resistant one. */
export const acr = { oneFactor: 'urn:idp:acr:1fa', twoFactor: 'urn:idp:acr:2fa', phishingResistant: 'urn:idp:acr:phr' } as const;

/** A second factor, as the MFA service knows them. */
export type MfaMethod = SecondFactor;

/**
 * The login audit events a sign-in method's outcome names (`login.<name>` in the audit log; see
 * src/audit/events.ts). Each method reports its own: one name per outcome it can have.
 */
export const methodEventNames = [
  'password_verified', 'password_expired', 'password_rejected', 'verification_required',
  'signin_code_sent', 'signin_code_not_sent', 'signin_code_verified', 'signin_code_rejected',
  'passkey_verified', 'passkey_rejected',
  'upstream_redirected', 'upstream_verified', 'upstream_rejected',
  'directory_verified', 'directory_password_changed', 'directory_rejected', 'directory_refused',
] as const;
export type MethodEventName = (typeof methodEventNames)[number];

/** What the next screen shows once: a translation key, its parameters, and what kind of notice it is. */
export interface Notice {
  key: string;
  params?: Record<string, string>;
  /** rejected: a wrong credential (401); throttled: too many (429); invalid: input refused (400); info. */
  kind: 'rejected' | 'throttled' | 'invalid' | 'info';
}

export interface Flow {
  uid: string;
  stage: Stage;
  /** Per-flow anti-CSRF token, compared with every form post of this interaction. */
  csrf: string;
  email?: string;
  /** The sign-in method at `authenticate` (and the one that authenticated, afterwards). */
  method?: string;
  /** The method that handed this sign-in over to `method` (an upstream whose identity links once it is through). */
  handedOverBy?: string;
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
  /**
   * One-time output for the next screen only (notices, unmet password rules, a TOTP secret,
   * backup codes, WebAuthn options, a remembered-device token, an upstream redirect): never
   * saved with the flow, so it is shown once and kept nowhere.
   */
  display?: Display;
  /**
   * The one-time output of an upstream's answer, for the screen the browser reaches after the
   * redirect that follows it (the answer itself renders nothing): saved once, dropped by the next save.
   */
  carried?: Display;
  startedAt: number;
}

export interface Display {
  notices?: Notice[];
  /** Every unmet rule of a refused new password. */
  problems?: string[];
  /** Where the browser goes next (a redirect method's upstream). */
  redirect?: string;
  [key: string]: unknown;
}

export type FlowEvent =
  | { type: 'identified'; email: string; method: string }
  | { type: 'method_chosen'; method: string }
  | { type: 'method_switched'; method: string; email?: string; handedOverBy?: string }
  | { type: 'restarted' }
  | { type: 'authenticated'; name: MethodEventName; method: string; accountId: string; email?: string; amr: string[]; passwordExpired?: boolean }
  | { type: 'authentication_rejected'; name: MethodEventName; method: string; reason: string }
  | { type: 'authentication_pending'; name: MethodEventName; method: string; reason?: string }
  | { type: 'throttled'; retryAfterSeconds: number }
  | { type: 'attempts_exhausted' }
  | { type: 'password_change_rejected'; problems: string[] }
  | { type: 'password_changed' }
  | { type: 'risk_allowed'; reason: string; risk?: string[] }
  | { type: 'risk_step_up'; methods: MfaMethod[]; reason: string; risk?: string[] }
  | { type: 'mfa_enrolment_required'; methods: MfaMethod[]; reason: string; risk?: string[] }
  | { type: 'risk_denied'; reason: string; risk?: string[] }
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
const unchanged = (flow: Flow): Flow => flow;
/** Where a flow goes once every factor is through: done, or the password change that is due. */
const finished = (flow: Flow): Stage => (flow.passwordExpired ? 'change_password' : 'done');
const restart: Apply<'restarted'> = ({ email: _email, method: _method, handedOverBy: _handedOverBy, ...flow }) => ({ ...flow, stage: 'identify' });

export const transitions: Record<Stage, Edges> = {
  identify: {
    identified: (flow, e) => ({ ...flow, stage: 'authenticate', email: e.email, method: e.method }),
    // A method that names the account itself (a passkey, an upstream provider): no identifier typed.
    method_chosen: (flow, e) => ({ ...flow, stage: 'authenticate', method: e.method }),
    aborted: abort,
  },
  authenticate: {
    authentication_rejected: failedOnce,
    // The method needs more (a code was sent, the address must be verified): no failed attempt.
    authentication_pending: unchanged,
    throttled: unchanged,
    attempts_exhausted: exhausted,
    method_switched: (flow, e) => ({ ...flow, method: e.method, ...(e.email ? { email: e.email } : {}), ...(e.handedOverBy ? { handedOverBy: e.handedOverBy } : {}) }),
    // Only after the second factor: the password alone must not be enough to replace the password.
    authenticated: (flow, e) => ({
      ...flow, stage: 'assess', accountId: e.accountId, amr: withAmr(flow, e.amr),
      ...(e.email ? { email: e.email } : {}), ...(e.passwordExpired ? { passwordExpired: true } : {}),
    }),
    restarted: restart,
    aborted: abort,
  },
  assess: {
    risk_allowed: (flow) => ({ ...flow, stage: finished(flow) }),
    risk_step_up: (flow, e) => ({ ...flow, stage: 'mfa', mfaMethods: e.methods }),
    mfa_enrolment_required: (flow, e) => ({ ...flow, stage: 'mfa_enrol', mfaMethods: e.methods }),
    risk_denied: (flow, e) => ({ ...flow, stage: 'failed', failure: `risk_denied:${e.reason}` }),
  },
  mfa: {
    mfa_code_sent: unchanged,
    mfa_rejected: failedOnce,
    throttled: unchanged,
    attempts_exhausted: exhausted,
    mfa_verified: (flow, e) => ({ ...flow, stage: finished(flow), amr: withAmr(flow, [...e.amr, 'mfa']) }),
    aborted: abort,
  },
  mfa_enrol: {
    mfa_enrolment_started: (flow, e) => ({ ...flow, enrolment: { method: e.method, ...(e.factorId ? { factorId: e.factorId } : {}) } }),
    mfa_enrolment_rejected: unchanged,
    mfa_enrolled: ({ enrolment: _enrolment, ...flow }, e) => ({ ...flow, stage: 'backup_codes', amr: withAmr(flow, [...e.amr, 'mfa']) }),
    aborted: abort,
  },
  backup_codes: {
    backup_codes_acknowledged: (flow) => ({ ...flow, stage: finished(flow) }),
  },
  change_password: {
    password_change_rejected: unchanged,
    password_changed: ({ passwordExpired: _expired, ...flow }) => ({ ...flow, stage: 'done' }),
    aborted: abort,
  },
  done: {},
  failed: {},
};

export function startFlow(uid: string, csrf: string, now: number): Flow {
  return { uid, stage: 'identify', csrf, amr: [], failedAttempts: 0, startedAt: now };
}

/** A step-up inside a signed-in session: the first factor stands, the assess and MFA stages decide. */
export function startStepUp(uid: string, csrf: string, account: { accountId: string; email: string; amr: string[] }, now: number): Flow {
  return { uid, stage: 'assess', csrf, accountId: account.accountId, email: account.email, amr: [...account.amr.filter((m) => m !== 'mfa')], failedAttempts: 0, startedAt: now };
}

/** Applies one event; throws IllegalTransitionError when the current stage does not accept it. */
export function advance(flow: Flow, event: FlowEvent): Flow {
  const edge = transitions[flow.stage][event.type] as Apply<typeof event.type> | undefined;
  if (!edge) throw new IllegalTransitionError(flow.stage, event.type);
  const { display: _display, ...rest } = flow;
  return edge(rest, event as never);
}

/** The assurance level a finished flow reached. */
export function acrOf(flow: Flow): string {
  if (flow.amr.includes('mfa') && flow.amr.includes('hwk')) return acr.phishingResistant;
  return flow.amr.includes('mfa') ? acr.twoFactor : acr.oneFactor;
}

/** The audit name of an event: a method's own name for its outcomes, else the event type. */
export function eventName(event: FlowEvent): string {
  return 'name' in event ? event.name : event.type;
}
