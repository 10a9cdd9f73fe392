// The stages of the login pipeline. A stage with `submit` takes the user's input from its screen;
// a stage with `auto` decides on its own. Each returns the events it wants applied; only the
// engine applies them. New first factors and MFA methods add entries here.
import type { Flow, FlowEvent, Stage } from './machine.ts';
import type { FlowDeps, RequestInfo } from './engine.ts';

export type StageInput =
  | { stage: 'identify'; email: string }
  | { stage: 'password'; password: string }
  | { stage: 'password'; restart: true }
  | { stage: 'change_password'; password: string; confirm: string }
  | { stage: 'abort' };

export interface StageHandler {
  submit?(flow: Flow, input: StageInput, deps: FlowDeps, request: RequestInfo): Promise<FlowEvent[]>;
  auto?(flow: Flow, deps: FlowDeps, request: RequestInfo): Promise<FlowEvent[]>;
}

const abortable = (input: StageInput): FlowEvent[] | undefined => (input.stage === 'abort' ? [{ type: 'aborted' }] : undefined);

export const stageHandlers: Record<Stage, StageHandler> = {
  identify: {
    async submit(_flow, input) {
      if (input.stage !== 'identify') return abortable(input) ?? [];
      // Every syntactically plausible identifier moves on: whether an account exists is never revealed here.
      return [{ type: 'identified', email: input.email }];
    },
  },
  password: {
    async submit(flow, input, deps) {
      if (input.stage !== 'password') return abortable(input) ?? [];
      if ('restart' in input) return [{ type: 'restarted' }];
      const result = await deps.checkPassword(flow.email ?? '', input.password);
      if (result.ok) return [result.passwordExpired ? { type: 'password_expired', accountId: result.accountId } : { type: 'password_verified', accountId: result.accountId }];
      if (result.reason === 'unverified' && result.accountId) return [{ type: 'verification_required', accountId: result.accountId }];
      // The reason (wrong password, unknown account, locked…) goes to the audit log only.
      const rejected: FlowEvent = { type: 'password_rejected', reason: result.reason };
      return flow.failedAttempts + 1 >= deps.maxAttempts ? [rejected, { type: 'attempts_exhausted' }] : [rejected];
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
      if (risk.verdict === 'step_up' || (await deps.mfaRequired(flow, request))) return [{ type: 'risk_step_up' }];
      return [{ type: 'risk_allowed' }];
    },
  },
  // No second factor is offered yet (see the MFA issue): a flow sent here can only be aborted.
  mfa: {
    async submit(_flow, input) {
      return abortable(input) ?? [];
    },
  },
  done: {},
  failed: {},
};
