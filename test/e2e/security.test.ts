// Security properties of every response and of our forms: headers, CSRF, escaping of echoed
// input, size limits, and clean errors for stale or forged interactions.
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf } from '../helpers/browser.ts';
import { rawExchange } from '../helpers/raw-http.ts';
import { startIdp, type TestIdp } from '../helpers/server.ts';

const redirectUri = 'http://localhost:8080/callback';

describe('security of the HTTP surface', () => {
  let t: TestIdp;
  let rp: oidc.Configuration;

  beforeAll(async () => {
    t = await startIdp('sqlite');
    const created = await t.idp.clients.create({ client_id: 'webapp', client_name: 'Evil <script>alert(1)</script> App', redirect_uris: [redirectUri] });
    rp = await oidc.discovery(new URL(t.issuer), 'webapp', created.clientSecret!, undefined, { execute: [oidc.allowInsecureRequests] });
  });
  afterAll(async () => t?.stop());

  async function openLogin(browser: Browser, extra: Record<string, string> = {}) {
    const url = oidc.buildAuthorizationUrl(rp, { redirect_uri: redirectUri, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256', ...extra });
    const { response, url: page } = await browser.follow(url, t.issuer);
    const html = await response.text();
    expect(response.status).toBe(200);
    return { html, page, csrf: csrfOf(html) };
  }

  it('sends strict security headers on our pages, the provider\'s endpoints and errors alike', async () => {
    const browser = new Browser();
    const { page } = await openLogin(browser);
    const responses = [
      await browser.request(page),
      await fetch(`${t.issuer}/.well-known/openid-configuration`),
      await fetch(`${t.issuer}/jwks`),
      await fetch(`${t.issuer}/token`, { method: 'POST' }),
      await fetch(`${t.issuer}/interaction/does-not-exist`),
      await fetch(`${t.issuer}/healthz`),
    ];
    for (const response of responses) {
      const csp = response.headers.get('content-security-policy') ?? '';
      expect(csp, response.url).toContain("frame-ancestors 'none'");
      expect(csp).toContain("script-src 'self'");
      expect(csp).not.toContain('unsafe-inline');
      expect(csp).not.toContain('unsafe-eval');
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
      expect(response.headers.get('referrer-policy')).toBe('no-referrer');
      expect(response.headers.get('x-frame-options')).toBe('DENY');
      // Served over plain http here, so no HSTS (see the https case below).
      expect(response.headers.get('strict-transport-security')).toBeNull();
      expect(response.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    }
  });

  it('requests Node refuses before the app (too long a URL, malformed) still get the security headers and a closed connection', async () => {
    // A query of 24 KB: over Node's 16 KB limit for the request line and headers (431).
    const tooLong = await fetch(`${t.issuer}/.well-known/openid-configuration?q=${'%C3%A9'.repeat(4000)}`);
    expect(tooLong.status).toBe(431);
    const malformed = await rawExchange(t.issuer, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n'));
    expect(malformed.text).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(malformed.closedByServer).toBe(true);
    const head = (raw: string) => new Headers(raw.split('\r\n\r\n')[0]!.split('\r\n').slice(1).map((line) => line.split(/:\s*/, 2) as [string, string]));
    for (const headers of [tooLong.headers, head(malformed.text)]) {
      expect(headers.get('x-content-type-options')).toBe('nosniff');
      expect(headers.get('referrer-policy')).toBe('no-referrer');
      expect(headers.get('x-frame-options')).toBe('DENY');
      expect(headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
      expect(headers.get('connection')).toBe('close');
      expect(headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    }
    // The server is fine afterwards.
    expect((await fetch(`${t.issuer}/.well-known/openid-configuration`)).status).toBe(200);
  });

  it('escapes every echoed value: login_hint and the client name', async () => {
    const { html } = await openLogin(new Browser(), { login_hint: '"><script>alert(1)</script>' });
    expect(html).not.toContain('<script>');
    expect(html).toContain('&#34;&#62;&#60;script&#62;alert(1)&#60;/script&#62;');
    expect(html).toContain('Evil &#60;script&#62;alert(1)&#60;/script&#62; App');
  });

  it('refuses form posts without the interaction\'s CSRF token, or with another interaction\'s', async () => {
    const browser = new Browser();
    const { page } = await openLogin(browser);
    const other = await openLogin(new Browser());
    const forged: Record<string, string>[] = [{ email: 'a@example.com' }, { email: 'a@example.com', csrf: other.csrf }, { email: 'a@example.com', csrf: '' }];
    for (const fields of forged) {
      const response = await browser.request(`${page.href}/identify`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString() });
      expect(response.status).toBe(403);
      expect(await response.text()).toContain('This form has expired or was not sent from this page');
    }
    // Nothing moved: the interaction still shows the first screen.
    const again = await browser.request(page);
    expect(await again.text()).toContain('name="email"');
    expect(await t.idp.db.prisma.auditEvent.count({ where: { type: 'csrf.rejected' } })).toBeGreaterThanOrEqual(3);
  });

  it('refuses a form post from a browser that does not hold the interaction', async () => {
    const { page, csrf } = await openLogin(new Browser());
    const stranger = new Browser();
    const response = await stranger.request(`${page.href}/identify`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ csrf, email: 'a@example.com' }).toString() });
    expect(response.status).toBe(400);
    expect(await response.text()).toContain('expired or was already used');
  });

  it('answers unknown interactions and odd methods with 4xx pages, never 5xx', async () => {
    for (const [path, method] of [['/interaction/nope', 'GET'], ['/interaction/nope/identify', 'POST'], ['/interaction/nope/consent', 'POST'], ['/interaction/nope/identify', 'PUT'], ['/auth', 'DELETE']] as const) {
      const response = await fetch(`${t.issuer}${path}`, { method });
      expect(response.status, `${method} ${path}`).toBeGreaterThanOrEqual(400);
      expect(response.status, `${method} ${path}`).toBeLessThan(500);
      expect(await response.text()).not.toMatch(/at .*\.(ts|js):\d+/);
    }
  });

  it('refuses oversized form bodies with 413 and oversized URLs with 414', async () => {
    const browser = new Browser();
    const { page, csrf } = await openLogin(browser);
    const big = await browser.request(`${page.href}/identify`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ csrf, email: 'a'.repeat(100_000) }).toString() });
    expect(big.status).toBe(413);
    const longUrl = await fetch(`${t.issuer}/auth?client_id=webapp&junk=${'x'.repeat(10_000)}`);
    expect(longUrl.status).toBe(414);
    const bigToken = await fetch(`${t.issuer}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `grant_type=client_credentials&junk=${'x'.repeat(2_000_000)}` });
    expect(bigToken.status).toBeGreaterThanOrEqual(400);
    expect(bigToken.status).toBeLessThan(500);
  });

  it('serves health, readiness and Prometheus metrics', async () => {
    expect(await (await fetch(`${t.issuer}/healthz`)).json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${t.issuer}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready', checks: { database: 'ok', keys: 'ok' } });
    const metrics = await (await fetch(`${t.issuer}/metrics`)).text();
    expect(metrics).toContain('idp_http_request_duration_seconds_bucket');
    expect(metrics).toMatch(/idp_http_request_duration_seconds_count\{route="discovery",status="200"\} \d+/);
  });
});

describe('behind TLS', () => {
  it('sends HSTS when the issuer is https', async () => {
    const t = await startIdp('sqlite', { ISSUER: 'https://idp.example.test' });
    try {
      const response = await fetch(`${t.url}/.well-known/openid-configuration`);
      expect(response.headers.get('strict-transport-security')).toMatch(/max-age=31536000/);
    } finally {
      await t.stop();
    }
  });
});
