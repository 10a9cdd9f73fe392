// Passwordless sign-in with a discoverable passkey: a button on the identify screen; the
// authenticator names the account. A failed attempt leaves the user free to type an address.
import type { MethodOutcome, SignInMethod } from './types.ts';
import { field } from './types.ts';

export interface PasskeyMethodDeps {
  /** WebAuthn authentication options for this flow (no account: the passkey is discoverable). */
  options(flowUid: string): Promise<unknown>;
  verify(flowUid: string, response: string): Promise<{ ok: true; accountId: string; email: string; amr: string[] } | { ok: false }>;
}

export function passkeyMethod(deps: PasskeyMethodDeps): SignInMethod {
  return {
    id: 'passkey',
    identifierFirst: false,
    async offer(flow) {
      return { template: 'offer-passkey', vars: { options: JSON.stringify(await deps.options(flow.uid)) } };
    },
    async submit(flow, fields): Promise<MethodOutcome> {
      const result = await deps.verify(flow.uid, field(fields, 'response', 16_384));
      if (result.ok) return { kind: 'verified', event: 'passkey_verified', accountId: result.accountId, email: result.email, amr: result.amr };
      return { kind: 'rejected', event: 'passkey_rejected', reason: 'not_verified', notice: { key: 'error.passkeyFailed', kind: 'info' } };
    },
  };
}
