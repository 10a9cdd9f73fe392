// Sign-in through an upstream identity provider (the connections of src/federation): a button
// per connection offered to the client, or an address whose domain is routed to one (home-realm
// discovery). The browser goes upstream; its answer comes back to /interaction/callback/oidc/<id>.
// An address that belongs to an existing account which the upstream may not claim hands over to
// the password: the user proves that account, and the identity is linked once the sign-in is through.
import type { FederatedResult } from '../../federation/sign-in.ts';
import type { MethodOutcome, RequestInfo, SignInMethod } from './types.ts';
import { field } from './types.ts';

export const upstreamMethodId = 'oidc';

export interface UpstreamButton {
  id: string;
  name: string;
  logoUrl?: string | undefined;
}

export interface UpstreamMethodDeps {
  buttons(clientId: string | undefined): Promise<UpstreamButton[]>;
  routed(email: string, clientId: string | undefined): Promise<string | undefined>;
  start(flowUid: string, connectionId: string, request: RequestInfo & { loginHint?: string | undefined }): Promise<{ url: string; state: string } | { refused: string; connectionName?: string | undefined }>;
  finish(flowUid: string, connectionId: string, params: Readonly<Record<string, string>>, request: RequestInfo): Promise<FederatedResult>;
  /** The sign-in a proof handed over to is through: link the identity if it proved the right account. */
  completeLink(flowUid: string, accountId: string | undefined, request: RequestInfo): Promise<void>;
  /** The method that proves an existing account (the password). */
  proofMethod: string;
}

/** The notice for a refusal: what happened, never which check failed. */
const refusalNotice = (reason: string, name = '') => {
  const key = reason === 'upstream_unreachable' ? 'error.upstreamUnavailable'
    : reason === 'upstream_error' ? 'error.upstreamCancelled'
      : reason === 'no_account' || reason === 'no_email' ? 'error.upstreamNoAccount'
        : reason === 'account_disabled' ? 'error.accountDisabled'
          : reason === 'address_taken' ? 'error.upstreamAddressTaken'
            : 'error.upstreamRefused';
  return { key, kind: 'rejected' as const, params: { name } };
};

export function upstreamMethod(deps: UpstreamMethodDeps): SignInMethod {
  async function redirect(flowUid: string, connectionId: string, request: RequestInfo & { loginHint?: string | undefined }): Promise<MethodOutcome> {
    const started = await deps.start(flowUid, connectionId, request);
    if ('refused' in started) return { kind: 'rejected', event: 'upstream_rejected', reason: started.refused, notice: refusalNotice(started.refused, started.connectionName) };
    return { kind: 'redirect', event: 'upstream_redirected', url: started.url, state: started.state };
  }
  return {
    id: upstreamMethodId,
    identifierFirst: false,
    async offer(_flow, request) {
      const buttons = await deps.buttons(request.clientId);
      return buttons.length ? { template: 'offer-connections', vars: { connections: buttons } } : undefined;
    },
    async routes(identifier, request) {
      return (await deps.routed(identifier, request.clientId)) !== undefined;
    },
    async enter(flow, request) {
      const connectionId = flow.email ? await deps.routed(flow.email, request.clientId) : undefined;
      if (!connectionId) return { kind: 'restart' };
      return redirect(flow.uid, connectionId, { ...request, loginHint: flow.email });
    },
    async submit(flow, fields, request) {
      return redirect(flow.uid, field(fields, 'connection', 64), request);
    },
    async callback(flow, params, request) {
      const result = await deps.finish(flow.uid, request.callbackKey ?? '', params, request);
      switch (result.kind) {
        case 'signed_in':
          return { kind: 'verified', event: 'upstream_verified', accountId: result.accountId, email: result.email, amr: result.amr };
        case 'proof_required':
          return { kind: 'switch', method: deps.proofMethod, email: result.email, handOver: true, notice: { key: 'upstream.linkRequired', kind: 'info', params: { name: result.connectionName } } };
        case 'refused':
          return { kind: 'rejected', event: 'upstream_rejected', reason: result.reason, notice: refusalNotice(result.reason, result.connectionName) };
      }
    },
    async finished(flow, request) {
      await deps.completeLink(flow.uid, flow.accountId, request);
    },
  };
}
