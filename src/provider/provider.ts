// Builds the oidc-provider instance and wires its events into the audit log and the logs.
import Provider, { type KoaContextWithOIDC } from 'oidc-provider';
import type { AuditEventType } from '../audit/events.ts';
import type { AuditInput, AuditSink } from '../audit/types.ts';
import { clientSecretMatches, isClientSecretDigest } from '../clients/secrets.ts';
import type { Logger } from '../log.ts';
import { providerConfiguration, type ProviderDeps } from './configuration.ts';

export type { Provider };

function requestFields(ctx: KoaContextWithOIDC | undefined): Pick<AuditInput, 'requestId' | 'ip' | 'userAgent' | 'clientId'> {
  if (!ctx) return {};
  return {
    requestId: ctx.state?.requestId as string | undefined,
    ip: ctx.ip,
    userAgent: ctx.get?.('user-agent'),
    clientId: ctx.oidc?.client?.clientId,
  };
}

function errorFields(error: unknown): Record<string, unknown> {
  const e = error as { error?: string; error_description?: string; message?: string };
  return { error: e.error ?? 'server_error', ...(e.error_description ? { error_description: e.error_description } : {}) };
}

function wireEvents(provider: Provider, audit: AuditSink, log: Logger): void {
  const record = (event: AuditInput) => {
    audit.record(event).catch((error: unknown) => log.error({ err: error, type: event.type }, 'audit write failed'));
  };
  const failure = (type: AuditEventType) => (ctx: KoaContextWithOIDC, error: unknown) =>
    record({ type, outcome: 'failure', ...requestFields(ctx), details: errorFields(error) });

  provider.on('grant.success', (ctx: KoaContextWithOIDC) => {
    const grantType = ctx.oidc.params?.grant_type as string | undefined;
    const subject = ctx.oidc.entities.Account?.accountId ?? null;
    record({ type: 'token.issued', outcome: 'success', ...requestFields(ctx), subject, details: { grant_type: grantType } });
  });
  provider.on('grant.error', failure('token.failed'));
  provider.on('authorization.error', failure('authorization.failed'));
  provider.on('introspection.error', failure('introspection.failed'));
  provider.on('revocation.error', failure('revocation.failed'));
  provider.on('userinfo.error', failure('userinfo.failed'));
  provider.on('end_session.error', failure('logout.failed'));
  provider.on('grant.revoked', (ctx: KoaContextWithOIDC, grantId: string) =>
    record({ type: 'grant.revoked', outcome: 'success', ...requestFields(ctx), details: { grantId } }));
  provider.on('end_session.success', (ctx: KoaContextWithOIDC) =>
    record({ type: 'logout', outcome: 'success', ...requestFields(ctx), subject: ctx.oidc.session?.accountId ?? null }));
  provider.on('backchannel.success', (ctx: KoaContextWithOIDC, client: { clientId: string }, accountId: string) =>
    record({ type: 'backchannel_logout.sent', outcome: 'success', ...requestFields(ctx), clientId: client.clientId, subject: accountId }));
  provider.on('backchannel.error', (ctx: KoaContextWithOIDC, error: unknown, client: { clientId: string }, accountId: string) =>
    record({ type: 'backchannel_logout.failed', outcome: 'failure', ...requestFields(ctx), clientId: client.clientId, subject: accountId, details: { error: (error as Error).message } }));
  provider.on('server_error', (ctx: KoaContextWithOIDC, error: Error) => {
    log.error({ err: error, requestId: ctx?.state?.requestId }, 'oidc-provider server error');
    record({ type: 'server_error', outcome: 'failure', ...requestFields(ctx), details: { name: error.name } });
  });
}

export function createProvider(deps: ProviderDeps & { audit: AuditSink; log: Logger }): Provider {
  const provider = new Provider(deps.config.ISSUER, providerConfiguration(deps));
  // Forwarded headers are set by our own issuerOrigin() middleware, so the provider may read them.
  provider.proxy = true;
  // Stored secrets are digests (src/clients/secrets.ts); compare against the digest in constant time.
  provider.Client.prototype.compareClientSecret = function compareClientSecret(this: { clientSecret?: string }, actual: string) {
    return isClientSecretDigest(this.clientSecret) && typeof actual === 'string' && clientSecretMatches(this.clientSecret, actual);
  };
  wireEvents(provider, deps.audit, deps.log);
  return provider;
}
