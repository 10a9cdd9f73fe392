// Sign-in by password: the typed address, then the account's password. Guesses are throttled per
// network origin (the sign-in guard) on top of the account's own lockout; a right password for
// an address not verified yet signs nobody in (a fresh link goes out, see the app's wiring).
import type { MethodOutcome, RequestInfo, SignInMethod } from './types.ts';
import { field } from './types.ts';

export type PasswordCheck = { ok: true; accountId: string; passwordExpired?: boolean } | { ok: false; reason: string; accountId?: string };

/** Failed sign-ins counted per IP and per (IP, account): checked before a guess, told after. */
export interface SignInGuard {
  check(ip: string, email: string): Promise<{ allowed: boolean; retryAfterSeconds: number }>;
  failed(ip: string, email: string): Promise<void>;
  succeeded(ip: string, email: string): Promise<void>;
}

export interface PasswordMethodDeps {
  checkPassword(email: string, password: string): Promise<PasswordCheck>;
  guard: SignInGuard;
  /** The method the "email me a code" button switches to, when that method is on. */
  codeMethod?: string | undefined;
}

export function passwordMethod(deps: PasswordMethodDeps): SignInMethod {
  const ip = (request: RequestInfo) => request.ip ?? '';
  return {
    id: 'password',
    identifierFirst: true,
    screen: { path: 'password', template: 'password' },
    view: () => ({ emailCode: Boolean(deps.codeMethod) }),
    async submit(flow, fields, request): Promise<MethodOutcome> {
      if (field(fields, 'send_code')) return deps.codeMethod ? { kind: 'switch', method: deps.codeMethod } : { kind: 'none' };
      const email = flow.email ?? '';
      const verdict = await deps.guard.check(ip(request), email);
      if (!verdict.allowed) return { kind: 'throttled', retryAfterSeconds: verdict.retryAfterSeconds };
      const result = await deps.checkPassword(email, field(fields, 'password'));
      if (result.ok) {
        return { kind: 'verified', event: result.passwordExpired ? 'password_expired' : 'password_verified', accountId: result.accountId, amr: ['pwd'], ...(result.passwordExpired ? { passwordExpired: true } : {}) };
      }
      // The right password, the address not verified yet: no sign-in, and no failed attempt.
      if (result.reason === 'unverified' && result.accountId) return { kind: 'pending', event: 'verification_required', notice: { key: 'error.verifyEmail', kind: 'info' } };
      await deps.guard.failed(ip(request), email);
      // The reason (wrong password, unknown account, locked…) goes to the audit log only.
      return { kind: 'rejected', event: 'password_rejected', reason: result.reason, notice: { key: 'error.invalidCredentials', kind: 'rejected' } };
    },
    async finished(flow, request) {
      if (flow.email) await deps.guard.succeeded(ip(request), flow.email);
    },
  };
}
