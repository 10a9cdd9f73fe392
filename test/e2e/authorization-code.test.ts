// The authorization-code flow end to end: openid-client as the relying party, our login and
// consent screens submitted over HTTP, tokens validated with jose against our JWKS. The same
// suite runs on SQLite and on PostgreSQL + Redis.
import { createServer, type Server } from 'node:http';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, signIn } from '../helpers/browser.ts';
import { backends, freePort, startIdp, testResourceServer, type TestIdp } from '../helpers/server.ts';
import { authorizationRequest } from '../helpers/oidc.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const password = 'correct horse battery staple';

describe.each(backends)('authorization code flow on %s', (backend) => {
  let t: TestIdp;
  let rp: oidc.Configuration;
  let publicRp: oidc.Configuration;
  let logoutReceiver: Server;
  const logoutTokens: string[] = [];
  const redirectUri = 'http://localhost:8080/callback';
  const postLogoutUri = 'http://localhost:8080/signed-out';
  let clientSecret: string;

  beforeAll(async () => {
    // The back-channel receiver below is on loopback, which the provider refuses by default (SSRF guard).
    t = await startIdp(backend, { FETCH_ALLOW_PRIVATE_ADDRESSES: 'true' });
    const receiverPort = await freePort();
    logoutReceiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        logoutTokens.push(new URLSearchParams(body).get('logout_token') ?? '');
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => logoutReceiver.listen(receiverPort, '127.0.0.1', resolve));
    await t.idp.accounts.create({ email: 'alice@example.com', password, name: 'Alice Example', emailVerified: true });
    const created = await t.idp.clients.create({
      client_id: 'webapp',
      client_name: 'Web <App>',
      redirect_uris: [redirectUri],
      post_logout_redirect_uris: [postLogoutUri],
      grant_types: ['authorization_code', 'refresh_token'],
      backchannel_logout_uri: `http://127.0.0.1:${receiverPort}/backchannel`,
      backchannel_logout_session_required: true,
    });
    clientSecret = created.clientSecret!;
    await t.idp.clients.create({ client_id: 'spa', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none', first_party: true, grant_types: ['authorization_code', 'refresh_token'] });
    machineSecret = (await t.idp.clients.create({ client_id: 'machine', grant_types: ['client_credentials'], scope: 'api:read' })).clientSecret!;
    posterSecret = (await t.idp.clients.create({ client_id: 'poster', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_post' })).clientSecret!;
    rp = await oidc.discovery(new URL(t.issuer), 'webapp', clientSecret, undefined, insecure);
    publicRp = await oidc.discovery(new URL(t.issuer), 'spa', undefined, oidc.None(), insecure);
  });
  let machineSecret: string;
  let posterSecret: string;

  afterAll(async () => {
    logoutReceiver?.close();
    await t?.stop();
  });

  const authorize = (config: oidc.Configuration, extra: Record<string, string> = {}) =>
    authorizationRequest(config, { redirect_uri: redirectUri, scope: 'openid profile email offline_access', prompt: 'consent', ...extra });

  async function login(config = rp, browser = new Browser()) {
    const request = await authorize(config);
    const callback = await signIn(browser, request.url, 'alice@example.com', password);
    const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
    return { tokens, callback, browser, request };
  }

  it('publishes discovery with the endpoints, PKCE S256 only and logout support', async () => {
    const meta = rp.serverMetadata();
    expect(meta.issuer).toBe(t.issuer);
    expect(meta.code_challenge_methods_supported).toEqual(['S256']);
    expect(meta.id_token_signing_alg_values_supported).toContain('RS256');
    for (const endpoint of ['authorization_endpoint', 'token_endpoint', 'userinfo_endpoint', 'jwks_uri', 'introspection_endpoint', 'revocation_endpoint', 'end_session_endpoint'] as const) {
      expect(meta[endpoint], endpoint).toMatch(new RegExp(`^${t.issuer}/`));
    }
    expect(meta.backchannel_logout_supported).toBe(true);
    expect(meta.backchannel_logout_session_supported).toBe(true);
    const jwks = (await (await fetch(meta.jwks_uri!)).json()) as { keys: Record<string, unknown>[] };
    expect(jwks.keys.length).toBeGreaterThan(0);
    for (const key of jwks.keys) {
      expect(key).toMatchObject({ kty: 'RSA', use: 'sig', alg: 'RS256' });
      for (const privateMember of ['d', 'p', 'q', 'dp', 'dq', 'qi']) expect(key).not.toHaveProperty(privateMember);
    }
  });

  it('logs a user in through our screens and issues verifiable RS256 tokens', async () => {
    const { tokens, request } = await login();
    expect(decodeProtectedHeader(tokens.id_token!)).toMatchObject({ alg: 'RS256' });
    const jwks = createRemoteJWKSet(new URL(rp.serverMetadata().jwks_uri!));
    const { payload } = await jwtVerify(tokens.id_token!, jwks, { issuer: t.issuer, audience: 'webapp' });
    const account = await t.idp.db.prisma.account.findUniqueOrThrow({ where: { email: 'alice@example.com' } });
    expect(payload).toMatchObject({ sub: account.id, nonce: request.nonce, acr: 'urn:idp:acr:1fa', amr: ['pwd'] });
    expect(tokens.refresh_token).toBeTruthy();
    const userinfo = await oidc.fetchUserInfo(rp, tokens.access_token, account.id);
    expect(userinfo).toMatchObject({ sub: account.id, email: 'alice@example.com', email_verified: true, name: 'Alice Example' });
    const events = await t.idp.db.prisma.auditEvent.findMany({ where: { type: { in: ['login.password_verified', 'consent.granted'] } } });
    expect(events.map((e) => e.type)).toEqual(expect.arrayContaining(['login.password_verified', 'consent.granted']));
    expect(JSON.stringify(events)).not.toContain(password);
  });

  it('rotates refresh tokens and revokes the grant when a rotated token is reused', async () => {
    const { tokens } = await login();
    const first = tokens.refresh_token!;
    const second = await oidc.refreshTokenGrant(rp, first);
    expect(second.refresh_token).toBeTruthy();
    expect(second.refresh_token).not.toBe(first);
    await expect(oidc.refreshTokenGrant(rp, first)).rejects.toMatchObject({ error: 'invalid_grant' });
    // Reuse revoked the whole grant: the newest refresh token and the access tokens are dead too.
    await expect(oidc.refreshTokenGrant(rp, second.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    expect((await oidc.tokenIntrospection(rp, second.access_token)).active).toBe(false);
  });

  it('revokes tokens (RFC 7009) and introspects them (RFC 7662)', async () => {
    const { tokens } = await login();
    const live = await oidc.tokenIntrospection(rp, tokens.access_token);
    expect(live).toMatchObject({ active: true, client_id: 'webapp' });
    await oidc.tokenRevocation(rp, tokens.access_token);
    expect((await oidc.tokenIntrospection(rp, tokens.access_token)).active).toBe(false);
    await oidc.tokenRevocation(rp, tokens.refresh_token!);
    await expect(oidc.refreshTokenGrant(rp, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  it('issues RFC 9068 JWT access tokens for a resource server, verifiable against the JWKS', async () => {
    const request = await authorize(rp, { resource: testResourceServer.indicator, scope: 'openid api:read' });
    const callback = await signIn(new Browser(), request.url, 'alice@example.com', password);
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce }, { resource: testResourceServer.indicator });
    const jwks = createRemoteJWKSet(new URL(rp.serverMetadata().jwks_uri!));
    const { payload, protectedHeader } = await jwtVerify(tokens.access_token, jwks, { issuer: t.issuer, audience: testResourceServer.indicator, typ: 'at+jwt' });
    expect(protectedHeader.alg).toBe('RS256');
    expect(payload).toMatchObject({ client_id: 'webapp', scope: 'api:read' });
  });

  it('issues client-credentials JWT access tokens and opaque ones without a resource', async () => {
    const machine = await oidc.discovery(new URL(t.issuer), 'machine', machineSecret, undefined, insecure);
    const jwt = await oidc.clientCredentialsGrant(machine, { scope: 'api:read', resource: testResourceServer.indicator });
    const jwks = createRemoteJWKSet(new URL(machine.serverMetadata().jwks_uri!));
    const { payload } = await jwtVerify(jwt.access_token, jwks, { issuer: t.issuer, audience: testResourceServer.indicator, typ: 'at+jwt' });
    expect(payload).toMatchObject({ client_id: 'machine', scope: 'api:read', sub: 'machine' });
    const opaque = await oidc.clientCredentialsGrant(machine, {});
    expect(opaque.access_token.split('.')).toHaveLength(1);
    expect((await oidc.tokenIntrospection(machine, opaque.access_token)).active).toBe(true);
    await expect(oidc.clientCredentialsGrant(machine, { scope: 'api:write', resource: testResourceServer.indicator })).rejects.toMatchObject({ error: 'invalid_scope' });
  });

  it('skips consent for first-party public clients, which must use PKCE', async () => {
    const request = await authorize(publicRp, { prompt: 'login' });
    const browser = new Browser();
    const callback = await signIn(browser, request.url, 'alice@example.com', password, { consent: false });
    expect(callback.searchParams.get('code')).toBeTruthy();
    const tokens = await oidc.authorizationCodeGrant(publicRp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
    expect(tokens.id_token).toBeTruthy();

    const withoutPkce = new URL(request.url);
    withoutPkce.searchParams.delete('code_challenge');
    withoutPkce.searchParams.delete('code_challenge_method');
    const refused = await new Browser().follow(withoutPkce, t.issuer);
    expect(refused.url.searchParams.get('error')).toBe('invalid_request');
    expect(refused.url.searchParams.get('error_description')).toMatch(/PKCE|code_challenge/i);

    const plain = new URL(request.url);
    plain.searchParams.set('code_challenge', request.verifier);
    plain.searchParams.set('code_challenge_method', 'plain');
    const plainRefused = await new Browser().follow(plain, t.issuer);
    expect(plainRefused.url.searchParams.get('error')).toBe('invalid_request');
  });

  it('logs out at the relying party\'s request and sends back-channel logout tokens', async () => {
    const { tokens, browser } = await login();
    const idClaims = decodeJwt(tokens.id_token!);
    logoutTokens.length = 0;
    const endSession = oidc.buildEndSessionUrl(rp, { id_token_hint: tokens.id_token!, post_logout_redirect_uri: postLogoutUri, state: 'bye-123' });
    const confirm = await browser.follow(endSession, t.issuer);
    const html = await confirm.response.text();
    expect(confirm.response.status).toBe(200);
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(html)![1]!;
    const action = /<form[^>]*action="([^"]+)"/.exec(html)![1]!;
    const done = await browser.postForm(new URL(action, t.issuer), { xsrf, logout: 'yes' }, t.issuer);
    expect(done.url.href).toBe(`${postLogoutUri}?state=bye-123`);

    await expect.poll(() => logoutTokens.length, { timeout: 5000 }).toBe(1);
    await expect.poll(() => t.idp.db.prisma.auditEvent.count({ where: { type: 'backchannel_logout.sent', clientId: 'webapp' } })).toBeGreaterThan(0);
    const jwks = createRemoteJWKSet(new URL(rp.serverMetadata().jwks_uri!));
    const { payload } = await jwtVerify(logoutTokens[0]!, jwks, { issuer: t.issuer, audience: 'webapp' });
    expect(payload.sub).toBe(idClaims.sub);
    expect(payload.sid).toBe(idClaims.sid);
    expect(payload.events).toEqual({ 'http://schemas.openid.net/event/backchannel-logout': {} });
    expect(payload).not.toHaveProperty('nonce');

    // The session is gone: a silent authorization request now needs a login.
    const silent = await authorize(rp, { prompt: 'none' });
    const result = await browser.follow(silent.url, t.issuer);
    expect(result.url.searchParams.get('error')).toBe('login_required');
  });

  describe('refuses bad requests with clear OAuth errors', () => {
    it('shows an error page, and never redirects, for an unregistered redirect_uri', async () => {
      const request = await authorize(rp, { redirect_uri: 'https://evil.example/callback' });
      const response = await new Browser().request(request.url);
      expect(response.status).toBe(400);
      expect(response.headers.get('location')).toBeNull();
      expect(await response.text()).toContain('redirect_uri did not match');
    });

    it('shows an error page for an unknown client', async () => {
      const url = new URL(rp.serverMetadata().authorization_endpoint!);
      url.search = new URLSearchParams({ client_id: 'nobody', response_type: 'code', scope: 'openid', redirect_uri: redirectUri }).toString();
      const response = await new Browser().request(url);
      expect(response.status).toBe(400);
      expect(response.headers.get('location')).toBeNull();
      expect(await response.text()).toContain('invalid_client');
    });

    it('refuses a reused code with invalid_grant and revokes the tokens of its first use', async () => {
      const request = await authorize(rp);
      const callback = await signIn(new Browser(), request.url, 'alice@example.com', password);
      const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
      await expect(oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce })).rejects.toMatchObject({ error: 'invalid_grant' });
      expect((await oidc.tokenIntrospection(rp, tokens.access_token)).active).toBe(false);
    });

    async function tokenRequest(fields: Record<string, string>, auth: string | null = `Basic ${Buffer.from(`webapp:${clientSecret}`).toString('base64')}`, contentType = 'application/x-www-form-urlencoded') {
      const response = await fetch(rp.serverMetadata().token_endpoint!, {
        method: 'POST',
        headers: { 'content-type': contentType, ...(auth ? { authorization: auth } : {}) },
        body: contentType.includes('json') ? JSON.stringify(fields) : new URLSearchParams(fields).toString(),
      });
      return { status: response.status, body: (await response.json()) as { error?: string; error_description?: string } };
    }

    it('refuses a wrong PKCE verifier and a missing one', async () => {
      const request = await authorize(rp);
      const callback = await signIn(new Browser(), request.url, 'alice@example.com', password);
      const code = callback.searchParams.get('code')!;
      const wrong = await tokenRequest({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: oidc.randomPKCECodeVerifier() });
      expect(wrong).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
      const request2 = await authorize(rp);
      const callback2 = await signIn(new Browser(), request2.url, 'alice@example.com', password);
      const missing = await tokenRequest({ grant_type: 'authorization_code', code: callback2.searchParams.get('code')!, redirect_uri: redirectUri });
      expect(missing.status).toBe(400);
      expect(missing.body.error).toMatch(/invalid_grant|invalid_request/);
    });

    it('refuses a redirect_uri that differs from the authorization request', async () => {
      const request = await authorize(rp);
      const callback = await signIn(new Browser(), request.url, 'alice@example.com', password);
      const result = await tokenRequest({ grant_type: 'authorization_code', code: callback.searchParams.get('code')!, redirect_uri: 'http://localhost:8080/other', code_verifier: request.verifier });
      expect(result).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    });

    it('refuses a wrong client secret and an unknown client with 401 invalid_client', async () => {
      const wrong = await tokenRequest({ grant_type: 'client_credentials' }, `Basic ${Buffer.from('webapp:not-the-secret').toString('base64')}`);
      expect(wrong).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
      const unknown = await tokenRequest({ grant_type: 'client_credentials' }, `Basic ${Buffer.from('nobody:whatever').toString('base64')}`);
      expect(unknown).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
      const post = await tokenRequest({ grant_type: 'client_credentials', client_id: 'poster', client_secret: 'wrong' }, null);
      expect(post).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
      const goodPost = await tokenRequest({ grant_type: 'client_credentials', client_id: 'poster', client_secret: posterSecret }, null);
      expect(goodPost.status).toBe(200);
      // The secret of one client does not authenticate another.
      const crossed = await tokenRequest({ grant_type: 'client_credentials', client_id: 'poster', client_secret: machineSecret }, null);
      expect(crossed).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    });

    it('answers malformed token requests with 4xx OAuth errors, never 5xx', async () => {
      const cases = [
        await tokenRequest({}),
        await tokenRequest({ grant_type: 'nonsense' }),
        await tokenRequest({ grant_type: 'authorization_code' }),
        await tokenRequest({ grant_type: 'authorization_code', code: 'x'.repeat(5000), redirect_uri: redirectUri, code_verifier: 'y' }),
        await tokenRequest({ grant_type: 'refresh_token', refresh_token: 'garbage' }),
        await tokenRequest({ grant_type: 'client_credentials' }, null, 'application/json'),
      ];
      for (const result of cases) {
        expect(result.status, JSON.stringify(result)).toBeGreaterThanOrEqual(400);
        expect(result.status, JSON.stringify(result)).toBeLessThan(500);
        expect(result.body.error).toMatch(/^[a-z_]+$/);
      }
      const broken = await fetch(rp.serverMetadata().token_endpoint!, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: '%%%&&&=' });
      expect(broken.status).toBeGreaterThanOrEqual(400);
      expect(broken.status).toBeLessThan(500);
    });

    it('answers a wrong password with the same message as an unknown user, and keeps the user on the page', async () => {
      const messages: string[] = [];
      for (const email of ['alice@example.com', 'nobody@example.com']) {
        const request = await authorize(rp);
        const browser = new Browser();
        const first = await browser.follow(request.url, t.issuer);
        const identify = await first.response.text();
        const afterEmail = await browser.postForm(new URL(/action="(\/interaction\/[^"]+\/identify)"/.exec(identify)![1]!, t.issuer), { csrf: csrfOf(identify), email }, t.issuer);
        const passwordPage = await afterEmail.response.text();
        expect(passwordPage).toContain('name="password"');
        const wrong = await browser.postForm(new URL(/action="(\/interaction\/[^"]+\/password)"/.exec(passwordPage)![1]!, t.issuer), { csrf: csrfOf(passwordPage), password: 'wrong password 123' }, t.issuer);
        expect(wrong.response.status).toBe(401);
        const html = await wrong.response.text();
        messages.push(/<ul class="errors"[^>]*>(.*?)<\/ul>/s.exec(html)![1]!);
      }
      expect(messages[0]).toBe(messages[1]);
      expect(messages[0]).toContain('email address or password is not correct');
    });
  });
});
