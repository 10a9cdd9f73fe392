// Sign-in by a code mailed to the address (passwordless). Entering the method sends the code;
// the screen answers alike whether or not the address has an account that may get one, while
// the audit log records what really happened.
import type { MethodOutcome, SignInMethod } from './types.ts';
import { field } from './types.ts';

export type SigninCodeSent = 'sent' | 'rate_limited' | 'unknown_account' | 'unverified' | 'disabled';

export interface EmailCodeMethodDeps {
  send(flowUid: string, email: string): Promise<SigninCodeSent>;
  check(flowUid: string, email: string, code: string): Promise<{ ok: true; accountId: string } | { ok: false; reason: string }>;
}

export const emailCodeMethodId = 'signin_code';

export function emailCodeMethod(deps: EmailCodeMethodDeps): SignInMethod {
  async function send(flowUid: string, email: string): Promise<MethodOutcome> {
    const sent = await deps.send(flowUid, email);
    if (sent === 'disabled') return { kind: 'none' };
    if (sent === 'rate_limited') return { kind: 'pending', event: 'signin_code_not_sent', reason: sent, notice: { key: 'mfa.codeRateLimited', kind: 'info' } };
    // No account, or one that may not get codes: the same screen, a true audit record.
    const notice = { key: 'mfa.codeSent', kind: 'info' as const };
    return sent === 'sent' ? { kind: 'pending', event: 'signin_code_sent', notice } : { kind: 'pending', event: 'signin_code_not_sent', reason: sent, notice };
  }
  return {
    id: emailCodeMethodId,
    identifierFirst: true,
    screen: { path: 'signin-code', template: 'signin-code' },
    enter: (flow) => send(flow.uid, flow.email ?? ''),
    async submit(flow, fields): Promise<MethodOutcome> {
      if (field(fields, 'resend')) return send(flow.uid, flow.email ?? '');
      const result = await deps.check(flow.uid, flow.email ?? '', field(fields, 'code', 32));
      if (result.ok) return { kind: 'verified', event: 'signin_code_verified', accountId: result.accountId, amr: ['otp'] };
      // A code used up by wrong tries (or expired) cannot work any more: the user needs a new one.
      const burnt = result.reason === 'exhausted' || result.reason === 'expired';
      return { kind: 'rejected', event: 'signin_code_rejected', reason: result.reason, notice: { key: burnt ? 'error.codeExpired' : 'error.codeInvalid', kind: 'rejected' } };
    },
  };
}
