// The stages of the login pipeline. A stage with `submit` takes the user's input from its screen;
// a stage with `auto` decides on its own. Each returns the events it wants applied (and may leave
// one-time output for the next screen in `display`); only the engine applies them.
import type { Flow, FlowEvent, MfaMethod, Stage } from './machine.ts';
import type { FlowDeps, RequestInfo } from './engine.ts';

export type StageInput =
  | { stage: 'identify'; email: string }
  | { stage: 'identify'; passkey: string }
  | { stage: 'password'; password: string }
  | { stage: 'password'; restart: true }
  | { stage: 'password'; sendCode: true }
  | { stage: 'signin_code'; code: string }
  | { stage: 'signin_code'; resend: true }
  | { stage: 'signin_code'; restart: true }
  | { stage: 'change_password'; password: string; confirm: string }
  | { stage: 'mfa'; method: MfaMethod; code?: string; response?: string; remember?: boolean }
  | { stage: 'mfa'; method: MfaMethod; send: true }
  | { stage: 'mfa_enrol'; method: MfaMethod; start: true; destination?: string }
  | { stage: 'mfa_enrol'; method: MfaMethod; code?: string; response?: string; name?: string }
  | { stage: 'backup_codes'; acknowledged: true }
  | { stage: 'abort' };

export interface StageResult {
  events: FlowEvent[];
  display?: Record<string, unknown>;
}

export interface StageHandler {
  submit?(flow: Flow, input: StageInput, deps: FlowDeps, request: RequestInfo): Promise<FlowEvent[] | StageResult>;
  auto?(flow: Flow, deps: FlowDeps, request: RequestInfo): Promise<FlowEvent[] | StageResult>;
}

const abortable = (input: StageInput): FlowEvent[] | undefined => (input.stage === 'abort' ? [{ type: 'aborted' }] : undefined);

/** A failed attempt, and the end of the flow once the attempts are used up. */
function rejection(flow: Flow, deps: FlowDeps, rejected: FlowEvent): FlowEvent[] {
  return flow.failedAttempts + 1 >= deps.maxAttempts ? [rejected, { type: 'attempts_exhausted' }] : [rejected];
}

export const stageHandlers: Record<Stage, StageHandler> = {
  identify: {
    async submit(flow, input, deps) {
      if (input.stage !== 'identify') return abortable(input) ?? [];
      if ('passkey' in input) {
        const result = await deps.verifyPasskey(flow.uid, input.passkey);
        // A failed passkey leaves the user on this screen, free to type an address instead.
        return result.ok ? [{ type: 'passkey_verified', accountId: result.accountId, email: result.email, amr: result.amr }] : { events: [], display: { passkeyFailed: true } };
      }
      // Every syntactically plausible identifier moves on: whether an account exists is never revealed here.
      return [{ type: 'identified', email: input.email }];
    },
  },
  password: {
    async submit(flow, input, deps) {
      if (input.stage !== 'password') return abortable(input) ?? [];
      if ('restart' in input) return [{ type: 'restarted' }];
      if ('sendCode' in input) {
        const sent = await deps.sendSigninCode(flow.uid, flow.email ?? '');
        if (sent === 'disabled') return [];
        return [{ type: 'signin_code_sent', ...(sent === 'rate_limited' ? { rateLimited: true } : {}) }];
      }
      const result = await deps.checkPassword(flow.email ?? '', input.password);
      if (result.ok) return [result.passwordExpired ? { type: 'password_expired', accountId: result.accountId } : { type: 'password_verified', accountId: result.accountId }];
      if (result.reason === 'unverified' && result.accountId) return [{ type: 'verification_required', accountId: result.accountId }];
      // The reason (wrong password, unknown account, locked…) goes to the audit log only.
      return rejection(flow, deps, { type: 'password_rejected', reason: result.reason });
    },
  },
  signin_code: {
    async submit(flow, input, deps) {
      if (input.stage !== 'signin_code') return abortable(input) ?? [];
      if ('restart' in input) return [{ type: 'restarted' }];
      if ('resend' in input) {
        const sent = await deps.sendSigninCode(flow.uid, flow.email ?? '');
        if (sent === 'disabled') return [];
        return [{ type: 'signin_code_sent', ...(sent === 'rate_limited' ? { rateLimited: true } : {}) }];
      }
      const result = await deps.checkSigninCode(flow.uid, flow.email ?? '', input.code);
      if (result.ok) return [{ type: 'signin_code_verified', accountId: result.accountId }];
      return rejection(flow, deps, { type: 'signin_code_rejected', reason: result.reason });
    },
  },
  change_password: {
    async submit(flow, input, deps) {
      if (input.stage !== 'change_password') return abortable(input) ?? [];
      if (input.password !== input.confirm) return [{ type: 'password_change_rejected', problems: ['the two passwords do not match'] }];
      const result = await deps.changePassword(flow.accountId!, input.password);
      return result.ok ? [{ type: 'password_changed' }] : [{ type: 'password_change_rejected', problems: result.problems }];
    },
  },
  risk: {
    async auto(flow, deps, request) {
      const risk = await deps.assessRisk(flow, request);
      if (risk.verdict === 'deny') return [{ type: 'risk_denied', reason: risk.reasons.join(',') || 'denied' }];
      const decision = await deps.mfaDecision(flow, request, risk.verdict === 'step_up');
      if (decision.action === 'skip') return [{ type: 'risk_allowed', reason: decision.reason }];
      if (decision.action === 'deny') return [{ type: 'risk_denied', reason: decision.reason }];
      if (decision.action === 'enrol') return [{ type: 'mfa_enrolment_required', methods: decision.methods, reason: decision.reason }];
      return [{ type: 'risk_step_up', methods: decision.methods, reason: decision.reason }];
    },
  },
  mfa: {
    async submit(flow, input, deps, request) {
      if (input.stage !== 'mfa') return abortable(input) ?? [];
      if (!flow.mfaMethods?.includes(input.method)) return [];
      if ('send' in input) {
        const sent = await deps.mfa.sendCode(flow, input.method);
        return sent === 'unavailable' ? [] : [{ type: 'mfa_code_sent', method: input.method, ...(sent === 'rate_limited' ? { rateLimited: true } : {}) }];
      }
      const result = await deps.mfa.verify(flow, input);
      if (!result.ok) return rejection(flow, deps, { type: 'mfa_rejected', method: input.method, reason: result.reason });
      const deviceToken = input.remember ? await deps.mfa.rememberDevice(flow.accountId!, request.userAgent) : undefined;
      return { events: [{ type: 'mfa_verified', method: input.method, amr: result.amr }], ...(deviceToken ? { display: { deviceToken } } : {}) };
    },
  },
  mfa_enrol: {
    async submit(flow, input, deps) {
      if (input.stage !== 'mfa_enrol') return abortable(input) ?? [];
      if (!flow.mfaMethods?.includes(input.method)) return [];
      if ('start' in input) {
        const started = await deps.mfa.startEnrolment(flow, input.method, input.destination);
        if (!started.ok) return [{ type: 'mfa_enrolment_rejected', method: input.method, reason: started.reason }];
        return { events: [{ type: 'mfa_enrolment_started', method: input.method, ...(started.factorId ? { factorId: started.factorId } : {}) }], display: started.display };
      }
      if (flow.enrolment?.method !== input.method) return [];
      const result = await deps.mfa.confirmEnrolment(flow, input);
      if (!result.ok) return { events: [{ type: 'mfa_enrolment_rejected', method: input.method, reason: result.reason }], ...(result.display ? { display: result.display } : {}) };
      // Backup codes come with the first method and are shown once, on the next screen.
      const backupCodes = await deps.mfa.backupCodes(flow.accountId!);
      return { events: [{ type: 'mfa_enrolled', method: input.method, amr: result.amr }], display: { backupCodes } };
    },
  },
  backup_codes: {
    async submit(_flow, input) {
      return input.stage === 'backup_codes' ? [{ type: 'backup_codes_acknowledged' }] : [];
    },
  },
  done: {},
  failed: {},
};
