// Regressions for defects found by independent probes against a running server, on SQLite and on
// PostgreSQL + Redis: the admin scope reachable by ordinary clients, and keep-alive connections
// left hanging after a refused body. Each case failed before its fix.
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { DatabaseExpiringValues, RedisExpiringValues } from '../../src/store/expiring-values.ts';
import { backends, startIdp, testResourceServer, type TestIdp } from '../helpers/server.ts';
import { rawExchange } from '../helpers/raw-http.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const redirectUri = 'http://localhost:8080/callback';

/** Token endpoint answer for client_secret_post credentials and `params`. */
async function token(t: TestIdp, clientId: string, secret: string, params: Record<string, string>) {
  const response = await fetch(`${t.issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: secret, ...params }).toString(),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

describe.each(backends)('defects found by outside probes, on %s', (backend) => {
  let t: TestIdp;
  let ordinarySecret: string;
  let adminSecret: string;
  let thirdParty: oidc.Configuration;

  beforeAll(async () => {
    t = await startIdp(backend);
    ordinarySecret = (await t.idp.clients.create({ client_id: 'ordinary', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_post' })).clientSecret!;
    adminSecret = (await t.idp.clients.create({ client_id: 'ops', grant_types: ['client_credentials'], scope: 'idp:admin', token_endpoint_auth_method: 'client_secret_post' })).clientSecret!;
    const web = await t.idp.clients.create({ client_id: 'thirdparty', redirect_uris: [redirectUri] });
    thirdParty = await oidc.discovery(new URL(t.issuer), 'thirdparty', web.clientSecret!, undefined, insecure);
    await t.idp.accounts.create({ email: 'erin@example.com', password: 'a perfectly fine password', emailVerified: true });
  });
  afterAll(async () => t?.stop());

  describe('only a client registered with idp:admin is ever granted it', () => {
    it('refuses idp:admin to an ordinary client by client credentials, with or without a resource', async () => {
      const attempts: Record<string, string>[] = [{ scope: 'idp:admin' }, { scope: 'idp:admin', resource: testResourceServer.indicator }, { scope: 'api:read idp:admin', resource: testResourceServer.indicator }];
      for (const params of attempts) {
        const answer = await token(t, 'ordinary', ordinarySecret, params);
        expect(answer, JSON.stringify(params)).toMatchObject({ status: 400, body: { error: 'invalid_scope' } });
      }
      const admin = await token(t, 'ordinary', ordinarySecret, { scope: 'idp:admin', resource: `${t.issuer}/admin` });
      expect(admin).toMatchObject({ status: 400, body: { error: 'invalid_target' } });
    });

    it('still gives an ordinary client its other scopes, and the admin client its admin token', async () => {
      const api = await token(t, 'ordinary', ordinarySecret, { scope: 'api:read', resource: testResourceServer.indicator });
      expect(api).toMatchObject({ status: 200, body: { scope: 'api:read' } });
      const admin = await token(t, 'ops', adminSecret, { scope: 'idp:admin', resource: `${t.issuer}/admin` });
      expect(admin).toMatchObject({ status: 200, body: { scope: 'idp:admin' } });
    });

    it('refuses idp:admin in an authorization request of a client not registered with it', async () => {
      const { url } = await authorizationRequest(thirdParty, { redirect_uri: redirectUri, scope: 'openid idp:admin' });
      const response = await fetch(url, { redirect: 'manual' });
      const location = new URL(response.headers.get('location')!, t.issuer);
      expect(location.origin + location.pathname).toBe(redirectUri);
      expect(location.searchParams.get('error')).toBe('invalid_scope');
    });
  });

  it('a sign-in step another submission still holds answers with our page and a way on, not JSON', async () => {
    const browser = new Browser();
    const { url } = await authorizationRequest(thirdParty, { redirect_uri: redirectUri });
    const start = await browser.follow(url, t.issuer);
    const identify = await start.response.text();
    const passwordPage = await browser.postForm(new URL(formAction(identify, 'identify'), t.issuer), { csrf: csrfOf(identify), email: 'erin@example.com' }, t.issuer);
    const html = await passwordPage.response.text();
    const uid = /\/interaction\/([^/"]+)\/password/.exec(html)![1]!;
    // Another live submission of this flow (on any node) holds its lock and keeps renewing it.
    const store = t.idp.redis ? new RedisExpiringValues(t.idp.redis) : new DatabaseExpiringValues(t.idp.db.prisma);
    const lock = (await store.acquire(`flow:${uid}:submit`, 3))!;
    expect(lock).toBeTruthy();
    const renewal = setInterval(() => void store.extend(`flow:${uid}:submit`, lock, 3), 500);
    try {
      const busy = await browser.postForm(new URL(formAction(html, 'password'), t.issuer), { csrf: csrfOf(html), password: 'a perfectly fine password' }, t.issuer);
      expect(busy.response.status).toBe(429);
      expect(busy.response.headers.get('content-type')).toMatch(/^text\/html/);
      expect(busy.response.headers.get('retry-after')).toMatch(/^\d+$/);
      const page = await busy.response.text();
      expect(page).toContain(`href="/interaction/${uid}"`);
      expect(page).not.toContain('"error"');
    } finally {
      clearInterval(renewal);
      await store.release(`flow:${uid}:submit`, lock);
    }
    // Following the page's link shows the password step again, and it works.
    const again = await browser.follow(`${t.issuer}/interaction/${uid}`, t.issuer);
    const retry = await again.response.text();
    const done = await browser.postForm(new URL(formAction(retry, 'password'), t.issuer), { csrf: csrfOf(retry), password: 'a perfectly fine password' }, t.issuer);
    // The password went through: the third-party client's consent comes next.
    expect(await done.response.text()).toContain('/consent"');
  });

  describe('a refused body does not leave its keep-alive connection hanging', () => {
    const big = 1024 * 1024;
    const cases = [
      { path: '/auth', type: 'application/x-www-form-urlencoded' },
      { path: '/session/end', type: 'application/x-www-form-urlencoded' },
      { path: '/interaction/abc/password', type: 'application/x-www-form-urlencoded' },
      { path: '/token', type: 'application/x-www-form-urlencoded' },
      { path: '/admin/v1/users', type: 'application/json' },
    ];
    for (const { path, type } of cases) {
      it(`POST ${path} with 1 MB: refused, then the connection is closed (a second request never waits forever)`, async () => {
        const body = Buffer.alloc(big, 'a');
        const head = `POST ${path} HTTP/1.1\r\nHost: ${new URL(t.url).host}\r\nContent-Type: ${type}\r\nContent-Length: ${body.length}\r\nConnection: keep-alive\r\n\r\n`;
        const next = `GET /healthz HTTP/1.1\r\nHost: ${new URL(t.url).host}\r\n\r\n`;
        const { text, closedByServer } = await rawExchange(t.url, Buffer.concat([Buffer.from(head), body, Buffer.from(next)]));
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
        expect(status, text.slice(0, 300)).toBeGreaterThanOrEqual(400);
        expect(status).toBeLessThan(500);
        // Either the server answered the second request too, or it closed the connection: a
        // client waiting on it is never left hanging.
        const answeredBoth = (text.match(/HTTP\/1\.1 \d{3}/g) ?? []).length === 2;
        expect(answeredBoth || closedByServer, `server neither answered the next request nor closed:\n${text.slice(0, 500)}`).toBe(true);
      });
    }

    it('a normal keep-alive connection still serves several requests', async () => {
      const host = new URL(t.url).host;
      const request = `GET /healthz HTTP/1.1\r\nHost: ${host}\r\n\r\nGET /healthz HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
      const { text } = await rawExchange(t.url, Buffer.from(request), 500);
      expect((text.match(/HTTP\/1\.1 200/g) ?? []).length).toBe(2);
    });
  });
});
