// The stages of the login pipeline. A stage with `submit` takes the form posts of its screen (the
// `actions` it accepts); a stage with `auto` decides on its own. Each returns the events it wants
// applied and one-time output for the next screen; only the engine applies them. The sign-in
// methods are asked, never named: the authenticate stage runs whichever one the flow is in.
import type { Display, Flow, FlowEvent, MfaMethod, Notice, Stage } from './machine.ts';
import type { FlowDeps } from './engine.ts';
import { field, type FormFields, type MethodOutcome, type RequestInfo, type SignInMethod } from './methods/types.ts';

export interface StageResult {
  events: FlowEvent[];
  display?: Display;
  /** A redirect method's state: the engine remembers which flow sent it. */
  upstreamState?: string;
}

export interface StageHandler {
  /** The form actions (paths under /interaction/:uid/) this stage takes, besides `abort`. */
  actions?(flow: Flow, deps: FlowDeps): string[];
  submit?(flow: Flow, action: string, fields: FormFields, deps: FlowDeps, request: RequestInfo): Promise<StageResult>;
  auto?(flow: Flow, deps: FlowDeps, request: RequestInfo): Promise<StageResult>;
}

const mfaMethodNames = new Set<string>(['totp', 'webauthn', 'email', 'sms', 'backup_code']);
// Whether an account exists is never revealed here: every plausible address moves on.
const emailShape = /^[^\s@\p{Cc}]{1,64}@[^\s@\p{Cc}]{1,253}$/u;

const noticed = (...notices: Notice[]): Display => ({ notices });
const throttledNotice = (retryAfterSeconds: number): Notice => ({
  key: 'error.throttled', kind: 'throttled', params: { minutes: String(Math.max(1, Math.ceil(retryAfterSeconds / 60))), seconds: String(retryAfterSeconds) },
});

/** A failed attempt, and the end of the flow once the attempts are used up. */
function rejection(flow: Flow, deps: FlowDeps, rejected: FlowEvent): FlowEvent[] {
  return flow.failedAttempts + 1 >= deps.maxAttempts ? [rejected, { type: 'attempts_exhausted' }] : [rejected];
}

/** The events and screen output of a method's outcome, for a flow at `authenticate` in `method`. */
export async function outcomeAt(flow: Flow, method: SignInMethod, outcome: MethodOutcome, deps: FlowDeps, request: RequestInfo): Promise<StageResult> {
  switch (outcome.kind) {
    case 'verified':
      return { events: [{ type: 'authenticated', name: outcome.event, method: method.id, accountId: outcome.accountId, amr: outcome.amr, ...(outcome.email ? { email: outcome.email } : {}), ...(outcome.passwordExpired ? { passwordExpired: true } : {}) }] };
    case 'rejected': {
      const events = rejection(flow, deps, { type: 'authentication_rejected', name: outcome.event, method: method.id, reason: outcome.reason });
      // A method without a screen of its own (an upstream provider) sends the user back to the start.
      if (!method.screen && events.length === 1) events.push({ type: 'restarted' });
      return { events, display: { ...outcome.display, ...noticed(outcome.notice) } };
    }
    case 'pending':
      return { events: [{ type: 'authentication_pending', name: outcome.event, method: method.id, ...(outcome.reason ? { reason: outcome.reason } : {}) }], display: { ...outcome.display, ...(outcome.notice ? noticed(outcome.notice) : {}) } };
    case 'throttled':
      return { events: [{ type: 'throttled', retryAfterSeconds: outcome.retryAfterSeconds }], display: noticed(throttledNotice(outcome.retryAfterSeconds)) };
    case 'restart':
      return { events: [{ type: 'restarted' }] };
    case 'switch': {
      const next = deps.methods.get(outcome.method);
      if (!next) return { events: [] };
      const switched: FlowEvent = { type: 'method_switched', method: next.id, ...(outcome.email ? { email: outcome.email } : {}), ...(outcome.handOver ? { handedOverBy: method.id } : {}) };
      const notice = outcome.notice ? noticed(outcome.notice) : undefined;
      if (!next.enter) return { events: [switched], ...(notice ? { display: notice } : {}) };
      const at: Flow = { ...flow, method: next.id, ...(outcome.email ? { email: outcome.email } : {}) };
      const entered = await outcomeAt(at, next, await next.enter(at, request), deps, request);
      return { ...entered, events: [switched, ...entered.events], ...(notice ? { display: { ...entered.display, notices: [...(notice.notices ?? []), ...(entered.display?.notices ?? [])] } } : {}) };
    }
    case 'redirect':
      return { events: [{ type: 'authentication_pending', name: outcome.event, method: method.id }], display: { redirect: outcome.url }, upstreamState: outcome.state };
    case 'none':
      return { events: [], display: { ...outcome.display, ...(outcome.notice ? noticed(outcome.notice) : {}) } };
  }
}

/** A method entered from the identify screen: the events to get there, then its own. */
async function enterMethod(flow: Flow, method: SignInMethod, first: FlowEvent, deps: FlowDeps, request: RequestInfo, run: (at: Flow) => Promise<MethodOutcome | undefined>): Promise<StageResult> {
  const at: Flow = { ...flow, stage: 'authenticate', method: method.id, ...(first.type === 'identified' ? { email: first.email } : {}) };
  const outcome = await run(at);
  if (!outcome) return { events: [first] };
  const result = await outcomeAt(at, method, outcome, deps, request);
  return { ...result, events: [first, ...result.events] };
}

export const stageHandlers: Record<Stage, StageHandler> = {
  identify: {
    actions: () => ['identify'],
    async submit(flow, _action, fields, deps, request) {
      // A button of a method that identifies the account itself (a passkey, an upstream provider).
      const chosen = deps.methods.get(field(fields, 'method', 64));
      if (chosen && !chosen.identifierFirst) {
        const outcome = await chosen.submit({ ...flow, method: chosen.id }, fields, request);
        // A failed button leaves the user here, free to type an address instead.
        if (outcome.kind === 'rejected') return { events: [], display: noticed(outcome.notice) };
        if (outcome.kind === 'none') return { events: [], display: { ...outcome.display, ...(outcome.notice ? noticed(outcome.notice) : {}) } };
        return enterMethod(flow, chosen, { type: 'method_chosen', method: chosen.id }, deps, request, async () => outcome);
      }
      const email = field(fields, 'email', 320).trim();
      if (!emailShape.test(email)) return { events: [], display: noticed({ key: 'error.invalidEmail', kind: 'invalid' }) };
      const method = await deps.methods.forIdentifier(email, request);
      return enterMethod(flow, method, { type: 'identified', email, method: method.id }, deps, request, async (at) => method.enter?.(at, request));
    },
  },
  authenticate: {
    actions: (flow, deps) => ['restart', ...(deps.methods.get(flow.method)?.screen ? [deps.methods.get(flow.method)!.screen!.path] : [])],
    async submit(flow, action, fields, deps, request) {
      if (action === 'restart' || field(fields, 'restart')) return { events: [{ type: 'restarted' }] };
      const method = deps.methods.get(flow.method);
      if (!method) return { events: [{ type: 'restarted' }] };
      return outcomeAt(flow, method, await method.submit(flow, fields, request), deps, request);
    },
  },
  assess: {
    async auto(flow, deps, request) {
      const risk = await deps.risk.assess({ accountId: flow.accountId!, email: flow.email, method: flow.method, amr: flow.amr, ip: request.ip, userAgent: request.userAgent, clientId: request.clientId });
      const signals = risk.reasons.length ? { risk: risk.reasons } : {};
      if (risk.verdict === 'deny') return { events: [{ type: 'risk_denied', reason: risk.reasons.join(',') || 'denied', ...signals }] };
      const decision = await deps.secondFactor.decide(flow, request, risk);
      if (decision.action === 'skip') return { events: [{ type: 'risk_allowed', reason: decision.reason, ...signals }] };
      if (decision.action === 'deny') return { events: [{ type: 'risk_denied', reason: decision.reason, ...signals }] };
      if (decision.action === 'enrol') return { events: [{ type: 'mfa_enrolment_required', methods: decision.methods, reason: decision.reason, ...signals }] };
      return { events: [{ type: 'risk_step_up', methods: decision.methods, reason: decision.reason, ...signals }] };
    },
  },
  mfa: {
    actions: () => ['mfa'],
    async submit(flow, _action, fields, deps, request) {
      const method = field(fields, 'method', 20) as MfaMethod;
      if (!mfaMethodNames.has(method)) return { events: [], display: noticed({ key: 'error.mfaFailed', kind: 'invalid' }) };
      if (!flow.mfaMethods?.includes(method)) return { events: [] };
      if (field(fields, 'send')) {
        const sent = await deps.mfa.sendCode(flow, method);
        if (sent === 'unavailable') return { events: [] };
        return { events: [{ type: 'mfa_code_sent', method, ...(sent === 'rate_limited' ? { rateLimited: true } : {}) }], display: noticed({ key: sent === 'rate_limited' ? 'mfa.codeRateLimited' : 'mfa.codeSent', kind: 'info' }) };
      }
      // Wrong second-factor codes are throttled per network origin like wrong passwords.
      const ip = request.ip ?? '';
      const verdict = await deps.guard.check(ip, flow.email ?? '');
      if (!verdict.allowed) return { events: [{ type: 'throttled', retryAfterSeconds: verdict.retryAfterSeconds }], display: noticed(throttledNotice(verdict.retryAfterSeconds)) };
      const result = await deps.mfa.verify(flow, { method, code: field(fields, 'code', 64), response: field(fields, 'response', 16_384) });
      if (!result.ok) {
        await deps.guard.failed(ip, flow.email ?? '');
        // A locked second factor says so: more tries cannot help (and the password was right already).
        const notices: Notice[] = [{ key: result.reason === 'expired' || result.reason === 'exhausted' ? 'error.codeExpired' : 'error.mfaFailed', kind: 'rejected' }];
        if (result.reason === 'locked') notices.push({ key: 'error.mfaLocked', kind: 'info' });
        return { events: rejection(flow, deps, { type: 'mfa_rejected', method, reason: result.reason }), display: noticed(...notices) };
      }
      const deviceToken = field(fields, 'remember') === '1' ? await deps.mfa.rememberDevice(flow.accountId!, request.userAgent) : undefined;
      return { events: [{ type: 'mfa_verified', method, amr: result.amr }], ...(deviceToken ? { display: { deviceToken } } : {}) };
    },
  },
  mfa_enrol: {
    actions: () => ['mfa-enrol'],
    async submit(flow, _action, fields, deps) {
      const method = field(fields, 'method', 20) as MfaMethod;
      if (!mfaMethodNames.has(method)) return { events: [], display: noticed({ key: 'error.mfaFailed', kind: 'invalid' }) };
      if (!flow.mfaMethods?.includes(method)) return { events: [] };
      if (field(fields, 'start')) {
        const started = await deps.mfa.startEnrolment(flow, method, field(fields, 'destination', 32));
        if (!started.ok) return { events: [{ type: 'mfa_enrolment_rejected', method, reason: started.reason }], display: { problems: [started.reason] } };
        return { events: [{ type: 'mfa_enrolment_started', method, ...(started.factorId ? { factorId: started.factorId } : {}) }], display: started.display };
      }
      if (flow.enrolment?.method !== method) return { events: [] };
      const input = { method, code: field(fields, 'code', 64), response: field(fields, 'response', 16_384), name: field(fields, 'name', 64) };
      const result = await deps.mfa.confirmEnrolment(flow, input);
      if (!result.ok) return { events: [{ type: 'mfa_enrolment_rejected', method, reason: result.reason }], display: { ...result.display, problems: [result.reason] } };
      // Backup codes come with the first method and are shown once, on the next screen.
      const backupCodes = await deps.mfa.backupCodes(flow.accountId!);
      return { events: [{ type: 'mfa_enrolled', method, amr: result.amr }], display: { backupCodes } };
    },
  },
  backup_codes: {
    actions: () => ['backup-codes'],
    async submit() {
      return { events: [{ type: 'backup_codes_acknowledged' }] };
    },
  },
  change_password: {
    actions: () => ['change-password'],
    async submit(flow, _action, fields, deps) {
      const password = field(fields, 'password');
      if (password !== field(fields, 'confirm')) return { events: [{ type: 'password_change_rejected', problems: ['the two passwords do not match'] }], display: { problems: ['the two passwords do not match'] } };
      const result = await deps.changePassword(flow.accountId!, password);
      return result.ok ? { events: [{ type: 'password_changed' }] } : { events: [{ type: 'password_change_rejected', problems: result.problems }], display: { problems: result.problems } };
    },
  },
  done: {},
  failed: {},
};
