// Self-service accounts end to end, on SQLite and on PostgreSQL + Redis: registration with email
// verification, invitations and forgotten passwords, through the HTTP pages, with a real SMTP
// server receiving the mails and the links in them followed, and openid-client as the relying
// party where the claims matter. Each group runs on an IdP of its own: the anonymous forms allow
// 20 posts per IP and hour, and every group stays below that.
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction, signIn } from '../helpers/browser.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { backends, startIdp, type Backend, type TestIdp } from '../helpers/server.ts';
import { startSmtp, type ReceivedMessage, type TestSmtp } from '../helpers/smtp.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const redirectUri = 'http://localhost:8080/callback';
const form = { 'content-type': 'application/x-www-form-urlencoded' };

interface Page {
  status: number;
  html: string;
  location: string | null;
}

const decode = (s: string) => s.replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code))).replace(/&amp;/g, '&');
/** The visible text of a page, tags dropped, entities decoded, whitespace collapsed. */
const textOf = (html: string) => decode(html.replace(/<[^>]+>/g, ' ')).replace(/\s+/g, ' ').trim();
/** The items of the page's error list, decoded. */
const errorsOf = (html: string) => [...(/<ul class="errors"[^>]*>(.*?)<\/ul>/s.exec(html)?.[1] ?? '').matchAll(/<li>(.*?)<\/li>/gs)].map((m) => decode(m[1]!));

async function get(browser: Browser, url: string): Promise<Page> {
  const response = await browser.request(url);
  return { status: response.status, html: await response.text(), location: response.headers.get('location') };
}

async function post(browser: Browser, url: string, fields: Record<string, string>): Promise<Page> {
  const response = await browser.request(url, { method: 'POST', headers: form, body: new URLSearchParams(fields).toString() });
  return { status: response.status, html: await response.text(), location: response.headers.get('location') };
}

/** Opens an anonymous form page and returns its CSRF token (the browser now holds the matching cookie). */
async function openForm(browser: Browser, url: string): Promise<string> {
  const page = await get(browser, url);
  expect(page.status, textOf(page.html).slice(0, 200)).toBe(200);
  return csrfOf(page.html);
}

/**
 * Checks that a mail carries nothing but the intended link: every URL in it is on the issuer's
 * origin, exactly one carries a token and it leads to `path`; the subject carries no link or
 * token. Returns that link.
 */
function intendedLink(message: ReceivedMessage, issuer: string, path: string): string {
  const urls = (message.text.match(/https?:\/\/[^\s<>"]+/g) ?? []).map((u) => u.replace(/[.,;:!?)\]'"]+$/, ''));
  for (const url of urls) expect(new URL(url).origin, `a URL in "${message.subject}"`).toBe(issuer);
  const withToken = urls.filter((u) => new URL(u).searchParams.has('token'));
  expect(withToken, `links with a token in "${message.subject}"`).toHaveLength(1);
  const link = new URL(withToken[0]!);
  expect(link.pathname).toBe(path);
  expect([...link.searchParams.keys()]).toEqual(['token']);
  expect(link.searchParams.get('token')).toMatch(/^[A-Za-z0-9_-]{43}$/);
  // Subjects are logged: no link with a token, and not the token itself.
  expect(message.subject).not.toContain('token=');
  expect(message.subject).not.toContain(link.searchParams.get('token')!);
  expect(message.html, 'mails are plain text').toBeUndefined();
  return link.href;
}

const tokenOf = (link: string) => new URL(link).searchParams.get('token')!;

describe.each(backends)('self-service on %s', (backend: Backend) => {
  let smtp: TestSmtp;
  // Registration and reset mails go out after the response (their timing must not tell whether an
  // address has an account): wait for every IdP of this suite to have sent them.
  const started: TestIdp[] = [];
  const mailsTo = async (email: string, subject?: string) => {
    await Promise.all(started.map((t) => t.idp.afterResponse.settled()));
    return smtp.messages.filter((m) => m.to.includes(email) && (subject === undefined || m.subject === subject));
  };

  beforeAll(async () => {
    smtp = await startSmtp();
  });
  afterAll(async () => smtp?.stop());

  /** An IdP mailing to the test SMTP server, with a confidential relying party `webapp`. */
  async function startWithRp(env: Record<string, string>) {
    const t = await startIdp(backend, { SMTP_URL: smtp.url, SMTP_FROM: 'Identity Provider <no-reply@idp.test>', ...env });
    started.push(t);
    const created = await t.idp.clients.create({ client_id: 'webapp', redirect_uris: [redirectUri], grant_types: ['authorization_code', 'refresh_token'] });
    const rp = await oidc.discovery(new URL(t.issuer), 'webapp', created.clientSecret!, undefined, insecure);
    return { t, rp };
  }

  /** A full sign-in at the relying party: code, then tokens. */
  async function rpSignIn(t: TestIdp, rp: oidc.Configuration, email: string, password: string, params: Record<string, string> = {}, browser = new Browser()) {
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri, scope: 'openid', ...params });
    const callback = await signIn(browser, request.url, email, password);
    expect(callback.origin).toBe('http://localhost:8080');
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
    return { tokens, browser };
  }

  /** Opens a sign-in at the relying party, submits the email, then each password in turn (same interaction). */
  async function attempt(t: TestIdp, rp: oidc.Configuration, email: string, ...passwords: string[]) {
    const browser = new Browser();
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri });
    const first = await browser.follow(request.url, t.issuer);
    const identify = await first.response.text();
    const passwordPage = await browser.postForm(new URL(formAction(identify, 'identify'), t.issuer), { csrf: csrfOf(identify), email }, t.issuer);
    let html = await passwordPage.response.text();
    const pages: { status: number; html: string; url: URL }[] = [];
    for (const candidate of passwords) {
      const next = await browser.postForm(new URL(formAction(html, 'password'), t.issuer), { csrf: csrfOf(html), password: candidate }, t.issuer);
      html = next.url.origin === t.issuer ? await next.response.text() : '';
      pages.push({ status: next.response.status, url: next.url, html });
    }
    return pages;
  }

  // ---- Registration ------------------------------------------------------------------------------
  describe('registration with email verification', () => {
    let t: TestIdp;
    let rp: oidc.Configuration;
    const password = 'Tulip-Garden-2024!';

    beforeAll(async () => {
      // Strict composition rules so a weak password breaks several at once; a low lockout threshold
      // and attempt budget so that a counted attempt would show.
      ({ t, rp } = await startWithRp({
        REGISTRATION_ENABLED: 'true',
        PASSWORD_REQUIRE_UPPER: 'true',
        PASSWORD_REQUIRE_DIGIT: 'true',
        PASSWORD_REQUIRE_SYMBOL: 'true',
        LOCKOUT_THRESHOLD: '2',
        MAX_LOGIN_ATTEMPTS_PER_INTERACTION: '3',
      }));
    });
    afterAll(async () => t?.stop());

    const register = async (fields: { email: string; password: string; name?: string }, browser = new Browser()) => {
      const csrf = await openForm(browser, `${t.issuer}/account/register`);
      return post(browser, `${t.issuer}/account/register`, { csrf, name: '', ...fields });
    };

    it('offers registration on the sign-in page', async () => {
      const request = await authorizationRequest(rp, { redirect_uri: redirectUri });
      const first = await new Browser().follow(request.url, t.issuer);
      expect(await first.response.text()).toContain('href="/account/register"');
    });

    it('refuses a weak password with every unmet rule listed, creates no account and sends no mail', async () => {
      const weak = await register({ email: 'weak-reg@example.com', password: 'password' });
      expect(weak.status).toBe(400);
      expect(errorsOf(weak.html)).toEqual([
        'Password must be at least 12 characters.',
        'Password must contain an upper-case letter.',
        'Password must contain a digit.',
        'Password must contain a symbol or punctuation character.',
        'Password is one of the most common passwords.',
      ]);
      // The form comes back filled in (but never with the password) and usable.
      expect(weak.html).toContain('value="weak-reg@example.com"');
      expect(weak.html).not.toContain('value="password"');
      csrfOf(weak.html);

      const personal = await register({ email: 'marigold.smith@example.com', name: 'Marigold Smith', password: 'Marigold-Smith-99' });
      expect(personal.status).toBe(400);
      expect(errorsOf(personal.html)).toEqual(['Password must not contain your email address or name.']);

      const badEmail = await register({ email: 'not an address', password });
      expect(badEmail.status).toBe(400);
      expect(errorsOf(badEmail.html).join(' ')).toMatch(/not a valid email address/);

      for (const email of ['weak-reg@example.com', 'marigold.smith@example.com']) {
        expect(await t.idp.accounts.findByEmail(email)).toBeNull();
        expect((await mailsTo(email))).toEqual([]);
      }
      expect(await t.idp.db.prisma.account.count()).toBe(0);
    });

    it('refuses a post without the form cookie or with a wrong token with 403, and does nothing', async () => {
      const email = 'csrf-victim@example.com';
      const browser = new Browser();
      const csrf = await openForm(browser, `${t.issuer}/account/register`);
      const other = new Browser();
      const othersCsrf = await openForm(other, `${t.issuer}/account/register`);
      const attempts = [
        await post(browser, `${t.issuer}/account/register`, { email, password }),
        await post(browser, `${t.issuer}/account/register`, { csrf: 'A'.repeat(43), email, password }),
        await post(browser, `${t.issuer}/account/register`, { csrf: othersCsrf, email, password }),
        await post(new Browser(), `${t.issuer}/account/register`, { csrf, email, password }),
      ];
      for (const refused of attempts) {
        expect(refused.status).toBe(403);
        expect(textOf(refused.html)).toContain('This form has expired or was not sent from this page');
      }
      expect(await t.idp.accounts.findByEmail(email)).toBeNull();
      expect((await mailsTo(email))).toEqual([]);
    });

    it('refuses a name with a NUL or another control character with 400 (the form again), creates no account and sends no mail, never 500', async () => {
      for (const [email, name] of [['nul-name@example.com', 'Nul\u0000Name'], ['escape-name@example.com', 'Escape\u001b[31mName']] as const) {
        const refused = await register({ email, name, password });
        expect(refused.status, textOf(refused.html).slice(0, 200)).toBe(400);
        expect(errorsOf(refused.html).join(' ')).toMatch(/name must not contain control characters/);
        // The form comes back usable, with the address filled in.
        expect(refused.html).toContain(`value="${email}"`);
        csrfOf(refused.html);
        expect(await t.idp.accounts.findByEmail(email)).toBeNull();
        expect(await mailsTo(email)).toEqual([]);
      }
      expect(await t.idp.db.prisma.account.count()).toBe(0);
    });

    describe('a registered account', () => {
      const email = 'newcomer@example.com';
      let firstPage: Page;
      const links: string[] = [];

      it('is created pending verification, and a confirmation link is mailed', async () => {
        firstPage = await register({ email: 'NewComer@Example.com', name: 'New Comer', password });
        expect(firstPage.status).toBe(200);
        expect(textOf(firstPage.html)).toContain('Check your email');
        const account = await t.idp.accounts.findByEmail(email);
        expect(account).toMatchObject({ email, name: 'New Comer', status: 'pending_verification', emailVerified: false, userType: 'external', approval: 'unverified' });
        const mails = (await mailsTo(email));
        expect(mails).toHaveLength(1);
        expect(mails[0]).toMatchObject({ subject: 'Confirm your email address', from: expect.stringContaining('no-reply@idp.test') });
        expect(mails[0]!.text).toContain('Hello New Comer');
        links.push(intendedLink(mails[0]!, t.issuer, '/account/verify-email'));
      });

      it('answers a taken address exactly like a new one, without a mail and without touching the account', async () => {
        const before = await t.idp.db.prisma.account.findUniqueOrThrow({ where: { email } });
        const again = await register({ email: ' newcomer@EXAMPLE.com ', name: 'Someone Else', password: 'Another-Secret-77?' });
        expect(again.status).toBe(firstPage.status);
        expect(again.html).toBe(firstPage.html);
        expect((await mailsTo(email))).toHaveLength(1);
        const after = await t.idp.db.prisma.account.findUniqueOrThrow({ where: { email } });
        expect(after).toEqual(before);
        expect(await t.idp.db.prisma.account.count()).toBe(1);
      });

      it('refuses sign-in until verified, with the notice and a fresh link, without counting a failed attempt', async () => {
        // One wrong password first: that one is a plain failure, with no notice and no mail.
        const pages = await attempt(t, rp, email, 'Not-The-Password-1!', password, password, password);
        expect(pages[0]!.status).toBe(401);
        expect(errorsOf(pages[0]!.html)).toEqual(['The email address or password is not correct.']);
        for (const page of pages.slice(1)) {
          // Still on the password page of the same interaction: with 3 attempts allowed and a
          // lockout after 2 failures, counting these would have ended the sign-in.
          expect(page.url.origin).toBe(t.issuer);
          expect(page.status).toBe(200);
          expect(page.html).toContain('name="password"');
          expect(errorsOf(page.html)).toEqual(['Confirm your email address first: we have sent you a link (check your spam folder too).']);
        }
        expect(await t.idp.accounts.isLocked((await t.idp.accounts.findByEmail(email))!.id)).toBe(false);
        // The registration mail plus two fresh links: at most 3 per hour, so the third sign-in sent none.
        const mails = (await mailsTo(email, 'Confirm your email address'));
        expect(mails).toHaveLength(3);
        for (const mail of mails.slice(1)) links.push(intendedLink(mail, t.issuer, '/account/verify-email'));
        expect(new Set(links.map(tokenOf)).size).toBe(3);
        const rejected = await t.idp.db.prisma.auditEvent.findMany({ where: { type: 'login.password_rejected' } });
        expect(rejected).toHaveLength(1);
        expect(await t.idp.db.prisma.auditEvent.count({ where: { type: 'login.verification_required' } })).toBe(3);
      });

      it('shows a confirm button on GET without using the link, refuses a forged post, and verifies on POST', async () => {
        const latest = links.at(-1)!;
        const browser = new Browser();
        for (let i = 0; i < 2; i++) {
          const page = await get(browser, latest);
          expect(page.status).toBe(200);
          expect(page.html).toContain('action="/account/verify-email"');
          expect(page.html).toContain(`name="token" value="${tokenOf(latest)}"`);
        }
        expect(await t.idp.accounts.findByEmail(email)).toMatchObject({ status: 'pending_verification', emailVerified: false });
        const row = await t.idp.db.prisma.accountToken.findMany({ where: { purpose: 'verify_email', usedAt: null } });
        expect(row).toHaveLength(1);

        const page = await get(browser, latest);
        const csrf = csrfOf(page.html);
        const forged = await post(browser, `${t.issuer}/account/verify-email`, { csrf: csrf.replace(/^./, (c) => (c === 'A' ? 'B' : 'A')), token: tokenOf(latest) });
        expect(forged.status).toBe(403);
        expect(await t.idp.accounts.findByEmail(email)).toMatchObject({ status: 'pending_verification' });

        // Links superseded by a newer one do not work any more.
        for (const old of links.slice(0, -1)) {
          const stale = await post(browser, `${t.issuer}/account/verify-email`, { csrf, token: tokenOf(old) });
          expect(stale.status).toBe(400);
          expect(textOf(stale.html)).toContain('This link is not valid any more');
        }
        expect(await t.idp.accounts.findByEmail(email)).toMatchObject({ status: 'pending_verification' });

        // The password of the account is needed too (someone else may have registered the address):
        // a wrong one is refused and leaves the link usable.
        const wrong = await post(browser, `${t.issuer}/account/verify-email`, { csrf, token: tokenOf(latest), password: 'not the password at all' });
        expect(wrong.status).toBe(400);
        expect(textOf(wrong.html)).toContain('That is not the password of this account');
        expect(await t.idp.accounts.findByEmail(email)).toMatchObject({ status: 'pending_verification', emailVerified: false });
        const done = await post(browser, `${t.issuer}/account/verify-email`, { csrf, token: tokenOf(latest), password });
        expect(done.status).toBe(200);
        expect(textOf(done.html)).toContain('Your email address is confirmed. An administrator still has to approve your account.');
        expect(await t.idp.accounts.findByEmail(email)).toMatchObject({ status: 'active', emailVerified: true, approval: 'pending' });
      });

      it('refuses the same link a second time, a tampered one and garbage with 400, never 500', async () => {
        const latest = tokenOf(links.at(-1)!);
        const browser = new Browser();
        const csrf = await openForm(browser, links.at(-1)!);
        const tampered = latest.slice(0, -1) + (latest.endsWith('A') ? 'B' : 'A');
        for (const token of [latest, tampered, '', 'garbage', `<script>${'x'.repeat(5000)}`]) {
          const refused = await post(browser, `${t.issuer}/account/verify-email`, { csrf, token });
          expect(refused.status, `token ${token.slice(0, 20)}`).toBe(400);
          expect(textOf(refused.html)).toContain('This link is not valid any more: it was used already, it expired, or a newer one was sent.');
        }
        // The token from a link is echoed into the confirm form escaped.
        const echoed = await get(browser, `${t.issuer}/account/verify-email?token=${encodeURIComponent('"><script>alert(1)</script>')}`);
        expect(echoed.status).toBe(200);
        expect(echoed.html).not.toContain('<script>');
        // Two stale links and one wrong password before, five refusals here.
        expect(await t.idp.db.prisma.auditEvent.count({ where: { type: 'account.email_verification_failed' } })).toBe(2 + 1 + 5);
      });

      it('signs in now, the first time, and the relying party sees approval_status pending, then verified', async () => {
        const { tokens } = await rpSignIn(t, rp, email, password, { scope: 'openid account' });
        const account = (await t.idp.accounts.findByEmail(email))!;
        const claims = await oidc.fetchUserInfo(rp, tokens.access_token, account.id);
        expect(claims).toEqual({ sub: account.id, account_status: 'active', approval_status: 'pending', user_type: 'external', roles: [] });

        await t.idp.accounts.decideApproval(email, 'verified');
        expect(await oidc.fetchUserInfo(rp, tokens.access_token, account.id)).toMatchObject({ approval_status: 'verified' });
        // Without the scope the account claims are not released.
        const plain = await rpSignIn(t, rp, email, password, { scope: 'openid' });
        const without = await oidc.fetchUserInfo(rp, plain.tokens.access_token, account.id);
        expect(without).toEqual({ sub: account.id });
      });
    });
  });

  // ---- Registration off, and invitations ----------------------------------------------------------
  describe('registration switched off; invitations', () => {
    let t: TestIdp;
    let rp: oidc.Configuration;
    const password = 'a fine welcome password';

    beforeAll(async () => {
      ({ t, rp } = await startWithRp({}));
    });
    afterAll(async () => t?.stop());

    it('answers 404 to the registration page and form, creates nothing and does not offer it', async () => {
      const browser = new Browser();
      const page = await get(browser, `${t.issuer}/account/register`);
      expect(page.status).toBe(404);
      expect(textOf(page.html)).toContain('Creating accounts here is switched off');
      expect(page.html).not.toContain('name="password"');
      // A valid form token (the same cookie serves every anonymous form) does not help.
      const csrf = await openForm(browser, `${t.issuer}/account/forgot-password`);
      const posted = await post(browser, `${t.issuer}/account/register`, { csrf, email: 'intruder@example.com', password: 'Tulip-Garden-2024!' });
      expect(posted.status).toBe(404);
      expect(textOf(posted.html)).toContain('Creating accounts here is switched off');
      expect(await t.idp.accounts.findByEmail('intruder@example.com')).toBeNull();
      expect((await mailsTo('intruder@example.com'))).toEqual([]);
      const request = await authorizationRequest(rp, { redirect_uri: redirectUri });
      const signInPage = await new Browser().follow(request.url, t.issuer);
      expect(await signInPage.response.text()).not.toContain('/account/register');
    });

    it('mails an invitation whose link sets a password under the policy, once; the password then signs in', async () => {
      const email = 'ivy@example.com';
      const account = await t.idp.selfService.invite({ email, name: 'Ivy Invited' }, { actor: 'admin' });
      expect(account).toMatchObject({ status: 'pending_verification', passwordHash: null, emailVerified: false });
      const mails = (await mailsTo(email));
      expect(mails).toHaveLength(1);
      expect(mails[0]!.subject).toBe(`You have been invited to ${t.issuer}`);
      const link = intendedLink(mails[0]!, t.issuer, '/account/invitation');

      // Before accepting, the account has no password: a sign-in fails like any wrong password.
      const early = await attempt(t, rp, email, password);
      expect(early[0]!.status).toBe(401);
      expect(errorsOf(early[0]!.html)).toEqual(['The email address or password is not correct.']);

      const browser = new Browser();
      const shown = await get(browser, link);
      expect(shown.status).toBe(200);
      expect(textOf(shown.html)).toContain('Welcome! Choose a password');
      expect(shown.html).toContain(email);
      const csrf = csrfOf(shown.html);
      const token = tokenOf(link);

      const weak = await post(browser, `${t.issuer}/account/invitation`, { csrf, token, password: 'ivy', confirm: 'ivy' });
      expect(weak.status).toBe(400);
      expect(errorsOf(weak.html)).toEqual(['Password must be at least 12 characters.', 'Password must not contain your email address or name.']);
      expect(weak.html).toContain(`name="token" value="${token}"`);
      const mismatch = await post(browser, `${t.issuer}/account/invitation`, { csrf, token, password, confirm: `${password}!` });
      expect(mismatch.status).toBe(400);
      expect(errorsOf(mismatch.html)).toEqual(['The two passwords do not match.']);
      const forged = await post(browser, `${t.issuer}/account/invitation`, { csrf: 'x', token, password, confirm: password });
      expect(forged.status).toBe(403);
      expect((await t.idp.accounts.findByEmail(email))!.passwordHash).toBeNull();
      // The refused attempts left the link working.
      expect((await get(browser, link)).status).toBe(200);

      const accepted = await post(browser, `${t.issuer}/account/invitation`, { csrf, token, password, confirm: password });
      expect(accepted.status).toBe(200);
      expect(textOf(accepted.html)).toContain('Your password is set. You can sign in with it now.');
      expect(await t.idp.accounts.findByEmail(email)).toMatchObject({ status: 'active', emailVerified: true });

      const used = await get(browser, link);
      expect(used.status).toBe(400);
      expect(textOf(used.html)).toContain('This link is not valid any more');
      const reused = await post(browser, `${t.issuer}/account/invitation`, { csrf, token, password: 'another fine password', confirm: 'another fine password' });
      expect(reused.status).toBe(400);
      expect(textOf(reused.html)).toContain('This link is not valid any more');

      const { tokens } = await rpSignIn(t, rp, email, password, { scope: 'openid email' });
      expect(await oidc.fetchUserInfo(rp, tokens.access_token, account.id)).toMatchObject({ email, email_verified: true });
    });

    it('refuses an expired invitation link and sets no password', async () => {
      const email = 'late@example.com';
      const account = await t.idp.selfService.invite({ email }, { actor: 'admin' });
      const link = intendedLink((await mailsTo(email))[0]!, t.issuer, '/account/invitation');
      const browser = new Browser();
      expect((await get(browser, link)).status).toBe(200);
      await t.idp.db.prisma.accountToken.updateMany({ where: { accountId: account.id, purpose: 'invitation' }, data: { expiresAt: new Date(Date.now() - 1000) } });
      const shown = await get(browser, link);
      expect(shown.status).toBe(400);
      expect(textOf(shown.html)).toContain('This link is not valid any more');
      const csrf = await openForm(browser, `${t.issuer}/account/forgot-password`);
      const posted = await post(browser, `${t.issuer}/account/invitation`, { csrf, token: tokenOf(link), password, confirm: password });
      expect(posted.status).toBe(400);
      expect(textOf(posted.html)).toContain('This link is not valid any more');
      expect(await t.idp.accounts.findByEmail(email)).toMatchObject({ passwordHash: null, status: 'pending_verification' });
    });
  });

  // ---- Forgotten passwords -----------------------------------------------------------------------
  describe('forgotten passwords', () => {
    let t: TestIdp;
    let rp: oidc.Configuration;
    const oldPassword = 'the old password 1';
    const newPassword = 'a brand new password 2';

    beforeAll(async () => {
      ({ t, rp } = await startWithRp({}));
    });
    afterAll(async () => t?.stop());

    const requestReset = async (email: string, browser = new Browser(), on = t) => {
      const csrf = await openForm(browser, `${on.issuer}/account/forgot-password`);
      return post(browser, `${on.issuer}/account/forgot-password`, { csrf, email });
    };

    it('answers an unknown and a known address with the same page, and mails only the known one', async () => {
      await t.idp.accounts.create({ email: 'known@example.com', password: oldPassword, emailVerified: true });
      const known = await requestReset('known@example.com');
      const unknown = await requestReset('unknown@example.com');
      const malformed = await requestReset('not an address at all');
      expect(known.status).toBe(200);
      expect(textOf(known.html)).toContain('If an account with this address exists, we have sent it a link');
      expect(unknown).toEqual(known);
      expect(malformed).toEqual(known);
      expect((await mailsTo('unknown@example.com'))).toEqual([]);
      const mails = (await mailsTo('known@example.com'));
      expect(mails).toHaveLength(1);
      expect(mails[0]!.subject).toBe('Reset your password');
      intendedLink(mails[0]!, t.issuer, '/account/reset-password');

      // A forged post sends nothing.
      const browser = new Browser();
      await openForm(browser, `${t.issuer}/account/forgot-password`);
      const forged = await post(browser, `${t.issuer}/account/forgot-password`, { csrf: 'forged', email: 'known@example.com' });
      expect(forged.status).toBe(403);
      expect((await mailsTo('known@example.com'))).toHaveLength(1);
    });

    it('refuses an expired reset link and leaves the password as it was', async () => {
      const email = 'expiry@example.com';
      const account = await t.idp.accounts.create({ email, password: oldPassword, emailVerified: true });
      await requestReset(email);
      const link = intendedLink((await mailsTo(email))[0]!, t.issuer, '/account/reset-password');
      const browser = new Browser();
      expect((await get(browser, link)).status).toBe(200);
      await t.idp.db.prisma.accountToken.updateMany({ where: { accountId: account.id, purpose: 'password_reset' }, data: { expiresAt: new Date(Date.now() - 1000) } });
      const shown = await get(browser, link);
      expect(shown.status).toBe(400);
      expect(textOf(shown.html)).toContain('This link is not valid any more');
      const csrf = await openForm(browser, `${t.issuer}/account/forgot-password`);
      const posted = await post(browser, `${t.issuer}/account/reset-password`, { csrf, token: tokenOf(link), password: newPassword, confirm: newPassword });
      expect(posted.status).toBe(400);
      expect(textOf(posted.html)).toContain('This link is not valid any more');
      expect((await t.idp.accounts.findByEmail(email))!.passwordHash).toBe(account.passwordHash);
      expect((await mailsTo(email, 'Your password was changed'))).toEqual([]);
    });

    it('resets once: sessions and refresh tokens end, the old password stops working, the new one works, a notice is mailed', async () => {
      const email = 'forgetful@example.com';
      const account = await t.idp.accounts.create({ email, password: oldPassword, emailVerified: true });
      // Signed in before the reset, in browser A: a relying party with a refresh token, and the account page.
      const before = await rpSignIn(t, rp, email, oldPassword, { scope: 'openid offline_access', prompt: 'consent' });
      const refreshed = await oidc.refreshTokenGrant(rp, before.tokens.refresh_token!);
      const refreshToken = refreshed.refresh_token!;
      expect(refreshToken).toBeTruthy();
      const accountPage = await get(before.browser, `${t.issuer}/account`);
      expect(accountPage.status).toBe(200);
      expect(accountPage.html).toContain(email);
      expect(await t.idp.sessions.list(account.id)).toHaveLength(1);

      // Browser B asks for a reset and follows the link.
      const browser = new Browser();
      await requestReset(email, browser);
      const link = intendedLink((await mailsTo(email, 'Reset your password'))[0]!, t.issuer, '/account/reset-password');
      const shown = await get(browser, link);
      expect(shown.status).toBe(200);
      expect(textOf(shown.html)).toContain('Choose a new password');
      expect(shown.html).toContain(email);
      const csrf = csrfOf(shown.html);
      const weak = await post(browser, `${t.issuer}/account/reset-password`, { csrf, token: tokenOf(link), password: 'x7#Qm', confirm: 'x7#Qm' });
      expect(weak.status).toBe(400);
      expect(errorsOf(weak.html)).toEqual(['Password must be at least 12 characters.']);
      const same = await post(browser, `${t.issuer}/account/reset-password`, { csrf, token: tokenOf(link), password: oldPassword, confirm: oldPassword });
      expect(same.status).toBe(400);
      expect(errorsOf(same.html)).toEqual(['Password must not be one of your last 12 passwords.']);
      const done = await post(browser, `${t.issuer}/account/reset-password`, { csrf, token: tokenOf(link), password: newPassword, confirm: newPassword });
      expect(done.status).toBe(200);
      expect(textOf(done.html)).toContain('every session of your account has been signed out');

      // Every session is gone, with its grants.
      expect(await t.idp.sessions.list(account.id)).toEqual([]);
      await expect(oidc.refreshTokenGrant(rp, refreshToken)).rejects.toMatchObject({ error: 'invalid_grant' });
      expect((await oidc.tokenIntrospection(rp, refreshed.access_token)).active).toBe(false);
      const stale = await get(before.browser, `${t.issuer}/account`);
      expect(stale.status).toBe(302);
      const to = new URL(stale.location!, t.issuer);
      expect(`${to.origin}${to.pathname}`).toBe(`${t.issuer}/auth`);
      expect(to.searchParams.get('client_id')).toBe('idp-account');
      const signInAgain = await before.browser.follow(to, t.issuer);
      expect(await signInAgain.response.text()).toContain('name="email"');

      // The link worked once.
      const reused = await post(browser, `${t.issuer}/account/reset-password`, { csrf, token: tokenOf(link), password: 'yet another password 3', confirm: 'yet another password 3' });
      expect(reused.status).toBe(400);
      expect(textOf(reused.html)).toContain('This link is not valid any more');
      expect((await get(browser, link)).status).toBe(400);

      const old = await attempt(t, rp, email, oldPassword);
      expect(old[0]!.status).toBe(401);
      expect(errorsOf(old[0]!.html)).toEqual(['The email address or password is not correct.']);
      const after = await rpSignIn(t, rp, email, newPassword);
      expect(after.tokens.id_token).toBeTruthy();

      const notices = (await mailsTo(email, 'Your password was changed'));
      expect(notices).toHaveLength(1);
      expect(notices[0]!.text).not.toMatch(/https?:\/\//);
      expect(notices[0]!.text).not.toContain(newPassword);
    });

    it('lets only one of two simultaneous posts of the same link set a password', async () => {
      const email = 'racer@example.com';
      await t.idp.accounts.create({ email, password: oldPassword, emailVerified: true });
      await requestReset(email);
      const link = intendedLink((await mailsTo(email, 'Reset your password'))[0]!, t.issuer, '/account/reset-password');
      const browser = new Browser();
      const csrf = csrfOf((await get(browser, link)).html);
      const candidates = ['the first racing password', 'the second racing password'];
      const results = await Promise.all(candidates.map((password) => post(browser, `${t.issuer}/account/reset-password`, { csrf, token: tokenOf(link), password, confirm: password })));
      expect(results.map((r) => r.status).sort()).toEqual([200, 400]);
      const winner = candidates[results.findIndex((r) => r.status === 200)]!;
      const loser = candidates.find((c) => c !== winner)!;
      expect(textOf(results.find((r) => r.status === 400)!.html)).toContain('This link is not valid any more');
      expect((await attempt(t, rp, email, loser))[0]!.status).toBe(401);
      await rpSignIn(t, rp, email, winner);
      expect((await mailsTo(email, 'Your password was changed'))).toHaveLength(1);
    });

    it('mails at most 3 reset links per account and hour; each new link ends the one before', async () => {
      const email = 'bombed@example.com';
      await t.idp.accounts.create({ email, password: oldPassword, emailVerified: true });
      const pages = [];
      for (let i = 0; i < 4; i++) {
        pages.push(await requestReset(email));
        // One after another, mails included: the mails then arrive in the order of their links.
        await t.idp.afterResponse.settled();
      }
      for (const page of pages) expect(page).toEqual(pages[0]);
      const mails = (await mailsTo(email, 'Reset your password'));
      expect(mails).toHaveLength(3);
      const links = mails.map((m) => intendedLink(m, t.issuer, '/account/reset-password'));
      const browser = new Browser();
      expect((await get(browser, links[0]!)).status).toBe(400);
      expect((await get(browser, links[1]!)).status).toBe(400);
      expect((await get(browser, links[2]!)).status).toBe(200);
    });

    describe('eight requests at the same moment', () => {
      // An IdP of its own: the eight posts come from one address, and the forms' per-address
      // limit must not be spent by the tests above.
      let fresh: TestIdp;
      beforeAll(async () => {
        ({ t: fresh } = await startWithRp({}));
      });
      afterAll(async () => fresh?.stop());

      it('still mail 3 links, and exactly one of them works', async () => {
        // The work of each request runs after its response, so these eight run side by side: the
        // budget and "the newest link ends the others" must both hold under that concurrency.
        const email = 'bombed-at-once@example.com';
        const account = await fresh.idp.accounts.create({ email, password: oldPassword, emailVerified: true });
        const pages = await Promise.all(Array.from({ length: 8 }, () => requestReset(email, new Browser(), fresh)));
        for (const page of pages) expect(page.status).toBe(200);
        const mails = await mailsTo(email, 'Reset your password');
        expect(mails).toHaveLength(3);
        const browser = new Browser();
        const statuses = await Promise.all(mails.map(async (m) => (await get(browser, intendedLink(m, fresh.issuer, '/account/reset-password'))).status));
        expect(statuses.sort()).toEqual([200, 400, 400]);
        expect(await fresh.idp.db.prisma.auditEvent.count({ where: { subject: account.id, type: 'password_reset.refused' } })).toBe(5);
      });
    });
  });

  // ---- What the response time tells ------------------------------------------------------------------
  // The pages are the same for a taken and a free address (above); the time they take must not
  // tell either, or the forms become an oracle for which addresses have an account. The same
  // standard as sign-in (test/integration/storage.test.ts: unknown account vs wrong password).
  describe('an address registered by someone else', () => {
    let t: TestIdp;
    let rp: oidc.Configuration;
    beforeAll(async () => {
      ({ t, rp } = await startWithRp({ REGISTRATION_ENABLED: 'true' }));
    });
    afterAll(async () => t?.stop());

    it('cannot be activated by a click of the owner on the link; the owner takes it over with a reset', async () => {
      const email = 'owner@example.com';
      const squatter = 'squatter password 77';
      const owners = 'the rightful keeper 2026';
      const attacker = new Browser();
      const csrf = await openForm(attacker, `${t.issuer}/account/register`);
      expect((await post(attacker, `${t.issuer}/account/register`, { csrf, email, name: '', password: squatter })).status).toBe(200);
      const link = intendedLink((await mailsTo(email, 'Confirm your email address'))[0]!, t.issuer, '/account/verify-email');

      // The owner opens the link: without the squatter's password nothing is confirmed.
      const owner = new Browser();
      const form = await get(owner, link);
      expect(form.html).toContain('name="password"');
      const refused = await post(owner, `${t.issuer}/account/verify-email`, { csrf: csrfOf(form.html), token: new URL(link).searchParams.get('token')!, password: owners });
      expect(refused.status).toBe(400);
      expect(await t.idp.accounts.findByEmail(email)).toMatchObject({ status: 'pending_verification', emailVerified: false });

      // "Forgot password" proves the mailbox: the owner's password replaces the squatter's and the address is verified.
      const resetCsrf = await openForm(owner, `${t.issuer}/account/forgot-password`);
      await post(owner, `${t.issuer}/account/forgot-password`, { csrf: resetCsrf, email });
      const resetLink = intendedLink((await mailsTo(email, 'Reset your password'))[0]!, t.issuer, '/account/reset-password');
      const resetForm = await get(owner, resetLink);
      const done = await post(owner, `${t.issuer}/account/reset-password`, { csrf: csrfOf(resetForm.html), token: new URL(resetLink).searchParams.get('token')!, password: owners, confirm: owners });
      expect(done.status).toBe(200);
      expect(await t.idp.accounts.findByEmail(email)).toMatchObject({ status: 'active', emailVerified: true });
      const { tokens } = await rpSignIn(t, rp, email, owners);
      expect(tokens.id_token).toBeTruthy();
      expect(await t.idp.accounts.authenticate(email, squatter)).toMatchObject({ ok: false, reason: 'wrong_password' });
    });
  });

  // ---- What mails to an unproven address may say --------------------------------------------------
  // Anyone can register any address with a name of their choosing; the mails that registration
  // causes reach the address's owner, so they must not carry the registrant's text.
  describe('mails caused by a registration of someone else\'s address', () => {
    let t: TestIdp;
    const phishing = 'Prize waiting at http://evil.example/claim';
    const attackerText = ['Prize', 'waiting', 'evil', 'claim'];
    beforeAll(async () => {
      ({ t } = await startWithRp({ REGISTRATION_ENABLED: 'true' }));
    });
    afterAll(async () => t?.stop());

    const register = async (fields: { email: string; name: string; password: string }) => {
      const browser = new Browser();
      const csrf = await openForm(browser, `${t.issuer}/account/register`);
      return post(browser, `${t.issuer}/account/register`, { csrf, ...fields });
    };
    /** Greets by the address, carries none of the registrant's text and only the intended link. */
    const expectNoRegistrantText = (message: ReceivedMessage, email: string) => {
      expect(message.text).toContain(`Hello ${email},`);
      for (const text of attackerText) {
        expect(message.text, message.subject).not.toContain(text);
        expect(message.subject).not.toContain(text);
      }
      expect(message.text).not.toMatch(/https?:\/\/(?!127\.0\.0\.1:)/);
    };

    it('greet by the address: the verification, the reset and the password-changed mail carry no text of the registrant', async () => {
      const email = 'prize-victim@example.com';
      expect((await register({ email, name: phishing, password: 'squatter password 77' })).status).toBe(200);
      // The name is the registrant's account data and is kept; it just never goes into a mail.
      expect(await t.idp.accounts.findByEmail(email)).toMatchObject({ name: phishing, emailVerified: false });
      const [verification] = await mailsTo(email, 'Confirm your email address');
      expectNoRegistrantText(verification!, email);
      intendedLink(verification!, t.issuer, '/account/verify-email');

      // The owner takes the address over with "forgot password": that mail, and the notice of the
      // change, reach the owner too.
      const owner = new Browser();
      const csrf = await openForm(owner, `${t.issuer}/account/forgot-password`);
      await post(owner, `${t.issuer}/account/forgot-password`, { csrf, email });
      const [reset] = await mailsTo(email, 'Reset your password');
      expectNoRegistrantText(reset!, email);
      const link = intendedLink(reset!, t.issuer, '/account/reset-password');
      const shown = await get(owner, link);
      const owners = 'the rightful keeper 2026';
      const done = await post(owner, `${t.issuer}/account/reset-password`, { csrf: csrfOf(shown.html), token: tokenOf(link), password: owners, confirm: owners });
      expect(done.status).toBe(200);
      const [changed] = await mailsTo(email, 'Your password was changed');
      expectNoRegistrantText(changed!, email);
    });

    it('greet by the name only when it looks like a name: short, letters only', async () => {
      const cases: [string, string, boolean][] = [
        ['plain-name@example.com', 'Mary-Ann O\'Neil', true],
        ['initials@example.com', 'J. R. Tolkien', true],
        ['domain-name@example.com', 'evil.example', false],
        ['digits@example.com', 'Call 0900 123 456', false],
        ['long-name@example.com', 'Claim your prize today from our friendly team', false],
      ];
      for (const [email, name, greeted] of cases) {
        expect((await register({ email, name, password: 'Some-password-12' })).status).toBe(200);
        const [mail] = await mailsTo(email, 'Confirm your email address');
        expect(mail!.text, name).toContain(`Hello ${greeted ? name : email},`);
        if (!greeted) expect(mail!.text).not.toContain(name);
      }
    });

    it('refuses a name with a bidi override or an invisible character with 400: no account, no mail', async () => {
      for (const [email, name] of [['bidi-name@example.com', 'Bob\u202emoc.evil'], ['isolate-name@example.com', 'Ali\u2067ce'], ['zwsp-name@example.com', 'Zero\u200bWidth']] as const) {
        const refused = await register({ email, name, password: 'Some-password-12' });
        expect(refused.status, textOf(refused.html).slice(0, 200)).toBe(400);
        expect(errorsOf(refused.html).join(' ')).toMatch(/^name must not contain (bidirectional control|invisible) characters/);
        expect(await t.idp.accounts.findByEmail(email)).toBeNull();
        expect(await mailsTo(email)).toEqual([]);
      }
    });
  });

  describe('existence of an address in the response time', () => {
    let t: TestIdp;
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

    beforeAll(async () => {
      ({ t } = await startWithRp({ REGISTRATION_ENABLED: 'true' }));
    });
    afterAll(async () => t?.stop());

    async function timedPost(path: string, fields: Record<string, string>) {
      const browser = new Browser();
      const csrf = await openForm(browser, `${t.issuer}${path}`);
      const started = performance.now();
      const page = await post(browser, `${t.issuer}${path}`, { csrf, ...fields });
      const ms = performance.now() - started;
      expect(page.status).toBe(200);
      return ms;
    }

    it('registration of a taken address takes about as long as of a new one', async () => {
      await t.idp.accounts.create({ email: 'taken@example.com', password: 'Some-password-12' });
      const fresh: number[] = [];
      const taken: number[] = [];
      for (let i = 0; i < 5; i++) {
        fresh.push(await timedPost('/account/register', { email: `fresh${i}@example.com`, password: 'Some-password-12' }));
        await t.idp.afterResponse.settled(); // the new account's mail, out of the next timing
        taken.push(await timedPost('/account/register', { email: 'taken@example.com', password: 'Some-password-12' }));
      }
      const ratio = median(taken) / median(fresh);
      expect(ratio, `taken ${median(taken).toFixed(0)} ms vs new ${median(fresh).toFixed(0)} ms`).toBeGreaterThan(0.5);
    });

    it('a reset request for an unknown address takes about as long as for a known one', async () => {
      const known: number[] = [];
      const unknown: number[] = [];
      // The accounts exist before the timing starts: creating one (argon2, 19 MiB) right before a
      // request would time the garbage collector, not the request.
      for (let i = 0; i < 4; i++) await t.idp.accounts.create({ email: `known${i}@example.com`, password: 'Some-password-12', emailVerified: true });
      // Alternating which goes first, so that neither kind always follows the other's mail.
      for (let i = 0; i < 4; i++) {
        const pair = [
          async () => known.push(await timedPost('/account/forgot-password', { email: `known${i}@example.com` })),
          async () => unknown.push(await timedPost('/account/forgot-password', { email: `unknown${i}@example.com` })),
        ];
        for (const run of i % 2 ? pair.reverse() : pair) {
          await run();
          // The mail of a known address goes out after its response: let it go before the next
          // request is timed, or that request times the mail instead of itself.
          await t.idp.afterResponse.settled();
        }
      }
      expect((await mailsTo('known3@example.com'))).toHaveLength(1);
      const ratio = median(unknown) / median(known);
      // A few milliseconds either way are a loaded machine's noise (seen: 3 vs 7 ms); work done only
      // for known addresses before the response (a hash, a mail) would be tens of milliseconds.
      const gap = median(known) - median(unknown);
      expect(ratio > 0.5 || gap < 15, `unknown ${median(unknown).toFixed(0)} ms vs known ${median(known).toFixed(0)} ms`).toBe(true);
    });
  });
});
