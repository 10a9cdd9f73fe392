// One federated sign-in, from the button to the account: the authorization request (state, nonce,
// PKCE verifier kept server-side under the state, any node), the answer checked by the upstream
// client, the claims read by the connection's preset, the account resolved; every refusal audited.
import { randomBytes } from 'node:crypto';
import type { AuditSink } from '../audit/types.ts';
import type { FederatedAccounts, PendingLinks, RequestContext } from './accounts.ts';
import type { ConnectionService } from './connections.ts';
import { UpstreamRefusal, type OidcUpstream, type UpstreamChecks } from './oidc-upstream.ts';
import { federatedAmr, profileOf } from './profile.ts';
import type { Connection } from './settings.ts';

/** The short-lived store the flows use (Redis, or the database): values expire, `take` reads once. */
export type ShortLivedValues = PendingLinks;

interface PendingRequest {
  flowUid: string;
  connectionId: string;
  checks: UpstreamChecks;
}

export type FederatedResult =
  | { kind: 'signed_in'; accountId: string; email: string; amr: string[] }
  | { kind: 'proof_required'; email: string; connectionName: string }
  | { kind: 'refused'; reason: string; connectionName?: string | undefined };

const token = () => randomBytes(32).toString('base64url');
const oneFactorAcr = 'urn:idp:acr:1fa';

export interface FederatedSignInDeps {
  connections: ConnectionService;
  upstream: OidcUpstream;
  accounts: FederatedAccounts;
  audit: AuditSink;
  store: ShortLivedValues;
  issuer: string;
  /** How long an upstream round trip may take (the interaction's lifetime). */
  ttlSeconds: number;
}

export class FederatedSignIn {
  readonly #deps: FederatedSignInDeps;

  constructor(deps: FederatedSignInDeps) {
    this.#deps = deps;
  }

  /** Registered at the upstream: one per connection, so an answer is only ever taken for the connection it was meant for. */
  redirectUri(connectionId: string): string {
    return `${this.#deps.issuer}/interaction/callback/oidc/${connectionId}`;
  }

  async buttons(clientId: string | undefined) {
    return (await this.#deps.connections.offeredTo(clientId)).map((c) => ({ id: c.id, name: c.displayName, logoUrl: c.settings.logoUrl }));
  }

  async routed(email: string, clientId: string | undefined): Promise<string | undefined> {
    return (await this.#deps.connections.routedFor(email, clientId))?.id;
  }

  #refused(connection: Pick<Connection, 'id'> | undefined, reason: string, detail: string, context: RequestContext, who: Record<string, unknown> = {}) {
    return this.#deps.audit.record({
      type: 'federation.refused', outcome: 'failure', clientId: context.clientId, ip: context.ip, userAgent: context.userAgent, requestId: context.requestId,
      details: { connection: connection?.id ?? null, reason, detail, ...who },
    });
  }

  async start(flowUid: string, connectionId: string, context: RequestContext & { loginHint?: string | undefined; freshLogin?: boolean | undefined; acrValues?: string[] | undefined }) {
    const connection = (await this.#deps.connections.offeredTo(context.clientId)).find((c) => c.id === connectionId);
    if (!connection) {
      await this.#refused({ id: connectionId.slice(0, 64) }, 'unknown_connection', 'no such connection enabled for this client', context);
      return { refused: 'unknown_connection' };
    }
    // prompt=login or max_age here, or a stronger acr asked of a connection whose MFA we trust: the
    // upstream must sign the user in afresh (prompt=login, max_age=0), and its auth_time shows it did.
    const stepUp = connection.settings.mfa.trust === 'asserted' && (context.acrValues ?? []).some((acr) => acr !== oneFactorAcr);
    const fresh = Boolean(context.freshLogin) || stepUp;
    const checks: UpstreamChecks = { state: token(), nonce: token(), codeVerifier: token(), ...(fresh ? { maxAge: 0 } : {}) };
    try {
      const url = await this.#deps.upstream.authorizationUrl(connection, this.redirectUri(connection.id), checks, { loginHint: context.loginHint, fresh, askMfa: stepUp });
      await this.#deps.store.set(`upstream-request:${checks.state}`, { flowUid, connectionId: connection.id, checks } satisfies PendingRequest, this.#deps.ttlSeconds);
      return { url, state: checks.state };
    } catch (error) {
      if (!(error instanceof UpstreamRefusal)) throw error;
      await this.#refused(connection, error.reason, error.detail, context);
      return { refused: error.reason, connectionName: connection.displayName };
    }
  }

  async finish(flowUid: string, connectionId: string, params: Readonly<Record<string, string>>, context: RequestContext): Promise<FederatedResult> {
    const pending = await this.#deps.store.take<PendingRequest>(`upstream-request:${params.state ?? ''}`);
    if (!pending || pending.flowUid !== flowUid || pending.connectionId !== connectionId) {
      await this.#refused({ id: connectionId.slice(0, 64) }, 'invalid_response', 'the answer came to another connection\'s callback or its request is gone', context);
      return { kind: 'refused', reason: 'invalid_response' };
    }
    const connection = await this.#deps.connections.find(connectionId);
    if (!connection?.enabled) {
      await this.#refused({ id: connectionId }, 'unknown_connection', 'the connection was deleted or disabled meanwhile', context);
      return { kind: 'refused', reason: 'unknown_connection' };
    }
    let profile;
    try {
      const secret = await this.#deps.connections.secretOf(connection);
      const answer = await this.#deps.upstream.exchange(connection, secret, this.redirectUri(connection.id), params, pending.checks);
      profile = profileOf(connection, answer);
    } catch (error) {
      if (!(error instanceof UpstreamRefusal)) throw error;
      await this.#refused(connection, error.reason, error.detail, context);
      return { kind: 'refused', reason: error.reason, connectionName: connection.displayName };
    }
    const who = { issuer: profile.issuer, upstreamSubject: profile.subject };
    const resolution = await this.#deps.accounts.resolve(connection, profile, context);
    switch (resolution.kind) {
      case 'account': {
        const amr = federatedAmr(profile);
        await this.#deps.audit.record({
          type: 'federation.signed_in', outcome: 'success', subject: resolution.accountId, clientId: context.clientId, ip: context.ip, userAgent: context.userAgent, requestId: context.requestId,
          details: { connection: connection.id, ...who, mfaEvidence: profile.mfaEvidence ?? null, amr },
        });
        return { kind: 'signed_in', accountId: resolution.accountId, email: resolution.email, amr };
      }
      case 'proof_required':
        await this.#deps.accounts.holdLink(this.#deps.store, flowUid, { connectionId: connection.id, ...who, subject: profile.subject, email: profile.email ?? null, accountId: resolution.accountId }, this.#deps.ttlSeconds);
        return { kind: 'proof_required', email: resolution.email, connectionName: connection.displayName };
      case 'refused':
        await this.#refused(connection, resolution.reason, 'no account may be signed in to', context, who);
        return { kind: 'refused', reason: resolution.reason, connectionName: connection.displayName };
    }
  }

  completeLink(flowUid: string, accountId: string | undefined, context: RequestContext): Promise<void> {
    return this.#deps.accounts.completeHeldLink(this.#deps.store, flowUid, accountId, context, (id) => this.#deps.connections.find(id));
  }
}
