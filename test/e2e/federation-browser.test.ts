// Upstream OpenID Connect federation in a real browser: Debian's Chromium (driven by
// playwright-core) clicks "Continue with JumpCloud" on our identify screen, goes through the
// upstream and back, and lands on the relying party's redirect_uri (a tiny local HTTP server that
// records what it receives). The relying party then redeems the code with openid-client. The
// upstream is a stand-in (test/helpers/upstreams.ts: a real oidc-provider on loopback, the sign-in
// screen skipped): the cloud services it stands in for cannot be reached from here.
//
// Host names: a browser keeps cookies per host name, not per port, and both our IdP and the
// stand-in are oidc-provider instances. The stand-in's issuer is fixed at http://127.0.0.1:PORT
// (the helper listens there and its discovery says so, so it cannot be addressed under another
// name without failing the issuer check), so our IdP is the one moved: its issuer is
// http://localhost:PORT, on a port of our own that serves the same app (as in
// passkey-browser.test.ts). The two then never see each other's cookies, as on real domains.
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import * as oidc from 'openid-client';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorizationRequest } from '../helpers/oidc.ts';
import { freePort, startIdp, type TestIdp } from '../helpers/server.ts';
import { startOidcUpstream, type StandInUpstream } from '../helpers/upstreams.ts';

const chromiumPath = '/usr/bin/chromium';
const insecure = { execute: [oidc.allowInsecureRequests] };
const secret = 'upstream-client-secret-0123456789';
const email = 'browser.user@jumpcloud.test';

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
}

function close(server: Server | undefined): Promise<void> {
  if (!server) return Promise.resolve();
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

describe('upstream OIDC federation in a real browser', () => {
  let t: TestIdp;
  let issuer: string;
  let front: Server;
  let relyingParty: Server;
  let redirectUri: string;
  let upstream: StandInUpstream;
  let rp: oidc.Configuration;
  let browser: Browser;
  /** Every URL the relying party's redirect_uri (its /callback) was called with. */
  const received: URL[] = [];

  beforeAll(async () => {
    expect(existsSync(chromiumPath), `${chromiumPath} exists (Debian package chromium)`).toBe(true);
    const [port, rpPort] = [await freePort(), await freePort()];
    issuer = `http://localhost:${port}`;
    t = await startIdp('sqlite', { ISSUER: issuer, FEDERATION_ALLOW_HTTP: 'true' });
    // startIdp listens on 127.0.0.1:<its own port>; the browser uses the issuer's name and port.
    front = createServer(t.idp.app.callback());
    await listen(front, port, 'localhost');

    // The relying party's redirect_uri: a real page for Chromium to land on.
    redirectUri = `http://localhost:${rpPort}/callback`;
    relyingParty = createServer((req, res) => {
      const url = new URL(req.url ?? '/', `http://localhost:${rpPort}`);
      if (url.pathname !== '/callback') {
        // Chromium's own /favicon.ico request.
        res.writeHead(204).end();
        return;
      }
      received.push(url);
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end('<!DOCTYPE html><title>Relying party</title><h1>Back at the application</h1>');
    });
    await listen(relyingParty, rpPort, 'localhost');

    upstream = await startOidcUpstream({
      flavour: 'plain',
      clients: [{ client_id: 'our-idp', client_secret: secret, redirect_uris: [`${issuer}/interaction/callback/oidc/jumpcloud`] }],
    });
    expect(new URL(upstream.issuer).hostname, 'the upstream is on another host name than our IdP').not.toBe(new URL(issuer).hostname);

    const created = await t.idp.clients.create({ client_id: 'webapp', client_name: 'Web App', redirect_uris: [redirectUri], first_party: true });
    rp = await oidc.discovery(new URL(issuer), 'webapp', created.clientSecret!, undefined, insecure);
    await t.idp.connections.create({
      id: 'jumpcloud', preset: 'jumpcloud', display_name: 'JumpCloud', issuer: upstream.issuer, client_id: 'our-idp', client_secret: secret, clients: ['webapp'],
    }, 'test');

    browser = await chromium.launch({ executablePath: chromiumPath, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  });

  afterAll(async () => {
    await browser?.close();
    await close(front);
    await close(relyingParty);
    await upstream?.stop();
    await t?.stop();
  });

  it('clicks "Continue with JumpCloud", goes through the upstream and lands at the client with a code for the JIT account (amr fed), with no console error on the way', async () => {
    upstream.signInAs({ id: 'jc-browser-1', claims: { email, email_verified: true, name: 'Browser User' } });
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      /** Console errors and page errors (a CSP violation is a console error), with the page they happened on. */
      const problems: string[] = [];
      page.on('console', (message) => {
        const at = message.location().url;
        if (message.type() === 'error' || /Content Security Policy|Refused to/i.test(message.text())) problems.push(`${page.url()}: console ${message.type()}: ${message.text()} (at ${at})`);
      });
      page.on('pageerror', (error) => problems.push(`${page.url()}: pageerror: ${error.message}`));
      /** Every document Chromium navigated to, in order. */
      const navigations: string[] = [];
      page.on('framenavigated', (frame) => {
        if (frame === page.mainFrame()) navigations.push(frame.url());
      });
      const requested: string[] = [];
      page.on('request', (request) => {
        if (request.isNavigationRequest()) requested.push(request.url());
      });
      /** Every answer of 400 or more, for the failure messages (a console error names no URL). */
      const failed: string[] = [];
      page.on('response', (response) => {
        if (response.status() >= 400) failed.push(`${response.status()} ${response.request().method()} ${response.url()}`);
      });

      // The relying party sends the browser to our authorization endpoint; our identify screen.
      const request = await authorizationRequest(rp, { redirect_uri: redirectUri, scope: 'openid email profile' });
      await page.goto(request.url.href);
      expect(new URL(page.url()).origin).toBe(issuer);
      expect(new URL(page.url()).pathname).toMatch(/^\/interaction\/[\w-]+$/);
      await expect.poll(() => page.locator('h1').first().textContent()).toBe('Sign in');
      const button = page.getByRole('button', { name: 'Continue with JumpCloud' });
      expect(await button.count()).toBe(1);
      const form = page.locator('form.upstream').filter({ has: button });
      expect(await form.locator('input[name="method"]').inputValue()).toBe('oidc');
      expect(await form.locator('input[name="connection"]').inputValue()).toBe('jumpcloud');
      // The stylesheet loaded under the CSP (typed loosely: the project compiles without the DOM library).
      const borderRadius = await page.locator('main.card').evaluate((el) => (globalThis as unknown as { getComputedStyle(e: unknown): { borderRadius: string } }).getComputedStyle(el).borderRadius);
      expect(borderRadius).toBe('12px');
      expect(problems, `no console error or CSP violation on the identify screen; failed requests: ${failed.join(', ')}`).toEqual([]);

      // The click: to the upstream (on its own host name), back to our callback, on to the client.
      await Promise.all([page.waitForURL((url) => url.href.startsWith(redirectUri), { timeout: 15_000 }), button.click()]);
      expect(await page.locator('h1').textContent()).toBe('Back at the application');

      const upstreamOrigin = new URL(upstream.issuer).origin;
      expect(requested.some((url) => new URL(url).origin === upstreamOrigin), `the browser went to the upstream: ${requested.join('\n')}`).toBe(true);
      const callback = requested.map((url) => new URL(url)).find((url) => url.origin === issuer && url.pathname === '/interaction/callback/oidc/jumpcloud');
      expect(callback, `the upstream sent the browser to our callback: ${requested.join('\n')}`).toBeDefined();
      expect(callback!.searchParams.get('code')).toBeTruthy();
      expect(callback!.searchParams.get('state')).toBeTruthy();
      expect(upstream.authorizations).toHaveLength(1);
      expect(upstream.authorizations[0]!.get('redirect_uri')).toBe(`${issuer}/interaction/callback/oidc/jumpcloud`);
      expect(upstream.tokenRequests, 'our IdP redeemed the upstream code once').toBe(1);

      // What the client received: the code for its request, and nothing else on the way.
      expect(received).toHaveLength(1);
      const landed = received[0]!;
      expect(landed.href).toBe(page.url());
      expect(landed.searchParams.get('error')).toBeNull();
      expect(landed.searchParams.get('state')).toBe(request.state);
      expect(landed.searchParams.get('iss')).toBe(issuer);
      const tokens = await oidc.authorizationCodeGrant(rp, landed, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
      const account = await t.idp.accounts.findByEmail(email);
      expect(account, 'the first upstream sign-in created the account').toMatchObject({ name: 'Browser User', emailVerified: true, passwordHash: null });
      expect(tokens.claims()).toMatchObject({ sub: account!.id, amr: ['fed'], nonce: request.nonce });
      expect(await oidc.fetchUserInfo(rp, tokens.access_token, account!.id)).toMatchObject({ sub: account!.id, email, email_verified: true, name: 'Browser User' });
      expect(await t.idp.federatedAccounts.linksOf(account!.id)).toEqual([expect.objectContaining({ connectionId: 'jumpcloud', issuer: upstream.issuer, subject: 'jc-browser-1' })]);

      // Each provider's cookies stayed on its own host name: none was overwritten or crossed over.
      const cookies = await context.cookies();
      const upstreamCookies = cookies.filter((c) => c.name.startsWith('up'));
      expect(upstreamCookies.length, JSON.stringify(cookies)).toBeGreaterThan(0);
      for (const c of upstreamCookies) expect(c.domain, c.name).toBe(new URL(upstream.issuer).hostname);
      expect(cookies.filter((c) => c.domain === 'localhost').map((c) => c.name)).toContain('_session');
      for (const c of cookies.filter((c) => c.domain === 'localhost')) expect(c.name, 'only our cookies on our host name').not.toMatch(/^up\d+_/);

      expect(problems, `no console error on the way; pages: ${navigations.join(' → ')}`).toEqual([]);
    } finally {
      await context.close();
    }
  });
});
