// The essence of the OpenID Foundation Basic OP / Config OP test plans for discovery, keys and the
// authorization endpoint, reproduced with openid-client as the relying party against a real
// server on a port. Each test is named after the conformance-suite module it reproduces.
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, generateKeyPair, jwtVerify, SignJWT, UnsecuredJWT, type JWTPayload } from 'jose';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';
import { authorizationRequest, loginAndRedeem, redirectUri, secondRedirectUri, startConformance, user, type Conformance } from './setup.ts';
import { sleep } from '../helpers/time.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const otherUser = { email: 'second-user@example.com', password: 'another long secret 2', name: 'Second User' };
/** A client whose registered redirect URI carries a query (oidcc-redirect-uri-query-*). */
const queryRedirectUri = 'http://localhost:8080/cb?client=rp-query';

let c: Conformance;
let origin: string;
let queryClient: oidc.Configuration;
let queryClientSecret: string;

beforeAll(async () => {
  c = await startConformance();
  origin = new URL(c.issuer).origin;
  await c.t.idp.accounts.create({ ...otherUser, emailVerified: true });
  queryClientSecret = (await c.t.idp.clients.create({ client_id: 'rp-query', redirect_uris: [queryRedirectUri], grant_types: ['authorization_code'] })).clientSecret!;
  queryClient = await oidc.discovery(new URL(c.issuer), 'rp-query', queryClientSecret, undefined, insecure);
});

afterAll(async () => {
  await c?.stop();
});

type Screen = 'email' | 'password' | 'consent';

interface Journey {
  /** Where the provider finally sent the browser (the client's redirect URI). */
  callback: URL;
  /** Our screens the user saw on the way, in order. */
  screens: Screen[];
  /** Their HTML, in the same order. */
  pages: string[];
}

/** Continues through our screens from a page (or a redirect already off our origin), as a person would. */
async function complete(browser: Browser, start: { response: Response; url: URL }, credentials = user): Promise<Journey> {
  let { response, url } = start;
  const screens: Screen[] = [];
  const pages: string[] = [];
  for (let step = 0; step < 6; step++) {
    if (url.origin !== origin) return { callback: url, screens, pages };
    const html = await response.text();
    expect(response.status, `page ${url.pathname}: ${html.slice(0, 400)}`).toBe(200);
    pages.push(html);
    const csrf = csrfOf(html);
    if (html.includes('name="email"')) {
      screens.push('email');
      ({ response, url } = await browser.postForm(new URL(formAction(html, 'identify'), origin), { csrf, email: credentials.email }, origin));
    } else if (html.includes('name="password"')) {
      screens.push('password');
      ({ response, url } = await browser.postForm(new URL(formAction(html, 'password'), origin), { csrf, password: credentials.password }, origin));
    } else if (html.includes('/consent"')) {
      screens.push('consent');
      ({ response, url } = await browser.postForm(new URL(formAction(html, 'consent'), origin), { csrf }, origin));
    } else throw new Error(`unexpected page at ${url.pathname}: ${html.slice(0, 400)}`);
  }
  throw new Error('the flow did not finish within 6 pages');
}

/** Opens an authorization URL in `browser` and goes through whatever screens come. */
async function authorize(browser: Browser, url: URL | string, credentials = user): Promise<Journey> {
  return complete(browser, await browser.follow(url, origin), credentials);
}

/** The parameters of an authorization response, from the fragment or the query. */
function responseParams(url: URL): URLSearchParams {
  return url.hash.length > 1 ? new URLSearchParams(url.hash.slice(1)) : url.searchParams;
}

type Outcome =
  | { kind: 'redirect'; url: URL; params: URLSearchParams }
  | { kind: 'page'; url: URL; status: number; body: string };

/** Opens a URL and reports whether the provider redirected off its origin (to the client) or served a page. */
async function attempt(url: URL | string, browser = new Browser(), init: RequestInit = {}): Promise<Outcome> {
  const { response, url: at } = await browser.follow(url, origin, init);
  if (at.origin !== origin) return { kind: 'redirect', url: at, params: responseParams(at) };
  return { kind: 'page', url: at, status: response.status, body: await response.text() };
}

function expectRedirect(outcome: Outcome): asserts outcome is Extract<Outcome, { kind: 'redirect' }> {
  expect(outcome.kind, outcome.kind === 'page' ? `served a page (${outcome.status}): ${outcome.body.slice(0, 400)}` : '').toBe('redirect');
}

/** The redirect URI a response was sent to, without its response parameters. */
function baseOf(url: URL): string {
  const base = new URL(url);
  base.hash = '';
  for (const name of ['code', 'state', 'iss', 'error', 'error_description', 'session_state']) base.searchParams.delete(name);
  return base.href;
}

async function redeem(config: oidc.Configuration, journey: Journey, request: { verifier: string; state: string; nonce: string }, maxAge?: number) {
  return oidc.authorizationCodeGrant(config, journey.callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce, ...(maxAge === undefined ? {} : { maxAge }) });
}

function idClaims(tokens: oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers) {
  const claims = tokens.claims();
  expect(claims, 'the token response carries an ID token').toBeTruthy();
  return claims!;
}

/** Shows our error page for a bad redirect_uri: HTTP 400, no redirect anywhere, the problem named. */
async function expectRedirectUriErrorPage(url: URL | string, error: string) {
  const response = await new Browser().request(url);
  const body = await response.text();
  expect(response.status, body.slice(0, 400)).toBe(400);
  expect(response.headers.get('location')).toBeNull();
  expect(body).toContain('redirect_uri');
  expect(body).toContain(`<dd>${error}</dd>`);
  expect(body).not.toContain('code=');
}


describe('Discovery and keys', () => {
  let meta: Record<string, unknown>;

  beforeAll(async () => {
    const response = await fetch(`${c.issuer}/.well-known/openid-configuration`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    meta = (await response.json()) as Record<string, unknown>;
  });

  it('oidcc-discovery-endpoint-verification: issuer matches the issuer URL exactly and every endpoint is on its scheme and host', () => {
    expect(meta.issuer).toBe(c.issuer);
    const issuer = new URL(c.issuer);
    expect(issuer.search).toBe('');
    expect(issuer.hash).toBe('');
    const urls = Object.entries(meta).filter(([key, value]) => /(_endpoint|_uri)$/.test(key) && typeof value === 'string') as [string, string][];
    expect(urls.map(([key]) => key)).toEqual(expect.arrayContaining(['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri', 'end_session_endpoint']));
    for (const [key, value] of urls) {
      const url = new URL(value);
      expect(url.protocol, key).toBe(issuer.protocol);
      expect(url.host, key).toBe(issuer.host);
    }
    // openid-client accepted the same document (it checks the issuer itself).
    expect(c.basic.serverMetadata().issuer).toBe(c.issuer);
  });

  it('oidcc-discovery-endpoint-verification: advertises openid, code, RS256, subject types and PKCE S256 (not plain)', () => {
    expect(meta.scopes_supported).toEqual(expect.arrayContaining(['openid']));
    expect(meta.response_types_supported).toEqual(expect.arrayContaining(['code']));
    expect(meta.id_token_signing_alg_values_supported).toEqual(expect.arrayContaining(['RS256']));
    expect(meta.id_token_signing_alg_values_supported).not.toContain('none');
    expect(Array.isArray(meta.subject_types_supported)).toBe(true);
    expect((meta.subject_types_supported as string[]).length).toBeGreaterThan(0);
    expect(meta.subject_types_supported).toContain('public');
    expect(meta.code_challenge_methods_supported).toContain('S256');
    expect(meta.code_challenge_methods_supported).not.toContain('plain');
  });

  it('oidcc-discovery-endpoint-verification: advertises logout (end session, back-channel with sid) and the request parameter', () => {
    expect(typeof meta.end_session_endpoint).toBe('string');
    expect(meta.backchannel_logout_supported).toBe(true);
    expect(meta.backchannel_logout_session_supported).toBe(true);
    expect(meta.request_parameter_supported).toBe(true);
    expect(meta.request_object_signing_alg_values_supported).toEqual(expect.arrayContaining(['RS256']));
    expect(meta.request_object_signing_alg_values_supported).not.toContain('none');
    expect(meta.claims_parameter_supported).toBe(true);
  });

  it('oidcc-discovery-endpoint-verification: the JWKS holds public signing keys only, with unique kids', async () => {
    const response = await fetch(meta.jwks_uri as string);
    expect(response.status).toBe(200);
    const jwks = (await response.json()) as { keys: Record<string, unknown>[] };
    expect(Array.isArray(jwks.keys)).toBe(true);
    expect(jwks.keys.length).toBeGreaterThan(0);
    for (const key of jwks.keys) {
      expect(key.kty, 'no symmetric keys').not.toBe('oct');
      expect(key).not.toHaveProperty('k');
      for (const member of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth']) expect(key, `private member ${member}`).not.toHaveProperty(member);
      expect(key.use).toBe('sig');
      expect(typeof key.kid).toBe('string');
    }
    const kids = jwks.keys.map((key) => key.kid);
    expect(new Set(kids).size).toBe(kids.length);
  });
});

describe('Authorization endpoint', () => {
  describe('successful flows', () => {
    it('oidcc-server: authorization code flow succeeds', async () => {
      const browser = new Browser();
      const request = await authorizationRequest(c.basic);
      const journey = await authorize(browser, request.url);
      expect(journey.screens).toEqual(expect.arrayContaining(['email', 'password']));
      expect(baseOf(journey.callback)).toBe(redirectUri);
      expect(journey.callback.searchParams.get('state')).toBe(request.state);
      expect(journey.callback.searchParams.get('iss')).toBe(c.issuer);
      expect(journey.callback.searchParams.get('code')).toBeTruthy();
      const tokens = await redeem(c.basic, journey, request);
      expect(tokens.token_type.toLowerCase()).toBe('bearer');
      expect(tokens.access_token).toBeTruthy();
      const claims = idClaims(tokens);
      expect(claims).toMatchObject({ iss: c.issuer, aud: 'rp-basic', nonce: request.nonce });
      expect(typeof claims.sub).toBe('string');
      expect(claims.exp).toBeGreaterThan(claims.iat);
      const userinfo = await oidc.fetchUserInfo(c.basic, tokens.access_token, claims.sub);
      expect(userinfo.sub).toBe(claims.sub);
    });

    it('oidcc-idtoken-signature: the ID token is RS256-signed by a key in the JWKS', async () => {
      const { tokens } = await loginAndRedeem(c.post);
      const header = decodeProtectedHeader(tokens.id_token!);
      expect(header.alg).toBe('RS256');
      const jwks = (await (await fetch(c.post.serverMetadata().jwks_uri!)).json()) as { keys: { kid: string }[] };
      expect(jwks.keys.map((k) => k.kid)).toContain(header.kid);
      const { payload } = await jwtVerify(tokens.id_token!, createRemoteJWKSet(new URL(c.post.serverMetadata().jwks_uri!)), { issuer: c.issuer, audience: 'rp-post', algorithms: ['RS256'] });
      expect(payload.sub).toBeTruthy();
      // A tampered ID token no longer verifies.
      const [header64, , signature] = tokens.id_token!.split('.');
      const tampered = `${header64}.${Buffer.from(JSON.stringify({ ...decodeJwt(tokens.id_token!), sub: 'someone-else' })).toString('base64url')}.${signature}`;
      await expect(jwtVerify(tampered, createRemoteJWKSet(new URL(c.post.serverMetadata().jwks_uri!)))).rejects.toThrow();
    });

    it('oidcc-ensure-other-scope-order-succeeds: scope values and query parameters in another order succeed', async () => {
      const request = await authorizationRequest(c.basic, { scope: 'email openid' });
      const reordered = new URL(request.url);
      const entries = [...reordered.searchParams.entries()];
      reordered.search = new URLSearchParams(entries.reverse()).toString();
      expect(reordered.search).not.toBe(request.url.search);
      expect(reordered.searchParams.keys().next().value).not.toBe(request.url.searchParams.keys().next().value);
      const journey = await authorize(new Browser(), reordered);
      const tokens = await redeem(c.basic, journey, request);
      expect(idClaims(tokens).nonce).toBe(request.nonce);
      expect(tokens.scope?.split(' ').sort()).toEqual(['email', 'openid']);
    });

    it('oidcc-ensure-post-request-succeeds: the authorization request sent as a form POST succeeds', async () => {
      const browser = new Browser();
      const request = await authorizationRequest(c.basic);
      const endpoint = c.basic.serverMetadata().authorization_endpoint!;
      const start = await browser.postForm(endpoint, Object.fromEntries(request.url.searchParams), origin);
      // OpenID Connect Core 3.1.2.1: the authorization endpoint MUST support GET and POST. The POST
      // must lead to our login screen, like the GET does.
      expect(start.url.origin).toBe(origin);
      expect(start.url.pathname, `POST ${endpoint} answered HTTP ${start.response.status} at ${start.url.pathname}`).toMatch(/^\/interaction\//);
      const journey = await complete(browser, start);
      expect(journey.screens).toEqual(expect.arrayContaining(['email', 'password']));
      expect(journey.callback.searchParams.get('state')).toBe(request.state);
      const tokens = await redeem(c.basic, journey, request);
      expect(idClaims(tokens).nonce).toBe(request.nonce);
    });

    it('oidcc-ensure-request-with-unknown-parameter-succeeds: unknown authorization request parameters are ignored', async () => {
      const request = await authorizationRequest(c.basic, { extra: 'foobar', unknown_param: 'ignored-value' });
      expect(request.url.searchParams.get('extra')).toBe('foobar');
      const journey = await authorize(new Browser(), request.url);
      expect(journey.callback.searchParams.get('error')).toBeNull();
      expect(journey.callback.searchParams.has('extra')).toBe(false);
      expect(journey.callback.searchParams.has('unknown_param')).toBe(false);
      const tokens = await redeem(c.basic, journey, request);
      expect(idClaims(tokens).nonce).toBe(request.nonce);
    });

    it('oidcc-redirect-uri-query-OK: a registered redirect_uri with a query is used exactly, query kept', async () => {
      const request = await authorizationRequest(queryClient, { redirect_uri: queryRedirectUri });
      const journey = await authorize(new Browser(), request.url);
      expect(journey.callback.searchParams.get('client')).toBe('rp-query');
      expect(baseOf(journey.callback)).toBe(queryRedirectUri);
      expect(journey.callback.searchParams.get('state')).toBe(request.state);
      // openid-client strips the query when it derives redirect_uri, so the code is redeemed by hand.
      const response = await fetch(queryClient.serverMetadata().token_endpoint!, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`rp-query:${queryClientSecret}`).toString('base64')}` },
        body: new URLSearchParams({ grant_type: 'authorization_code', code: journey.callback.searchParams.get('code')!, redirect_uri: queryRedirectUri, code_verifier: request.verifier }),
      });
      const body = (await response.json()) as { id_token?: string; error?: string };
      expect(response.status, JSON.stringify(body)).toBe(200);
      const { payload } = await jwtVerify(body.id_token!, createRemoteJWKSet(new URL(queryClient.serverMetadata().jwks_uri!)), { issuer: c.issuer, audience: 'rp-query' });
      expect(payload.nonce).toBe(request.nonce);
    });
  });

  describe('response_type', () => {
    it('oidcc-response-type-missing: no response_type → redirected to the client with invalid_request', async () => {
      const request = await authorizationRequest(c.basic);
      const url = new URL(request.url);
      url.searchParams.delete('response_type');
      const outcome = await attempt(url);
      // The redirect_uri is registered, so the error goes back to the client (query, the default mode without a response_type).
      expectRedirect(outcome);
      expect(baseOf(outcome.url)).toBe(redirectUri);
      expect(outcome.url.hash).toBe('');
      expect(outcome.params.get('error')).toBe('invalid_request');
      expect(outcome.params.get('error_description')).toContain('response_type');
      expect(outcome.params.get('state')).toBe(request.state);
      expect(outcome.params.get('iss')).toBe(c.issuer);
      expect(outcome.params.has('code')).toBe(false);
    });

    for (const responseType of ['token', 'id_token', 'code token', 'code id_token', 'none']) {
      it(`oidcc-response-type-missing (variant, unsupported type): response_type=${responseType} → unsupported_response_type at the redirect URI`, async () => {
        const request = await authorizationRequest(c.basic);
        const url = new URL(request.url);
        url.searchParams.set('response_type', responseType);
        const outcome = await attempt(url);
        expectRedirect(outcome);
        expect(baseOf(outcome.url)).toBe(redirectUri);
        // Response types with a token default to the fragment response mode; others to the query.
        expect(outcome.url.hash.length > 1).toBe(responseType.includes('token'));
        expect(outcome.params.get('error')).toBe('unsupported_response_type');
        expect(outcome.params.get('state')).toBe(request.state);
        expect(outcome.params.has('code')).toBe(false);
        expect(outcome.params.has('id_token')).toBe(false);
        expect(outcome.params.has('access_token')).toBe(false);
      });
    }
  });

  describe('redirect_uri', () => {
    it('oidcc-ensure-registered-redirect-uri: an unregistered redirect_uri gets our error page, never a redirect', async () => {
      const request = await authorizationRequest(c.basic, { redirect_uri: 'https://attacker.example/cb' });
      await expectRedirectUriErrorPage(request.url, 'invalid_redirect_uri');
    });

    it('oidcc-ensure-redirect-uri-in-authorization-request: a missing redirect_uri, with two registered, gets our error page', async () => {
      const request = await authorizationRequest(c.basic);
      const url = new URL(request.url);
      url.searchParams.delete('redirect_uri');
      await expectRedirectUriErrorPage(url, 'invalid_request');
    });

    it('oidcc-ensure-redirect-uri-in-authorization-request (counterpart): the second registered redirect_uri is honoured when named', async () => {
      const request = await authorizationRequest(c.basic, { redirect_uri: secondRedirectUri });
      const journey = await authorize(new Browser(), request.url);
      expect(baseOf(journey.callback)).toBe(secondRedirectUri);
      expect(journey.callback.searchParams.get('code')).toBeTruthy();
    });

    it('oidcc-redirect-uri-query-added: a query added to a registered redirect_uri gets our error page', async () => {
      const request = await authorizationRequest(c.basic, { redirect_uri: `${redirectUri}?extra=1` });
      await expectRedirectUriErrorPage(request.url, 'invalid_redirect_uri');
      const toQueryClient = await authorizationRequest(queryClient, { redirect_uri: `${queryRedirectUri}&extra=1` });
      await expectRedirectUriErrorPage(toQueryClient.url, 'invalid_redirect_uri');
    });

    it('oidcc-redirect-uri-query-mismatch: a changed query on a registered redirect_uri gets our error page', async () => {
      const request = await authorizationRequest(queryClient, { redirect_uri: 'http://localhost:8080/cb?client=someone-else' });
      await expectRedirectUriErrorPage(request.url, 'invalid_redirect_uri');
      const withoutQuery = await authorizationRequest(queryClient, { redirect_uri: 'http://localhost:8080/cb' });
      await expectRedirectUriErrorPage(withoutQuery.url, 'invalid_redirect_uri');
    });

    it('oidcc-ensure-registered-redirect-uri (variants): changed path, port, scheme, host or a fragment get our error page', async () => {
      for (const changed of ['http://localhost:8080/cb/', 'http://localhost:8080/cb/extra', 'http://localhost:8081/cb', 'https://localhost:8080/cb', 'http://localhost:8080/cb#frag', 'http://127.0.0.1:8080/cb']) {
        const request = await authorizationRequest(c.basic, { redirect_uri: changed });
        await expectRedirectUriErrorPage(request.url, 'invalid_redirect_uri');
      }
    });
  });

  describe('request objects (request parameter)', () => {
    async function requestObjectRequest(sign: (claims: JWTPayload) => Promise<string>, overrides: JWTPayload = {}) {
      const verifier = oidc.randomPKCECodeVerifier();
      const state = oidc.randomState();
      const nonce = oidc.randomNonce();
      const claims: JWTPayload = {
        iss: 'rp-key',
        aud: c.issuer,
        client_id: 'rp-key',
        response_type: 'code',
        redirect_uri: redirectUri,
        scope: 'openid',
        state,
        nonce,
        code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        claims: { id_token: { email: { essential: true } } },
        ...overrides,
      };
      const url = new URL(c.keyJwt.serverMetadata().authorization_endpoint!);
      // OpenID Connect Core 6.1: response_type, client_id and scope also travel as plain parameters.
      url.search = new URLSearchParams({ client_id: 'rp-key', response_type: 'code', scope: 'openid', request: await sign(claims) }).toString();
      return { url, verifier, state, nonce };
    }

    const now = () => Math.floor(Date.now() / 1000);
    const signedByClient = (claims: JWTPayload) => new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: 'rp-key-1' }).setIssuedAt().setExpirationTime('5m').setJti(oidc.randomState()).sign(c.keyJwtPrivate);

    async function expectRefused(url: URL, description: RegExp) {
      const outcome = await attempt(url);
      expectRedirect(outcome);
      expect(baseOf(outcome.url)).toBe(redirectUri);
      expect(outcome.params.get('error')).toBe('invalid_request_object');
      expect(outcome.params.get('error_description')).toMatch(description);
      expect(outcome.params.has('code')).toBe(false);
    }

    it('oidcc-request-uri-signed-rs256 (by value, request=): a request object signed by the client is used for the login', async () => {
      const request = await requestObjectRequest(signedByClient);
      // state and nonce exist only inside the object; seeing them come back proves it was used.
      expect(request.url.searchParams.has('state')).toBe(false);
      expect(request.url.searchParams.has('nonce')).toBe(false);
      const journey = await authorize(new Browser(), request.url);
      expect(baseOf(journey.callback)).toBe(redirectUri);
      expect(journey.callback.searchParams.get('state')).toBe(request.state);
      const tokens = await redeem(c.keyJwt, journey, request);
      const claims = idClaims(tokens);
      expect(claims.aud).toBe('rp-key');
      expect(claims.nonce).toBe(request.nonce);
      expect(claims.email).toBe(user.email);
    });

    // The suite skips this module when discovery does not list none (ours does not); we check the refusal anyway.
    it('oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported: alg none is refused with invalid_request_object', async () => {
      const request = await requestObjectRequest(async (claims) => new UnsecuredJWT(claims).setIssuedAt().setExpirationTime('5m').encode());
      expect(decodeProtectedHeader(request.url.searchParams.get('request')!).alg).toBe('none');
      await expectRefused(request.url, /alg/);
    });

    it('fapi1-advanced-final-ensure-request-object-with-invalid-signature-fails: a request object signed by another key is refused', async () => {
      const { privateKey } = await generateKeyPair('RS256');
      const request = await requestObjectRequest((claims) => new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: 'rp-key-1' }).setIssuedAt().setExpirationTime('5m').sign(privateKey));
      await expectRefused(request.url, /could not validate/);
    });

    it('fapi1-advanced-final-ensure-expired-request-object-fails: an expired request object is refused', async () => {
      const request = await requestObjectRequest((claims) => new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: 'rp-key-1' }).setIssuedAt(now() - 600).setExpirationTime(now() - 300).sign(c.keyJwtPrivate));
      await expectRefused(request.url, /claims are invalid/);
    });

    it('fapi1-advanced-final-ensure-request-object-with-bad-aud-fails: a request object for another audience is refused', async () => {
      const request = await requestObjectRequest(signedByClient, { aud: 'https://another-op.example' });
      await expectRefused(request.url, /claims are invalid/);
    });

    it('fapi1-advanced-final-ensure-request-object-with-bad-aud-fails (iss variant): a request object issued by another client is refused', async () => {
      const request = await requestObjectRequest(signedByClient, { iss: 'rp-basic' });
      await expectRefused(request.url, /claims are invalid/);
    });

    it('oidcc-ensure-request-object-with-redirect-uri: a signed object naming an unregistered redirect_uri gets our error page', async () => {
      const request = await requestObjectRequest(signedByClient, { redirect_uri: 'https://attacker.example/cb' });
      // The registered one outside the object must not be used to carry the error either.
      request.url.searchParams.set('redirect_uri', redirectUri);
      await expectRedirectUriErrorPage(request.url, 'invalid_redirect_uri');
    });
  });

  describe('prompt, max_age and hints', () => {
    it('oidcc-prompt-none-not-logged-in: prompt=none without a session → login_required at the redirect URI', async () => {
      const request = await authorizationRequest(c.basic, { prompt: 'none' });
      const outcome = await attempt(request.url);
      expectRedirect(outcome);
      expect(baseOf(outcome.url)).toBe(redirectUri);
      expect(outcome.params.get('error')).toBe('login_required');
      expect(outcome.params.get('state')).toBe(request.state);
      expect(outcome.params.has('code')).toBe(false);
    });

    it('oidcc-prompt-none-logged-in: prompt=none with a session and consent → a code without any screen, same sub', async () => {
      const first = await loginAndRedeem(c.basic);
      const sub = idClaims(first.tokens).sub;
      const request = await authorizationRequest(c.basic, { prompt: 'none' });
      const journey = await authorize(first.browser, request.url);
      expect(journey.screens).toEqual([]);
      expect(journey.callback.searchParams.get('error')).toBeNull();
      const tokens = await redeem(c.basic, journey, request);
      expect(idClaims(tokens).sub).toBe(sub);
    });

    it('oidcc-prompt-none-logged-in (counterpart): prompt=none with a session but no consent for the requested scope → consent_required', async () => {
      const first = await loginAndRedeem(c.basic);
      const request = await authorizationRequest(c.basic, { prompt: 'none', scope: 'openid phone' });
      const outcome = await attempt(request.url, first.browser);
      expectRedirect(outcome);
      expect(outcome.params.get('error')).toBe('consent_required');
      expect(outcome.params.get('state')).toBe(request.state);
    });

    it('oidcc-prompt-login: prompt=login with a session shows the login screens again and gives a later auth_time', async () => {
      const first = await loginAndRedeem(c.basic, { max_age: '3600' });
      const firstClaims = idClaims(first.tokens);
      expect(typeof firstClaims.auth_time).toBe('number');
      await sleep(1100);
      const request = await authorizationRequest(c.basic, { prompt: 'login', max_age: '3600' });
      const journey = await authorize(first.browser, request.url);
      expect(journey.screens).toEqual(expect.arrayContaining(['email', 'password']));
      expect(journey.screens).not.toContain('consent');
      const claims = idClaims(await redeem(c.basic, journey, request, 3600));
      expect(claims.sub).toBe(firstClaims.sub);
      expect(claims.auth_time).toBeGreaterThan(firstClaims.auth_time!);
    });

    it('oidcc-max-age-10000: a login younger than max_age is reused without any screen, same auth_time', async () => {
      const first = await loginAndRedeem(c.basic, { max_age: '10000' });
      const firstClaims = idClaims(first.tokens);
      expect(typeof firstClaims.auth_time).toBe('number');
      const request = await authorizationRequest(c.basic, { max_age: '10000' });
      const journey = await authorize(first.browser, request.url);
      expect(journey.screens).toEqual([]);
      const claims = idClaims(await redeem(c.basic, journey, request, 10000));
      expect(claims.sub).toBe(firstClaims.sub);
      expect(claims.auth_time).toBe(firstClaims.auth_time);
    });

    it('oidcc-max-age-1: after the suite\'s 2 s wait, max_age=1 requires re-authentication (login screen, later auth_time)', async () => {
      const first = await loginAndRedeem(c.basic, { max_age: '10000' });
      const firstClaims = idClaims(first.tokens);
      await sleep(2000);
      const request = await authorizationRequest(c.basic, { max_age: '1' });
      const journey = await authorize(first.browser, request.url);
      expect(journey.screens[0]).toBe('email');
      expect(journey.screens).toContain('password');
      const claims = idClaims(await redeem(c.basic, journey, request, 1));
      expect(claims.sub).toBe(firstClaims.sub);
      expect(claims.auth_time).toBeGreaterThan(firstClaims.auth_time!);
      expect(Math.abs(Date.now() / 1000 - claims.auth_time!)).toBeLessThan(10);
    });

    it('oidcc-max-age-1 (1.5 s): 1.5 s after a login, max_age=1 requires re-authentication whatever the sub-second timing', async () => {
      // Whole-second timestamps make this depend on where in a second the login happened, so the
      // login is placed just after a second boundary: that is the case where an OP comparing
      // whole seconds with '>' sees an elapsed time of 1 (not more than max_age) and skips the login.
      const browser = (await loginAndRedeem(c.basic)).browser;
      const login = await authorizationRequest(c.basic, { prompt: 'login', max_age: '3600' });
      const identify = await browser.follow(login.url, origin);
      const identifyHtml = await identify.response.text();
      expect(identifyHtml).toContain('name="email"');
      const passwordPage = await browser.postForm(new URL(formAction(identifyHtml, 'identify'), origin), { csrf: csrfOf(identifyHtml), email: user.email }, origin);
      const passwordHtml = await passwordPage.response.text();
      expect(passwordHtml).toContain('name="password"');
      await sleep(1000 - (Date.now() % 1000) + 20);
      const submitted = Date.now();
      const done = await browser.postForm(new URL(formAction(passwordHtml, 'password'), origin), { csrf: csrfOf(passwordHtml), password: user.password }, origin);
      const authenticatedBy = Date.now();
      expect(done.url.origin, 'the login finished at the client').not.toBe(origin);
      const authTime = idClaims(await redeem(c.basic, { callback: done.url, screens: [], pages: [] }, login, 3600)).auth_time!;
      // Preconditions of the timing (not the server's behaviour under test): the login fell early in one second.
      expect(authTime).toBe(Math.floor(submitted / 1000));
      expect(authenticatedBy - authTime * 1000).toBeLessThan(450);

      await sleep(authenticatedBy + 1500 - Date.now());
      const request = await authorizationRequest(c.basic, { max_age: '1' });
      const journey = await authorize(browser, request.url);
      expect(journey.screens, `at least 1.5 s after the login (auth_time ${authTime}, now ${(Date.now() / 1000).toFixed(2)}), max_age=1 must show the login screen`).toContain('email');
      const claims = idClaims(await redeem(c.basic, journey, request, 1));
      expect(claims.auth_time).toBeGreaterThan(authTime);
    });

    it('oidcc-id-token-hint: id_token_hint with prompt=none returns the same sub without any screen', async () => {
      const first = await loginAndRedeem(c.basic);
      const sub = idClaims(first.tokens).sub;
      const request = await authorizationRequest(c.basic, { prompt: 'none', id_token_hint: first.tokens.id_token! });
      const journey = await authorize(first.browser, request.url);
      expect(journey.screens).toEqual([]);
      expect(idClaims(await redeem(c.basic, journey, request)).sub).toBe(sub);
    });

    it('oidcc-id-token-hint: id_token_hint with prompt=none is refused for another user or without a session', async () => {
      const first = await loginAndRedeem(c.basic);
      const otherRequest = await authorizationRequest(c.basic);
      const other = await authorize(new Browser(), otherRequest.url, otherUser);
      const otherTokens = await redeem(c.basic, other, otherRequest);
      expect(idClaims(otherTokens).sub).not.toBe(idClaims(first.tokens).sub);

      const mismatched = await authorizationRequest(c.basic, { prompt: 'none', id_token_hint: otherTokens.id_token! });
      const outcome = await attempt(mismatched.url, first.browser);
      expectRedirect(outcome);
      expect(outcome.params.get('error')).toBe('login_required');
      expect(outcome.params.has('code')).toBe(false);

      const noSession = await authorizationRequest(c.basic, { prompt: 'none', id_token_hint: first.tokens.id_token! });
      const fresh = await attempt(noSession.url);
      expectRedirect(fresh);
      expect(fresh.params.get('error')).toBe('login_required');

      const garbage = await authorizationRequest(c.basic, { prompt: 'none', id_token_hint: 'not-a-jwt' });
      const refused = await attempt(garbage.url, first.browser);
      expectRedirect(refused);
      expect(refused.params.get('error')).toBe('invalid_request');
      expect(refused.params.get('error_description')).toMatch(/id_token_hint/);
    });

    it('oidcc-login-hint: login_hint prefills the email field and the flow completes', async () => {
      const request = await authorizationRequest(c.basic, { login_hint: user.email });
      const journey = await authorize(new Browser(), request.url);
      expect(journey.screens[0]).toBe('email');
      expect(journey.pages[0]).toMatch(new RegExp(`<input id="email" name="email"[^>]*value="${user.email.replace(/[.@]/g, (ch) => (ch === '.' ? '\\.' : ch))}"`));
      expect(journey.callback.searchParams.get('code')).toBeTruthy();
      expect(idClaims(await redeem(c.basic, journey, request)).sub).toBeTruthy();
    });

    const accepted: [string, Record<string, string>][] = [
      ['oidcc-ui-locales', { ui_locales: 'fr-CA en' }],
      ['oidcc-claims-locales', { claims_locales: 'de en' }],
      ['oidcc-display-page', { display: 'page' }],
      ['oidcc-display-popup', { display: 'popup' }],
      ['oidcc-ensure-request-with-acr-values-succeeds', { acr_values: 'urn:idp:acr:1fa urn:idp:acr:2fa' }],
    ];
    for (const [module, extra] of accepted) {
      it(`${module}: ${Object.entries(extra).map(([k, v]) => `${k}=${v}`).join(' ')} is accepted and the flow completes`, async () => {
        const request = await authorizationRequest(c.basic, extra);
        const journey = await authorize(new Browser(), request.url);
        expect(journey.screens).toEqual(expect.arrayContaining(['email', 'password']));
        expect(journey.callback.searchParams.get('error')).toBeNull();
        const claims = idClaims(await redeem(c.basic, journey, request));
        expect(claims.sub).toBeTruthy();
        if (extra.ui_locales) expect(journey.pages[0]).toContain('<html lang="en">');
        if (extra.acr_values) expect(claims.acr).toBe('urn:idp:acr:1fa');
      });
    }
  });

  describe('nonce and claims', () => {
    it('oidcc-server: the nonce is echoed in the ID token', async () => {
      const first = await loginAndRedeem(c.basic);
      expect(idClaims(first.tokens).nonce).toBe(first.request.nonce);
      // A nonce of our choosing (long, with URL-unsafe characters) comes back unchanged.
      const nonce = `n-${oidc.randomNonce()}+/=~ ${'x'.repeat(200)}`;
      const request = await authorizationRequest(c.basic, { nonce });
      expect(request.url.searchParams.get('nonce')).toBe(nonce);
      const journey = await authorize(first.browser, request.url);
      expect(journey.screens).toEqual([]);
      const tokens = await redeem(c.basic, journey, { ...request, nonce });
      expect(idClaims(tokens).nonce).toBe(nonce);
    });

    it('oidcc-ensure-request-without-nonce-succeeds-for-code-flow: no nonce → no nonce claim', async () => {
      const first = await loginAndRedeem(c.basic);
      const verifier = oidc.randomPKCECodeVerifier();
      const state = oidc.randomState();
      const url = oidc.buildAuthorizationUrl(c.basic, { redirect_uri: redirectUri, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state });
      const journey = await authorize(first.browser, url);
      const tokens = await oidc.authorizationCodeGrant(c.basic, journey.callback, { pkceCodeVerifier: verifier, expectedState: state, idTokenExpected: true });
      expect(idClaims(tokens)).not.toHaveProperty('nonce');
    });

    it('oidcc-claims-essential: claims={"id_token":{"email":{"essential":true}}} puts email in the ID token', async () => {
      const plain = await loginAndRedeem(c.basic);
      expect(idClaims(plain.tokens)).not.toHaveProperty('email');
      const request = await authorizationRequest(c.basic, { claims: JSON.stringify({ id_token: { email: { essential: true } } }) });
      const journey = await authorize(plain.browser, request.url);
      const claims = idClaims(await redeem(c.basic, journey, request));
      expect(claims.email).toBe(user.email);
      expect(claims.sub).toBe(idClaims(plain.tokens).sub);
    });
  });
});
