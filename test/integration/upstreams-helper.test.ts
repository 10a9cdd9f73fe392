// Self-test of the stand-in upstream providers (test/helpers/upstreams.ts): a relying party
// (openid-client) runs the whole authorization code + PKCE + nonce flow against each of them.
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import * as oidc from 'openid-client';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import {
  startEntraUpstream,
  startMockServerUpstream,
  startOidcUpstream,
  type EntraUpstream,
  type StandInUpstream,
  type UpstreamClient,
} from '../helpers/upstreams.ts';

const REDIRECT_URI = 'http://localhost:8080/callback';

/** Cookies as a browser keeps them, by host name (ports share them), ignoring paths. */
class CookieJar {
  readonly #cookies = new Map<string, Map<string, string>>();

  header(url: URL): string {
    return [...(this.#cookies.get(url.hostname) ?? new Map<string, string>())].map(([name, value]) => `${name}=${value}`).join('; ');
  }

  store(url: URL, response: Response): void {
    const cookies = this.#cookies.get(url.hostname) ?? new Map<string, string>();
    this.#cookies.set(url.hostname, cookies);
    for (const line of response.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';');
      const equals = pair.indexOf('=');
      const name = pair.slice(0, equals).trim();
      const value = pair.slice(equals + 1).trim();
      const expired = attributes.some((a) => /^\s*expires=/i.test(a) && Date.parse(a.split('=')[1] ?? '') < Date.now());
      if (value === '' || expired) cookies.delete(name);
      else cookies.set(name, value);
    }
  }
}

/** Follows the redirects from `start` as a browser would, until one goes to the redirect_uri. */
async function followToCallback(start: URL, jar = new CookieJar()): Promise<URL> {
  let url = start;
  for (let hop = 0; hop < 10; hop += 1) {
    if (url.href.startsWith(REDIRECT_URI)) return url;
    const cookie = jar.header(url);
    const response = await fetch(url, { redirect: 'manual', headers: cookie ? { cookie } : {} });
    jar.store(url, response);
    const location = response.headers.get('location');
    const text = await response.text();
    if (response.status < 300 || response.status >= 400 || !location) {
      throw new Error(`no redirect from ${url.href}: ${response.status} ${text.slice(0, 500)}`);
    }
    url = new URL(location, url);
  }
  throw new Error('too many redirects');
}

async function discover(issuer: string, client: UpstreamClient, auth?: oidc.ClientAuth): Promise<oidc.Configuration> {
  return oidc.discovery(new URL(issuer), client.client_id, client.client_secret, auth, { execute: [oidc.allowInsecureRequests] });
}

/** The RP's flow with openid-client: authorization request, redirects, code exchange. */
async function signIn(config: oidc.Configuration, parameters: Record<string, string> = {}, jar = new CookieJar()) {
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri: REDIRECT_URI,
    scope: 'openid email profile',
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
    ...parameters,
  });
  const callback = await followToCallback(url, jar);
  const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce });
  const claims = tokens.claims();
  if (!claims) throw new Error('no ID token');
  return { tokens, claims, nonce };
}

function client(id: string, auth?: UpstreamClient['token_endpoint_auth_method']): UpstreamClient {
  return { client_id: id, client_secret: `${id}-secret-0123456789`, redirect_uris: [REDIRECT_URI], ...(auth ? { token_endpoint_auth_method: auth } : {}) };
}

describe('stand-in upstreams', () => {
  const started: StandInUpstream[] = [];
  afterAll(async () => {
    await Promise.all(started.map((u) => u.stop()));
  });

  describe('plain', () => {
    const rp = client('plain-rp', 'client_secret_post');
    let upstream: StandInUpstream;
    beforeAll(async () => {
      upstream = await startOidcUpstream({ flavour: 'plain', clients: [rp] });
      started.push(upstream);
    });

    it('signs the user in, the claims in the ID token', async () => {
      // Registered for client_secret_post: openid-client's default for a secret.
      const config = await discover(upstream.issuer, rp);
      expect(config.serverMetadata().end_session_endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+\//);
      upstream.signInAs({ id: 'alice', claims: { email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['staff'] }, amr: ['pwd'], acr: '1' });
      const before = upstream.tokenRequests;
      const { claims, nonce } = await signIn(config, { scope: 'openid email profile groups' });
      expect(claims).toMatchObject({ iss: upstream.issuer, sub: 'alice', aud: rp.client_id, email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['staff'], amr: ['pwd'], acr: '1', nonce });
      expect(upstream.tokenRequests).toBe(before + 1);
      const last = upstream.authorizations.at(-1);
      expect(last?.get('client_id')).toBe(rp.client_id);
      expect(last?.get('code_challenge_method')).toBe('S256');
      expect(last?.get('nonce')).toBe(nonce);
    });

    it('signs in the user of signInAs even with a session at the upstream', async () => {
      const config = await discover(upstream.issuer, rp);
      const jar = new CookieJar();
      upstream.signInAs({ id: 'first', claims: {} });
      expect((await signIn(config, {}, jar)).claims.sub).toBe('first');
      upstream.signInAs({ id: 'second', claims: { email: 'second@example.com' } });
      expect((await signIn(config, {}, jar)).claims).toMatchObject({ sub: 'second', email: 'second@example.com' });
      // prompt=none: the upstream session answers, no sign-in
      upstream.signInAs({ id: 'third', claims: {} });
      expect((await signIn(config, { prompt: 'none' }, jar)).claims.sub).toBe('second');
    });

    it('failNextWith answers the next authorization with the error, once', async () => {
      const config = await discover(upstream.issuer, rp);
      upstream.signInAs({ id: 'bob', claims: { email: 'bob@example.com' } });
      upstream.failNextWith('access_denied');
      const state = oidc.randomState();
      const url = oidc.buildAuthorizationUrl(config, {
        redirect_uri: REDIRECT_URI,
        scope: 'openid',
        code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()),
        code_challenge_method: 'S256',
        state,
      });
      const before = upstream.tokenRequests;
      const callback = await followToCallback(url);
      expect(callback.searchParams.get('error')).toBe('access_denied');
      expect(callback.searchParams.get('error_description')).toBe('the user declined');
      expect(callback.searchParams.get('state')).toBe(state);
      expect(callback.searchParams.has('code')).toBe(false);
      expect(upstream.tokenRequests).toBe(before);
      // cleared: the next one signs in
      const { claims } = await signIn(config);
      expect(claims.sub).toBe('bob');
    });
  });

  describe('google', () => {
    const rp = client('google-rp');
    let upstream: StandInUpstream;
    beforeAll(async () => {
      upstream = await startOidcUpstream({ flavour: 'google', clients: [rp] });
      started.push(upstream);
    });

    it('releases hd and email_verified in the ID token', async () => {
      const config = await discover(upstream.issuer, rp, oidc.ClientSecretBasic(rp.client_secret));
      upstream.signInAs({ id: '1089', claims: { email: 'carol@corp.example', email_verified: true, name: 'Carol', hd: 'corp.example' } });
      const { claims } = await signIn(config);
      expect(claims).toMatchObject({ sub: '1089', hd: 'corp.example', email: 'carol@corp.example', email_verified: true });
    });
  });

  describe('okta', () => {
    const rp = client('okta-rp');
    let upstream: StandInUpstream;
    beforeAll(async () => {
      upstream = await startOidcUpstream({ flavour: 'okta', clients: [rp] });
      started.push(upstream);
    });

    it('puts amr/acr in the ID token, email and groups only at userinfo', async () => {
      const config = await discover(upstream.issuer, rp, oidc.ClientSecretBasic(rp.client_secret));
      upstream.signInAs({ id: '00u1', claims: { email: 'dan@example.com', email_verified: true, groups: ['Everyone', 'admins'] }, amr: ['pwd', 'mfa'], acr: 'urn:okta:loa:2fa:any' });
      const { tokens, claims } = await signIn(config, { scope: 'openid email groups' });
      expect(claims).toMatchObject({ sub: '00u1', amr: ['pwd', 'mfa'], acr: 'urn:okta:loa:2fa:any' });
      expect(typeof claims.auth_time).toBe('number');
      expect(claims).not.toHaveProperty('email');
      expect(claims).not.toHaveProperty('groups');
      const userinfo = await oidc.fetchUserInfo(config, tokens.access_token, '00u1');
      expect(userinfo).toMatchObject({ sub: '00u1', email: 'dan@example.com', groups: ['Everyone', 'admins'] });
    });
  });

  describe('entra', () => {
    const rp = client('entra-rp');
    let upstream: EntraUpstream;
    let tid1: string;
    let tid2: string;
    beforeAll(async () => {
      upstream = await startOidcUpstream({ flavour: 'entra', clients: [rp] });
      started.push(upstream);
      [tid1 = '', tid2 = ''] = upstream.tenants;
    });

    it('serves each tenant as a single-tenant issuer', async () => {
      expect(upstream.tenantIssuer(tid2)).toBe(upstream.issuer.replace('/organizations/v2.0', `/${tid2}/v2.0`));
      const config = await discover(upstream.tenantIssuer(tid2), rp, oidc.ClientSecretBasic(rp.client_secret));
      upstream.signInAs({
        id: 'pairwise-sub-1',
        claims: { tid: tid2, oid: 'oid-1', email: 'erin@contoso.example', email_verified: true, name: 'Erin', preferred_username: 'erin@contoso.example', acrs: ['c1'] },
        amr: ['pwd'],
        acr: '1',
      });
      const { claims } = await signIn(config, { claims: JSON.stringify({ id_token: { acrs: { essential: true, values: ['c1'] } } }) });
      expect(claims).toMatchObject({ iss: upstream.tenantIssuer(tid2), sub: 'pairwise-sub-1', tid: tid2, oid: 'oid-1', email: 'erin@contoso.example', preferred_username: 'erin@contoso.example', acrs: ['c1'] });
      expect(claims).not.toHaveProperty('email_verified');
      expect(claims).not.toHaveProperty('amr');
      expect(claims).not.toHaveProperty('acr');
    });

    it('publishes the multi-tenant document and signs in through it at the user\'s tenant', async () => {
      // openid-client refuses this document (issuer template): a plain fetch, as Entra RPs do.
      const response = await fetch(`${upstream.issuer}/.well-known/openid-configuration`);
      expect(response.status).toBe(200);
      const doc = (await response.json()) as Record<string, string>;
      const base = upstream.issuer.slice(0, -'/organizations/v2.0'.length);
      expect(doc.issuer).toBe(`${base}/{tenantid}/v2.0`);
      expect(doc.authorization_endpoint?.startsWith(`${base}/organizations/v2.0/`)).toBe(true);
      expect(doc.token_endpoint?.startsWith(`${base}/organizations/v2.0/`)).toBe(true);
      expect(doc.jwks_uri?.startsWith(`${base}/organizations/v2.0/`)).toBe(true);
      expect(doc.end_session_endpoint?.startsWith(`${base}/organizations/v2.0/`)).toBe(true);

      const flow = async (expectedTid: string) => {
        const verifier = oidc.randomPKCECodeVerifier();
        const state = oidc.randomState();
        const nonce = oidc.randomNonce();
        const authorization = new URL(doc.authorization_endpoint ?? '');
        authorization.search = new URLSearchParams({
          client_id: rp.client_id,
          redirect_uri: REDIRECT_URI,
          response_type: 'code',
          scope: 'openid email profile',
          state,
          nonce,
          code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
          code_challenge_method: 'S256',
        }).toString();
        const callback = await followToCallback(authorization);
        expect(callback.searchParams.get('state')).toBe(state);
        expect(callback.searchParams.get('iss')).toBe(upstream.tenantIssuer(expectedTid));
        const token = await fetch(doc.token_endpoint ?? '', {
          method: 'POST',
          headers: {
            authorization: `Basic ${btoa(`${encodeURIComponent(rp.client_id)}:${encodeURIComponent(rp.client_secret)}`)}`,
            'content-type': 'application/x-www-form-urlencoded',
          },
          body: new URLSearchParams({ grant_type: 'authorization_code', code: callback.searchParams.get('code') ?? '', redirect_uri: REDIRECT_URI, code_verifier: verifier }),
        });
        expect(token.status).toBe(200);
        const { id_token: idToken } = (await token.json()) as { id_token: string };
        const payload = decodeJwt(idToken);
        expect(payload).toMatchObject({ iss: upstream.tenantIssuer(expectedTid), tid: expectedTid, nonce, aud: rp.client_id });
        expect(payload).not.toHaveProperty('email_verified');
        expect(payload).not.toHaveProperty('amr');
        expect(payload).not.toHaveProperty('acrs');
        await jwtVerify(idToken, createRemoteJWKSet(new URL(doc.jwks_uri ?? '')), { issuer: upstream.tenantIssuer(expectedTid), audience: rp.client_id });
        return payload;
      };

      upstream.signInAs({ id: 'sub-2', claims: { tid: tid2, oid: 'oid-2', email: 'frank@fabrikam.example', email_verified: true, acrs: ['c1'] }, amr: ['pwd'] });
      const second = await flow(tid2);
      expect(second).toMatchObject({ sub: 'sub-2', oid: 'oid-2', email: 'frank@fabrikam.example' });

      // no tid: the first tenant, whose tid it gets
      upstream.signInAs({ id: 'sub-3', claims: { oid: 'oid-3' } });
      const first = await flow(tid1);
      expect(first).toMatchObject({ sub: 'sub-3', oid: 'oid-3' });

      expect(() => upstream.signInAs({ id: 'x', claims: { tid: 'not-a-tenant' } })).toThrow(/not a tenant/);
    });

    it('is what startEntraUpstream starts too', async () => {
      const other = await startEntraUpstream({ clients: [rp], tenants: ['33333333-3333-4333-8333-333333333333'] });
      started.push(other);
      expect(other.tenants).toEqual(['33333333-3333-4333-8333-333333333333']);
      const response = await fetch(`${other.tenantIssuer('33333333-3333-4333-8333-333333333333')}/.well-known/openid-configuration`);
      expect(((await response.json()) as { issuer: string }).issuer).toBe(other.tenantIssuer('33333333-3333-4333-8333-333333333333'));
    });
  });

  describe('oauth2-mock-server', () => {
    const rp = client('generic-rp');
    let upstream: StandInUpstream;
    beforeAll(async () => {
      upstream = await startMockServerUpstream({ clientId: rp.client_id });
      started.push(upstream);
    });

    it('signs the user in with nonce, aud and the claims', async () => {
      const config = await discover(upstream.issuer, rp);
      upstream.signInAs({ id: 'gina', claims: { email: 'gina@example.org', email_verified: false, name: 'Gina' }, amr: ['otp'] });
      const { tokens, claims, nonce } = await signIn(config);
      expect(claims).toMatchObject({ iss: upstream.issuer, sub: 'gina', aud: rp.client_id, nonce, email: 'gina@example.org', email_verified: false, name: 'Gina', amr: ['otp'] });
      expect(upstream.tokenRequests).toBe(1);
      expect(upstream.authorizations.at(-1)?.get('nonce')).toBe(nonce);
      const userinfo = await oidc.fetchUserInfo(config, tokens.access_token, 'gina');
      expect(userinfo).toMatchObject({ sub: 'gina', email: 'gina@example.org' });
    });

    it('failNextWith answers the next authorization with the error', async () => {
      const config = await discover(upstream.issuer, rp);
      upstream.failNextWith('access_denied');
      const state = oidc.randomState();
      const url = oidc.buildAuthorizationUrl(config, { redirect_uri: REDIRECT_URI, scope: 'openid', state, code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256' });
      const callback = await followToCallback(url);
      expect(callback.searchParams.get('error')).toBe('access_denied');
      expect(callback.searchParams.get('state')).toBe(state);
      expect(callback.searchParams.has('code')).toBe(false);
    });
  });
});
