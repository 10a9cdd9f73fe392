// Conformance checks for the token endpoint, the userinfo endpoint and logout, after the OpenID
// Foundation's Basic OP, RP-Initiated Logout and Back-Channel Logout test plans. openid-client is
// the relying party where it can be; where a check needs a request no well-behaved RP would send
// (a reused code, a forged assertion, a foreign id_token_hint) the request is built by hand.
// Tests are named after the suite module they reproduce; checks the suite has no module for name
// the specification section instead.
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, generateKeyPair, jwtVerify, SignJWT, type JWTPayload } from 'jose';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, signIn } from '../helpers/browser.ts';
import { freePort, startIdp, type Backend, type TestIdp } from '../helpers/server.ts';
import { authorizationRequest, loginAndRedeem, postLogoutUri, redirectUri, secondRedirectUri, startConformance, user, type Conformance } from './setup.ts';
import { sleep } from '../helpers/time.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const backchannelEvent = 'http://schemas.openid.net/event/backchannel-logout';
const assertionType = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const otherUser = { email: 'someone-else@example.com', password: 'another password 22', name: 'Somebody Else' };

interface TokenBody {
  error?: string;
  error_description?: string;
  access_token?: string;
  id_token?: string;
  refresh_token?: string;
  scope?: string;
}

let c: Conformance;
let origin: string;
let jwks: ReturnType<typeof createRemoteJWKSet>;
let subject: string;
/** A second, small server whose codes and access tokens live 2 s. */
let short: { t: TestIdp; rp: oidc.Configuration; secret: string };
/** rp-bcl: a client with a back-channel logout receiver on loopback. */
let bcl: oidc.Configuration;
let receiver: Server;
const received: { method: string; contentType: string; logoutToken: string | null }[] = [];

async function startShortLived() {
  const backend = (process.env.CONFORMANCE_BACKEND as Backend | undefined) ?? 'postgresql+redis';
  const t = await startIdp(backend, { AUTHORIZATION_CODE_TTL: '2', ACCESS_TOKEN_TTL: '2' });
  await t.idp.accounts.create({ email: user.email, password: user.password, name: user.name, emailVerified: true });
  const secret = (await t.idp.clients.create({ client_id: 'rp-short', redirect_uris: [redirectUri] })).clientSecret!;
  return { t, secret, rp: await oidc.discovery(new URL(t.issuer), 'rp-short', secret, undefined, insecure) };
}

beforeAll(async () => {
  [c, short] = await Promise.all([startConformance(), startShortLived()]);
  origin = new URL(c.issuer).origin;
  jwks = createRemoteJWKSet(new URL(c.basic.serverMetadata().jwks_uri!));
  subject = (await c.t.idp.db.prisma.account.findUniqueOrThrow({ where: { email: user.email } })).id;
  await c.t.idp.accounts.create({ ...otherUser, emailVerified: true });

  const port = await freePort();
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      received.push({ method: req.method ?? '', contentType: req.headers['content-type'] ?? '', logoutToken: new URLSearchParams(body).get('logout_token') });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(port, '127.0.0.1', resolve));
  const bclSecret = (await c.t.idp.clients.create({
    client_id: 'rp-bcl',
    redirect_uris: [redirectUri],
    post_logout_redirect_uris: [postLogoutUri],
    backchannel_logout_uri: `http://127.0.0.1:${port}/backchannel-logout`,
    backchannel_logout_session_required: true,
  })).clientSecret!;
  bcl = await oidc.discovery(new URL(c.issuer), 'rp-bcl', bclSecret, undefined, insecure);
});

afterAll(async () => {
  receiver?.close();
  await Promise.all([c?.stop(), short?.t.stop()]);
});

// --- helpers -----------------------------------------------------------------------------------

/** Signs in for `config` (a fresh browser) and returns the code without redeeming it. */
async function authorize(config: oidc.Configuration, extra: Record<string, string> = {}, browser = new Browser()) {
  const request = await authorizationRequest(config, extra);
  const callback = await signIn(browser, request.url, user.email, user.password);
  expect(callback.searchParams.get('error'), callback.href).toBeNull();
  expect(callback.searchParams.get('state')).toBe(request.state);
  return { ...request, callback, browser, code: callback.searchParams.get('code')! };
}

function basicAuth(clientId: string, secret: string): string {
  // RFC 6749 §2.3.1: form-urlencode each part, then Base64.
  const encode = (v: string) => encodeURIComponent(v).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${encode(clientId)}:${encode(secret)}`).toString('base64')}`;
}

async function tokenRequest(fields: Record<string, string>, headers: Record<string, string> = {}, endpoint = c.basic.serverMetadata().token_endpoint!) {
  const response = await fetch(endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...headers },
    body: new URLSearchParams(fields).toString(),
  });
  return { status: response.status, headers: response.headers, body: (await response.json()) as TokenBody };
}

const asBasic = (fields: Record<string, string>) => tokenRequest(fields, { authorization: basicAuth('rp-basic', c.basicSecret) });

async function userinfo(accessToken: string, method: 'GET' | 'POST' = 'GET', endpoint = c.basic.serverMetadata().userinfo_endpoint!) {
  const response = await fetch(endpoint, {
    method,
    headers: { authorization: `Bearer ${accessToken}`, accept: 'application/json', ...(method === 'POST' ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
    ...(method === 'POST' ? { body: '' } : {}),
  });
  return { status: response.status, wwwAuthenticate: response.headers.get('www-authenticate'), body: (await response.json().catch(() => ({}))) as Record<string, unknown> };
}

/** A client assertion for rp-key; `claims` override (undefined removes) the defaults. */
async function clientAssertion(claims: Record<string, unknown> = {}, key = c.keyJwtPrivate): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload: Record<string, unknown> = { iss: 'rp-key', sub: 'rp-key', aud: c.keyJwt.serverMetadata().token_endpoint, jti: randomUUID(), iat: now, exp: now + 60, ...claims };
  for (const [name, value] of Object.entries(payload)) if (value === undefined) delete payload[name];
  return new SignJWT(payload as JWTPayload).setProtectedHeader({ alg: 'RS256', kid: 'rp-key-1' }).sign(key);
}

/** A token request from rp-key with a code nobody issued: 400 invalid_grant iff authentication passed. */
const keyAuthProbe = (assertion: string) =>
  tokenRequest({ grant_type: 'authorization_code', code: 'no-such-code', redirect_uri: redirectUri, code_verifier: oidc.randomPKCECodeVerifier(), client_assertion_type: assertionType, client_assertion: assertion });

/** at_hash / c_hash: base64url of the left half of SHA-256 (for RS256/PS256). */
const leftHalfHash = (value: string) => createHash('sha256').update(value).digest().subarray(0, 16).toString('base64url');


async function silentAuthorization(config: oidc.Configuration, browser: Browser) {
  const request = await authorizationRequest(config, { prompt: 'none' });
  const result = await browser.follow(request.url, origin);
  expect(`${result.url.origin}${result.url.pathname}`).toBe(redirectUri);
  expect(result.url.searchParams.get('state')).toBe(request.state);
  return result.url.searchParams;
}

/** Opens the end-session URL, expects our confirmation page, and submits it with logout=yes. */
async function confirmLogout(browser: Browser, endSession: URL) {
  const page = await browser.follow(endSession, origin);
  const html = await page.response.text();
  expect(page.response.status, html.slice(0, 300)).toBe(200);
  expect(page.url.origin).toBe(origin);
  const xsrf = /name="xsrf" value="([^"]+)"/.exec(html)?.[1];
  const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
  expect(xsrf, 'the confirmation form carries an xsrf field').toBeTruthy();
  expect(action, 'the confirmation page has a form').toBeTruthy();
  return browser.postForm(new URL(action!, origin), { xsrf: xsrf!, logout: 'yes' }, origin);
}

/** An end-session request that must be refused with an error page and no redirect. */
async function expectRefusedLogout(browser: Browser, url: URL, message: RegExp) {
  const response = await browser.request(url, { headers: { accept: 'text/html' } });
  const html = await response.text();
  expect(response.status, html.slice(0, 300)).toBeGreaterThanOrEqual(400);
  expect(response.status).toBeLessThan(500);
  expect(response.headers.get('location')).toBeNull();
  expect(html).not.toContain('name="xsrf"');
  expect(html).toMatch(message);
}

// --- Token endpoint ----------------------------------------------------------------------------

describe('Token endpoint', () => {
  it('oidcc-server: the authorization code carries at least 128 bits (≥ 22 base64url characters)', async () => {
    const first = await authorize(c.basic);
    const second = await authorize(c.basic);
    for (const { code } of [first, second]) {
      expect(code).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(code.length).toBeGreaterThanOrEqual(22);
    }
    expect(first.code).not.toBe(second.code);
  });

  it('oidcc-codereuse: reused code is refused and the first token revoked', async () => {
    const { code, verifier } = await authorize(c.basic);
    const fields = { grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier };
    const first = await asBasic(fields);
    expect(first.status).toBe(200);
    const accessToken = first.body.access_token!;
    expect((await userinfo(accessToken)).status).toBe(200);

    const again = await asBasic(fields);
    expect(again).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(again.body.access_token).toBeUndefined();
    expect((await oidc.tokenIntrospection(c.basic, accessToken)).active).toBe(false);
    const revoked = await userinfo(accessToken);
    expect(revoked.status).toBe(401);
    expect(revoked.wwwAuthenticate).toMatch(/error="invalid_token"/);
  });

  it('oidcc-server (RFC 6749 §4.1.3): a code is bound to its client (rp-basic\'s code redeemed by rp-post → invalid_grant)', async () => {
    const { code, verifier } = await authorize(c.basic);
    const stolen = await tokenRequest({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier, client_id: 'rp-post', client_secret: c.postSecret });
    expect(stolen).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(stolen.body.access_token).toBeUndefined();
  });

  it('RFC 6749 §4.1.2 (no suite module): an expired code is refused with invalid_grant', async () => {
    const fresh = await authorize(short.rp);
    const redeemed = await tokenRequest(
      { grant_type: 'authorization_code', code: fresh.code, redirect_uri: redirectUri, code_verifier: fresh.verifier },
      { authorization: basicAuth('rp-short', short.secret) },
      short.rp.serverMetadata().token_endpoint!,
    );
    expect(redeemed.status, 'a code redeemed at once works on the short-lived server').toBe(200);

    const stale = await authorize(short.rp);
    await sleep(3000); // AUTHORIZATION_CODE_TTL is 2 s
    const late = await tokenRequest(
      { grant_type: 'authorization_code', code: stale.code, redirect_uri: redirectUri, code_verifier: stale.verifier },
      { authorization: basicAuth('rp-short', short.secret) },
      short.rp.serverMetadata().token_endpoint!,
    );
    expect(late).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
  });

  it('oidcc-ensure-registered-redirect-uri (token side): a redirect_uri other than the authorization request\'s → invalid_grant', async () => {
    const { code, verifier } = await authorize(c.basic);
    // secondRedirectUri is registered for rp-basic too, it just is not the one the code was issued for.
    const other = await asBasic({ grant_type: 'authorization_code', code, redirect_uri: secondRedirectUri, code_verifier: verifier });
    expect(other).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    const missing = await asBasic({ grant_type: 'authorization_code', code, code_verifier: verifier });
    expect(missing).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
  });

  it('RFC 7636 §4.6 (no suite module): a wrong or missing PKCE code_verifier is refused', async () => {
    const wrong = await authorize(c.basic);
    const wrongResult = await asBasic({ grant_type: 'authorization_code', code: wrong.code, redirect_uri: redirectUri, code_verifier: oidc.randomPKCECodeVerifier() });
    expect(wrongResult).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(wrongResult.body.access_token).toBeUndefined();

    const missing = await authorize(c.basic);
    const missingResult = await asBasic({ grant_type: 'authorization_code', code: missing.code, redirect_uri: redirectUri });
    expect(missingResult.status).toBe(400);
    expect(missingResult.body.error).toMatch(/^(invalid_grant|invalid_request)$/);
    expect(missingResult.body.access_token).toBeUndefined();
  });

  it('oidcc-server / oidcc-server-client-secret-post: client_secret_basic and client_secret_post both work', async () => {
    const viaBasic = await loginAndRedeem(c.basic);
    expect(viaBasic.tokens.access_token).toBeTruthy();
    expect(viaBasic.tokens.token_type.toLowerCase()).toBe('bearer');
    expect(decodeJwt(viaBasic.tokens.id_token!).aud).toBe('rp-basic');

    const viaPost = await loginAndRedeem(c.post);
    expect(viaPost.tokens.access_token).toBeTruthy();
    expect(decodeJwt(viaPost.tokens.id_token!).aud).toBe('rp-post');
  });

  it('RFC 6749 §5.2: a bad secret → 401 invalid_client, with WWW-Authenticate: Basic when basic auth was used', async () => {
    const { code, verifier } = await authorize(c.basic);
    const fields = { grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier };

    const badBasic = await tokenRequest(fields, { authorization: basicAuth('rp-basic', `${c.basicSecret}x`) });
    expect(badBasic).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    const challenge = badBasic.headers.get('www-authenticate');
    expect(challenge).toMatch(/^Basic /);
    expect(challenge).toContain(`realm="${c.issuer}"`);
    expect(challenge).toContain('error="invalid_client"');

    const badPost = await tokenRequest({ ...fields, client_id: 'rp-post', client_secret: `${c.postSecret}x` });
    expect(badPost).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    expect(badPost.headers.get('www-authenticate'), 'no Authorization header was sent, so no Basic challenge').toBeNull();

    // An unknown client is refused the same way.
    const unknown = await tokenRequest(fields, { authorization: basicAuth('rp-nobody', c.basicSecret) });
    expect(unknown).toMatchObject({ status: 401, body: { error: 'invalid_client' } });

    // None of the failures consumed the code: the right credentials still redeem it.
    expect((await asBasic(fields)).status).toBe(200);
  });

  describe('private_key_jwt', () => {
    it('oidcc-server (private_key_jwt): a valid assertion works, with aud = token endpoint or aud = issuer', async () => {
      const { code, verifier } = await authorize(c.keyJwt);
      const redeemed = await tokenRequest({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier, client_assertion_type: assertionType, client_assertion: await clientAssertion() });
      expect(redeemed.status, JSON.stringify(redeemed.body)).toBe(200);
      expect(redeemed.body.access_token).toBeTruthy();
      const { payload } = await jwtVerify(redeemed.body.id_token!, jwks, { issuer: c.issuer, audience: 'rp-key' });
      expect(payload.sub).toBe(subject);

      // The issuer as audience authenticates too (the probe gets past client authentication to the grant).
      expect(await keyAuthProbe(await clientAssertion({ aud: c.issuer }))).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    });

    it('ensure-client-assertion-with-wrong-aud-fails: an assertion for another audience → 401 invalid_client', async () => {
      expect(await keyAuthProbe(await clientAssertion({ aud: 'https://other-op.example/token' }))).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
      expect(await keyAuthProbe(await clientAssertion({ aud: undefined }))).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    });

    it('ensure-client-assertion-with-exp-in-the-past-fails: an expired assertion → 401 invalid_client', async () => {
      const now = Math.floor(Date.now() / 1000);
      expect(await keyAuthProbe(await clientAssertion({ iat: now - 600, exp: now - 300 }))).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
      expect(await keyAuthProbe(await clientAssertion({ exp: undefined })), 'exp is required').toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    });

    it('ensure-client-assertion-with-no-sub-fails: an assertion without sub → 401 invalid_client', async () => {
      expect(await keyAuthProbe(await clientAssertion({ sub: undefined }))).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    });

    it('RFC 7523 §3 (jti): a replayed assertion → 401 invalid_client', async () => {
      const assertion = await clientAssertion();
      const { code, verifier } = await authorize(c.keyJwt);
      const first = await tokenRequest({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier, client_assertion_type: assertionType, client_assertion: assertion });
      expect(first.status).toBe(200);
      expect(await keyAuthProbe(assertion)).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    });

    it('RFC 7523 §3: an assertion signed by a key the client did not register → 401 invalid_client', async () => {
      const { privateKey } = await generateKeyPair('RS256');
      expect(await keyAuthProbe(await clientAssertion({}, privateKey))).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    });
  });

  describe('refresh', () => {
    const offline = { scope: 'openid offline_access', prompt: 'consent' };

    it('oidcc-refresh-token: a refresh token is issued for offline_access and works', async () => {
      const { tokens } = await loginAndRedeem(c.basic, offline);
      expect(tokens.refresh_token).toBeTruthy();
      const refreshed = await oidc.refreshTokenGrant(c.basic, tokens.refresh_token!);
      expect(refreshed.access_token).toBeTruthy();
      expect(refreshed.access_token).not.toBe(tokens.access_token);
      expect(refreshed.refresh_token).toBeTruthy();
      expect(refreshed.refresh_token).not.toBe(tokens.refresh_token);
      const { payload } = await jwtVerify(refreshed.id_token!, jwks, { issuer: c.issuer, audience: 'rp-basic' });
      expect(payload.sub).toBe(subject);
      expect(await userinfo(refreshed.access_token)).toMatchObject({ status: 200, body: { sub: subject } });
    });

    it('oidcc-refresh-token: another client\'s refresh token → invalid_grant', async () => {
      const { tokens } = await loginAndRedeem(c.basic, offline);
      await expect(oidc.refreshTokenGrant(c.post, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
      const raw = await tokenRequest({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token!, client_id: 'rp-post', client_secret: c.postSecret });
      expect(raw).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
      expect(raw.body.access_token).toBeUndefined();
    });

    it('RFC 9700 §4.14.2 (no suite module): reuse of a rotated refresh token revokes the grant', async () => {
      const { tokens } = await loginAndRedeem(c.basic, offline);
      const rotated = await oidc.refreshTokenGrant(c.basic, tokens.refresh_token!);
      expect(rotated.refresh_token).toBeTruthy();
      await expect(oidc.refreshTokenGrant(c.basic, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
      // The reuse took the whole grant down: the newest refresh token and the access tokens too.
      await expect(oidc.refreshTokenGrant(c.basic, rotated.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
      expect((await oidc.tokenIntrospection(c.basic, rotated.access_token)).active).toBe(false);
      expect((await oidc.tokenIntrospection(c.basic, tokens.access_token)).active).toBe(false);
      expect((await userinfo(rotated.access_token)).status).toBe(401);
    });

    it('RFC 6749 §6 (no suite module): a refresh cannot grow the scope (invalid_scope), but may narrow it', async () => {
      const { tokens } = await loginAndRedeem(c.basic, offline);
      await expect(oidc.refreshTokenGrant(c.basic, tokens.refresh_token!, { scope: 'openid offline_access profile' })).rejects.toMatchObject({ error: 'invalid_scope' });
      const raw = await asBasic({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token!, scope: 'openid email' });
      expect(raw).toMatchObject({ status: 400, body: { error: 'invalid_scope' } });
      // The refused requests did not spend the token; narrowing is allowed.
      const narrowed = await oidc.refreshTokenGrant(c.basic, tokens.refresh_token!, { scope: 'openid' });
      expect(narrowed.scope?.split(' ')).toEqual(['openid']);
      const claims = await userinfo(narrowed.access_token);
      expect(claims.status).toBe(200);
      expect(claims.body).not.toHaveProperty('email');
    });
  });

  describe('ID token', () => {
    it('oidcc-server: ID token signature verifies against the JWKS; iss, aud, sub, nonce, exp, iat are right', async () => {
      const { tokens, request } = await loginAndRedeem(c.basic);
      const header = decodeProtectedHeader(tokens.id_token!);
      expect(header.alg).toBe('RS256');
      expect(header.kid).toBeTruthy();
      const published = (await (await fetch(c.basic.serverMetadata().jwks_uri!)).json()) as { keys: { kid?: string }[] };
      expect(published.keys.map((k) => k.kid)).toContain(header.kid);

      const { payload } = await jwtVerify(tokens.id_token!, jwks, { issuer: c.issuer, audience: 'rp-basic', algorithms: ['RS256'] });
      const now = Math.floor(Date.now() / 1000);
      expect(payload.iss).toBe(c.issuer);
      expect(payload.aud).toBe('rp-basic');
      expect(payload.sub).toBe(subject);
      expect(payload.nonce).toBe(request.nonce);
      expect(Math.abs(payload.iat! - now)).toBeLessThanOrEqual(300);
      expect(payload.exp!).toBeGreaterThan(now);
      expect(payload.exp!).toBeGreaterThan(payload.iat!);

      // A token whose signature was tampered with does not verify.
      const [h, p, s] = tokens.id_token!.split('.');
      const flipped = `${s!.slice(0, -2)}${s!.endsWith('AA') ? 'BB' : 'AA'}`;
      await expect(jwtVerify(`${h}.${p}.${flipped}`, jwks, { issuer: c.issuer, audience: 'rp-basic' })).rejects.toThrow();
    });

    it('oidcc-server: at_hash, when present, is the left half of SHA-256 of the access token (optional in the code flow)', async () => {
      // The helper against the worked example of OpenID Connect Core, appendix A.3.
      expect(leftHalfHash('jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y')).toBe('77QmUPtjPfzWtF2AnpK9RQ');
      const { tokens } = await loginAndRedeem(c.basic);
      const { payload } = await jwtVerify(tokens.id_token!, jwks, { issuer: c.issuer, audience: 'rp-basic' });
      // Core §3.1.3.6: at_hash is OPTIONAL for ID tokens from the token endpoint; the suite checks it only when present.
      const expected = leftHalfHash(tokens.access_token);
      expect(payload.at_hash ?? expected).toBe(expected);
    });

    it('oidcc-max-age-10000 / claims request: auth_time is present when requested', async () => {
      const byMaxAge = await loginAndRedeem(c.basic, { max_age: '10000' });
      const now = Math.floor(Date.now() / 1000);
      const { payload } = await jwtVerify(byMaxAge.tokens.id_token!, jwks, { issuer: c.issuer, audience: 'rp-basic' });
      expect(typeof payload.auth_time).toBe('number');
      expect(Math.abs((payload.auth_time as number) - now)).toBeLessThanOrEqual(300);
      expect(payload.auth_time as number).toBeLessThanOrEqual(payload.iat!);

      const byClaims = await loginAndRedeem(c.basic, { claims: JSON.stringify({ id_token: { auth_time: { essential: true } } }) });
      const claims = await jwtVerify(byClaims.tokens.id_token!, jwks, { issuer: c.issuer, audience: 'rp-basic' });
      expect(typeof claims.payload.auth_time).toBe('number');
      expect(Math.abs((claims.payload.auth_time as number) - now)).toBeLessThanOrEqual(300);
    });
  });
});

// --- Userinfo ----------------------------------------------------------------------------------

describe('Userinfo', () => {
  it('oidcc-userinfo-get / oidcc-userinfo-post-header: GET and POST with a bearer header both work', async () => {
    const { tokens } = await loginAndRedeem(c.basic, { scope: 'openid email' });
    const viaGet = await userinfo(tokens.access_token, 'GET');
    expect(viaGet).toMatchObject({ status: 200, body: { sub: subject, email: user.email } });
    const viaPost = await userinfo(tokens.access_token, 'POST');
    expect(viaPost).toMatchObject({ status: 200, body: { sub: subject, email: user.email } });
    // openid-client's own userinfo call (which checks sub) agrees.
    expect(await oidc.fetchUserInfo(c.basic, tokens.access_token, subject)).toMatchObject({ sub: subject });
  });

  it('RFC 6750 §3.1 (no suite module): a bad token → 401 with WWW-Authenticate: Bearer error="invalid_token"; no token → 401 challenge without error', async () => {
    for (const method of ['GET', 'POST'] as const) {
      const bad = await userinfo('this-is-not-a-token', method);
      expect(bad.status).toBe(401);
      expect(bad.wwwAuthenticate).toMatch(/^Bearer /);
      expect(bad.wwwAuthenticate).toMatch(/error="invalid_token"/);
      expect(bad.body).not.toHaveProperty('sub');
    }
    const none = await fetch(c.basic.serverMetadata().userinfo_endpoint!, { headers: { accept: 'application/json' } });
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer /);
    expect(none.headers.get('www-authenticate')).not.toMatch(/error=/);
  });

  it('RFC 6750 §3.1 (no suite module): an expired access token → 401 invalid_token', async () => {
    const { tokens } = await loginAndRedeem(short.rp);
    const endpoint = short.rp.serverMetadata().userinfo_endpoint!;
    expect((await userinfo(tokens.access_token, 'GET', endpoint)).status, 'usable right after issue').toBe(200);
    await sleep(3000); // ACCESS_TOKEN_TTL is 2 s
    const expired = await userinfo(tokens.access_token, 'GET', endpoint);
    expect(expired.status).toBe(401);
    expect(expired.wwwAuthenticate).toMatch(/^Bearer /);
    expect(expired.wwwAuthenticate).toMatch(/error="invalid_token"/);
  });

  it('oidcc-scope-profile / -email / -address / -phone / -all: the scopes are accepted and return this user\'s claims only', async () => {
    const { tokens } = await loginAndRedeem(c.basic, { scope: 'openid profile email address phone' });
    expect(tokens.scope?.split(' ').sort()).toEqual(['address', 'email', 'openid', 'phone', 'profile']);
    const { status, body } = await userinfo(tokens.access_token);
    expect(status).toBe(200);
    expect(body).toMatchObject({ sub: subject, name: user.name, email: user.email, email_verified: true });
    expect(typeof body.updated_at).toBe('number');
    // This user has no address or phone number: nothing is made up for them.
    for (const absent of ['address', 'phone_number', 'phone_number_verified']) expect(body).not.toHaveProperty(absent);
    // Nothing of any other account appears.
    const text = JSON.stringify(body);
    expect(text).not.toContain(otherUser.email);
    expect(text).not.toContain(otherUser.name);
    expect(Object.keys(body).sort()).toEqual(['email', 'email_verified', 'name', 'sub', 'updated_at']);
  });

  it('oidcc-scope-* (negative): without profile or email scopes only sub is released', async () => {
    const { tokens } = await loginAndRedeem(c.basic, { scope: 'openid' });
    const { status, body } = await userinfo(tokens.access_token);
    expect(status).toBe(200);
    expect(body.sub).toBe(subject);
    for (const withheld of ['name', 'email', 'email_verified', 'updated_at']) expect(body).not.toHaveProperty(withheld);
  });
});

// --- Logout ------------------------------------------------------------------------------------

describe('Logout', () => {
  it('oidcc-discovery-endpoint-verification (logout): end_session_endpoint and back-channel logout support are advertised', async () => {
    const meta = (await (await fetch(`${c.issuer}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    expect(meta.end_session_endpoint).toMatch(new RegExp(`^${c.issuer}/`));
    expect(meta.backchannel_logout_supported).toBe(true);
    expect(meta.backchannel_logout_session_supported).toBe(true);
  });

  it('oidcc-rp-initiated-logout: with id_token_hint, registered post_logout_redirect_uri and state the browser returns with the same state; the session is gone', async () => {
    const { tokens, browser } = await loginAndRedeem(c.basic);
    expect((await silentAuthorization(c.basic, browser)).get('code'), 'signed in before logout').toBeTruthy();
    const state = oidc.randomState();
    const endSession = oidc.buildEndSessionUrl(c.basic, { id_token_hint: tokens.id_token!, post_logout_redirect_uri: postLogoutUri, state });
    const done = await confirmLogout(browser, endSession);
    expect(`${done.url.origin}${done.url.pathname}`).toBe(postLogoutUri);
    expect(done.url.searchParams.get('state')).toBe(state);
    expect([...done.url.searchParams.keys()]).toEqual(['state']);

    const silent = await silentAuthorization(c.basic, browser);
    expect(silent.get('error')).toBe('login_required');
    expect(silent.get('code')).toBeNull();
  });

  it('oidcc-rp-initiated-logout-bad-post-logout-redirect-uri: an unregistered URI is refused with an error page, and the user stays signed in', async () => {
    const { tokens, browser } = await loginAndRedeem(c.basic);
    const evil = 'https://attacker.example/logged-out';
    await expectRefusedLogout(browser, oidc.buildEndSessionUrl(c.basic, { id_token_hint: tokens.id_token!, post_logout_redirect_uri: evil, state: 's1' }), /post_logout_redirect_uri/);
    // A registered URI of another shape (extra query) is not a match either.
    await expectRefusedLogout(browser, oidc.buildEndSessionUrl(c.basic, { id_token_hint: tokens.id_token!, post_logout_redirect_uri: `${postLogoutUri}?x=1`, state: 's2' }), /post_logout_redirect_uri/);
    expect((await silentAuthorization(c.basic, browser)).get('code')).toBeTruthy();
  });

  it('oidcc-rp-initiated-logout-bad-id-token-hint: a hint signed by another key, or with alg none, is refused without redirect', async () => {
    const { tokens, browser } = await loginAndRedeem(c.basic);
    const claims = decodeJwt(tokens.id_token!);
    const { kid } = decodeProtectedHeader(tokens.id_token!);

    // Same claims, same kid, but signed with a key that is not ours.
    const { privateKey: rogue } = await generateKeyPair('RS256');
    const forged = await new SignJWT({ ...claims }).setProtectedHeader({ alg: 'RS256', kid: kid! }).sign(rogue);
    await expectRefusedLogout(browser, oidc.buildEndSessionUrl(c.basic, { id_token_hint: forged, post_logout_redirect_uri: postLogoutUri, state: 'forged' }), /id_token_hint/);

    // alg none, no signature.
    const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const unsigned = `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
    await expectRefusedLogout(browser, oidc.buildEndSessionUrl(c.basic, { id_token_hint: unsigned, post_logout_redirect_uri: postLogoutUri, state: 'unsigned' }), /id_token_hint/);

    // The genuine token's payload with its signature cut off.
    const [h, p] = tokens.id_token!.split('.');
    await expectRefusedLogout(browser, oidc.buildEndSessionUrl(c.basic, { id_token_hint: `${h}.${p}.`, post_logout_redirect_uri: postLogoutUri, state: 'stripped' }), /id_token_hint/);

    expect((await silentAuthorization(c.basic, browser)).get('code'), 'the refused requests logged nobody out').toBeTruthy();
  });

  it('oidcc-rp-initiated-logout-no-params: the confirmation page, no redirect; confirming ends on the signed-out page', async () => {
    const { browser } = await loginAndRedeem(c.basic);
    const endpoint = new URL(c.basic.serverMetadata().end_session_endpoint!);
    const first = await browser.request(endpoint);
    expect(first.status).toBe(200);
    expect(first.headers.get('location')).toBeNull();
    expect(await first.text()).toContain('name="xsrf"');

    const done = await confirmLogout(browser, endpoint);
    expect(done.url.origin, 'no redirect away from the OP').toBe(origin);
    expect(done.response.status).toBe(200);
    expect(await done.response.text()).toContain('You are signed out');
    expect((await silentAuthorization(c.basic, browser)).get('error')).toBe('login_required');

    // Without a session there is nothing to confirm: still a page of the OP, never a redirect.
    const anonymous = await new Browser().request(endpoint);
    expect(anonymous.status).toBe(200);
    expect(anonymous.headers.get('location')).toBeNull();
  });

  it('oidcc-backchannel-rp-initiated-logout: the logout token is signed, carries iss/aud/iat/jti/exp, the one event, sid and sub of the ID token, and no nonce', async () => {
    const { tokens, browser } = await loginAndRedeem(bcl);
    const idClaims = decodeJwt(tokens.id_token!);
    expect(idClaims.sid, 'the ID token of a session-required client carries sid').toBeTruthy();
    received.length = 0;

    const state = oidc.randomState();
    const done = await confirmLogout(browser, oidc.buildEndSessionUrl(bcl, { id_token_hint: tokens.id_token!, post_logout_redirect_uri: postLogoutUri, state }));
    expect(`${done.url.origin}${done.url.pathname}`).toBe(postLogoutUri);
    expect(done.url.searchParams.get('state')).toBe(state);

    await expect.poll(() => received.length, { timeout: 5000 }).toBe(1);
    const delivery = received[0]!;
    expect(delivery.method).toBe('POST');
    expect(delivery.contentType).toMatch(/^application\/x-www-form-urlencoded/);
    expect(delivery.logoutToken).toBeTruthy();

    const { payload, protectedHeader } = await jwtVerify(delivery.logoutToken!, jwks, { issuer: c.issuer, audience: 'rp-bcl', algorithms: ['RS256'] });
    expect(protectedHeader.typ).toBe('logout+jwt');
    const now = Math.floor(Date.now() / 1000);
    expect(Math.abs(payload.iat! - now)).toBeLessThanOrEqual(300);
    expect(payload.exp!).toBeGreaterThan(payload.iat!);
    expect(typeof payload.jti).toBe('string');
    expect(payload.jti!.length).toBeGreaterThan(0);
    expect(payload.events).toEqual({ [backchannelEvent]: {} });
    expect(Object.keys(payload.events as object)).toEqual([backchannelEvent]);
    expect(payload.sid).toBe(idClaims.sid);
    expect(payload.sub).toBe(idClaims.sub);
    expect(payload).not.toHaveProperty('nonce');
    // The session is gone.
    expect((await silentAuthorization(bcl, browser)).get('error')).toBe('login_required');
  });
});
