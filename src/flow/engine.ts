// Runs the login state machine for one interaction: loads the flow, lets the current stage turn
// the user's input into events, applies them with `advance`, runs the stages that need no input
// (risk, MFA policy), audits every event and saves the flow with the interaction's TTL.
import type { AuditSink } from '../audit/types.ts';
import { IdpError } from '../errors.ts';
import { advance, startFlow, startStepUp, type Flow, type FlowEvent, type MfaMethod, type Stage } from './machine.ts';
import { stageHandlers, type StageInput, type StageResult } from './stages.ts';

export interface FlowStore {
  get<T>(key: string): Promise<T | undefined>;
  set(key: string, value: unknown, ttlSeconds: number): Promise<void>;
  delete(key: string): Promise<void>;
  acquire(key: string, ttlSeconds: number): Promise<string | undefined>;
  extend(key: string, token: string, ttlSeconds: number): Promise<boolean>;
  release(key: string, token: string): Promise<void>;
}

export class FlowBusyError extends IdpError {
  constructor() {
    super('ERR_FLOW_BUSY', 'another submission for this sign-in is still being processed', { status: 429, expose: true });
    this.name = 'FlowBusyError';
  }
}

// Submissions of one flow run one at a time, on any node: otherwise parallel password guesses
// would each read the same attempt count and slip past the limit. The lock is short and renewed
// while its holder works, so a node that dies mid-submission blocks the flow for at most
// `lockSeconds`; a waiter gives up a little later than that, so it outlasts a dead holder's lock.
const lockSeconds = 3;
const lockRenewMs = 1000;
const lockWaitMs = 4500;

export interface RequestInfo {
  ip?: string | undefined;
  userAgent?: string | undefined;
  requestId?: string | undefined;
  clientId?: string | undefined;
  /** acr_values of the authorization request. */
  acrValues?: string[] | undefined;
  /** The remembered-device cookie, if the browser sent one. */
  deviceToken?: string | undefined;
}

export type PasswordCheck = { ok: true; accountId: string; passwordExpired?: boolean } | { ok: false; reason: string; accountId?: string };
export type MfaDecision = { action: 'skip'; reason: string } | { action: 'deny'; reason: string } | { action: 'challenge' | 'enrol'; methods: MfaMethod[]; reason: string };

/** The second-factor seam: checks, codes, enrolment. */
export interface MfaSteps {
  verify(flow: Flow, input: { method: MfaMethod; code?: string; response?: string }): Promise<{ ok: true; amr: string[] } | { ok: false; reason: string }>;
  sendCode(flow: Flow, method: MfaMethod): Promise<'sent' | 'rate_limited' | 'unavailable'>;
  startEnrolment(flow: Flow, method: MfaMethod, destination?: string): Promise<{ ok: true; factorId?: string; display: Record<string, unknown> } | { ok: false; reason: string }>;
  confirmEnrolment(flow: Flow, input: { method: MfaMethod; code?: string; response?: string; name?: string }): Promise<{ ok: true; amr: string[] } | { ok: false; reason: string; display?: Record<string, unknown> }>;
  backupCodes(accountId: string): Promise<string[]>;
  rememberDevice(accountId: string, userAgent: string | undefined): Promise<string | undefined>;
}

export type RiskVerdict = { verdict: 'allow' } | { verdict: 'step_up'; reasons: string[] } | { verdict: 'deny'; reasons: string[] };

export interface FlowDeps {
  store: FlowStore;
  audit: AuditSink;
  checkPassword(email: string, password: string): Promise<PasswordCheck>;
  /** A new password for an account whose password expired; every unmet rule when refused. */
  changePassword(accountId: string, password: string): Promise<{ ok: true } | { ok: false; problems: string[] }>;
  /** The risk stage's seam: allow, ask for MFA, or deny. */
  assessRisk(flow: Flow, request: RequestInfo): Promise<RiskVerdict>;
  /** The MFA policy's seam: skip, challenge with some methods, or make the user enrol one. */
  mfaDecision(flow: Flow, request: RequestInfo, riskStepUp: boolean): Promise<MfaDecision>;
  mfa: MfaSteps;
  /** Passwordless: a discoverable passkey's assertion. */
  verifyPasskey(flowUid: string, response: string): Promise<{ ok: true; accountId: string; email: string; amr: string[] } | { ok: false }>;
  /** Passwordless: a code to the address (sent only if it has an account that may sign in). */
  sendSigninCode(flowUid: string, email: string): Promise<'sent' | 'rate_limited' | 'disabled'>;
  checkSigninCode(flowUid: string, email: string, code: string): Promise<{ ok: true; accountId: string } | { ok: false; reason: string }>;
  randomToken(): string;
  maxAttempts: number;
  ttlSeconds: number;
}

const failureEvents = new Set<FlowEvent['type']>([
  'password_rejected', 'attempts_exhausted', 'risk_denied', 'aborted', 'password_change_rejected', 'verification_required',
  'signin_code_rejected', 'mfa_rejected', 'mfa_enrolment_rejected',
]);

const asResult = (value: FlowEvent[] | StageResult): StageResult => (Array.isArray(value) ? { events: value } : value);

export class FlowEngine {
  readonly #deps: FlowDeps;

  constructor(deps: FlowDeps) {
    this.#deps = deps;
  }

  #key(uid: string) {
    return `flow:${uid}`;
  }

  load(uid: string): Promise<Flow | undefined> {
    return this.#deps.store.get<Flow>(this.#key(uid));
  }

  /** The interaction's flow, started and saved if it has none yet. */
  async begin(uid: string): Promise<Flow> {
    const existing = await this.load(uid);
    if (existing) return existing;
    const flow = startFlow(uid, this.#deps.randomToken());
    await this.#deps.store.set(this.#key(uid), flow, this.#deps.ttlSeconds);
    return flow;
  }

  /**
   * A step-up for a signed-in session (a relying party asked for a stronger acr): the flow starts
   * after the first factor and runs the risk and MFA stages at once.
   */
  async beginStepUp(uid: string, account: { accountId: string; email: string; amr: string[] }, request: RequestInfo): Promise<Flow> {
    const existing = await this.load(uid);
    if (existing) return existing;
    return this.#locked(uid, async () => {
      const flow = await this.#runAuto(startStepUp(uid, this.#deps.randomToken(), account), request);
      await this.#save(flow);
      return flow;
    });
  }

  async #save(flow: Flow): Promise<void> {
    // One-time output never reaches the store.
    const { display: _display, ...persisted } = flow;
    await this.#deps.store.set(this.#key(flow.uid), persisted, this.#deps.ttlSeconds);
  }

  async #runAuto(flow: Flow, request: RequestInfo): Promise<Flow> {
    // Stages without a screen run at once, in order, until one needs the user or the flow ends.
    for (let guard = 0; guard < 10; guard++) {
      const auto = stageHandlers[flow.stage].auto;
      if (!auto) break;
      const result = asResult(await auto(flow, this.#deps, request));
      flow = await this.#apply(flow, result.events, request);
      if (result.display) flow = { ...flow, display: { ...flow.display, ...result.display } };
    }
    return flow;
  }

  /**
   * Feeds the user's input to the stage it was meant for. Input for another stage (a stale or
   * replayed form) changes nothing and returns the flow as it is.
   */
  async submit(uid: string, input: StageInput, request: RequestInfo): Promise<Flow> {
    return this.#locked(uid, () => this.#submitLocked(uid, input, request));
  }

  /** Runs `work` holding the flow's submission lock, renewing it until the work is done. */
  async #locked<T>(uid: string, work: () => Promise<T>): Promise<T> {
    const lockKey = `${this.#key(uid)}:submit`;
    const token = await this.#acquire(lockKey);
    const renewal = setInterval(() => {
      this.#deps.store.extend(lockKey, token, lockSeconds).catch(() => undefined);
    }, lockRenewMs);
    renewal.unref();
    try {
      return await work();
    } finally {
      clearInterval(renewal);
      await this.#deps.store.release(lockKey, token);
    }
  }

  async #acquire(lockKey: string): Promise<string> {
    const deadline = Date.now() + lockWaitMs;
    for (let wait = 5; ; wait = Math.min(wait * 2, 100)) {
      const token = await this.#deps.store.acquire(lockKey, lockSeconds);
      if (token) return token;
      if (Date.now() > deadline) throw new FlowBusyError();
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  async #submitLocked(uid: string, input: StageInput, request: RequestInfo): Promise<Flow> {
    let flow = await this.begin(uid);
    if (input.stage !== flow.stage && input.stage !== 'abort') return flow;
    const handler = stageHandlers[flow.stage];
    const result = handler.submit ? asResult(await handler.submit(flow, input, this.#deps, request)) : { events: [] };
    flow = await this.#apply(flow, result.events, request);
    if (result.display) flow = { ...flow, display: result.display };
    flow = await this.#runAuto(flow, request);
    await this.#save(flow);
    return flow;
  }

  async discard(uid: string): Promise<void> {
    await this.#deps.store.delete(this.#key(uid));
  }

  async #apply(flow: Flow, events: FlowEvent[], request: RequestInfo): Promise<Flow> {
    for (const event of events) {
      const from: Stage = flow.stage;
      flow = advance(flow, event);
      const { type, ...details } = event;
      await this.#deps.audit.record({
        type: `login.${type}`,
        outcome: failureEvents.has(type) ? 'failure' : 'success',
        subject: flow.accountId ?? null,
        clientId: request.clientId,
        requestId: request.requestId,
        ip: request.ip,
        userAgent: request.userAgent,
        details: { interaction: flow.uid, from, to: flow.stage, ...details, ...(flow.email ? { email: flow.email } : {}) },
      });
    }
    return flow;
  }
}
