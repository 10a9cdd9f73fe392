// oidc-provider options: which protocol features are on, how tokens are formatted and how long
// they live, where accounts and grants come from, and how its pages look.
import type { Configuration, KoaContextWithOIDC, Grant } from 'oidc-provider';
import { errors, interactionPolicy } from 'oidc-provider';
import type { JWK } from 'jose';
import { type AccountService } from '../accounts/service.ts';
import type { SessionService } from '../sessions/service.ts';
import type { Config, ResourceServerConfig } from '../config.ts';
import { acr } from '../flow/machine.ts';
import { acrStepUpReason, demandedAcr, satisfiesAcr, type MfaPolicySettings } from '../mfa/policy.ts';
import type { Views } from '../http/views.ts';
import { adminResource, adminScope } from '../clients/admin-access.ts';
import { grantableClaims, scopeBoundClaims } from '../consent/claims.ts';
import type { ConsentService } from '../consent/service.ts';

export const asymmetricSigningAlgs = ['RS256', 'PS256', 'ES256', 'EdDSA'];

export interface ProviderDeps {
  config: Config;
  accounts: AccountService;
  sessions: SessionService;
  /** When a client's registration was created (ms): admin tokens are bound to it. */
  registeredAt(clientId: string): Promise<number | undefined>;
  views: Views;
  /** Consents remembered per account and third-party client. */
  consents: Pick<ConsentService, 'remembered'>;
  adapter: Configuration['adapter'];
  jwks: { keys: JWK[] };
  cookieKeys: string[];
}

function isFirstParty(ctx: KoaContextWithOIDC): boolean {
  return ctx.oidc.client?.metadata().first_party === true;
}

/**
 * First-party clients get their grant without a consent screen. Everyone else keeps the grant of
 * this session, or, in a new session, gets one made of what the account consented to before
 * (kept for GRANT_TTL, revocable on the account page): consent is asked once per client, not per
 * sign-in; anything the client asks for beyond it is asked for.
 */
async function loadExistingGrant(ctx: KoaContextWithOIDC, bound: Map<string, string>, consents: ProviderDeps['consents']): Promise<Grant | undefined> {
  const client = ctx.oidc.client!;
  const session = ctx.oidc.session!;
  const grantId = ctx.oidc.result?.consent?.grantId ?? session.grantIdFor(client.clientId);
  const existing = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
  if (!isFirstParty(ctx) && !existing && session.accountId) {
    const remembered = await consents.remembered(session.accountId, client.clientId);
    if (!remembered) return undefined;
    // Only what this request asks for and was consented to: a scope consented earlier but not
    // asked for now must not release its claims (scope-bound claims named in `claims`, say).
    const requested = ctx.oidc.requestParamScopes;
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    const scopes = remembered.scopes.filter((scope) => requested.has(scope));
    if (scopes.length) grant.addOIDCScope(scopes.join(' '));
    const named = Object.keys({ ...ctx.oidc.claims?.id_token, ...ctx.oidc.claims?.userinfo });
    const claims = grantableClaims(named.filter((claim) => remembered.claims.includes(claim)), requested, bound);
    if (claims.length) grant.addOIDCClaims(claims);
    for (const [indicator, server] of Object.entries(ctx.oidc.resourceServers ?? {})) {
      const asked = String(server.scope ?? '').split(' ');
      const consented = (remembered.resources[indicator] ?? []).filter((scope) => asked.includes(scope));
      if (consented.length) grant.addResourceScope(indicator, consented.join(' '));
    }
    await grant.save();
    return grant;
  }
  if (!isFirstParty(ctx) || !session.accountId) return existing;
  const grant = existing ?? new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
  grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
  const requested = Object.keys({ ...ctx.oidc.claims?.id_token, ...ctx.oidc.claims?.userinfo });
  const claims = grantableClaims(requested, ctx.oidc.requestParamScopes, bound);
  if (claims.length) grant.addOIDCClaims(claims);
  const refused = requested.filter((claim) => !claims.includes(claim));
  if (refused.length) grant.rejectOIDCClaims(refused);
  for (const [indicator, server] of Object.entries(ctx.oidc.resourceServers ?? {})) {
    if (server.scope) grant.addResourceScope(indicator, server.scope);
  }
  await grant.save();
  return grant;
}

/**
 * oidc-provider's policy with a stricter max_age check. Its own compares whole seconds with `>`,
 * so a login 1.9 s old passes max_age=1; we re-authenticate once the age reaches max_age.
 */
function interactionPolicyWithStrictMaxAge(acrSettings: Pick<MfaPolicySettings, 'acrMethods'>) {
  const policy = interactionPolicy.base();
  const login = policy.get('login')!;
  const position = login.checks.findIndex((check) => check.reason === 'max_age');
  login.checks.remove('max_age');
  login.checks.add(new interactionPolicy.Check('max_age', 'End-User authentication could not be obtained', (ctx) => {
    const { oidc } = ctx;
    const maxAge = oidc.params?.max_age;
    if (maxAge === undefined) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
    const loginTs = (oidc.session as { loginTs?: number } | undefined)?.loginTs;
    if (!oidc.session?.accountId || !loginTs) return interactionPolicy.Check.REQUEST_PROMPT;
    const age = Math.floor(Date.now() / 1000) - loginTs;
    if (age >= Number(maxAge) && !oidc.result?.login) return interactionPolicy.Check.REQUEST_PROMPT;
    return interactionPolicy.Check.NO_NEED_TO_PROMPT;
  }), position);
  // Step-up: a relying party asking (acr_values) for more than the session's sign-in achieved gets
  // a fresh second factor, even inside a valid session; with prompt=none, login_required.
  login.checks.add(new interactionPolicy.Check(acrStepUpReason, 'the requested authentication context class needs a stronger sign-in', 'login_required', (ctx) => {
    const { oidc } = ctx;
    if (!oidc.session?.accountId || oidc.result?.login) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
    const demanded = demandedAcr(acrSettings, String(oidc.params?.acr_values ?? '').split(' ').filter(Boolean));
    if (!demanded) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
    const amr = ((oidc.session as { amr?: string[] }).amr) ?? [];
    return satisfiesAcr(acrSettings as MfaPolicySettings, demanded, amr) ? interactionPolicy.Check.NO_NEED_TO_PROMPT : interactionPolicy.Check.REQUEST_PROMPT;
  }));
  return policy;
}


function resourceServerInfo(servers: ResourceServerConfig[], issuer: string) {
  const byIndicator = new Map(servers.map((s) => [s.indicator, s]));
  return (_ctx: KoaContextWithOIDC, indicator: string, client: { metadata(): Record<string, unknown>; clientAuthMethod?: string }) => {
    if (indicator === adminResource(issuer)) {
      // Only an authenticating client registered with the admin scope may ask for the admin API at all.
      if (!String(client.metadata().scope ?? '').split(' ').includes(adminScope) || client.clientAuthMethod === 'none') throw new errors.InvalidTarget('this client may not use the admin API');
      return { audience: indicator, scope: adminScope, accessTokenTTL: 600, accessTokenFormat: 'opaque' as const };
    }
    const server = byIndicator.get(indicator);
    if (!server) throw new errors.InvalidTarget(`unknown resource ${indicator}`);
    return {
      audience: server.indicator,
      scope: server.scopes.join(' '),
      accessTokenTTL: server.accessTokenTTL,
      accessTokenFormat: server.accessTokenFormat,
      ...(server.accessTokenFormat === 'jwt' ? { jwt: { sign: { alg: 'RS256' as const } } } : {}),
    };
  };
}

export function providerConfiguration(deps: ProviderDeps): Configuration {
  const { config, accounts, views, sessions } = deps;
  const mappedScopes = Object.keys(config.CLAIM_MAPPINGS);
  const locale = (ctx: KoaContextWithOIDC) => views.negotiate(ctx.oidc?.params?.ui_locales as string | undefined, ctx.get('accept-language'));
  const resourceScopes = deps.config.RESOURCE_SERVERS.flatMap((s) => s.scopes);
  const ordinaryScopes = [...new Set(['openid', 'offline_access', 'profile', 'email', 'address', 'phone', 'account', ...mappedScopes, ...resourceScopes])];
  // We sign only with algorithms we hold a key for (KEY_ALGORITHMS).
  const ownSigningAlgs = [...config.KEY_ALGORITHMS];

  return {
    adapter: deps.adapter,
    jwks: deps.jwks as Configuration['jwks'],
    cookies: {
      keys: deps.cookieKeys,
      long: { signed: true, httpOnly: true, sameSite: 'lax' },
      short: { signed: true, httpOnly: true, sameSite: 'lax' },
    },
    acrValues: [...new Set<string>([acr.oneFactor, acr.twoFactor, acr.phishingResistant, ...Object.keys(config.ACR_METHODS)])],
    claims: {
      // acr and amr go into every ID token: relying parties must be able to see how the user signed in.
      openid: ['sub', 'acr', 'amr'],
      auth_time: null,
      sid: null,
      email: ['email', 'email_verified'],
      profile: ['name', 'updated_at'],
      address: ['address'],
      phone: ['phone_number', 'phone_number_verified'],
      // How the account stands: status, the approval workflow's state, user type and roles.
      account: ['account_status', 'approval_status', 'user_type', 'roles'],
      ...Object.fromEntries(Object.entries(config.CLAIM_MAPPINGS).map(([scope, claims]) => [scope, Object.keys(claims)])),
    },
    scopes: [...ordinaryScopes, adminScope],
    subjectTypes: ['public'],
    responseTypes: ['code'],
    clientAuthMethods: ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    clientDefaults: {
      // A client registered without a `scope` may ask for every scope but the admin one: only a
      // registration that names idp:admin can be granted it, by any grant and for any resource
      // (oidc-provider lets a client without `scope` metadata ask for any scope it knows).
      scope: ordinaryScopes.join(' '),
      grant_types: ['authorization_code'],
      response_types: ['code'],
      id_token_signed_response_alg: 'RS256',
      token_endpoint_auth_method: 'client_secret_basic',
    },
    enabledJWA: {
      idTokenSigningAlgValues: ownSigningAlgs as never,
      userinfoSigningAlgValues: ownSigningAlgs as never,
      introspectionSigningAlgValues: ownSigningAlgs as never,
      authorizationSigningAlgValues: ownSigningAlgs as never,
      requestObjectSigningAlgValues: asymmetricSigningAlgs as never,
      clientAuthSigningAlgValues: asymmetricSigningAlgs as never,
    },
    extraClientMetadata: {
      properties: ['first_party'],
      validator(_ctx, key, value) {
        if (key === 'first_party' && value !== undefined && typeof value !== 'boolean') {
          throw new errors.InvalidClientMetadata('first_party must be a boolean');
        }
      },
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // Resource servers are confidential clients and may introspect any token; a public
        // client only its own.
        allowedPolicy: (_ctx, client, token) => client.clientAuthMethod !== 'none' || token.clientId === client.clientId,
      },
      revocation: {
        enabled: true,
        // RFC 7009: a client revokes only tokens issued to it.
        allowedPolicy: (_ctx, client, token) => token.clientId === client.clientId,
      },
      userinfo: { enabled: true },
      claimsParameter: { enabled: true },
      // Signed request objects (`request` parameter). Unsigned ones (alg none) are refused:
      // 'none' is not among requestObjectSigningAlgValues.
      requestObjects: { enabled: true, requireSignedRequestObject: false },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          const lang = views.negotiate(undefined, ctx.get('accept-language'));
          ctx.type = 'html';
          ctx.body = views.page('logout', views.t(lang, 'logout.title'), { form }, lang);
        },
        async postLogoutSuccessSource(ctx) {
          const lang = views.negotiate(undefined, ctx.get('accept-language'));
          ctx.type = 'html';
          ctx.body = views.message(views.t(lang, 'loggedOut.heading'), views.t(lang, 'loggedOut.message'), lang);
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: (_ctx, _client, oneOf) => oneOf ?? undefined!,
        useGrantedResource: () => true,
        getResourceServerInfo: resourceServerInfo(config.RESOURCE_SERVERS, config.ISSUER) as never,
      },
    },
    pkce: {
      // Required for public clients (no secret to protect the code); allowed for all; only S256 exists in oidc-provider 9.
      required: (_ctx, client) => client.clientAuthMethod === 'none',
    },
    ...(config.FETCH_ALLOW_PRIVATE_ADDRESSES
      ? {
          // Drops oidc-provider's SSRF-guarding dispatcher, which refuses special-use addresses.
          fetch: (url: string | URL | Request, init?: RequestInit) => {
            const { dispatcher: _ssrfGuard, ...options } = (init ?? {}) as RequestInit & { dispatcher?: unknown };
            return fetch(url, options);
          },
        }
      : {}),
    // Admin tokens carry the registration they were issued to: a client deleted and registered
    // again under the same id does not inherit them (src/admin/routes.ts checks it).
    async extraTokenClaims(_ctx, token) {
      const audiences = [(token as { aud?: string | string[] }).aud ?? []].flat();
      if (token.kind !== 'ClientCredentials' || !audiences.includes(adminResource(config.ISSUER))) return undefined;
      return { registration: await deps.registeredAt(token.clientId!) };
    },
    rotateRefreshToken: true,
    loadExistingGrant: (ctx) => loadExistingGrant(ctx, scopeBoundClaims(config), deps.consents),
    async findAccount(_ctx, sub) {
      const account = await accounts.findById(sub);
      if (!account || account.status !== 'active') return undefined;
      return {
        accountId: account.id,
        async claims() {
          const attributes = account.attributes;
          // oidc-provider releases only the claims of granted scopes; every mapped attribute is offered.
          const mapped = Object.values(config.CLAIM_MAPPINGS).flatMap((claims) => Object.entries(claims))
            .filter(([, attribute]) => attributes[attribute] !== undefined)
            .map(([claim, attribute]) => [claim, attributes[attribute]]);
          return {
            ...Object.fromEntries(mapped),
            sub: account.id,
            email: account.email,
            email_verified: account.emailVerified,
            ...(account.name ? { name: account.name } : {}),
            updated_at: Math.floor(account.updatedAt.getTime() / 1000),
            account_status: account.status,
            ...(account.approval ? { approval_status: account.approval } : {}),
            user_type: account.userType,
            roles: account.roles,
          };
        },
      };
    },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
      policy: interactionPolicyWithStrictMaxAge({ acrMethods: config.ACR_METHODS }),
    },
    async renderError(ctx, out, error) {
      const lang = locale(ctx);
      const status = (error as { statusCode?: number }).statusCode ?? 500;
      // Internal errors show nothing of their cause; protocol errors show their code and description.
      const details = status >= 500 ? {} : { error: out.error, error_description: out.error_description };
      ctx.type = 'html';
      ctx.body = views.message(views.t(lang, 'error.heading'), status >= 500 ? views.t(lang, 'error.loginFailed') : (out.error_description ?? out.error), lang, details);
    },
    discovery: {
      ui_locales_supported: views.locales,
      claims_locales_supported: views.locales,
    },
    ttl: {
      AccessToken: (_ctx, token) => (token.resourceServer?.accessTokenTTL as number | undefined) ?? config.ACCESS_TOKEN_TTL,
      ClientCredentials: (_ctx, token) => (token.resourceServer?.accessTokenTTL as number | undefined) ?? config.CLIENT_CREDENTIALS_TTL,
      AuthorizationCode: config.AUTHORIZATION_CODE_TTL,
      IdToken: config.ID_TOKEN_TTL,
      RefreshToken: config.REFRESH_TOKEN_TTL,
      Interaction: config.INTERACTION_TTL,
      // Idle timeout, capped by the absolute lifetime (counted from sign-in): oidc-provider saves
      // the session again on every use, and asks for its lifetime each time.
      Session: (_ctx, session) => sessions.ttlFor(session.loginTs),
      Grant: config.GRANT_TTL,
    },
  };
}
