// Stand-in upstream OpenID providers for the tests of upstream OIDC federation (our IdP is their
// relying party). They stand in for the cloud identity services (Microsoft Entra ID, Google,
// Okta), which cannot be reached from the test machine, and for a generic provider written by
// someone else. They are real OpenID providers on loopback that speak the real wire protocol
// (discovery, authorization code + PKCE, signed ID tokens, JWKS, userinfo, end session): only the
// sign-in screen is skipped, a test chooses who signs in next with `signInAs`.
//
// - `startOidcUpstream` runs oidc-provider configured in the shape of the chosen cloud service
//   (which claims it releases, and where: ID token or userinfo; Entra's tenant issuers and its
//   multi-tenant `organizations` document).
// - `startMockServerUpstream` runs oauth2-mock-server, an independently written provider.
import { randomBytes, randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import Koa from 'koa';
import mount from 'koa-mount';
import Provider, { interactionPolicy, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import { decodeJwt, exportJWK, generateKeyPair, type JWK } from 'jose';
import { Events, OAuth2Server } from 'oauth2-mock-server';
import { freePort } from './ports.ts';

export interface UpstreamClient {
  client_id: string;
  client_secret: string;
  redirect_uris: string[];
  /**
   * How the client authenticates at the token endpoint. oidc-provider accepts only the one method
   * a client is registered with, so it is chosen here; `client_secret_basic` when left out.
   * (openid-client's default for a secret is `client_secret_post`.)
   */
  token_endpoint_auth_method?: 'client_secret_basic' | 'client_secret_post';
  /** registered for RP-initiated logout; none when left out */
  post_logout_redirect_uris?: string[];
}

export interface UpstreamUser {
  /** the upstream account id (becomes `sub`; for entra the object id `oid` is separate: pass it in claims) */
  id: string;
  /** claims released about this user, e.g. { email, email_verified, name, hd, tid, oid, groups, preferred_username, acrs } */
  claims: Record<string, unknown>;
  /** amr / acr of this sign-in at the upstream (put in the ID token by the provider); optional */
  amr?: string[];
  acr?: string;
}

export interface StandInUpstream {
  /** the URL our connection is configured with (its discovery is at `${issuer}/.well-known/openid-configuration`) */
  issuer: string;
  /** the next sign-in at the upstream (automatic, no screen) is this user; it stays so until changed */
  signInAs(user: UpstreamUser): void;
  /** the next authorization answers with this OAuth error (error=access_denied etc.) instead of signing in; undefined to clear */
  failNextWith(error: string | undefined): void;
  /** query parameters of every authorization request received, newest last */
  readonly authorizations: URLSearchParams[];
  /** how many token requests were received */
  readonly tokenRequests: number;
  stop(): Promise<void>;
}

export interface EntraUpstream extends StandInUpstream {
  /** the issuer of one tenant: `${base}/${tid}/v2.0` (what a single-tenant app is configured with) */
  tenantIssuer(tid: string): string;
  /** the tenant ids served */
  readonly tenants: string[];
}

export type Flavour = 'entra' | 'google' | 'okta' | 'plain';

export const DEFAULT_ENTRA_TENANTS = ['11111111-1111-4111-8111-111111111111', '22222222-2222-4222-8222-222222222222'];

interface OidcUpstreamOptions {
  flavour: Flavour;
  clients: UpstreamClient[];
  /** entra only: the tenant ids (default DEFAULT_ENTRA_TENANTS) */
  tenants?: string[];
}

/** What the test set and what the upstream saw, shared by all the provider instances of one upstream. */
class UpstreamState {
  current: UpstreamUser | undefined;
  failNext: string | undefined;
  readonly users = new Map<string, UpstreamUser>();
  readonly authorizations: URLSearchParams[] = [];
  tokenRequests = 0;
}

function standIn(issuer: string, state: UpstreamState, stop: () => Promise<void>, check?: (user: UpstreamUser) => void): StandInUpstream {
  return {
    issuer,
    signInAs(user) {
      check?.(user);
      state.current = user;
    },
    failNextWith(error) {
      state.failNext = error;
    },
    get authorizations() {
      return state.authorizations;
    },
    get tokenRequests() {
      return state.tokenRequests;
    },
    stop,
  };
}

function listen(app: Koa, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = app.listen(port, '127.0.0.1');
    server.once('listening', () => resolve(server));
    server.once('error', reject);
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.close((error) => (error ? reject(error) : resolve()));
    server.closeAllConnections();
  });
}

async function signingKey(): Promise<JWK> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

/**
 * The claims config of oidc-provider: which claims each scope releases (`null`: only through the
 * claims parameter, or set by the provider itself like sid and auth_time). Under `openid`, `amr`
 * and `acr` put the sign-in's amr / acr (from signInAs) in every ID token.
 */
function claimsFor(flavour: Flavour): NonNullable<Configuration['claims']> {
  const provider = { sid: null, auth_time: null, iss: null };
  switch (flavour) {
    case 'entra':
      // No email_verified, amr or acr at Entra. `groups` is in the ID token when the app
      // registration asks for group claims (groupMembershipClaims), whatever the scope: released
      // whenever the user has it. `acrs` (authentication context) only when asked for through the
      // claims parameter.
      return { ...provider, openid: ['sub', 'tid', 'oid', 'groups'], email: ['email'], profile: ['name', 'preferred_username'], acrs: null };
    case 'google':
      // `hd`: the Workspace domain, only for Workspace users (give it in their claims).
      return { ...provider, openid: ['sub', 'hd', 'amr', 'acr'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] };
    case 'okta':
      // Okta's ID token always has auth_time.
      return { ...provider, openid: ['sub', 'amr', 'acr', 'auth_time'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] };
    case 'plain':
      return { ...provider, openid: ['sub', 'amr', 'acr'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] };
  }
}

/** The claims a claims parameter (JSON text) asks for, in the ID token or at userinfo. */
function requestedClaims(claims: unknown): string[] {
  if (typeof claims !== 'string') return [];
  try {
    const parsed = JSON.parse(claims) as Record<string, unknown>;
    const names = new Set<string>();
    for (const member of [parsed.id_token, parsed.userinfo]) {
      if (member && typeof member === 'object') for (const name of Object.keys(member)) names.add(name);
    }
    return [...names];
  } catch {
    return [];
  }
}

interface InstanceOptions {
  flavour: Flavour;
  issuer: string;
  clients: UpstreamClient[];
  jwk: JWK;
  cookieKeys: string[];
  /** distinct per instance: browsers share cookies between ports of one host */
  cookiePrefix: string;
  /** the path of this instance's interaction route (served by us, outside the provider) */
  interactionPath: string;
  state: UpstreamState;
  /** entra: the tenant id, given to users that carry none */
  tid?: string;
}

function buildProvider(options: InstanceOptions): Provider {
  const { flavour, state } = options;
  // Every authorization goes through our interaction route, even with a session at the upstream,
  // so that the user given to signInAs (and failNextWith) applies to each one. prompt=none keeps
  // the ordinary session checks (no session → login_required).
  const policy = interactionPolicy.base();
  policy.get('login')?.checks.add(
    new interactionPolicy.Check('stand_in_sign_in', 'every authorization signs in at the stand-in', (ctx: KoaContextWithOIDC) => {
      if (ctx.oidc.result?.login) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      if (ctx.oidc.prompts.has('none')) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      return interactionPolicy.Check.REQUEST_PROMPT;
    }),
    0,
  );
  const configuration: Configuration = {
    clients: options.clients.map((client) => ({
      client_id: client.client_id,
      client_secret: client.client_secret,
      redirect_uris: client.redirect_uris,
      post_logout_redirect_uris: client.post_logout_redirect_uris ?? [],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: client.token_endpoint_auth_method ?? 'client_secret_basic',
    })),
    jwks: { keys: [{ ...options.jwk }] },
    cookies: {
      keys: options.cookieKeys,
      names: {
        session: `${options.cookiePrefix}_session`,
        interaction: `${options.cookiePrefix}_interaction`,
        resume: `${options.cookiePrefix}_interaction_resume`,
      },
    },
    features: {
      claimsParameter: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      devInteractions: { enabled: false },
    },
    pkce: { required: () => true },
    scopes: ['openid', 'email', 'profile', 'offline_access', 'groups'],
    claims: claimsFor(flavour),
    // Okta puts the scope claims (email, groups, ...) only at userinfo; the others in the ID token too.
    conformIdTokenClaims: flavour === 'okta',
    clientBasedCORS: () => true,
    // oidc-provider's default lifetimes, given here only to keep its notices out of the test output.
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
      RefreshToken: 14 * 24 * 3600,
    },
    interactions: {
      policy,
      url: (_ctx, interaction) => `${options.interactionPath}/${interaction.uid}`,
    },
    findAccount: (_ctx, id) => {
      const user = state.users.get(id);
      if (!user) return undefined;
      const tid = options.tid === undefined ? {} : { tid: options.tid };
      return { accountId: id, claims: () => ({ sub: id, ...tid, ...user.claims }) };
    },
  };
  return new Provider(options.issuer, configuration);
}

/** GET `${interactionPath}/:uid`: signs the current user in at once (or fails as asked), no screen. */
async function finishInteraction(ctx: Koa.Context, provider: Provider, flavour: Flavour, state: UpstreamState): Promise<void> {
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  // interactionFinished answers on the raw response (303 to the resume URL).
  ctx.respond = false;
  const options = { mergeWithLastSubmission: false };
  const error = state.failNext;
  if (error !== undefined) {
    state.failNext = undefined;
    await provider.interactionFinished(ctx.req, ctx.res, { error, error_description: 'the user declined' }, options);
    return;
  }
  const user = state.current;
  if (!user) {
    await provider.interactionFinished(ctx.req, ctx.res, { error: 'access_denied', error_description: 'no user: the test did not call signInAs' }, options);
    return;
  }
  state.users.set(user.id, user);
  // Another account signed in at the upstream: oidc-provider would first end that session through
  // an auto-submitting form (a browser step a fetch-driven test cannot take). Switch quietly
  // instead: drop the old session, and the interaction's link to it.
  if (details.session && details.session.accountId !== user.id) {
    const previous = await provider.Session.findByUid(details.session.uid);
    await previous?.destroy();
    details.session = undefined;
    await details.save(Math.max(details.exp - Math.floor(Date.now() / 1000), 1));
  }
  const grant = new provider.Grant({ accountId: user.id, clientId: String(details.params.client_id) });
  if (typeof details.params.scope === 'string') grant.addOIDCScope(details.params.scope);
  const claims = requestedClaims(details.params.claims);
  if (claims.length > 0) grant.addOIDCClaims(claims);
  const grantId = await grant.save();
  // Entra v2.0 ID tokens carry no amr / acr.
  const login = flavour === 'entra' ? { accountId: user.id } : { accountId: user.id, amr: user.amr, acr: user.acr };
  await provider.interactionFinished(ctx.req, ctx.res, { login, consent: { grantId } }, options);
}

/** Records the authorization requests (GET: their query) and counts the token requests. */
function recorder(state: UpstreamState, providers: Provider[]): Koa.Middleware {
  const authorization = new Set(providers.map((p) => p.pathFor('authorization')));
  const token = new Set(providers.map((p) => p.pathFor('token')));
  return async (ctx, next) => {
    if (ctx.method === 'GET' && authorization.has(ctx.path)) state.authorizations.push(new URLSearchParams(ctx.querystring));
    if (ctx.method === 'POST' && token.has(ctx.path)) state.tokenRequests += 1;
    await next();
  };
}

function interactionRoute(routes: Map<string, Provider>, flavour: Flavour, state: UpstreamState): Koa.Middleware {
  return async (ctx, next) => {
    const match = /^(\/interaction\/[^/]+)\/[^/]+$/.exec(ctx.path);
    const provider = match?.[1] === undefined ? undefined : routes.get(match[1]);
    if (ctx.method !== 'GET' || !provider) return next();
    await finishInteraction(ctx, provider, flavour, state);
  };
}

/**
 * An oidc-provider in the shape of a cloud identity service. For `entra` the result has
 * `tenantIssuer` too (see startEntraUpstream).
 *
 * Clients authenticate at the token endpoint with `client_secret_basic` unless registered with
 * `token_endpoint_auth_method: 'client_secret_post'` (oidc-provider takes only the registered one).
 */
export function startOidcUpstream(options: OidcUpstreamOptions & { flavour: 'entra' }): Promise<EntraUpstream>;
export function startOidcUpstream(options: OidcUpstreamOptions): Promise<StandInUpstream>;
export async function startOidcUpstream(options: OidcUpstreamOptions): Promise<StandInUpstream> {
  if (options.flavour === 'entra') return startEntraUpstream(options);
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const state = new UpstreamState();
  const cookieKeys = [randomBytes(32).toString('base64url')];
  const interactionPath = '/interaction/op';
  const provider = buildProvider({
    flavour: options.flavour,
    issuer,
    clients: options.clients,
    jwk: await signingKey(),
    cookieKeys,
    cookiePrefix: `up${port}`,
    interactionPath,
    state,
  });
  const app = new Koa();
  // The provider runs on this app's context (koa-mount): signed cookies use these keys.
  app.keys = cookieKeys;
  app.use(recorder(state, [provider]));
  app.use(interactionRoute(new Map([[interactionPath, provider]]), options.flavour, state));
  app.use(mount(provider as unknown as Koa));
  const server = await listen(app, port);
  return standIn(issuer, state, () => close(server));
}

/**
 * Microsoft Entra ID, multi-tenant: one oidc-provider per tenant at `${base}/${tid}/v2.0` (its own
 * discovery there, for single-tenant apps), all signing with the same key, and the multi-tenant
 * document at `${base}/organizations/v2.0/.well-known/openid-configuration`, whose issuer is the
 * template `${base}/{tenantid}/v2.0` and whose endpoints are under `${base}/organizations/v2.0/`.
 * Requests there are served by the tenant of the user given to signInAs (`claims.tid`; none: the
 * first tenant), so the ID token's `iss` is that tenant's issuer, as at Entra. `issuer` is
 * `${base}/organizations/v2.0`. A user without `tid` gets the tid of the tenant signing them in.
 */
export async function startEntraUpstream(options: { clients: UpstreamClient[]; tenants?: string[] }): Promise<EntraUpstream> {
  const tenants = [...(options.tenants ?? DEFAULT_ENTRA_TENANTS)];
  const first = tenants[0];
  if (first === undefined) throw new Error('startEntraUpstream: no tenant');
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const organizations = '/organizations/v2.0';
  const tenantIssuer = (tid: string) => `${base}/${tid}/v2.0`;
  const state = new UpstreamState();
  const cookieKeys = [randomBytes(32).toString('base64url')];
  const jwk = await signingKey();
  const providers = new Map<string, Provider>();
  const interactions = new Map<string, Provider>();
  tenants.forEach((tid, index) => {
    const interactionPath = `/interaction/${tid}`;
    const provider = buildProvider({
      flavour: 'entra',
      issuer: tenantIssuer(tid),
      clients: options.clients,
      jwk,
      cookieKeys,
      cookiePrefix: `up${port}t${index}`,
      interactionPath,
      state,
      tid,
    });
    providers.set(tid, provider);
    interactions.set(interactionPath, provider);
  });
  const tenantOf = (user: UpstreamUser | undefined): string => {
    const tid = user?.claims.tid;
    return typeof tid === 'string' ? tid : first;
  };

  let multiTenantDocument: Record<string, unknown> | undefined;
  const organizationsDocument = async (): Promise<Record<string, unknown>> => {
    if (multiTenantDocument) return multiTenantDocument;
    const tenant = tenantIssuer(first);
    const response = await fetch(`${tenant}/.well-known/openid-configuration`);
    const metadata = (await response.json()) as Record<string, unknown>;
    const rewrite = (value: unknown): unknown => {
      if (typeof value === 'string') return value.startsWith(`${tenant}/`) ? `${base}${organizations}${value.slice(tenant.length)}` : value;
      if (value && typeof value === 'object' && !Array.isArray(value)) {
        return Object.fromEntries(Object.entries(value).map(([key, member]) => [key, rewrite(member)]));
      }
      return value;
    };
    multiTenantDocument = { ...(rewrite(metadata) as Record<string, unknown>), issuer: `${base}/{tenantid}/v2.0` };
    return multiTenantDocument;
  };

  const app = new Koa();
  app.keys = cookieKeys;
  app.use(async (ctx, next) => {
    if (ctx.path === `${organizations}/.well-known/openid-configuration`) {
      if (ctx.method !== 'GET') return next();
      ctx.set('access-control-allow-origin', '*');
      ctx.body = await organizationsDocument();
      return;
    }
    // /organizations/v2.0/... is served by the tenant of the user signing in.
    if (ctx.path.startsWith(`${organizations}/`)) ctx.path = `/${tenantOf(state.current)}/v2.0${ctx.path.slice(organizations.length)}`;
    await next();
  });
  app.use(recorder(state, [...providers.values()]));
  app.use(interactionRoute(interactions, 'entra', state));
  for (const [tid, provider] of providers) app.use(mount(`/${tid}/v2.0`, provider as unknown as Koa));
  const server = await listen(app, port);

  const upstream = standIn(`${base}${organizations}`, state, () => close(server), (user) => {
    const tid = user.claims.tid;
    if (tid !== undefined && (typeof tid !== 'string' || !tenants.includes(tid))) {
      throw new Error(`signInAs: tid ${String(tid)} is not a tenant of this stand-in (${tenants.join(', ')})`);
    }
  });
  return Object.assign(upstream, { tenantIssuer, tenants });
}

/**
 * An independently written OpenID provider (oauth2-mock-server) for the generic connection.
 *
 * It checks neither client credentials nor redirect URIs (any are accepted), and it advertises
 * `token_endpoint_auth_methods_supported: ["none"]`. Its ID tokens get `sub` (the user's id), `aud`
 * (clientId), the user's claims and amr/acr here; it keeps the nonce of the authorization request
 * by itself. Recording goes through its hooks, hence these limits: `authorizations` holds only
 * the requests it answered with a redirect (not those it rejected, e.g. without redirect_uri), and
 * `tokenRequests` counts only the token requests it answered (not those it rejected with 400, e.g.
 * a wrong PKCE code_verifier).
 */
/** The mock server can also hand out bad ID tokens: wrong claims (properly signed), or a payload changed after signing. */
export interface MockUpstream extends StandInUpstream {
  tamperNextIdToken(tamper: { claims?: Record<string, unknown>; forgeSignature?: boolean }): void;
}

export async function startMockServerUpstream(options: { clientId: string }): Promise<MockUpstream> {
  let tamper: { claims?: Record<string, unknown>; forgeSignature?: boolean } | undefined;
  const server = new OAuth2Server();
  await server.issuer.keys.generate('RS256');
  const port = await freePort();
  // Its own default would be http://localhost:PORT.
  server.issuer.url = `http://127.0.0.1:${port}`;
  const issuer = server.issuer.url;
  const state = new UpstreamState();
  /** who signed in, by authorization code and by refresh token */
  const byCode = new Map<string, UpstreamUser>();
  const byRefreshToken = new Map<string, UpstreamUser>();

  server.service.on(Events.BeforeAuthorizeRedirect, (redirect, req) => {
    state.authorizations.push(new URL(req.url ?? '/', issuer).searchParams);
    const { searchParams } = redirect.url;
    const code = searchParams.get('code');
    if (code === null) return;
    const error = state.failNext ?? (state.current ? undefined : 'access_denied');
    if (error !== undefined) {
      const description = state.failNext === undefined ? 'no user: the test did not call signInAs' : 'the user declined';
      state.failNext = undefined;
      searchParams.delete('code');
      searchParams.set('error', error);
      searchParams.set('error_description', description);
      return;
    }
    const user = state.current!;
    state.users.set(user.id, user);
    byCode.set(code, user);
  });

  const userOf = (body: Record<string, unknown>): UpstreamUser | undefined => {
    if (typeof body.code === 'string') return byCode.get(body.code);
    if (typeof body.refresh_token === 'string') return byRefreshToken.get(body.refresh_token);
    return undefined;
  };

  server.service.on(Events.BeforeTokenSigning, (token, req) => {
    const body = req.body as unknown as Record<string, unknown>;
    const user = userOf(body);
    if (!user) return;
    token.payload.sub = user.id;
    // Its ID token is the one without a scope (the access token of these grants has one).
    if ((body.grant_type === 'authorization_code' || body.grant_type === 'refresh_token') && !('scope' in token.payload)) {
      Object.assign(token.payload, user.claims, { sub: user.id, aud: options.clientId });
      if (user.amr !== undefined) token.payload.amr = user.amr;
      if (user.acr !== undefined) token.payload.acr = user.acr;
      if (tamper?.claims) Object.assign(token.payload, tamper.claims);
    }
  });

  server.service.on(Events.BeforeResponse, (response, req) => {
    state.tokenRequests += 1;
    const body = req.body as unknown as Record<string, unknown>;
    const user = userOf(body);
    if (typeof body.code === 'string') byCode.delete(body.code);
    if (tamper && response.body !== '' && typeof response.body.id_token === 'string') {
      if (tamper.forgeSignature) {
        // The payload changes after signing (another sub): the signature no longer matches it.
        const [header, payload, signature] = response.body.id_token.split('.') as [string, string, string];
        const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
        const forged = Buffer.from(JSON.stringify({ ...claims, sub: 'someone-else' })).toString('base64url');
        response.body.id_token = `${header}.${forged}.${signature}`;
      }
      tamper = undefined;
    }
    if (user && response.body !== '' && typeof response.body.refresh_token === 'string') byRefreshToken.set(response.body.refresh_token, user);
  });

  server.service.on(Events.BeforeUserinfo, (response, req) => {
    const bearer = /^Bearer (.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    if (bearer === undefined) return;
    let sub: unknown;
    try {
      sub = decodeJwt(bearer).sub;
    } catch {
      return;
    }
    const user = typeof sub === 'string' ? state.users.get(sub) : undefined;
    if (user) response.body = { ...user.claims, sub: user.id };
  });

  await server.start(port, '127.0.0.1');
  return Object.assign(standIn(issuer, state, () => server.stop()), { tamperNextIdToken: (next: typeof tamper & object) => void (tamper = next) });
}
