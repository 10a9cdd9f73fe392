// Password rules and account standing end to end, on SQLite and on PostgreSQL + Redis: password
// history and per-user-type policy through the account page, forced change of an expired password
// at sign-in, permanent lockout, disabled accounts, and custom attributes released as claims to
// an openid-client relying party only under their scope.
import { decodeJwt } from 'jose';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction, signIn } from '../helpers/browser.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { totpCodeAt, totpStep } from '../../src/mfa/totp.ts';
import { backends, startIdp, type Backend, type TestIdp } from '../helpers/server.ts';
import { startSmtp, type TestSmtp } from '../helpers/smtp.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const redirectUri = 'http://localhost:8080/callback';
const wrongPasswordMessage = 'The email address or password is not correct.';

const decode = (s: string) => s.replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code))).replace(/&amp;/g, '&');
const textOf = (html: string) => decode(html.replace(/<[^>]+>/g, ' ')).replace(/\s+/g, ' ').trim();
const errorsOf = (html: string) => [...(/<ul class="errors"[^>]*>(.*?)<\/ul>/s.exec(html)?.[1] ?? '').matchAll(/<li>(.*?)<\/li>/gs)].map((m) => decode(m[1]!));

describe.each(backends)('password rules and account standing on %s', (backend: Backend) => {
  let t: TestIdp;
  let smtp: TestSmtp;
  let rp: oidc.Configuration;
  let narrowRp: oidc.Configuration;

  beforeAll(async () => {
    smtp = await startSmtp();
    t = await startIdp(backend, {
      SMTP_URL: smtp.url,
      PASSWORD_HISTORY_SIZE: '3',
      PASSWORD_MAX_AGE_DAYS: '1',
      PASSWORD_POLICY_BY_USER_TYPE: '{"external":{"minLength":16,"requireDigit":true}}',
      LOCKOUT_THRESHOLD: '2',
      LOCKOUT_DURATION_SECONDS: '1',
      LOCKOUT_PERMANENT_AFTER: '2',
      CLAIM_MAPPINGS: '{"work":{"worker_type":"workerType","companies":"companies"}}',
    });
    const created = await t.idp.clients.create({ client_id: 'webapp', redirect_uris: [redirectUri] });
    rp = await oidc.discovery(new URL(t.issuer), 'webapp', created.clientSecret!, undefined, insecure);
    // A client allowed only some scopes: it cannot be granted `work`.
    const narrow = await t.idp.clients.create({ client_id: 'narrow', redirect_uris: [redirectUri], scope: 'openid email' });
    narrowRp = await oidc.discovery(new URL(t.issuer), 'narrow', narrow.clientSecret!, undefined, insecure);
  });
  afterAll(async () => {
    await t?.stop();
    await smtp?.stop();
  });

  /** A full sign-in at the relying party: code, then tokens. */
  async function rpSignIn(email: string, password: string, params: Record<string, string> = {}, config = rp) {
    const request = await authorizationRequest(config, { redirect_uri: redirectUri, scope: 'openid', ...params });
    const callback = await signIn(new Browser(), request.url, email, password);
    expect(callback.searchParams.get('error'), callback.searchParams.get('error_description') ?? '').toBeNull();
    const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
    return tokens;
  }

  /** Opens a sign-in at the relying party and submits the email and one password; the page (or redirect) that follows. */
  async function attempt(email: string, password: string, browser = new Browser()) {
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri });
    const first = await browser.follow(request.url, t.issuer);
    const identify = await first.response.text();
    const passwordPage = await browser.postForm(new URL(formAction(identify, 'identify'), t.issuer), { csrf: csrfOf(identify), email }, t.issuer);
    const html = await passwordPage.response.text();
    const next = await browser.postForm(new URL(formAction(html, 'password'), t.issuer), { csrf: csrfOf(html), password }, t.issuer);
    return { status: next.response.status, url: next.url, html: next.url.origin === t.issuer ? await next.response.text() : '', request, browser };
  }

  /** Signs in to the account page (the built-in first-party client); returns its CSRF token. */
  async function accountPage(email: string, password: string, browser = new Browser()) {
    const first = await browser.follow(`${t.issuer}/account`, t.issuer);
    const identify = await first.response.text();
    const passwordPage = await browser.postForm(new URL(formAction(identify, 'identify'), t.issuer), { csrf: csrfOf(identify), email }, t.issuer);
    const html = await passwordPage.response.text();
    const done = await browser.postForm(new URL(formAction(html, 'password'), t.issuer), { csrf: csrfOf(html), password }, t.issuer);
    const page = await done.response.text();
    expect(done.url.pathname, textOf(page).slice(0, 300)).toBe('/account');
    expect(done.response.status).toBe(200);
    expect(page).toContain(email);
    return { browser, csrf: csrfOf(page) };
  }

  async function changePassword(page: { browser: Browser; csrf: string }, fields: { current: string; password: string; confirm?: string; csrf?: string }) {
    const { response, url } = await page.browser.postForm(`${t.issuer}/account/password`, { csrf: page.csrf, confirm: fields.password, ...fields }, t.issuer);
    return { status: response.status, url, html: await response.text() };
  }

  describe('password history through the account page', () => {
    const email = 'rotation@example.com';
    const p = ['first garden gate', 'second garden gate', 'third garden gate', 'fourth garden gate'] as const;

    it('refuses the last 3 passwords, accepts an older one, and refuses a wrong current password, a mismatch and a forged form', async () => {
      await t.idp.accounts.create({ email, password: p[0], emailVerified: true });
      const page = await accountPage(email, p[0]);

      const wrongCurrent = await changePassword(page, { current: 'not my password', password: p[1] });
      expect(wrongCurrent.status).toBe(400);
      expect(errorsOf(wrongCurrent.html)).toEqual(['The current password is not correct.']);
      const mismatch = await changePassword(page, { current: p[0], password: p[1], confirm: p[2] });
      expect(mismatch.status).toBe(400);
      expect(errorsOf(mismatch.html)).toEqual(['The two passwords do not match.']);
      const forged = await changePassword(page, { current: p[0], password: p[1], csrf: 'forged' });
      expect(forged.status).toBe(403);
      const missing = await page.browser.postForm(`${t.issuer}/account/password`, { current: p[0], password: p[1], confirm: p[1] }, t.issuer);
      expect(missing.response.status).toBe(403);

      // Another browser signed in to the same account: a change on this page ends that session only.
      const other = await accountPage(email, p[0]);
      for (const [current, next] of [[p[0], p[1]], [p[1], p[2]]] as const) {
        const changed = await changePassword(page, { current, password: next });
        expect(changed.status, errorsOf(changed.html).join(' ')).toBe(200);
        expect(changed.url.href).toBe(`${t.issuer}/account?done=account.passwordChanged`);
        expect(textOf(changed.html)).toContain('Your password is changed.');
      }
      const otherNow = await other.browser.request(`${t.issuer}/account`);
      expect(otherNow.status).toBe(302);
      expect(otherNow.headers.get('location')?.startsWith(`${t.issuer}/auth?`), 'sent to sign in again').toBe(true);
      expect((await page.browser.request(`${t.issuer}/account`)).status).toBe(200);
      // Current: p2; the last 3 are p2, p1, p0.
      for (const reused of [p[2], p[1], p[0]]) {
        const refused = await changePassword(page, { current: p[2], password: reused });
        expect(refused.status).toBe(400);
        expect(errorsOf(refused.html)).toEqual(['Password must not be one of your last 3 passwords.']);
      }
      expect((await changePassword(page, { current: p[2], password: p[3] })).status).toBe(200);
      // Now the last 3 are p3, p2, p1: p0 is old enough to come back.
      const back = await changePassword(page, { current: p[3], password: p[0] });
      expect(back.status, errorsOf(back.html).join(' ')).toBe(200);
      expect(await t.idp.db.prisma.passwordHistory.count({ where: { accountId: (await t.idp.accounts.findByEmail(email))!.id } })).toBe(3);

      const old = await attempt(email, p[3]);
      expect(old.status).toBe(401);
      await rpSignIn(email, p[0]);
      expect(smtp.messages.filter((m) => m.to.includes(email) && m.subject === 'Your password was changed')).toHaveLength(4);
    });
  });

  describe('per-user-type policy', () => {
    const newPassword = 'quiet meadows'; // 13 characters, no digit

    it('refuses an external user a password under the external rules, listing both, and accepts it for an internal user', async () => {
      await t.idp.accounts.create({ email: 'outsider@example.com', password: 'outside pass 2024 ok', userType: 'external', emailVerified: true });
      await t.idp.accounts.create({ email: 'insider@example.com', password: 'inside password', emailVerified: true });
      expect(newPassword).toHaveLength(13);

      const outsider = await accountPage('outsider@example.com', 'outside pass 2024 ok');
      const refused = await changePassword(outsider, { current: 'outside pass 2024 ok', password: newPassword });
      expect(refused.status).toBe(400);
      expect(errorsOf(refused.html)).toEqual(['Password must be at least 16 characters.', 'Password must contain a digit.']);
      const longer = await changePassword(outsider, { current: 'outside pass 2024 ok', password: 'quiet meadows in 2025' });
      expect(longer.status, errorsOf(longer.html).join(' ')).toBe(200);

      const insider = await accountPage('insider@example.com', 'inside password');
      const accepted = await changePassword(insider, { current: 'inside password', password: newPassword });
      expect(accepted.status, errorsOf(accepted.html).join(' ')).toBe(200);
      expect(textOf(accepted.html)).toContain('Your password is changed.');
      await rpSignIn('insider@example.com', newPassword);
      await rpSignIn('outsider@example.com', 'quiet meadows in 2025');
    });
  });

  describe('maximum password age', () => {
    const email = 'aged@example.com';
    const oldPassword = 'an old tired password';
    const newPassword = 'a fresh spring password';

    it('sends an expired password to the change screen, refuses bad new ones, then finishes the sign-in; the next one goes straight through', async () => {
      const account = await t.idp.accounts.create({ email, password: oldPassword, emailVerified: true });
      await t.idp.db.prisma.account.update({ where: { id: account.id }, data: { passwordChangedAt: new Date(Date.now() - 2 * 86_400_000) } });

      const start = await attempt(email, oldPassword);
      expect(start.status).toBe(200);
      expect(start.url.origin).toBe(t.issuer);
      expect(textOf(start.html)).toContain('Your password has expired. Choose a new one to continue.');
      const browser = start.browser;
      const action = new URL(formAction(start.html, 'change-password'), t.issuer);
      let csrf = csrfOf(start.html);

      // Not signed in yet: the change cannot be skipped by starting over in the same browser.
      const silent = await authorizationRequest(rp, { redirect_uri: redirectUri, prompt: 'none' });
      const skipped = await browser.follow(silent.url, t.issuer);
      expect(skipped.url.searchParams.get('error')).toBe('login_required');

      const submit = async (password: string, confirm: string) => {
        const next = await browser.postForm(action, { csrf, password, confirm }, t.issuer);
        const html = next.url.origin === t.issuer ? await next.response.text() : '';
        if (html.includes('name="csrf"')) csrf = csrfOf(html);
        return { ...next, html };
      };
      const mismatch = await submit(newPassword, `${newPassword}!`);
      expect(mismatch.url.pathname).toMatch(/^\/interaction\//);
      expect(mismatch.response.status).toBeLessThan(500);
      expect(errorsOf(mismatch.html)).toEqual(['The two passwords do not match.']);
      const short = await submit('x7#Qm', 'x7#Qm');
      expect(errorsOf(short.html)).toEqual(['Password must be at least 12 characters.']);
      const same = await submit(oldPassword, oldPassword);
      expect(errorsOf(same.html)).toEqual(['Password must not be one of your last 3 passwords.']);
      expect(same.html).toContain('Your password has expired');
      expect((await t.idp.db.prisma.account.findUniqueOrThrow({ where: { id: account.id } })).passwordHash).toBe(account.passwordHash);

      const changed = await submit(newPassword, newPassword);
      // The webapp is a third-party client: consent comes next, then the code.
      expect(changed.html).toContain('/consent"');
      const consent = await browser.postForm(new URL(formAction(changed.html, 'consent'), t.issuer), { csrf: csrfOf(changed.html) }, t.issuer);
      expect(consent.url.origin).toBe('http://localhost:8080');
      const tokens = await oidc.authorizationCodeGrant(rp, consent.url, { pkceCodeVerifier: start.request.verifier, expectedState: start.request.state, expectedNonce: start.request.nonce });
      expect(decodeJwt(tokens.id_token!)).toMatchObject({ sub: account.id, amr: ['pwd'] });
      const after = await t.idp.db.prisma.account.findUniqueOrThrow({ where: { id: account.id } });
      expect(Date.now() - after.passwordChangedAt!.getTime()).toBeLessThan(60_000);
      expect(smtp.messages.filter((m) => m.to.includes(email) && m.subject === 'Your password was changed')).toHaveLength(1);

      // A new browser: the new password signs in directly, with no change screen (and no consent:
      // it is remembered per account and client).
      const next = await attempt(email, newPassword);
      expect(next.url.origin).toBe('http://localhost:8080');
      expect(next.url.searchParams.get('code')).toBeTruthy();
      const old = await attempt(email, oldPassword);
      expect(old.status).toBe(401);
      expect(errorsOf(old.html)).toEqual([wrongPasswordMessage]);
    });
  });

  describe('maximum password age with a second factor', () => {
    const email = 'aged-mfa@example.com';
    const oldPassword = 'an old tired password with a second step';
    const newPassword = 'a fresh spring password with a second step';

    it('asks for the second factor before the change screen (a wrong code never reaches it), and the change ends the other sessions', async () => {
      const account = await t.idp.accounts.create({ email, password: oldPassword, emailVerified: true });
      // Another browser signed in to the account page before the password expired.
      const other = await accountPage(email, oldPassword);
      // An authenticator app, its last used step two minutes back (every step around now is free).
      const enrolment = await t.idp.mfa.startTotp(account.id, email);
      expect(await t.idp.mfa.confirmTotp(account.id, enrolment.factorId, totpCodeAt(enrolment.secret, Date.now()))).toBe(true);
      await t.idp.db.prisma.mfaFactor.update({ where: { id: enrolment.factorId }, data: { lastUsedStep: totpStep(Date.now() - 120_000) } });
      await t.idp.db.prisma.account.update({ where: { id: account.id }, data: { passwordChangedAt: new Date(Date.now() - 2 * 86_400_000) } });

      // The expired password is right: the second factor comes first.
      const start = await attempt(email, oldPassword);
      expect(start.status).toBe(200);
      expect(start.html).toMatch(/action="\/interaction\/[^"]+\/mfa"/);
      expect(start.html).toContain('id="code-totp"');
      expect(start.html).not.toContain('change-password');
      const { browser } = start;
      const mfa = async (code: string, html: string) => {
        const next = await browser.postForm(new URL(formAction(html, 'mfa'), t.issuer), { csrf: csrfOf(html), method: 'totp', code }, t.issuer);
        return { status: next.response.status, url: next.url, html: next.url.origin === t.issuer ? await next.response.text() : '' };
      };
      const accepted = new Set([-30_000, 0, 30_000].map((d) => totpCodeAt(enrolment.secret, Date.now() + d)));
      const wrong = await mfa(['000000', '111111', '222222', '333333'].find((c) => !accepted.has(c))!, start.html);
      expect(wrong.status).toBe(401);
      expect(wrong.html).toMatch(/action="\/interaction\/[^"]+\/mfa"/);
      expect(wrong.html).not.toContain('change-password');
      expect(textOf(wrong.html)).not.toContain('Your password has expired');
      // Not signed in yet either: a silent request in the same browser needs a login.
      const silent = await authorizationRequest(rp, { redirect_uri: redirectUri, prompt: 'none' });
      expect((await browser.follow(silent.url, t.issuer)).url.searchParams.get('error')).toBe('login_required');

      // The right code: now the change screen.
      const changeScreen = await mfa(totpCodeAt(enrolment.secret, Date.now() + 30_000), wrong.html);
      expect(changeScreen.status).toBe(200);
      expect(textOf(changeScreen.html)).toContain('Your password has expired. Choose a new one to continue.');
      const changed = await browser.postForm(new URL(formAction(changeScreen.html, 'change-password'), t.issuer), { csrf: csrfOf(changeScreen.html), password: newPassword, confirm: newPassword }, t.issuer);
      const consentHtml = await changed.response.text();
      expect(consentHtml, textOf(consentHtml).slice(0, 300)).toContain('/consent"');
      const consent = await browser.postForm(new URL(formAction(consentHtml, 'consent'), t.issuer), { csrf: csrfOf(consentHtml) }, t.issuer);
      const tokens = await oidc.authorizationCodeGrant(rp, consent.url, { pkceCodeVerifier: start.request.verifier, expectedState: start.request.state, expectedNonce: start.request.nonce });
      expect(decodeJwt(tokens.id_token!)).toMatchObject({ sub: account.id, amr: ['pwd', 'otp', 'mfa'] });
      const after = await t.idp.db.prisma.account.findUniqueOrThrow({ where: { id: account.id } });
      expect(Date.now() - after.passwordChangedAt!.getTime()).toBeLessThan(60_000);

      // The other browser's session has ended: its account page sends it to sign in again.
      const otherNow = await other.browser.request(`${t.issuer}/account`);
      expect(otherNow.status).toBe(302);
      expect(otherNow.headers.get('location')?.startsWith(`${t.issuer}/auth?`), 'sent to sign in again').toBe(true);
      const ended = await t.idp.db.prisma.userSession.findMany({ where: { accountId: account.id, endedAt: { not: null } } });
      expect(ended.map((row) => row.endReason)).toEqual(['signed_out_everywhere']);
      // The browser that changed it is signed in.
      const again = await authorizationRequest(rp, { redirect_uri: redirectUri, prompt: 'none' });
      expect((await browser.follow(again.url, t.issuer)).url.searchParams.get('code')).toBeTruthy();
    });
  });

  describe('permanent lockout', () => {
    const email = 'stubborn@example.com';
    const password = 'the right password';

    it('locks the account for good after two temporary lockouts; the right password fails like a wrong one until unlocked', async () => {
      const account = await t.idp.accounts.create({ email, password, emailVerified: true });
      const wrong = await attempt(email, 'a wrong password');
      expect(wrong.status).toBe(401);
      expect(errorsOf(wrong.html)).toEqual([wrongPasswordMessage]);
      expect((await attempt(email, 'another wrong one')).status).toBe(401);
      // First temporary lockout: the right password is refused while it lasts...
      expect(await t.idp.accounts.isLocked(account.id)).toBe(true);
      expect(errorsOf((await attempt(email, password)).html)).toEqual([wrongPasswordMessage]);
      expect((await t.idp.accounts.findById(account.id))!.status).toBe('active');
      t.clock.advance(1300);
      // ...and the second one, after it ended, makes it permanent.
      expect((await attempt(email, 'wrong again')).status).toBe(401);
      expect((await attempt(email, 'and wrong again')).status).toBe(401);
      expect((await t.idp.accounts.findById(account.id))!.status).toBe('locked');

      t.clock.advance(1300);
      const right = await attempt(email, password);
      expect(right.status).toBe(401);
      expect(right.url.origin).toBe(t.issuer);
      expect(errorsOf(right.html)).toEqual([wrongPasswordMessage]);
      // The whole page is the same, but for the interaction's id and CSRF token.
      const generic = (html: string) => html.replace(/name="csrf" value="[^"]+"/g, 'name="csrf" value=""').replace(/\/interaction\/[^/"]+\//g, '/interaction/UID/');
      expect(generic(right.html)).toBe(generic(wrong.html));

      await t.idp.accounts.unlock(email);
      expect((await t.idp.accounts.findById(account.id))!.status).toBe('active');
      const tokens = await rpSignIn(email, password);
      expect(decodeJwt(tokens.id_token!).sub).toBe(account.id);
    });
  });

  describe('disabled accounts', () => {
    const email = 'departed@example.com';
    const password = 'a password that works';

    it('cannot sign in (same message as a wrong password), and their tokens stop working', async () => {
      const account = await t.idp.accounts.create({ email, password, emailVerified: true });
      const tokens = await rpSignIn(email, password, { scope: 'openid email' });
      expect(await oidc.fetchUserInfo(rp, tokens.access_token, account.id)).toMatchObject({ email });

      await t.idp.accounts.setStatus(email, 'disabled');
      const right = await attempt(email, password);
      const wrong = await attempt(email, 'not the password');
      expect(right.status).toBe(401);
      expect(wrong.status).toBe(401);
      expect(right.url.origin).toBe(t.issuer);
      expect(errorsOf(right.html)).toEqual([wrongPasswordMessage]);
      expect(errorsOf(wrong.html)).toEqual(errorsOf(right.html));
      await expect(oidc.fetchUserInfo(rp, tokens.access_token, account.id)).rejects.toThrow();

      await t.idp.accounts.setStatus(email, 'active');
      await rpSignIn(email, password);
    });
  });

  describe('custom attributes as claims', () => {
    const email = 'worker@example.com';
    const password = 'hired hands password 1';
    let sub: string;

    beforeAll(async () => {
      sub = (await t.idp.accounts.create({ email, password, emailVerified: true, attributes: { workerType: 'contractor', companies: ['Acme', 'Globex'], secret: 'x' } })).id;
    });

    it('publishes the account and mapped scopes and their claims in discovery, never the attribute names', async () => {
      const meta = (await (await fetch(`${t.issuer}/.well-known/openid-configuration`)).json()) as { scopes_supported: string[]; claims_supported: string[] };
      expect(meta.scopes_supported).toEqual(expect.arrayContaining(['openid', 'account', 'work']));
      expect(meta.claims_supported).toEqual(expect.arrayContaining(['account_status', 'approval_status', 'user_type', 'roles', 'worker_type', 'companies']));
      for (const hidden of ['secret', 'workerType']) expect(meta.claims_supported).not.toContain(hidden);
    });

    it('releases worker_type and companies only under the work scope, and never the unmapped secret', async () => {
      const plain = await rpSignIn(email, password, { scope: 'openid email' });
      const plainInfo = await oidc.fetchUserInfo(rp, plain.access_token, sub);
      expect(plainInfo).toEqual({ sub, email, email_verified: true });
      for (const claim of ['worker_type', 'companies', 'secret']) expect(decodeJwt(plain.id_token!)).not.toHaveProperty(claim);

      const work = await rpSignIn(email, password, { scope: 'openid work' });
      const workInfo = await oidc.fetchUserInfo(rp, work.access_token, sub);
      expect(workInfo).toEqual({ sub, worker_type: 'contractor', companies: ['Acme', 'Globex'] });

      // Asked for in the ID token too (claims parameter), under the scope: there as well, still without secret.
      const claims = JSON.stringify({ id_token: { worker_type: null, companies: null, secret: null }, userinfo: { secret: null } });
      const inToken = await rpSignIn(email, password, { scope: 'openid work', claims });
      const idToken = decodeJwt(inToken.id_token!);
      expect(idToken).toMatchObject({ sub, worker_type: 'contractor', companies: ['Acme', 'Globex'] });
      expect(idToken).not.toHaveProperty('secret');
      expect(await oidc.fetchUserInfo(rp, inToken.access_token, sub)).not.toHaveProperty('secret');
    });

    // Regression: naming the claims in the `claims` parameter once released them without their scope.
    it('does not release the work claims to a client that asks for them by name without the work scope', async () => {
      const claims = JSON.stringify({ id_token: { worker_type: null, companies: null }, userinfo: { worker_type: null, companies: null } });
      // prompt=consent: the screen is shown even though this user consented to the client before.
      const request = await authorizationRequest(rp, { redirect_uri: redirectUri, scope: 'openid', claims, prompt: 'consent' });
      const browser = new Browser();
      const first = await browser.follow(request.url, t.issuer);
      const identify = await first.response.text();
      const passwordPage = await browser.postForm(new URL(formAction(identify, 'identify'), t.issuer), { csrf: csrfOf(identify), email }, t.issuer);
      const html = await passwordPage.response.text();
      const consentPage = await browser.postForm(new URL(formAction(html, 'password'), t.issuer), { csrf: csrfOf(html), password }, t.issuer);
      const consent = await consentPage.response.text();
      // What the user is asked to allow: only "Know who you are".
      expect([...consent.matchAll(/<li>(.*?)<\/li>/g)].map((m) => m[1])).toEqual(['Know who you are']);
      const callback = await browser.postForm(new URL(formAction(consent, 'consent'), t.issuer), { csrf: csrfOf(consent) }, t.issuer);
      const tokens = await oidc.authorizationCodeGrant(rp, callback.url, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
      const info = await oidc.fetchUserInfo(rp, tokens.access_token, sub);
      const idToken = decodeJwt(tokens.id_token!);
      for (const claim of ['worker_type', 'companies']) {
        expect(idToken, 'ID token').not.toHaveProperty(claim);
        expect(info, 'userinfo').not.toHaveProperty(claim);
      }
    });

    it('does not grant the work scope to a client not allowed it, nor when consent is denied', async () => {
      const request = await authorizationRequest(narrowRp, { redirect_uri: redirectUri, scope: 'openid work' });
      const refused = await new Browser().follow(request.url, t.issuer);
      expect(refused.url.origin).toBe('http://localhost:8080');
      expect(refused.url.searchParams.get('error')).toBe('invalid_scope');

      const denied = await authorizationRequest(rp, { redirect_uri: redirectUri, scope: 'openid work', prompt: 'consent' });
      const callback = await signIn(new Browser(), denied.url, email, password, { consent: false });
      expect(callback.searchParams.get('error')).toBe('access_denied');
      expect(callback.searchParams.get('code')).toBeNull();
    });
  });
});
