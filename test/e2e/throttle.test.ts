// Sign-in throttling by network origin through the real screens, on SQLite (rate-limiter-flexible
// over Prisma) and PostgreSQL + Redis (over Redis): one address guessing across accounts is
// stopped with 429 and Retry-After before it can lock every account out.
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { backends, startIdp, type TestIdp } from '../helpers/server.ts';

const redirectUri = 'http://localhost:8080/cb';

describe.each(backends)('sign-in throttling on %s', (backend) => {
  let t: TestIdp;
  let rp: oidc.Configuration;

  beforeAll(async () => {
    t = await startIdp(backend, { SIGNIN_IP_FAILURES: '6', SIGNIN_IP_ACCOUNT_FAILURES: '3', LOCKOUT_THRESHOLD: '20', MAX_LOGIN_ATTEMPTS_PER_INTERACTION: '50' });
    const secret = (await t.idp.clients.create({ client_id: 'webapp', redirect_uris: [redirectUri], first_party: true })).clientSecret!;
    rp = await oidc.discovery(new URL(t.issuer), 'webapp', secret, undefined, { execute: [oidc.allowInsecureRequests] });
    for (const name of ['ann', 'ben', 'cat', 'dan']) await t.idp.accounts.create({ email: `${name}@example.com`, password: `secret for ${name} 123` });
  });
  afterAll(async () => t?.stop());

  async function tryPassword(email: string, password: string) {
    const browser = new Browser();
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri });
    const first = await browser.follow(request.url, t.issuer);
    let html = await first.response.text();
    const step = await browser.postForm(new URL(formAction(html, 'identify'), t.issuer), { csrf: csrfOf(html), email }, t.issuer);
    html = await step.response.text();
    const result = await browser.postForm(new URL(formAction(html, 'password'), t.issuer), { csrf: csrfOf(html), password }, t.issuer);
    return { status: result.response.status, retryAfter: result.response.headers.get('retry-after'), html: result.url.origin === t.issuer ? await result.response.text() : '', url: result.url };
  }

  it('throttles one (IP, account) pair after its limit, then the whole IP across accounts', async () => {
    for (let i = 0; i < 3; i++) expect((await tryPassword('ann@example.com', `wrong ${i}`)).status).toBe(401);
    const pair = await tryPassword('ann@example.com', 'secret for ann 123');
    expect(pair.status).toBe(429);
    expect(Number(pair.retryAfter)).toBeGreaterThan(0);
    expect(pair.html).toContain('Too many failed sign-ins from your network');
    // Another account from the same address still works until the per-IP limit…
    const ok = await tryPassword('ben@example.com', 'secret for ben 123');
    expect(ok.url.searchParams.get('code')).toBeTruthy();
    for (let i = 0; i < 3; i++) expect((await tryPassword('cat@example.com', `wrong ${i}`)).status).toBe(401);
    // …which six failures reach: now every account is refused from here, unchecked.
    const ip = await tryPassword('dan@example.com', 'secret for dan 123');
    expect(ip.status).toBe(429);
    // The accounts themselves are not locked: throttling is about the address.
    expect(await t.idp.accounts.authenticate('dan@example.com', 'secret for dan 123')).toMatchObject({ ok: true });
    expect(await t.idp.db.prisma.auditEvent.count({ where: { type: 'login.throttled' } })).toBe(2);
  });
});
