// The second-factor seams of the login flow: the MFA policy's decision after the risk verdict,
// and the factors themselves (checks, codes, enrolment). Implemented over the MFA service by the
// app's wiring (src/app/sign-in.ts); tests pass their own.
import type { RiskVerdict } from '../risk/engine.ts';
import type { Flow, MfaMethod } from './machine.ts';
import type { RequestInfo } from './methods/types.ts';

export type MfaDecision = { action: 'skip'; reason: string } | { action: 'deny'; reason: string } | { action: 'challenge' | 'enrol'; methods: MfaMethod[]; reason: string };

export interface SecondFactorPolicy {
  /** Skip, challenge with some methods, make the user enrol one, or deny — given the risk verdict. */
  decide(flow: Flow, request: RequestInfo, risk: RiskVerdict): Promise<MfaDecision>;
}

export interface MfaSteps {
  verify(flow: Flow, input: { method: MfaMethod; code?: string; response?: string }): Promise<{ ok: true; amr: string[] } | { ok: false; reason: string }>;
  sendCode(flow: Flow, method: MfaMethod): Promise<'sent' | 'rate_limited' | 'unavailable'>;
  startEnrolment(flow: Flow, method: MfaMethod, destination?: string): Promise<{ ok: true; factorId?: string; display: Record<string, unknown> } | { ok: false; reason: string }>;
  confirmEnrolment(flow: Flow, input: { method: MfaMethod; code?: string; response?: string; name?: string }): Promise<{ ok: true; amr: string[] } | { ok: false; reason: string; display?: Record<string, unknown> }>;
  backupCodes(accountId: string): Promise<string[]>;
  rememberDevice(accountId: string, userAgent: string | undefined): Promise<string | undefined>;
}
