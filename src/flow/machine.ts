/**
 * The login state machine: how one interaction's login is satisfied. Pure: no I/O here.
 *
 * ```mermaid
 * stateDiagram-v2
 *   [*] --> identify
 *   identify --> password: identified
 *   password --> password: password_rejected
 *   password --> identify: restarted
 *   password --> failed: attempts_exhausted
 *   password --> risk: password_verified
 *   password --> password: verification_required
 *   password --> change_password: password_expired
 *   change_password --> change_password: password_change_rejected
 *   change_password --> risk: password_changed
 *   change_password --> failed: aborted
 *   risk --> done: risk_allowed
 *   risk --> mfa: risk_step_up
 *   risk --> failed: risk_denied
 *   mfa --> done: mfa_verified
 *   identify --> failed: aborted
 *   password --> failed: aborted
 *   mfa --> failed: aborted
 *   done --> [*]
 *   failed --> [*]
 * ```
 *
 * Later stages (federation, passkey and email-code first factors, MFA methods) plug in as new
 * events on this table; `advance` is the only way a flow changes.
 */
export type Stage = 'identify' | 'password' | 'change_password' | 'risk' | 'mfa' | 'done' | 'failed';

/** Authentication method references (RFC 8176) and our assurance levels. */
export const acr = { oneFactor: 'urn:idp:acr:1fa', twoFactor: 'urn:idp:acr:2fa' } as const;

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
  /** What the current screen must tell the user (unmet password rules, a notice); cleared by the next event. */
  problems?: string[];
  notice?: 'verify_email';
  startedAt: number;
}

export type FlowEvent =
  | { type: 'identified'; email: string }
  | { type: 'restarted' }
  | { type: 'password_rejected'; reason?: string }
  | { type: 'attempts_exhausted' }
  | { type: 'password_verified'; accountId: string }
  | { type: 'verification_required'; accountId: string }
  | { type: 'password_expired'; accountId: string }
  | { type: 'password_change_rejected'; problems: string[] }
  | { type: 'password_changed' }
  | { type: 'risk_allowed' }
  | { type: 'risk_step_up' }
  | { type: 'risk_denied'; reason: string }
  | { type: 'mfa_verified'; method: string }
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

export const transitions: Record<Stage, Edges> = {
  identify: {
    identified: (flow, e) => ({ ...flow, stage: 'password', email: e.email }),
    aborted: abort,
  },
  password: {
    password_rejected: (flow) => ({ ...flow, failedAttempts: flow.failedAttempts + 1 }),
    attempts_exhausted: (flow) => ({ ...flow, stage: 'failed', failure: 'too_many_attempts' }),
    password_verified: (flow, e) => ({ ...flow, stage: 'risk', accountId: e.accountId, amr: [...new Set([...flow.amr, 'pwd'])] }),
    // The password was right but the address is not verified yet: no sign-in, and no failed attempt.
    verification_required: (flow) => ({ ...flow, notice: 'verify_email' }),
    password_expired: (flow, e) => ({ ...flow, stage: 'change_password', accountId: e.accountId, amr: [...new Set([...flow.amr, 'pwd'])] }),
    restarted: ({ email: _email, ...flow }) => ({ ...flow, stage: 'identify' }),
    aborted: abort,
  },
  change_password: {
    password_change_rejected: (flow, e) => ({ ...flow, problems: e.problems }),
    password_changed: (flow) => ({ ...flow, stage: 'risk' }),
    aborted: abort,
  },
  risk: {
    risk_allowed: (flow) => ({ ...flow, stage: 'done' }),
    risk_step_up: (flow) => ({ ...flow, stage: 'mfa' }),
    risk_denied: (flow, e) => ({ ...flow, stage: 'failed', failure: `risk_denied:${e.reason}` }),
  },
  mfa: {
    mfa_verified: (flow, e) => ({ ...flow, stage: 'done', amr: [...new Set([...flow.amr, e.method, 'mfa'])] }),
    aborted: abort,
  },
  done: {},
  failed: {},
};

export function startFlow(uid: string, csrf: string, now = Date.now()): Flow {
  return { uid, stage: 'identify', csrf, amr: [], failedAttempts: 0, startedAt: now };
}

/** Applies one event; throws IllegalTransitionError when the current stage does not accept it. */
export function advance(flow: Flow, event: FlowEvent): Flow {
  const edge = transitions[flow.stage][event.type] as Apply<typeof event.type> | undefined;
  if (!edge) throw new IllegalTransitionError(flow.stage, event.type);
  const { problems: _problems, notice: _notice, ...rest } = flow;
  return edge(rest, event as never);
}

/** The assurance level a finished flow reached. */
export function acrOf(flow: Flow): string {
  return flow.amr.includes('mfa') ? acr.twoFactor : acr.oneFactor;
}
