// Runs the login state machine for one interaction: loads the flow, lets the current stage turn
// a form post (or an upstream's answer) into events, applies them with `advance`, runs the stages
// that need no input (assess), audits every event and saves the flow with the interaction's TTL.
import { isAuditEventType } from '../audit/events.ts';
import type { AuditSink } from '../audit/types.ts';
import type { Clock } from '../clock.ts';
import { IdpError } from '../errors.ts';
import type { RiskEngine } from '../risk/engine.ts';
import { advance, eventName, startFlow, startStepUp, type Display, type Flow, type FlowEvent, type Stage } from './machine.ts';
import type { SignInGuard } from './methods/password.ts';
import type { FormFields, MethodRegistry, RequestInfo } from './methods/types.ts';
import type { MfaSteps, SecondFactorPolicy } from './second-factor.ts';
import { outcomeAt, stageHandlers, type StageResult } from './stages.ts';

export type { RequestInfo };

export interface FlowStore {
  get<T>(key: string): Promise<T | undefined>;
  set(key: string, value: unknown, ttlSeconds: number): Promise<void>;
  delete(key: string): Promise<void>;
  /** Reads and deletes in one step: of two readers, one gets the value. */
  take<T>(key: string): Promise<T | undefined>;
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

export interface FlowDeps {
  store: FlowStore;
  audit: AuditSink;
  clock: Clock;
  /** The sign-in methods, in order of precedence. */
  methods: MethodRegistry;
  /** The verdict after the first factor: allow, step up, deny. */
  risk: RiskEngine;
  /** The second factor the verdict, the client and the account call for. */
  secondFactor: SecondFactorPolicy;
  mfa: MfaSteps;
  /** Failed sign-ins per origin: second-factor guesses count like passwords. */
  guard: SignInGuard;
  /** A new password for an account whose password expired; every unmet rule when refused. */
  changePassword(accountId: string, password: string): Promise<{ ok: true } | { ok: false; problems: string[] }>;
  randomToken(): string;
  maxAttempts: number;
  ttlSeconds: number;
}

const failureEvents = new Set<string>([
  'authentication_rejected', 'attempts_exhausted', 'risk_denied', 'aborted', 'password_change_rejected', 'throttled',
  'mfa_rejected', 'mfa_enrolment_rejected', 'password_rejected', 'signin_code_rejected', 'passkey_rejected', 'upstream_rejected', 'directory_rejected', 'directory_refused',
  'verification_required', 'signin_code_not_sent',
]);

/** Flows saved by the release before the sign-in methods: read into today's stages (rolling upgrades). */
function upgraded(flow: Flow): Flow {
  const legacy = flow.stage as string;
  if (legacy === 'password') return { ...flow, stage: 'authenticate', method: 'password' };
  if (legacy === 'signin_code') return { ...flow, stage: 'authenticate', method: 'signin_code' };
  if (legacy === 'risk') return { ...flow, stage: 'assess' };
  return flow;
}

export class FlowEngine {
  readonly #deps: FlowDeps;

  constructor(deps: FlowDeps) {
    this.#deps = deps;
  }

  #key(uid: string) {
    return `flow:${uid}`;
  }

  /** The sign-in methods this engine runs. */
  get methods(): MethodRegistry {
    return this.#deps.methods;
  }

  async load(uid: string): Promise<Flow | undefined> {
    const flow = await this.#deps.store.get<Flow>(this.#key(uid));
    return flow && upgraded(flow);
  }

  /** The interaction's flow, started and saved if it has none yet. */
  async begin(uid: string): Promise<Flow> {
    const existing = await this.load(uid);
    if (existing) return existing;
    const flow = startFlow(uid, this.#deps.randomToken(), this.#deps.clock.now());
    await this.#deps.store.set(this.#key(uid), flow, this.#deps.ttlSeconds);
    return flow;
  }

  /**
   * A step-up for a signed-in session (a relying party asked for a stronger acr): the flow starts
   * after the first factor and runs the assess and MFA stages at once.
   */
  async beginStepUp(uid: string, account: { accountId: string; email: string; amr: string[] }, request: RequestInfo): Promise<Flow> {
    const existing = await this.load(uid);
    if (existing) return existing;
    return this.#locked(uid, async () => {
      const flow = await this.#settle(startStepUp(uid, this.#deps.randomToken(), account, this.#deps.clock.now()), request);
      await this.#save(flow);
      return flow;
    });
  }

  /** The form actions the flow's current stage takes (besides abort). */
  actionsOf(flow: Flow): string[] {
    return stageHandlers[flow.stage].actions?.(flow, this.#deps) ?? [];
  }

  /**
   * Feeds one form post to the stage it was meant for. A post for another stage (a stale or
   * replayed form) changes nothing and returns the flow as it is.
   */
  async submit(uid: string, action: string, fields: FormFields, request: RequestInfo): Promise<Flow> {
    return this.#locked(uid, async () => {
      const flow = await this.begin(uid);
      if (action === 'abort') return this.#finishStep(flow, { events: flow.stage === 'done' || flow.stage === 'failed' ? [] : [{ type: 'aborted' }] }, request);
      const handler = stageHandlers[flow.stage];
      if (!handler.submit || !this.actionsOf(flow).includes(action)) return flow;
      return this.#finishStep(flow, await handler.submit(flow, action, fields, this.#deps, request), request);
    });
  }

  /**
   * An upstream's answer to a redirect method, found by the `state` it was sent with (the answer
   * may be a cross-site POST that carries none of the browser's cookies). The state works once.
   * The answer must come through the browser that was sent upstream (it holds that sign-in's
   * binding cookie): otherwise an attacker could start a sign-in, hand its upstream URL to a victim
   * already signed in there, and finish the sign-in as the victim.
   * Returns the flow's uid (the browser continues at its interaction), or why nothing happened.
   */
  async callback(method: string, params: FormFields, request: RequestInfo): Promise<{ uid: string } | { refused: 'unknown_state' | 'other_browser' }> {
    const state = params.state ?? '';
    if (!/^[A-Za-z0-9_-]{16,128}$/.test(state)) return { refused: 'unknown_state' };
    const uid = await this.#deps.store.take<string>(`flow-state:${state}`);
    if (!uid) return { refused: 'unknown_state' };
    if (!request.startedFlows?.includes(uid)) return { refused: 'other_browser' };
    await this.#locked(uid, async () => {
      const flow = await this.load(uid);
      const handler = this.#deps.methods.get(flow?.method);
      // The answer must come to the callback of the method the flow is in.
      if (!flow || flow.stage !== 'authenticate' || flow.method !== method || !handler?.callback) return;
      const next = await this.#finishStep(flow, await outcomeAt(flow, handler, await handler.callback(flow, params, request), this.#deps, request), request);
      if (next.display?.notices?.length) await this.#save(next, { notices: next.display.notices });
    });
    return { uid };
  }

  async discard(uid: string): Promise<void> {
    await this.#deps.store.delete(this.#key(uid));
  }

  async #finishStep(flow: Flow, result: StageResult, request: RequestInfo): Promise<Flow> {
    let next = await this.#apply(flow, result.events, request);
    if (result.upstreamState) await this.#deps.store.set(`flow-state:${result.upstreamState}`, flow.uid, this.#deps.ttlSeconds);
    next = await this.#settle(next, request);
    await this.#save(next);
    // One-time output of this step for the next screen (after saving: it is never stored).
    return result.display ? { ...next, display: { ...result.display, ...next.display } } : next;
  }

  /** Runs the stages without a screen until one needs the user or the flow ends. */
  async #settle(flow: Flow, request: RequestInfo): Promise<Flow> {
    let display: Display | undefined;
    for (let guard = 0; guard < 10; guard++) {
      const auto = stageHandlers[flow.stage].auto;
      if (!auto) break;
      const result = await auto(flow, this.#deps, request);
      flow = await this.#apply(flow, result.events, request);
      if (result.display) display = { ...display, ...result.display };
    }
    if (flow.stage === 'done') {
      await this.#deps.methods.get(flow.method)?.finished?.(flow, request);
      if (flow.handedOverBy && flow.handedOverBy !== flow.method) await this.#deps.methods.get(flow.handedOverBy)?.finished?.(flow, request);
    }
    return display ? { ...flow, display } : flow;
  }

  async #save(flow: Flow, carried?: Display): Promise<void> {
    // One-time output never reaches the store, except what an upstream's answer carries to the next screen.
    const { display: _display, carried: _carried, ...persisted } = flow;
    await this.#deps.store.set(this.#key(flow.uid), carried ? { ...persisted, carried } : persisted, this.#deps.ttlSeconds);
  }

  /** The flow as its next screen shows it: with what an upstream's answer carried to it. */
  shown(flow: Flow): Flow {
    const { carried, ...rest } = flow;
    return carried ? { ...rest, display: { ...carried, ...rest.display } } : rest;
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

  async #apply(flow: Flow, events: FlowEvent[], request: RequestInfo): Promise<Flow> {
    // The step's events are written together (one group commit), and the step waits for all.
    const written: Promise<void>[] = [];
    for (const event of events) {
      const from: Stage = flow.stage;
      flow = advance(flow, event);
      const { type: _type, ...details } = event;
      const name = eventName(event);
      const type = `login.${name}`;
      if (!isAuditEventType(type)) throw new Error(`login event ${type} is missing from the audit catalogue`);
      written.push(this.#deps.audit.record({
        type,
        outcome: failureEvents.has(name) || failureEvents.has(event.type) ? 'failure' : 'success',
        subject: flow.accountId ?? null,
        clientId: request.clientId,
        requestId: request.requestId,
        ip: request.ip,
        userAgent: request.userAgent,
        details: { interaction: flow.uid, from, to: flow.stage, ...details, ...(flow.email ? { email: flow.email } : {}) },
      }));
    }
    await Promise.all(written);
    return flow;
  }
}

