// Sign-in against a company directory (LDAP, Active Directory): an address whose domain is routed
// to a directory gets the directory's password screen; the password is checked there, never
// kept here. An existing account of ours with that address which the directory may not claim
// hands over to our password, as an upstream does.
import type { DirectoryResult } from '../../federation/directory-sign-in.ts';
import type { SignInGuard } from './password.ts';
import type { MethodOutcome, SignInMethod } from './types.ts';
import { field } from './types.ts';

export const directoryMethodId = 'ldap';

export interface DirectoryMethodDeps {
  /** The directory's name for an address routed to one. */
  routed(email: string, clientId: string | undefined): Promise<string | undefined>;
  nameFor(email: string): Promise<string | undefined>;
  verify(flowUid: string, email: string, password: string, request: { clientId?: string | undefined; ip?: string | undefined; userAgent?: string | undefined; requestId?: string | undefined }): Promise<DirectoryResult>;
  completeLink(flowUid: string, accountId: string | undefined, request: { ip?: string | undefined }): Promise<void>;
  /** Active Directory: replace an expired or must-change password (the current one typed again). */
  changePassword(flowUid: string, email: string, current: string, next: string, request: { clientId?: string | undefined; ip?: string | undefined; userAgent?: string | undefined; requestId?: string | undefined }): Promise<DirectoryResult | { kind: 'refused_by_policy'; connectionName: string }>;
  proofMethod: string;
  /** Failed sign-ins per network origin, as for our own passwords (password spraying across a directory). */
  guard: SignInGuard;
}

const refusalKeys: Record<string, string> = {
  password_expired: 'error.directoryPasswordExpired',
  must_change_password: 'error.directoryPasswordExpired',
  account_disabled: 'error.accountDisabled',
  account_expired: 'error.accountDisabled',
  account_locked: 'error.directoryLocked',
  not_allowed_now: 'error.directoryNotNow',
  no_account: 'error.upstreamNoAccount',
  no_email: 'error.upstreamNoAccount',
  address_taken: 'error.upstreamAddressTaken',
};

export function directoryMethod(deps: DirectoryMethodDeps): SignInMethod {
  return {
    id: directoryMethodId,
    identifierFirst: true,
    screen: { path: 'directory-password', template: 'directory-password' },
    async routes(identifier, request) {
      return (await deps.routed(identifier, request.clientId)) !== undefined;
    },
    async view(flow) {
      // After an expired or must-change answer, the screen asks for a new password.
      const change = flow.display?.directoryChange === true;
      return { directory: (flow.email && (await deps.nameFor(flow.email))) || '', change, signIn: !change };
    },
    async submit(flow, fields, request): Promise<MethodOutcome> {
      const ip = request.ip ?? '';
      const email = flow.email ?? '';
      const verdict = await deps.guard.check(ip, email);
      if (!verdict.allowed) return { kind: 'throttled', retryAfterSeconds: verdict.retryAfterSeconds };
      const changing = field(fields, 'new_password') !== '';
      if (changing && field(fields, 'new_password') !== field(fields, 'confirm')) {
        return { kind: 'none', notice: { key: 'error.passwordMismatch', kind: 'invalid' }, display: { directoryChange: true } };
      }
      const result = changing
        ? await deps.changePassword(flow.uid, email, field(fields, 'password'), field(fields, 'new_password'), request)
        : await deps.verify(flow.uid, email, field(fields, 'password'), request);
      if (result.kind === 'refused_by_policy') {
        return { kind: 'pending', event: 'directory_refused', reason: 'new_password_refused', notice: { key: 'error.directoryNewPasswordRefused', kind: 'invalid', params: { name: result.connectionName } }, display: { directoryChange: true } };
      }
      if (changing && result.kind === 'signed_in') return { kind: 'verified', event: 'directory_password_changed', accountId: result.accountId, email: result.email, amr: ['pwd'] };
      if (changing && result.kind === 'rejected') {
        await deps.guard.failed(ip, email);
        return { kind: 'rejected', event: 'directory_rejected', reason: result.reason, notice: { key: 'error.currentPassword', kind: 'rejected' }, display: { directoryChange: true } };
      }
      switch (result.kind) {
        case 'signed_in':
          return { kind: 'verified', event: 'directory_verified', accountId: result.accountId, email: result.email, amr: ['pwd'] };
        case 'rejected':
          await deps.guard.failed(ip, email);
          return { kind: 'rejected', event: 'directory_rejected', reason: result.reason, notice: { key: 'error.invalidCredentials', kind: 'rejected' } };
        case 'throttled':
          return { kind: 'throttled', retryAfterSeconds: result.retryAfterSeconds };
        case 'refused': {
          // AD said the password was right but has expired or must change: a new one, here and now.
          const change = result.reason === 'password_expired' || result.reason === 'must_change_password';
          return {
            kind: 'pending', event: 'directory_refused', reason: result.reason,
            notice: { key: change ? 'directoryPassword.mustChange' : refusalKeys[result.reason] ?? 'error.upstreamRefused', kind: change ? 'info' : 'rejected', params: { name: result.connectionName } },
            ...(change ? { display: { directoryChange: true } } : {}),
          };
        }
        case 'unavailable':
          return { kind: 'none', notice: { key: 'error.upstreamUnavailable', kind: 'rejected', params: { name: result.connectionName } } };
        case 'proof_required':
          return { kind: 'switch', method: deps.proofMethod, email: result.email, handOver: true, notice: { key: 'upstream.linkRequired', kind: 'info', params: { name: result.connectionName } } };
      }
    },
    async finished(flow, request) {
      if (flow.method === directoryMethodId && flow.email) await deps.guard.succeeded(request.ip ?? '', flow.email);
      await deps.completeLink(flow.uid, flow.accountId, request);
    },
  };
}
