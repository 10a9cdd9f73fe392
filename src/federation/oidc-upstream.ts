// The relying-party side of an upstream OpenID provider, over oauth4webapi (the protocol core
// openid-client is built on), so that two things stay in our hands: the ID token's signature is
// always verified against the upstream's JWKS (openid-client skips that for tokens from the token
// endpoint), and Entra ID's multi-tenant issuer template ({tenantid}) is resolved deliberately,
// from the tenant the token names, only for tenants on the connection's allow-list.
import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { decodeJwt } from 'jose';
import * as oauth from 'oauth4webapi';
import type { Connection } from './settings.ts';
import { entraMultiTenant, entraTenantOf } from './settings.ts';

/** Why an upstream sign-in did not verify: the reason goes to the audit log and picks the page's text. */
export type UpstreamFailure =
  | 'upstream_error' // the upstream answered with an OAuth error (access_denied, …)
  | 'upstream_unreachable' // discovery, token or JWKS request failed or timed out
  | 'invalid_response' // a check failed: state, nonce, issuer, audience, signature, expiry…
  | 'tenant_refused' // Entra ID: the token's tenant is not on the allow-list
  | 'domain_refused'; // Google: the Workspace domain (hd) is not on the allow-list

export class UpstreamRefusal extends Error {
  readonly reason: UpstreamFailure;
  /** Safe to log: a protocol error code or a check's message, never a token. */
  readonly detail: string;
  constructor(reason: UpstreamFailure, detail: string) {
    super(`${reason}: ${detail}`);
    this.name = 'UpstreamRefusal';
    this.reason = reason;
    this.detail = detail.slice(0, 300);
  }
}

/** What travels with one authorization request, kept server-side until its answer. */
export interface UpstreamChecks {
  state: string;
  nonce: string;
  codeVerifier: string;
  /** max_age sent upstream (a step-up, prompt=login): auth_time must be that recent. */
  maxAge?: number | undefined;
}

export interface UpstreamAnswer {
  /** The issuer that signed the ID token (Entra multi-tenant: the tenant's own). */
  issuer: string;
  /** ID token claims, completed by userinfo where the connection reads it. */
  claims: Record<string, unknown>;
}

export interface AuthorizationOptions {
  loginHint?: string | undefined;
  /** prompt=login and max_age=0 upstream: a fresh sign-in there (step-up, prompt=login here). */
  fresh?: boolean | undefined;
  /** A step-up: ask for the acr values the connection takes as MFA (Entra: its auth context is always asked for). */
  askMfa?: boolean | undefined;
}

const metadataTtlMs = 10 * 60_000;

// Loopback, private, link-local (cloud metadata), CGNAT, multicast and reserved ranges.
const specialUse = new BlockList();
for (const [net, bits] of [['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12], ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 3]] as const) specialUse.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [['::', 127], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['::ffff:0:0', 96], ['64:ff9b::', 96]] as const) specialUse.addSubnet(net, bits, 'ipv6');

/**
 * Whether a request to `url` may go out: the upstream's metadata names the endpoints, and a
 * hostile or compromised upstream could point them at our internal network. The issuer's own
 * host is the operator's choice and always allowed; any other host must resolve to public
 * addresses only, unless private ones are allowed (FETCH_ALLOW_PRIVATE_ADDRESSES).
 */
export async function destinationProblem(url: URL, issuerHost: string, allowPrivate: boolean): Promise<string | undefined> {
  if (allowPrivate || url.host === issuerHost) return undefined;
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const addresses = isIP(host) ? [{ address: host, family: isIP(host) }] : await lookup(host, { all: true }).catch(() => []);
  if (!addresses.length) return `${url.host} does not resolve`;
  const blocked = addresses.find((a) => specialUse.check(a.address, a.family === 6 ? 'ipv6' : 'ipv4'));
  return blocked ? `${url.host} resolves to ${blocked.address}, a loopback, private or reserved address: not called (FETCH_ALLOW_PRIVATE_ADDRESSES allows it)` : undefined;
}

export class OidcUpstream {
  readonly #allowHttp: boolean;
  readonly #timeoutMs: number;
  readonly #metadata = new Map<string, { as: oauth.AuthorizationServer; expires: number }>();
  readonly #jwks = new Map<string, oauth.JWKSCacheInput>();

  readonly #allowPrivate: boolean;

  /** `allowPrivate`: endpoints on other hosts than the issuer's may be private addresses. */
  constructor(options: { allowHttp: boolean; timeoutMs?: number; allowPrivate?: boolean }) {
    this.#allowHttp = options.allowHttp;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#allowPrivate = options.allowPrivate ?? false;
  }

  #options<T extends object>(connection: Connection, extra?: T) {
    const issuerHost = new URL(connection.settings.issuer).host;
    const guarded: typeof fetch = async (input, init) => {
      const url = new URL(input instanceof Request ? input.url : String(input));
      const problem = await destinationProblem(url, issuerHost, this.#allowPrivate);
      if (problem) throw new UpstreamRefusal('invalid_response', problem);
      return fetch(input, init);
    };
    return { [oauth.allowInsecureRequests]: this.#allowHttp, [oauth.customFetch]: guarded, signal: AbortSignal.timeout(this.#timeoutMs), ...extra };
  }

  /** The issuer the discovery document must name: Entra's multi-tenant ones publish a template. */
  static expectedDiscoveryIssuer(connection: Connection): string {
    const { issuer } = connection.settings;
    const tenant = entraTenantOf(issuer);
    if (connection.preset !== 'entra' || !tenant || !entraMultiTenant.has(tenant)) return issuer;
    const url = new URL(issuer);
    url.pathname = url.pathname.replace(/^\/[^/]+/, '/{tenantid}');
    return url.href.replace(/%7Btenantid%7D/i, '{tenantid}');
  }

  /** The upstream's metadata (discovery), cached for a while per connection version. */
  async metadata(connection: Connection): Promise<oauth.AuthorizationServer> {
    const key = `${connection.id}@${connection.updatedAt.getTime()}`;
    const cached = this.#metadata.get(key);
    if (cached && cached.expires > Date.now()) return cached.as;
    const as = await this.#attempt(async () => {
      const response = await oauth.discoveryRequest(new URL(connection.settings.issuer), this.#options(connection, { algorithm: 'oidc' as const }));
      return oauth.processDiscoveryResponse(new URL(OidcUpstream.expectedDiscoveryIssuer(connection)), response);
    });
    for (const endpoint of ['authorization_endpoint', 'token_endpoint', 'jwks_uri'] as const) {
      if (typeof as[endpoint] !== 'string') throw new UpstreamRefusal('invalid_response', `the upstream's discovery document has no ${endpoint}`);
    }
    this.#metadata.set(key, { as, expires: Date.now() + metadataTtlMs });
    return as;
  }

  async authorizationUrl(connection: Connection, redirectUri: string, checks: UpstreamChecks, options: AuthorizationOptions = {}): Promise<string> {
    const as = await this.metadata(connection);
    const { settings } = connection;
    const url = new URL(as.authorization_endpoint!);
    const params: Record<string, string> = {
      response_type: 'code',
      client_id: settings.clientId,
      redirect_uri: redirectUri,
      scope: settings.scopes.join(' '),
      state: checks.state,
      nonce: checks.nonce,
      code_challenge: await oauth.calculatePKCECodeChallenge(checks.codeVerifier),
      code_challenge_method: 'S256',
    };
    if (options.loginHint) params.login_hint = options.loginHint;
    if (options.fresh) Object.assign(params, { prompt: 'login', max_age: '0' });
    if (options.askMfa && settings.mfa.acr.length) params.acr_values = settings.mfa.acr.join(' ');
    // Entra ID: MFA evidence is an authentication context, asked for by the claims parameter.
    if (settings.mfa.authContext) params.claims = JSON.stringify({ id_token: { acrs: { essential: true, value: settings.mfa.authContext } } });
    // Google: with one Workspace domain, its account chooser shows only that domain (a hint; hd is checked on the token).
    if (connection.preset === 'google' && settings.hostedDomains.length === 1) params.hd = settings.hostedDomains[0]!;
    for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
    return url.href;
  }

  /** The upstream's answer at our callback → verified claims, or an UpstreamRefusal. */
  async exchange(connection: Connection, clientSecret: string, redirectUri: string, answer: Record<string, string>, checks: UpstreamChecks): Promise<UpstreamAnswer> {
    const as = await this.metadata(connection);
    const { settings } = connection;
    const client: oauth.Client = { client_id: settings.clientId };
    const auth = settings.tokenEndpointAuthMethod === 'client_secret_post' ? oauth.ClientSecretPost(clientSecret) : oauth.ClientSecretBasic(clientSecret);
    // An issuer template answered with RFC 9207's iss: that tenant's issuer, checked like the token's below.
    const answeredBy = as.issuer.includes('{tenantid}') && answer.iss ? this.#tenantIssuer(connection, as, answer.iss) : as;
    let params: URLSearchParams;
    try {
      params = oauth.validateAuthResponse(answeredBy, client, new URLSearchParams(answer), checks.state);
    } catch (error) {
      if (error instanceof oauth.AuthorizationResponseError) throw new UpstreamRefusal('upstream_error', error.error);
      throw this.#refusal(error);
    }
    return this.#attempt(async () => {
      const response = await oauth.authorizationCodeGrantRequest(as, client, auth, params, redirectUri, checks.codeVerifier, this.#options(connection));
      const signer = await this.#signerOf(connection, as, response);
      if (answeredBy !== as && signer.issuer !== answeredBy.issuer) throw new UpstreamRefusal('invalid_response', 'the ID token comes from another tenant than the authorization response');
      const result = await oauth.processAuthorizationCodeResponse(signer, client, response, {
        expectedNonce: checks.nonce, requireIdToken: true, ...(checks.maxAge !== undefined ? { maxAge: checks.maxAge } : {}),
      });
      // Always: a token endpoint is no reason to skip the signature.
      await oauth.validateApplicationLevelSignature(signer, response, this.#options(connection, { [oauth.jwksCache]: this.#jwksCache(connection) }));
      const idClaims = { ...oauth.getValidatedIdTokenClaims(result)! } as Record<string, unknown>;
      let claims = idClaims;
      if (settings.userinfo && as.userinfo_endpoint) {
        const info = await oauth.processUserInfoResponse(signer, client, String(idClaims.sub), await oauth.userInfoRequest(signer, client, result.access_token, this.#options(connection)));
        // The ID token's claims win: userinfo only fills what the token lacks (Okta's groups).
        claims = { ...info, ...idClaims };
      }
      return { issuer: signer.issuer, claims };
    });
  }

  /**
   * The metadata to check this token response against. For an issuer template, the tenant the
   * token names (read before its checks) must be allowed; the token must then carry exactly that
   * tenant's issuer and verify with the upstream's keys, or it is refused below.
   */
  async #signerOf(connection: Connection, as: oauth.AuthorizationServer, response: Response): Promise<oauth.AuthorizationServer> {
    if (!as.issuer.includes('{tenantid}')) return as;
    let tid: unknown;
    try {
      const body = (await response.clone().json()) as { id_token?: unknown };
      tid = typeof body.id_token === 'string' ? decodeJwt(body.id_token).tid : undefined;
    } catch {
      tid = undefined;
    }
    if (typeof tid !== 'string' || !/^[0-9a-f-]{36}$/i.test(tid)) throw new UpstreamRefusal('invalid_response', 'the ID token names no tenant (tid)');
    if (!connection.settings.tenants.includes(tid.toLowerCase())) throw new UpstreamRefusal('tenant_refused', `tenant ${tid} is not on the connection's allow-list`);
    return { ...as, issuer: as.issuer.replace('{tenantid}', tid) };
  }

  /** The issuer of an allowed tenant for an `iss` value that fills the template, or a refusal. */
  #tenantIssuer(connection: Connection, as: oauth.AuthorizationServer, iss: string): oauth.AuthorizationServer {
    const [before, after] = as.issuer.split('{tenantid}') as [string, string];
    const tid = iss.startsWith(before) && iss.endsWith(after) ? iss.slice(before.length, iss.length - after.length) : '';
    if (!/^[0-9a-f-]{36}$/i.test(tid)) throw new UpstreamRefusal('invalid_response', 'the authorization response names an issuer outside the upstream\'s template');
    if (!connection.settings.tenants.includes(tid.toLowerCase())) throw new UpstreamRefusal('tenant_refused', `tenant ${tid} is not on the connection's allow-list`);
    return { ...as, issuer: iss };
  }

  /** One JWKS cache per connection (the metadata object changes per template resolution). */
  #jwksCache(connection: Connection): oauth.JWKSCacheInput {
    let cache = this.#jwks.get(connection.id);
    if (!cache) this.#jwks.set(connection.id, (cache = {}));
    return cache;
  }

  async #attempt<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      throw this.#refusal(error);
    }
  }

  #refusal(error: unknown): UpstreamRefusal {
    if (error instanceof UpstreamRefusal) return error;
    if (error instanceof oauth.ResponseBodyError) return new UpstreamRefusal('upstream_error', `${error.error} from the token endpoint`);
    if (error instanceof oauth.OperationProcessingError) {
      // A non-2xx discovery or JWKS answer is the upstream being unwell, not a forged answer.
      const unreachable = error.code === oauth.RESPONSE_IS_NOT_CONFORM;
      return new UpstreamRefusal(unreachable ? 'upstream_unreachable' : 'invalid_response', `${error.code}: ${error.message}`);
    }
    const name = (error as { name?: string }).name;
    if (name === 'TimeoutError' || name === 'AbortError') return new UpstreamRefusal('upstream_unreachable', 'the upstream did not answer in time');
    if (error instanceof TypeError && /fetch failed/i.test(error.message)) return new UpstreamRefusal('upstream_unreachable', `the upstream cannot be reached (${String((error.cause as { code?: string } | undefined)?.code ?? 'network error')})`);
    return new UpstreamRefusal('invalid_response', (error as Error).message ?? String(error));
  }

  /** `idp connections test`: discovery, JWKS and what the connection needs of them. */
  async test(connection: Connection): Promise<{ check: string; ok: boolean; detail: string }[]> {
    const results: { check: string; ok: boolean; detail: string }[] = [];
    let as: oauth.AuthorizationServer;
    try {
      this.#metadata.clear();
      as = await this.metadata(connection);
      results.push({ check: 'discovery', ok: true, detail: `${connection.settings.issuer}/.well-known/openid-configuration names issuer ${as.issuer}` });
    } catch (error) {
      results.push({ check: 'discovery', ok: false, detail: (error as Error).message });
      return results;
    }
    try {
      const problem = await destinationProblem(new URL(as.jwks_uri!), new URL(connection.settings.issuer).host, this.#allowPrivate);
      if (problem) throw new Error(problem);
      const response = await fetch(as.jwks_uri!, { signal: AbortSignal.timeout(this.#timeoutMs), redirect: 'manual' });
      const jwks = (await response.json()) as { keys?: { kty?: string; use?: string; alg?: string }[] };
      const signing = (jwks.keys ?? []).filter((k) => k.use !== 'enc' && (k.kty === 'RSA' || k.kty === 'EC' || k.kty === 'OKP'));
      results.push({ check: 'jwks', ok: response.ok && signing.length > 0, detail: response.ok ? `${signing.length} signing key(s) at ${as.jwks_uri}` : `HTTP ${response.status} from ${as.jwks_uri}` });
    } catch (error) {
      results.push({ check: 'jwks', ok: false, detail: `${as.jwks_uri}: ${(error as Error).message}` });
    }
    const methods = as.token_endpoint_auth_methods_supported ?? ['client_secret_basic'];
    const method = connection.settings.tokenEndpointAuthMethod;
    results.push({ check: 'client authentication', ok: methods.includes(method), detail: methods.includes(method) ? `${method} is supported` : `${method} is not among ${methods.join(', ')}` });
    const pkce = as.code_challenge_methods_supported;
    results.push({ check: 'pkce', ok: pkce === undefined || pkce.includes('S256'), detail: pkce === undefined ? 'not advertised (S256 is sent anyway)' : `S256 ${pkce.includes('S256') ? 'supported' : 'NOT supported'}` });
    const scopes = as.scopes_supported;
    const missing = scopes ? connection.settings.scopes.filter((s) => !scopes.includes(s)) : [];
    results.push({ check: 'scopes', ok: missing.length === 0, detail: missing.length ? `not advertised: ${missing.join(', ')}` : 'every scope is advertised (or the list is not published)' });
    if (as.issuer.includes('{tenantid}')) {
      results.push({ check: 'tenants', ok: connection.settings.tenants.length > 0, detail: connection.settings.tenants.length ? `multi-tenant issuer; allowed: ${connection.settings.tenants.join(', ')}` : 'multi-tenant issuer without a tenant allow-list: nobody can sign in' });
    }
    return results;
  }
}
