// Per-account lockout through the real sign-in screens and the account service, on SQLite and
// on PostgreSQL + Redis: a locked account answers exactly like a wrong password, parallel guesses
// are counted atomically, the lock ends on its own or by an operator's unlock.
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { backends, startIdp, type TestIdp } from '../helpers/server.ts';

const redirectUri = 'http://localhost:8080/cb';
const password = 'the right password 9';

describe.each(backends)('account lockout on %s', (backend) => {
  let t: TestIdp;
  let rp: oidc.Configuration;

  beforeAll(async () => {
    t = await startIdp(backend, { LOCKOUT_THRESHOLD: '3', LOCKOUT_WINDOW_SECONDS: '60', LOCKOUT_DURATION_SECONDS: '2', MAX_LOGIN_ATTEMPTS_PER_INTERACTION: '50' });
    const secret = (await t.idp.clients.create({ client_id: 'webapp', redirect_uris: [redirectUri], first_party: true })).clientSecret!;
    rp = await oidc.discovery(new URL(t.issuer), 'webapp', secret, undefined, { execute: [oidc.allowInsecureRequests] });
  });
  afterAll(async () => t?.stop());

  /** Opens a sign-in, submits the email, then each password in turn; returns the last response. */
  async function attempt(email: string, ...passwords: string[]) {
    const browser = new Browser();
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri });
    const first = await browser.follow(request.url, t.issuer);
    let html = await first.response.text();
    let next = await browser.postForm(new URL(formAction(html, 'identify'), t.issuer), { csrf: csrfOf(html), email }, t.issuer);
    for (const candidate of passwords) {
      html = await next.response.text();
      next = await browser.postForm(new URL(formAction(html, 'password'), t.issuer), { csrf: csrfOf(html), password: candidate }, t.issuer);
    }
    return next;
  }
  const errorOf = async (result: { response: Response }) => /<ul class="errors"[^>]*>(.*?)<\/ul>/s.exec(await result.response.text())?.[1];

  it('locks after the threshold, answers the right password like a wrong one, and unlocks after the duration', async () => {
    const account = await t.idp.accounts.create({ email: 'locked@example.com', password });
    const wrong = await attempt('locked@example.com', 'wrong one 1', 'wrong one 2', 'wrong one 3');
    expect(wrong.response.status).toBe(401);
    const wrongMessage = await errorOf(wrong);
    const whileLocked = await attempt('locked@example.com', password);
    expect(whileLocked.response.status).toBe(401);
    expect(await errorOf(whileLocked)).toBe(wrongMessage);
    const reasons = (await t.idp.db.prisma.auditEvent.findMany({ where: { type: 'login.password_rejected', subject: null }, orderBy: { seq: 'asc' } }))
      .map((e) => JSON.parse(e.details) as { reason?: string; email?: string })
      .filter((d) => d.email === 'locked@example.com')
      .map((d) => d.reason);
    expect(reasons).toEqual(['wrong_password', 'wrong_password', 'locked_now', 'locked']);
    expect(await t.idp.accounts.isLocked(account.id)).toBe(true);

    t.clock.advance(2200);
    const after = await attempt('locked@example.com', password);
    expect(after.url.origin).toBe('http://localhost:8080');
    expect(after.url.searchParams.get('code')).toBeTruthy();
  });

  it('counts parallel guesses atomically: no more than the threshold are ever checked', async () => {
    const account = await t.idp.accounts.create({ email: 'parallel@example.com', password });
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => t.idp.accounts.authenticate('parallel@example.com', `wrong guess ${i}`)));
    const reasons = results.map((r) => (r.ok ? 'ok' : r.reason));
    expect(reasons.filter((r) => r === 'wrong_password').length).toBe(2);
    expect(reasons.filter((r) => r === 'locked_now').length).toBe(1);
    expect(reasons.filter((r) => r === 'locked').length).toBe(17);
    // Even the right password is refused while locked, until an operator unlocks.
    expect(await t.idp.accounts.authenticate('parallel@example.com', password)).toMatchObject({ ok: false, reason: 'locked' });
    await t.idp.accounts.unlock('Parallel@Example.com');
    expect(await t.idp.accounts.isLocked(account.id)).toBe(false);
    expect(await t.idp.accounts.authenticate('parallel@example.com', password)).toMatchObject({ ok: true });
  });

  it('a good password resets the count; unknown accounts are never locked and answer the same', async () => {
    await t.idp.accounts.create({ email: 'reset@example.com', password });
    for (let round = 0; round < 3; round++) {
      expect(await t.idp.accounts.authenticate('reset@example.com', 'wrong 1')).toMatchObject({ reason: 'wrong_password' });
      expect(await t.idp.accounts.authenticate('reset@example.com', 'wrong 2')).toMatchObject({ reason: 'wrong_password' });
      expect(await t.idp.accounts.authenticate('reset@example.com', password)).toMatchObject({ ok: true });
    }
    for (let i = 0; i < 5; i++) expect(await t.idp.accounts.authenticate('ghost@example.com', 'whatever 1')).toMatchObject({ ok: false, reason: 'unknown_account' });
    await expect(t.idp.accounts.unlock('ghost@example.com')).rejects.toMatchObject({ status: 404 });
  });
});
