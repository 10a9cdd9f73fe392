// Sign-in against a company directory (LDAP, Active Directory): an address whose domain is routed
// to a directory gets the directory's password screen; the password is checked there, never
// kept here. An existing account of ours with that address which the directory may not claim
// hands over to our password, as an upstream does.
import type { SignInGuard } from './password.ts';
import type { MethodOutcome, SignInMethod } from './types.ts';
import { field } from './types.ts';

export const directoryMethodId = 'ldap';

export type DirectoryCheck =
  | { kind: 'signed_in'; accountId: string; email: string }
  | { kind: 'proof_required'; email: string; connectionName: string }
  | { kind: 'rejected'; reason: string }
  | { kind: 'throttled'; retryAfterSeconds: number }
  | { kind: 'refused'; reason: string; connectionName: string }
  | { kind: 'unavailable'; connectionName: string };

export interface DirectoryMethodDeps {
  /** The directory's name for an address routed to one. */
  routed(email: string, clientId: string | undefined): Promise<string | undefined>;
  nameFor(email: string): Promise<string | undefined>;
  verify(flowUid: string, email: string, password: string, request: { clientId?: string | undefined; ip?: string | undefined; userAgent?: string | undefined; requestId?: string | undefined }): Promise<DirectoryCheck>;
  completeLink(flowUid: string, accountId: string | undefined, request: { ip?: string | undefined }): Promise<void>;
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
      return { directory: (flow.email && (await deps.nameFor(flow.email))) || '' };
    },
    async submit(flow, fields, request): Promise<MethodOutcome> {
      const ip = request.ip ?? '';
      const email = flow.email ?? '';
      const verdict = await deps.guard.check(ip, email);
      if (!verdict.allowed) return { kind: 'throttled', retryAfterSeconds: verdict.retryAfterSeconds };
      const result = await deps.verify(flow.uid, email, field(fields, 'password'), request);
      switch (result.kind) {
        case 'signed_in':
          return { kind: 'verified', event: 'directory_verified', accountId: result.accountId, email: result.email, amr: ['pwd'] };
        case 'rejected':
          await deps.guard.failed(ip, email);
          return { kind: 'rejected', event: 'directory_rejected', reason: result.reason, notice: { key: 'error.invalidCredentials', kind: 'rejected' } };
        case 'throttled':
          return { kind: 'throttled', retryAfterSeconds: result.retryAfterSeconds };
        case 'refused':
          return { kind: 'pending', event: 'directory_refused', reason: result.reason, notice: { key: refusalKeys[result.reason] ?? 'error.upstreamRefused', kind: 'rejected', params: { name: result.connectionName } } };
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
