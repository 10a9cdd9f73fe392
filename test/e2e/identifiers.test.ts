// Email addresses as identifiers, end to end on SQLite and on PostgreSQL + Redis: addresses with
// invisible, bidi or other hostile characters are refused wherever an account is created (admin
// API, invitations, self-registration) and find nothing wherever one is looked up (sign-in, sign-in
// codes, password reset, the admin API), never with a 500; a look-alike of an existing address
// (Cyrillic а for Latin a, fullwidth letters) is refused; internationalised domains have one form.
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { backends, startIdp, type Backend, type TestIdp } from '../helpers/server.ts';
import { startSmtp, type TestSmtp } from '../helpers/smtp.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const redirectUri = 'http://localhost:8080/callback';
const password = 'correct horse battery staple';
const form = { 'content-type': 'application/x-www-form-urlencoded' };

const decode = (s: string) => s.replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code))).replace(/&amp;/g, '&');
const errorsOf = (html: string) => [...(/<ul class="errors"[^>]*>(.*?)<\/ul>/s.exec(html)?.[1] ?? '').matchAll(/<li>(.*?)<\/li>/gs)].map((m) => decode(m[1]!));

const invisible = 'invisible or formatting character';
const bidi = 'bidirectional control character';
/** Hostile variants of badinput@example.com, with what the message must say about each. */
const hostile: [string, string][] = [
  ['bad\u200binput@example.com', `${invisible} U+200B`], // zero-width space
  ['bad\u202einput@example.com', `${bidi} U+202E`], // right-to-left override
  ['bad\u2066input@example.com', `${bidi} U+2066`], // left-to-right isolate
  ['bad\u200dinput@example.com', `${invisible} U+200D`], // zero-width joiner
  ['bad\u2060input@example.com', `${invisible} U+2060`], // word joiner
  ['bad\u00adinput@example.com', `${invisible} U+00AD`], // soft hyphen
  ['\ufeffbadinput@example.com', `${invisible} U+FEFF`], // byte order mark
  ['badinput@exam\u200bple.com', `${invisible} U+200B`], // in the domain (IDNA alone would silently drop it)
  ['bad\u3164input@example.com', `${invisible} U+3164`], // Hangul filler
  ['badinput\u{e0041}@example.com', `${invisible} U+E0041`], // tag character
];

describe.each(backends)('identifiers on %s', (backend: Backend) => {
  let t: TestIdp;
  let smtp: TestSmtp;
  let rp: oidc.Configuration;
  let token: string;

  beforeAll(async () => {
    smtp = await startSmtp();
    t = await startIdp(backend, { SMTP_URL: smtp.url, REGISTRATION_ENABLED: 'true' });
    const ops = await t.idp.clients.create({ client_id: 'ops', grant_types: ['client_credentials'], scope: 'idp:admin', token_endpoint_auth_method: 'client_secret_post' });
    const response = await fetch(`${t.issuer}/token`, {
      method: 'POST',
      headers: form,
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'ops', client_secret: ops.clientSecret!, resource: `${t.issuer}/admin`, scope: 'idp:admin' }),
    });
    token = ((await response.json()) as { access_token: string }).access_token;
    const webapp = await t.idp.clients.create({ client_id: 'webapp', redirect_uris: [redirectUri], grant_types: ['authorization_code'] });
    rp = await oidc.discovery(new URL(t.issuer), 'webapp', webapp.clientSecret!, undefined, insecure);
    // The account every hostile variant imitates.
    await t.idp.accounts.create({ email: 'badinput@example.com', password, emailVerified: true, name: 'Bad Input' });
  });

  afterAll(async () => {
    await t?.stop();
    await smtp?.stop();
  });

  async function api(method: string, path: string, json?: unknown) {
    const response = await fetch(`${t.url}/admin/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(json === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(json === undefined ? {} : { body: JSON.stringify(json) }),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }

  const mailsSettled = async () => {
    await t.idp.afterResponse.settled();
    return smtp.messages;
  };
  const accountCount = () => t.idp.db.prisma.account.count();

  describe('creation refuses', () => {
    it('an address with an invisible, bidi or format character, with a 400 naming it (admin API, invitation), and creates nothing', async () => {
      const before = await accountCount();
      for (const [email, what] of hostile) {
        for (const body of [{ email, password }, { email, invite: true }]) {
          const response = await api('POST', '/users', body);
          expect(response.status, `${JSON.stringify(email)}: ${JSON.stringify(response.body)}`).toBe(400);
          expect(response.body.error).toBe('invalid_request');
          expect(response.body.error_description).toBe(`not a valid email address: it contains the ${what}`);
        }
      }
      // A lone surrogate (possible in JSON; the API's input rules may refuse it first) and a private-use character.
      for (const [email, message] of [['bad\ud800input@example.com', /well-formed|surrogate/], ['bad\ue000input@example.com', /private-use or unassigned code point U\+E000/]] as const) {
        const response = await api('POST', '/users', { email, password });
        expect(response.status).toBe(400);
        expect(response.body.error_description).toMatch(message);
      }
      expect(await accountCount()).toBe(before);
      expect(await mailsSettled()).toEqual([]);
    });

    it('a look-alike of an existing address: Cyrillic letters, Greek omicron, dotless i, fullwidth letters (409); the CLI and API give the address it imitates', async () => {
      const before = await accountCount();
      for (const email of ['bаdinput@example.com', 'badinput@exаmple.com', 'badinput@xn--exmple-4nf.com', 'badınput@example.com', 'bad\u0456nput@example.com']) {
        const response = await api('POST', '/users', { email, password });
        expect(response.status, `${email}: ${JSON.stringify(response.body)}`).toBe(409);
        expect(response.body.error_description).toMatch(/looks the same .* exists: badinput@example\.com$/);
      }
      const fullwidth = await api('POST', '/users', { email: 'ｂａｄｉｎｐｕｔ@ｅｘａｍｐｌｅ.com', password });
      expect(fullwidth.status).toBe(409);
      expect(fullwidth.body.error_description).toBe('an account with email badinput@example.com exists');
      const goodbye = await api('POST', '/users', { email: 'gοodbye@example.com', invite: true });
      expect(goodbye.status).toBe(201);
      expect((await api('POST', '/users', { email: 'goodbye@example.com', invite: true })).status).toBe(409);
      expect(await accountCount()).toBe(before + 1);
    });

    it('accepts addresses that only look alike in ASCII (rn and m, l and 1): they always were different addresses', async () => {
      for (const email of ['modern@example.com', 'rnodern@example.com', 'al@example.com', 'a1@example.com']) {
        expect((await api('POST', '/users', { email, password })).status, email).toBe(201);
      }
    });

    it('a display name with a bidi override, an invisible character or a lone surrogate: 400, never a 500', async () => {
      for (const name of ['Bob\u202emoc.evil', 'Alice\u2067', 'Zero\u200bWidth', 'Lone \ud800 surrogate', 'Lone \udfff']) {
        const created = await api('POST', '/users', { email: 'named@example.com', password, name });
        expect(created.status, `${JSON.stringify(name)}: ${JSON.stringify(created.body)}`).toBe(400);
        expect(created.body.error_description).toMatch(/name must .*(bidirectional|invisible|well-formed|surrogate)/);
        const updated = await api('PATCH', '/users/badinput%40example.com', { name });
        expect(updated.status).toBe(400);
      }
      expect(await t.idp.accounts.findByEmail('named@example.com')).toBeNull();
      expect(await t.idp.accounts.findByEmail('badinput@example.com')).toMatchObject({ name: 'Bad Input' });
      // Joiners are part of names in some scripts, and of emoji.
      expect((await api('POST', '/users', { email: 'farsi@example.com', password, name: 'می\u200cخواهم 👩\u200d💻' })).status).toBe(201);
    });
  });

  describe('internationalised domains', () => {
    it('are stored in one (Unicode) form, whichever form is given, and found by either', async () => {
      const created = await api('POST', '/users', { email: 'Ana@BÜCHER.example', password });
      expect(created.status).toBe(201);
      expect(created.body.email).toBe('ana@bücher.example');
      expect((await api('POST', '/users', { email: 'ana@xn--bcher-kva.example', password })).status).toBe(409);
      for (const path of ['ana%40xn--bcher-kva.example', encodeURIComponent('ANA@bücher.example')]) {
        const shown = await api('GET', `/users/${path}`);
        expect(shown.status).toBe(200);
        expect(shown.body.id).toBe(created.body.id);
      }
      expect((await t.idp.accounts.authenticate('ana@XN--BCHER-KVA.example', password)).ok).toBe(true);
    });

    it('a domain that is no domain name is refused', async () => {
      for (const email of ['a@b#c.example', 'a@0x7f.0.0.1', 'a@example.123', 'a@exa..mple.com', 'a@xn--zz.example']) {
        const response = await api('POST', '/users', { email, password });
        expect(response.status, email).toBe(400);
        expect(response.body.error_description).toMatch(/^not a valid email address/);
      }
    });
  });

  describe('lookups with a hostile address find nothing (never a 500)', () => {
    it('the admin API answers 404', async () => {
      for (const [email] of hostile) {
        const response = await api('GET', `/users/${encodeURIComponent(email)}`);
        expect(response.status, JSON.stringify(email)).toBe(404);
        expect((await api('POST', `/users/${encodeURIComponent(email)}/disable`)).status).toBe(404);
      }
      expect(await t.idp.accounts.findByEmail('badinput@example.com')).toMatchObject({ status: 'active' });
    });

    it('sign-in with the right password through a hostile variant fails like an unknown account; the real address works', async () => {
      for (const [email] of hostile.slice(0, 3)) {
        const browser = new Browser();
        const request = await authorizationRequest(rp, { redirect_uri: redirectUri });
        const first = await browser.follow(request.url, t.issuer);
        const identify = await first.response.text();
        const passwordPage = await browser.postForm(new URL(formAction(identify, 'identify'), t.issuer), { csrf: csrfOf(identify), email }, t.issuer);
        const html = await passwordPage.response.text();
        expect(passwordPage.response.status).toBe(200);
        const refused = await browser.postForm(new URL(formAction(html, 'password'), t.issuer), { csrf: csrfOf(html), password }, t.issuer);
        expect(refused.response.status).toBe(401);
        expect(errorsOf(await refused.response.text())).toEqual(['The email address or password is not correct.']);
      }
      expect(await t.idp.accounts.authenticate('bad\u200binput@example.com', password)).toEqual({ ok: false, reason: 'unknown_account' });
      expect(await t.idp.accounts.authenticate('bad\ud800input@example.com', password)).toEqual({ ok: false, reason: 'unknown_account' });
      expect(await t.idp.accounts.authenticate('bad\u0000input@example.com', password)).toEqual({ ok: false, reason: 'unknown_account' });
      expect((await t.idp.accounts.authenticate(' BadInput@Example.com ', password)).ok).toBe(true);
    });

    it('a sign-in code asked for a hostile variant is not mailed to the real address', async () => {
      smtp.clear();
      const browser = new Browser();
      const request = await authorizationRequest(rp, { redirect_uri: redirectUri });
      const first = await browser.follow(request.url, t.issuer);
      const identify = await first.response.text();
      const passwordPage = await browser.postForm(new URL(formAction(identify, 'identify'), t.issuer), { csrf: csrfOf(identify), email: 'bad\u200binput@example.com' }, t.issuer);
      const html = await passwordPage.response.text();
      const sent = await browser.postForm(new URL(formAction(html, 'password'), t.issuer), { csrf: csrfOf(html), send_code: '1' }, t.issuer);
      expect(sent.response.status).toBe(200);
      expect(await sent.response.text()).toContain('We have sent you a code.');
      expect(await mailsSettled()).toEqual([]);
    });

    it('a password reset asked for a hostile variant answers as usual and mails nothing', async () => {
      smtp.clear();
      for (const [email] of hostile.slice(0, 3)) {
        const browser = new Browser();
        const page = await browser.request(`${t.issuer}/account/forgot-password`);
        const csrf = csrfOf(await page.text());
        const response = await browser.request(`${t.issuer}/account/forgot-password`, { method: 'POST', headers: form, body: new URLSearchParams({ csrf, email }).toString() });
        expect(response.status).toBe(200);
      }
      expect(await mailsSettled()).toEqual([]);
      // The audit row shows the address with the hostile character escaped, not rendered.
      await t.idp.audit.flush();
      const refused = await t.idp.db.prisma.auditEvent.findMany({ where: { type: 'password_reset.refused' } });
      expect(refused.map((r) => (JSON.parse(r.details) as { email: string }).email)).toEqual(['bad\\u{200b}input@example.com', 'bad\\u{202e}input@example.com', 'bad\\u{2066}input@example.com']);
    });
  });

  describe('self-registration', () => {
    async function register(email: string, name = '') {
      const browser = new Browser();
      const page = await browser.request(`${t.issuer}/account/register`);
      const csrf = csrfOf(await page.text());
      const response = await browser.request(`${t.issuer}/account/register`, { method: 'POST', headers: form, body: new URLSearchParams({ csrf, email, name, password }).toString() });
      return { status: response.status, html: await response.text() };
    }

    it('refuses a hostile address with a 400 naming the character; a look-alike of a taken address ends like a taken one: no account, no mail', async () => {
      smtp.clear();
      const before = await accountCount();
      for (const [email, what] of hostile.slice(0, 4)) {
        const refused = await register(email);
        expect(refused.status).toBe(400);
        expect(errorsOf(refused.html)).toEqual([`not a valid email address: it contains the ${what}`]);
      }
      const fresh = await register('newcomer@example.com');
      expect(fresh.status).toBe(200);
      for (const email of ['bаdinput@example.com', 'ｂａｄｉｎｐｕｔ@example.com', 'newcοmer@example.com']) {
        const again = await register(email, 'Someone');
        expect(again.status).toBe(200);
        expect(again.html).toBe(fresh.html);
      }
      expect(await accountCount()).toBe(before + 1);
      const mails = await mailsSettled();
      expect(mails.map((m) => m.to)).toEqual([['newcomer@example.com']]);
      await t.idp.audit.flush();
      const duplicates = await t.idp.db.prisma.auditEvent.findMany({ where: { type: 'account.registration_duplicate' }, orderBy: { seq: 'asc' } });
      expect(duplicates.map((r) => JSON.parse(r.details))).toEqual([
        { email: 'bаdinput@example.com', reason: 'lookalike' },
        { email: 'badinput@example.com' },
        { email: 'newcοmer@example.com', reason: 'lookalike' },
      ]);
    });
  });
});
