// The account page's second-step section over HTTP, as a browser without JavaScript uses it:
// adding an authenticator app (TOTP) and codes by email (through a real SMTP server), backup codes
// (shown once, regenerated, the old set dead), removing methods (the last one kept while policy
// requires MFA), CSRF, the "recent sign-in" rule, and an administrator's reset through the real
// `idp users reset-mfa` command. Sign-ins go through the account page's own authorization request
// (built-in client idp-account), so every login rule, the second step included, applies. The same
// suite runs on SQLite and on PostgreSQL + Redis.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';
import { startFakeSmsProviders, type FakeSmsProviders } from '../helpers/fake-sms-providers.ts';
import { jsonOf, runIdp } from '../helpers/processes.ts';
import { backends, startIdp, type TestIdp } from '../helpers/server.ts';
import { startSmtp, type TestSmtp } from '../helpers/smtp.ts';
import { totpCodeAt } from '../../src/mfa/totp.ts';

const password = 'correct horse battery staple';
const form = { 'content-type': 'application/x-www-form-urlencoded' };

/** What to answer on the second-step screen of a sign-in (fields of the form posted to …/mfa). */
type SecondStep = (html: string) => Record<string, string>;

interface AccountPage {
  html: string;
  csrf: string;
}

let counter = 0;
const uniqueEmail = (label: string) => `${label}-${++counter}-${Date.now().toString(36)}@example.com`;

function backupCodesIn(html: string): string[] {
  const list = /<ul class="backup-codes">(.*?)<\/ul>/s.exec(html);
  expect(list, 'the page lists backup codes').toBeTruthy();
  return [...list![1]!.matchAll(/<code>([^<]+)<\/code>/g)].map((m) => m[1]!);
}

/** The factors the account page lists: [id, type] per row. */
function listedFactors(html: string): { id: string; type: string }[] {
  return [...html.matchAll(/<li data-factor="([^"]+)" data-type="([^"]+)">/g)].map((m) => ({ id: m[1]!, type: m[2]! }));
}

/** Six digits that are none of the codes accepted now (the current step and its neighbours). */
function wrongTotp(secret: string): string {
  const accepted = new Set([-30_000, 0, 30_000].map((d) => totpCodeAt(secret, Date.now() + d)));
  return ['000000', '111111', '222222', '333333'].find((c) => !accepted.has(c))!;
}

const errorsOf = (html: string) => /<ul class="errors"[^>]*>(.*?)<\/ul>/s.exec(html)?.[1] ?? '';

function suite(backend: (typeof backends)[number]) {
  let t: TestIdp;
  let smtp: TestSmtp;
  let origin: string;

  beforeAll(async () => {
    smtp = await startSmtp();
    // Remembered devices on, so the administrator's reset has one to forget.
    t = await startIdp(backend, { SMTP_URL: smtp.url, MFA_REMEMBER_DEVICE_DAYS: '30' });
    origin = t.issuer;
  });

  afterAll(async () => {
    await t?.stop();
    await smtp?.stop();
  });

  async function newAccount(label: string) {
    const email = uniqueEmail(label);
    const account = await t.idp.accounts.create({ email, password, name: label, emailVerified: true });
    return { email, id: account.id };
  }

  /**
   * Opens `path` (the account page by default) and signs in on the way when asked to: email,
   * password, the second step when the account has one. Returns the account page.
   */
  async function openAccount(browser: Browser, email: string, options: { path?: string; secondStep?: SecondStep; remember?: boolean } = {}): Promise<AccountPage> {
    let { response, url } = await browser.follow(new URL(options.path ?? '/account', origin), origin);
    for (let step = 0; step < 8; step++) {
      const html = await response.text();
      expect(response.status, `page ${url.pathname}: ${html.slice(0, 400)}`).toBe(200);
      if (url.pathname === '/account') return { html, csrf: csrfOf(html) };
      const csrf = csrfOf(html);
      if (html.includes('name="email"')) ({ response, url } = await browser.postForm(new URL(formAction(html, 'identify'), origin), { csrf, email }, origin));
      else if (html.includes('type="password"')) ({ response, url } = await browser.postForm(new URL(formAction(html, 'password'), origin), { csrf, password }, origin));
      else if (/action="\/interaction\/[^"]+\/mfa"/.test(html)) {
        if (!options.secondStep) throw new Error(`a second step was asked for: ${html.slice(0, 400)}`);
        ({ response, url } = await browser.postForm(new URL(formAction(html, 'mfa'), origin), { csrf, ...options.secondStep(html), ...(options.remember ? { remember: '1' } : {}) }, origin));
      } else throw new Error(`unexpected page at ${url.pathname}: ${html.slice(0, 400)}`);
    }
    throw new Error('the account page did not open within 8 pages');
  }

  async function post(browser: Browser, path: string, fields: Record<string, string>) {
    const response = await browser.request(new URL(path, origin), { method: 'POST', headers: form, body: new URLSearchParams(fields).toString() });
    return { status: response.status, location: response.headers.get('location'), html: await response.text() };
  }

  /** Adds an authenticator app on the account page; returns its factor id, secret and the page after confirming. */
  async function addTotp(browser: Browser, page: AccountPage) {
    const started = await post(browser, '/account/mfa/add', { csrf: page.csrf, method: 'totp' });
    expect(started.status, started.html.slice(0, 400)).toBe(200);
    const secret = /<code data-totp-secret>([A-Z2-7]+)<\/code>/.exec(started.html)?.[1];
    expect(secret, 'the page shows the key for typing in').toBeTruthy();
    expect(started.html).toMatch(/<img class="qr" alt="QR code" src="data:image\/png;base64,/);
    expect(started.html).toContain('action="/account/mfa/confirm"');
    const factor = /name="factor" value="([^"]+)"/.exec(started.html)?.[1];
    expect(factor, 'the confirm form names the pending factor').toBeTruthy();
    const confirmed = await post(browser, '/account/mfa/confirm', { csrf: page.csrf, method: 'totp', factor: factor!, code: totpCodeAt(secret!, Date.now()) });
    return { secret: secret!, factor: factor!, confirmed };
  }

  /** The code of the next 30-second step: accepted (one step of drift) and not yet spent by the confirmation. */
  const nextTotp = (secret: string): SecondStep => () => ({ method: 'totp', code: totpCodeAt(secret, Date.now() + 30_000) });
  const backupCode = (code: string): SecondStep => () => ({ method: 'backup_code', code });

  /** Makes the browser's sign-in look `seconds` old, in the provider's own session record. */
  async function ageSignIn(browser: Browser, seconds: number) {
    const id = browser.cookie('_session');
    expect(id, 'the browser holds a session cookie').toBeTruthy();
    const loginTs = Math.floor(Date.now() / 1000) - seconds;
    if (t.idp.redis) {
      const key = `oidc:Session:${id}`;
      const stored = await t.idp.redis.hget(key, 'payload');
      expect(stored, `Redis holds ${key}`).toBeTruthy();
      // hset keeps the key's TTL.
      await t.idp.redis.hset(key, 'payload', JSON.stringify({ ...JSON.parse(stored!), loginTs }));
    } else {
      const where = { model_id: { model: 'Session', id: id! } };
      const row = await t.idp.db.prisma.oidcRecord.findUniqueOrThrow({ where });
      await t.idp.db.prisma.oidcRecord.update({ where, data: { payload: JSON.stringify({ ...JSON.parse(row.payload), loginTs }) } });
    }
  }

  /** The sign-in time (whole seconds) of the browser's session, from the provider's own record. */
  async function loginTsOf(browser: Browser): Promise<number> {
    const id = browser.cookie('_session');
    expect(id, 'the browser holds a session cookie').toBeTruthy();
    const stored = t.idp.redis
      ? await t.idp.redis.hget(`oidc:Session:${id}`, 'payload')
      : (await t.idp.db.prisma.oidcRecord.findUniqueOrThrow({ where: { model_id: { model: 'Session', id: id! } } })).payload;
    return (JSON.parse(stored!) as { loginTs: number }).loginTs;
  }

  it('adds an authenticator app: a wrong code is refused, the first method comes with backup codes shown once', async () => {
    const { email, id } = await newAccount('totp');
    const browser = new Browser();
    const page = await openAccount(browser, email);
    expect(page.html).toContain('No second step is set up.');
    expect(listedFactors(page.html)).toEqual([]);

    const started = await post(browser, '/account/mfa/add', { csrf: page.csrf, method: 'totp' });
    expect(started.status).toBe(200);
    expect(started.html).toContain('Set up a second step');
    const secret = /<code data-totp-secret>([A-Z2-7]+)<\/code>/.exec(started.html)![1]!;
    expect(secret).toHaveLength(32);
    const factor = /name="factor" value="([^"]+)"/.exec(started.html)![1]!;

    // A wrong code: 400, the form again (for the same pending factor), nothing added.
    const wrong = await post(browser, '/account/mfa/confirm', { csrf: page.csrf, method: 'totp', factor, code: wrongTotp(secret) });
    expect(wrong.status).toBe(400);
    expect(errorsOf(wrong.html)).toContain('The code is not correct.');
    expect(wrong.html).toContain(`name="factor" value="${factor}"`);
    expect(await t.idp.mfa.hasFactor(id)).toBe(false);
    // Malformed input is refused the same way.
    const bad = await post(browser, '/account/mfa/confirm', { csrf: page.csrf, method: 'totp', factor, code: '12345x' });
    expect(bad.status).toBe(400);

    const right = await post(browser, '/account/mfa/confirm', { csrf: page.csrf, method: 'totp', factor, code: totpCodeAt(secret, Date.now()) });
    expect(right.status, right.html.slice(0, 400)).toBe(200);
    expect(right.html).toContain('they are shown only now');
    const codes = backupCodesIn(right.html);
    expect(codes).toHaveLength(10);
    for (const code of codes) expect(code).toMatch(/^[0-9a-hjkmnp-tv-z]{5}-[0-9a-hjkmnp-tv-z]{5}$/);
    expect(new Set(codes).size).toBe(10);

    const after = await openAccount(browser, email);
    expect(listedFactors(after.html)).toEqual([{ id: factor, type: 'totp' }]);
    expect(after.html).toContain('Authenticator app');
    expect(after.html).toContain('Backup codes left: 10');
    // Shown once: the account page never shows them again.
    for (const code of codes) expect(after.html).not.toContain(code);
    expect(await t.idp.mfa.methods(id)).toMatchObject({ totp: true, backupCodes: 10 });
    const events = await t.idp.db.prisma.auditEvent.findMany({ where: { subject: id, type: { in: ['mfa.enrolled', 'mfa.backup_codes_generated'] } } });
    expect(events.map((e) => e.type).sort()).toEqual(['mfa.backup_codes_generated', 'mfa.enrolled']);
    expect(JSON.stringify(events)).not.toContain(secret);
    for (const code of codes) expect(JSON.stringify(events)).not.toContain(code);

    // The next sign-in asks for the second step.
    const again = await openAccount(new Browser(), email, { secondStep: nextTotp(secret) });
    expect(listedFactors(again.html)).toHaveLength(1);
  });

  it('regenerates backup codes: the old set stops working, the new one signs in once', async () => {
    const { email, id } = await newAccount('backup');
    const browser = new Browser();
    const page = await openAccount(browser, email);
    const { confirmed } = await addTotp(browser, page);
    const oldCodes = backupCodesIn(confirmed.html);

    const regenerated = await post(browser, '/account/mfa/backup-codes', { csrf: page.csrf });
    expect(regenerated.status).toBe(200);
    const newCodes = backupCodesIn(regenerated.html);
    expect(newCodes).toHaveLength(10);
    for (const code of newCodes) expect(oldCodes).not.toContain(code);
    expect(await t.idp.mfa.methods(id)).toMatchObject({ backupCodes: 10 });

    // An old code is refused at sign-in (and the user stays on the second-step screen) …
    const other = new Browser();
    let { response, url } = await other.follow(new URL('/account', origin), origin);
    let html = await response.text();
    ({ response, url } = await other.postForm(new URL(formAction(html, 'identify'), origin), { csrf: csrfOf(html), email }, origin));
    html = await response.text();
    ({ response, url } = await other.postForm(new URL(formAction(html, 'password'), origin), { csrf: csrfOf(html), password }, origin));
    html = await response.text();
    expect(html).toContain('name="method" value="backup_code"');
    ({ response, url } = await other.postForm(new URL(formAction(html, 'mfa'), origin), { csrf: csrfOf(html), method: 'backup_code', code: oldCodes[0]! }, origin));
    expect(response.status).toBe(401);
    html = await response.text();
    expect(url.pathname).toMatch(/^\/interaction\//);
    expect(errorsOf(html)).not.toBe('');
    // … and a new one works, once.
    ({ response, url } = await other.postForm(new URL(formAction(html, 'mfa'), origin), { csrf: csrfOf(html), method: 'backup_code', code: newCodes[0]! }, origin));
    expect(url.pathname).toBe('/account');
    expect(response.status).toBe(200);
    expect(await response.text()).toContain('Backup codes left: 9');

    const reused = await t.idp.mfa.verify('test-reuse', id, { method: 'backup_code', code: newCodes[0]! });
    expect(reused.ok).toBe(false);
    // Without a method there is nothing to regenerate for.
    const { email: bareEmail } = await newAccount('backup-bare');
    const bare = new Browser();
    const barePage = await openAccount(bare, bareEmail);
    const refused = await post(bare, '/account/mfa/backup-codes', { csrf: barePage.csrf });
    expect(refused.status).toBe(400);
  });

  it('removes a method; the last one takes the backup codes with it; unknown ids are 404', async () => {
    const { email, id } = await newAccount('remove');
    const browser = new Browser();
    const page = await openAccount(browser, email);
    const { factor } = await addTotp(browser, page);
    expect(await t.idp.mfa.methods(id)).toMatchObject({ totp: true, backupCodes: 10 });

    const unknown = await post(browser, '/account/mfa/00000000-0000-4000-8000-000000000000/remove', { csrf: page.csrf });
    expect(unknown.status).toBe(404);
    expect(errorsOf(unknown.html)).toContain('no such method on your account');

    const removed = await post(browser, `/account/mfa/${factor}/remove`, { csrf: page.csrf });
    expect(removed.status).toBe(303);
    expect(removed.location).toBe('/account?done=account.mfaRemoved');
    const after = await openAccount(browser, email, { path: removed.location! });
    expect(after.html).toContain('The method has been removed.');
    expect(after.html).toContain('No second step is set up.');
    expect(listedFactors(after.html)).toEqual([]);
    expect(await t.idp.mfa.methods(id)).toEqual({ totp: false, webauthn: false, backupCodes: 0 });
    expect(await t.idp.db.prisma.auditEvent.count({ where: { subject: id, type: 'mfa.removed' } })).toBe(1);
    // Signing in again needs only the password.
    await openAccount(new Browser(), email);
  });

  it('refuses a missing, forged or other session\'s CSRF token with 403 and changes nothing', async () => {
    const alice = await newAccount('csrf-a');
    const bob = await newAccount('csrf-b');
    const aliceBrowser = new Browser();
    const bobBrowser = new Browser();
    const alicePage = await openAccount(aliceBrowser, alice.email);
    const bobPage = await openAccount(bobBrowser, bob.email);
    expect(alicePage.csrf).not.toBe(bobPage.csrf);

    const before = await t.idp.db.prisma.auditEvent.count({ where: { type: 'csrf.rejected', subject: alice.id } });
    for (const csrf of [undefined, 'forged', bobPage.csrf]) {
      for (const [path, fields] of [['/account/mfa/add', { method: 'totp' }], ['/account/mfa/backup-codes', {}], ['/account/mfa/confirm', { method: 'totp', factor: 'x', code: '123456' }]] as const) {
        const result = await post(aliceBrowser, path, { ...fields, ...(csrf === undefined ? {} : { csrf }) });
        expect(result.status, `${path} with csrf ${csrf}`).toBe(403);
      }
    }
    expect(await t.idp.db.prisma.mfaFactor.count({ where: { accountId: alice.id } })).toBe(0);
    expect(await t.idp.db.prisma.auditEvent.count({ where: { type: 'csrf.rejected', subject: alice.id } })).toBe(before + 9);
    // Without any session: 401, not a change.
    const anonymous = await post(new Browser(), '/account/mfa/add', { csrf: alicePage.csrf, method: 'totp' });
    expect(anonymous.status).toBe(401);
  });

  it('sends a sign-in older than ten minutes to sign in again (with the second step) before any change', async () => {
    const { email, id } = await newAccount('fresh');
    const browser = new Browser();
    const page = await openAccount(browser, email);
    const { secret, factor } = await addTotp(browser, page);

    await ageSignIn(browser, 3600);
    // The page still opens: only changes need a recent sign-in.
    const stale = await openAccount(browser, email);
    expect(listedFactors(stale.html)).toHaveLength(1);
    for (const [path, fields] of [['/account/mfa/add', { method: 'totp' }], ['/account/mfa/confirm', { method: 'totp', factor, code: '123456' }], ['/account/mfa/backup-codes', {}], [`/account/mfa/${factor}/remove`, {}]] as const) {
      const result = await post(browser, path, { csrf: stale.csrf, ...fields });
      expect(result.status, path).toBe(303);
      expect(result.location, path).toBe('/account/login?fresh=1');
    }
    expect(listedFactors((await openAccount(browser, email)).html)).toHaveLength(1);
    expect(await t.idp.mfa.methods(id)).toMatchObject({ totp: true, backupCodes: 10 });

    // Just inside the limit still counts as recent.
    await ageSignIn(browser, 500);
    const recentEnough = await post(browser, '/account/mfa/add', { csrf: stale.csrf, method: 'totp' });
    expect(recentEnough.status).toBe(200);

    // The redirect starts a new sign-in with prompt=login, which asks for the second step again.
    await ageSignIn(browser, 3600);
    const login = await browser.request(new URL('/account/login?fresh=1', origin));
    expect(login.status).toBe(302);
    const auth = new URL(login.headers.get('location')!);
    expect(auth.pathname).toBe('/auth');
    expect(auth.searchParams.get('prompt')).toBe('login');
    expect(auth.searchParams.get('client_id')).toBe('idp-account');
    const fresh = await openAccount(browser, email, { path: '/account/login?fresh=1', secondStep: nextTotp(secret) });
    const removed = await post(browser, `/account/mfa/${factor}/remove`, { csrf: fresh.csrf });
    expect(removed.status).toBe(303);
    expect(removed.location).toBe('/account?done=account.mfaRemoved');
  });

  it('a sign-in that skipped the second step on a remembered device changes no factor (sent to sign in with one); factors added within the session are managed at once; removing one forgets remembered devices', async () => {
    const { email, id } = await newAccount('remembered');
    // A session that signed in before the account had any factor: what it adds, it manages at once.
    const setup = new Browser();
    const setupPage = await openAccount(setup, email);
    const first = await addTotp(setup, setupPage);
    const backupCodes = backupCodesIn(first.confirmed.html);
    const second = await addTotp(setup, setupPage);
    expect(second.confirmed.status).toBe(303);
    const third = await addTotp(setup, setupPage);
    const removedAtOnce = await post(setup, `/account/mfa/${third.factor}/remove`, { csrf: setupPage.csrf });
    expect(removedAtOnce.status, removedAtOnce.location ?? '').toBe(303);
    expect(removedAtOnce.location).toBe('/account?done=account.mfaRemoved');
    expect((await t.idp.mfa.list(id)).map((f) => f.id).sort()).toEqual([first.factor, second.factor].sort());
    // As if they had been added a minute ago (sign-in times are whole seconds).
    await t.idp.db.prisma.mfaFactor.updateMany({ where: { accountId: id }, data: { createdAt: new Date(Date.now() - 60_000) } });

    // Another browser signs in with the app and remembers the device; then a fresh sign-in there
    // (prompt=login) skips the second step.
    const browser = new Browser();
    await openAccount(browser, email, { secondStep: nextTotp(first.secret), remember: true });
    expect(await t.idp.db.prisma.trustedDevice.count({ where: { accountId: id } })).toBe(1);
    const skipped = await openAccount(browser, email, { path: '/account/login?fresh=1' });
    expect(listedFactors(skipped.html)).toHaveLength(2);
    for (const [path, fields] of [[`/account/mfa/${second.factor}/remove`, {}], ['/account/mfa/add', { method: 'totp' }], ['/account/mfa/backup-codes', {}]] as const) {
      const refused = await post(browser, path, { csrf: skipped.csrf, ...fields });
      expect(refused.status, path).toBe(303);
      expect(refused.location, path).toBe('/account/login?fresh=1&mfa=1');
    }
    expect((await t.idp.mfa.list(id)).map((f) => f.id).sort()).toEqual([first.factor, second.factor].sort());
    expect(await t.idp.mfa.methods(id)).toMatchObject({ backupCodes: 10 });

    // The redirect asks for the second step, even on the remembered device; after it, the change goes through.
    const login = await browser.request(new URL('/account/login?fresh=1&mfa=1', origin));
    expect(login.status).toBe(302);
    expect(new URL(login.headers.get('location')!).searchParams.get('acr_values')).toBe('urn:idp:acr:2fa');
    const proven = await openAccount(browser, email, { path: '/account/login?fresh=1&mfa=1', secondStep: nextTotp(second.secret) });
    const removed = await post(browser, `/account/mfa/${second.factor}/remove`, { csrf: proven.csrf });
    expect(removed.status).toBe(303);
    expect(removed.location).toBe('/account?done=account.mfaRemoved');
    expect((await t.idp.mfa.list(id)).map((f) => f.id)).toEqual([first.factor]);

    // Removing a factor forgot the remembered device: the next sign-in there asks for the second step.
    expect(await t.idp.db.prisma.trustedDevice.count({ where: { accountId: id } })).toBe(0);
    let asked = false;
    await openAccount(browser, email, { path: '/account/login?fresh=1', secondStep: () => ((asked = true), { method: 'backup_code', code: backupCodes[0]! }) });
    expect(asked, 'the second step was asked for').toBe(true);
  });

  // Regression: a factor added moments before a sign-in in the same second once passed for one the
  // session had added itself (sign-in times are whole seconds); the session now records what it added.
  it('a factor added moments before a remembered-device sign-in, in the same second, still needs a sign-in with a factor before it can go', async () => {
    const { email, id } = await newAccount('same-second');
    const setup = new Browser();
    const { secret, factor } = await addTotp(setup, await openAccount(setup, email));
    const browser = new Browser();
    await openAccount(browser, email, { secondStep: nextTotp(secret), remember: true });
    const beforeSignIn = Date.now();
    const skipped = await openAccount(browser, email, { path: '/account/login?fresh=1' });
    const loginTs = await loginTsOf(browser);
    // The factor was added just before this sign-in began (in its second, past its first millisecond).
    await t.idp.db.prisma.mfaFactor.update({ where: { id: factor }, data: { createdAt: new Date(Math.max(beforeSignIn, loginTs * 1000 + 1)) } });
    const refused = await post(browser, `/account/mfa/${factor}/remove`, { csrf: skipped.csrf });
    expect(refused.location).toBe('/account/login?fresh=1&mfa=1');
    expect((await t.idp.mfa.list(id)).map((f) => f.id)).toEqual([factor]);
  });

  it('adds codes by email: the code goes to the account\'s own address over SMTP, never to one the form names', async () => {
    const { email, id } = await newAccount('mail');
    const browser = new Browser();
    const page = await openAccount(browser, email);
    const started = await post(browser, '/account/mfa/add', { csrf: page.csrf, method: 'email', destination: 'attacker@evil.example' });
    expect(started.status, started.html.slice(0, 400)).toBe(200);
    expect(started.html).toContain('name="method" value="email"');
    const message = await smtp.waitFor((m) => m.to.includes(email));
    expect(message.to).toEqual([email]);
    expect(smtp.messages.some((m) => m.to.includes('attacker@evil.example'))).toBe(false);
    const code = smtp.codeIn(message);

    const wrong = await post(browser, '/account/mfa/confirm', { csrf: page.csrf, method: 'email', code: code === '000000' ? '111111' : '000000' });
    expect(wrong.status).toBe(400);
    expect(errorsOf(wrong.html)).toContain('The code is not correct.');
    expect(await t.idp.mfa.hasFactor(id)).toBe(false);

    const right = await post(browser, '/account/mfa/confirm', { csrf: page.csrf, method: 'email', code });
    expect(right.status, right.html.slice(0, 400)).toBe(200);
    expect(backupCodesIn(right.html)).toHaveLength(10);
    const after = await openAccount(browser, email);
    const listed = listedFactors(after.html);
    expect(listed).toEqual([{ id: expect.any(String), type: 'email' }]);
    // The address is shown masked.
    const masked = `${email[0]}••••••@example.com`;
    expect(after.html).toContain(`Email (${masked})`);
    expect(await t.idp.mfa.methods(id)).toMatchObject({ email: masked, backupCodes: 10 });
    // The code was single-use: confirming again with it fails.
    const replay = await post(browser, '/account/mfa/confirm', { csrf: page.csrf, method: 'email', code });
    expect(replay.status).toBe(400);

    // The next sign-in takes an emailed code as the second step.
    smtp.clear();
    const other = new Browser();
    let { response } = await other.follow(new URL('/account', origin), origin);
    let html = await response.text();
    ({ response } = await other.postForm(new URL(formAction(html, 'identify'), origin), { csrf: csrfOf(html), email }, origin));
    html = await response.text();
    ({ response } = await other.postForm(new URL(formAction(html, 'password'), origin), { csrf: csrfOf(html), password }, origin));
    html = await response.text();
    expect(html).toContain(masked);
    ({ response } = await other.postForm(new URL(formAction(html, 'mfa'), origin), { csrf: csrfOf(html), method: 'email', send: '1' }, origin));
    html = await response.text();
    const signInCode = smtp.codeIn(await smtp.waitFor((m) => m.to.includes(email)));
    const done = await other.postForm(new URL(formAction(html, 'mfa'), origin), { csrf: csrfOf(html), method: 'email', code: signInCode }, origin);
    expect(done.url.pathname).toBe('/account');
    expect(done.response.status).toBe(200);
    expect(listedFactors(await done.response.text())).toEqual(listed);
  });

  it('refuses an unknown method with 400, and SMS (no SMS provider configured) as unavailable, not as rate-limited', async () => {
    const { email, id } = await newAccount('methods');
    const browser = new Browser();
    const page = await openAccount(browser, email);
    expect(page.html).not.toContain('name="method" value="sms"');
    const unknown = await post(browser, '/account/mfa/add', { csrf: page.csrf, method: 'carrier-pigeon' });
    expect(unknown.status).toBe(400);
    const badNumber = await post(browser, '/account/mfa/add', { csrf: page.csrf, method: 'sms', destination: '0791234567' });
    expect(badNumber.status).toBe(400);
    expect(errorsOf(badNumber.html)).toContain('international form');
    // A well-formed number, but this IdP cannot send SMS: nothing was sent and nothing was limited.
    const sms = await post(browser, '/account/mfa/add', { csrf: page.csrf, method: 'sms', destination: '+41791234567' });
    expect(sms.status, errorsOf(sms.html)).toBe(400);
    expect(errorsOf(sms.html)).not.toMatch(/too many/i);
    expect(await t.idp.db.prisma.auditEvent.count({ where: { subject: id, type: 'mfa.code_rate_limited' } })).toBe(0);
    expect(await t.idp.mfa.hasFactor(id)).toBe(false);
  });

  it('keeps accounts apart: another account\'s pending or confirmed factor can be neither confirmed nor removed', async () => {
    const alice = await newAccount('apart-a');
    const bob = await newAccount('apart-b');
    const aliceBrowser = new Browser();
    const bobBrowser = new Browser();
    const alicePage = await openAccount(aliceBrowser, alice.email);
    const bobPage = await openAccount(bobBrowser, bob.email);
    const { factor: confirmed } = await addTotp(aliceBrowser, alicePage);
    const pending = await post(aliceBrowser, '/account/mfa/add', { csrf: alicePage.csrf, method: 'totp' });
    const pendingSecret = /<code data-totp-secret>([A-Z2-7]+)<\/code>/.exec(pending.html)![1]!;
    const pendingFactor = /name="factor" value="([^"]+)"/.exec(pending.html)![1]!;

    const stolen = await post(bobBrowser, '/account/mfa/confirm', { csrf: bobPage.csrf, method: 'totp', factor: pendingFactor, code: totpCodeAt(pendingSecret, Date.now()) });
    expect(stolen.status).toBe(400);
    expect(await t.idp.mfa.hasFactor(bob.id)).toBe(false);
    const removed = await post(bobBrowser, `/account/mfa/${confirmed}/remove`, { csrf: bobPage.csrf });
    expect(removed.status).toBe(404);
    expect(listedFactors((await openAccount(aliceBrowser, alice.email)).html)).toEqual([{ id: confirmed, type: 'totp' }]);
    // Alice's pending factor is still hers to confirm.
    const mine = await post(aliceBrowser, '/account/mfa/confirm', { csrf: alicePage.csrf, method: 'totp', factor: pendingFactor, code: totpCodeAt(pendingSecret, Date.now()) });
    expect(mine.status).toBe(303);
    expect(await t.idp.db.prisma.mfaFactor.count({ where: { accountId: alice.id, confirmedAt: { not: null } } })).toBe(2);
  });

  it('an administrator\'s `idp users reset-mfa` removes every method, backup code and remembered device, with an audit row', async () => {
    const { email, id } = await newAccount('reset');
    const browser = new Browser();
    const page = await openAccount(browser, email);
    const { secret } = await addTotp(browser, page);
    const mail = await post(browser, '/account/mfa/add', { csrf: page.csrf, method: 'email' });
    expect(mail.status).toBe(200);
    const code = smtp.codeIn(await smtp.waitFor((m) => m.to.includes(email)));
    const confirmed = await post(browser, '/account/mfa/confirm', { csrf: page.csrf, method: 'email', code });
    // Not the first method: no new backup codes, straight back to the page.
    expect(confirmed.status).toBe(303);
    expect(confirmed.location).toBe('/account?done=account.mfaAdded');
    // A second sign-in on another browser, remembering that device.
    const remembered = new Browser();
    await openAccount(remembered, email, { secondStep: nextTotp(secret), remember: true });
    expect(remembered.cookie('idp.device')).toBeTruthy();
    expect(await t.idp.db.prisma.trustedDevice.count({ where: { accountId: id } })).toBe(1);
    expect(await t.idp.mfa.methods(id)).toMatchObject({ totp: true, email: expect.any(String), backupCodes: 10 });

    const cfg = t.config;
    const result = await runIdp(['users', 'reset-mfa', email], {
      env: {
        DATABASE_URL: cfg.DATABASE_URL, MASTER_KEY_FILE: cfg.MASTER_KEY_FILE, ISSUER: cfg.ISSUER, LOG_LEVEL: 'warn',
        ...(cfg.REDIS_URL ? { REDIS_URL: cfg.REDIS_URL, REDIS_KEY_PREFIX: cfg.REDIS_KEY_PREFIX! } : {}),
      },
    });
    expect(result.code, `stdout: ${result.stdout}\nstderr: ${result.stderr}`).toBe(0);
    expect(jsonOf(result)).toEqual({ email, factors: 2, devices: 1 });

    expect(await t.idp.mfa.methods(id)).toEqual({ totp: false, webauthn: false, backupCodes: 0 });
    expect(await t.idp.db.prisma.mfaFactor.count({ where: { accountId: id } })).toBe(0);
    expect(await t.idp.db.prisma.trustedDevice.count({ where: { accountId: id } })).toBe(0);
    const audit = await t.idp.db.prisma.auditEvent.findMany({ where: { subject: id, type: 'mfa.reset' } });
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ outcome: 'success', actor: 'cli' });
    expect(JSON.parse(audit[0]!.details!)).toEqual({ factors: 2, devices: 1 });
    // The account page shows nothing left, and signing in needs only the password again.
    const after = await openAccount(browser, email);
    expect(after.html).toContain('No second step is set up.');
    await openAccount(new Browser(), email);
  });

  describe('with SMS through a provider and SMS_ALLOWED_PREFIXES=+41', () => {
    let withSms: TestIdp;
    let sms: FakeSmsProviders;

    beforeAll(async () => {
      sms = await startFakeSmsProviders();
      withSms = await startIdp(backend, {
        SMS_PROVIDER: 'twilio', SMS_FROM: '+15005550006', TWILIO_ACCOUNT_SID: sms.twilio.accountSid, TWILIO_AUTH_TOKEN: sms.twilio.authToken, SMS_API_BASE_URL: sms.url,
        SMS_ALLOWED_PREFIXES: '+41',
      });
    });
    afterAll(async () => {
      await withSms?.stop();
      await sms?.close();
    });

    it('refuses a +49 number with 400 and says why, sending nothing; a +41 number gets its code', async () => {
      const email = uniqueEmail('sms-prefix');
      const account = await withSms.idp.accounts.create({ email, password, emailVerified: true });
      const o = withSms.issuer;
      const browser = new Browser();
      let { response, url } = await browser.follow(new URL('/account', o), o);
      let html = await response.text();
      ({ response, url } = await browser.postForm(new URL(formAction(html, 'identify'), o), { csrf: csrfOf(html), email }, o));
      html = await response.text();
      ({ response, url } = await browser.postForm(new URL(formAction(html, 'password'), o), { csrf: csrfOf(html), password }, o));
      expect(url.pathname).toBe('/account');
      html = await response.text();
      expect(html).toContain('name="method" value="sms"');
      const csrf = csrfOf(html);
      const add = async (destination: string) => {
        const result = await browser.request(new URL('/account/mfa/add', o), { method: 'POST', headers: form, body: new URLSearchParams({ csrf, method: 'sms', destination }).toString() });
        return { status: result.status, html: await result.text() };
      };

      const requestsBefore = sms.requests;
      const refused = await add('+49 151 23456789');
      expect(refused.status).toBe(400);
      expect(errorsOf(refused.html)).toContain('codes cannot be sent to phone numbers of this country');
      expect(sms.requests, 'nothing reached the SMS provider').toBe(requestsBefore);
      expect(await withSms.idp.db.prisma.auditEvent.count({ where: { subject: account.id, type: { in: ['mfa.code_sent', 'mfa.code_rate_limited'] } } })).toBe(0);

      const allowed = await add('+41 79 123 45 67');
      expect(allowed.status, errorsOf(allowed.html)).toBe(200);
      await expect.poll(() => sms.received.filter((m) => m.to === '+41791234567').length).toBe(1);
      expect(sms.received.some((m) => m.to.includes('49151'))).toBe(false);
      expect(await withSms.idp.mfa.hasFactor(account.id)).toBe(false);
    });
  });

  describe('with MFA_REQUIRED=true', () => {
    let required: TestIdp;
    let requiredOrigin: string;

    beforeAll(async () => {
      required = await startIdp(backend, { MFA_REQUIRED: 'true' });
      requiredOrigin = required.issuer;
    });
    afterAll(async () => {
      await required?.stop();
    });

    it('keeps the last method: removing one of two is allowed, removing the only one is refused with 400', async () => {
      const email = uniqueEmail('required');
      const account = await required.idp.accounts.create({ email, password, emailVerified: true });
      const browser = new Browser();
      const o = requiredOrigin;
      // Sign-in makes the user set up a second step first (authenticator app), then shows backup codes.
      let { response, url } = await browser.follow(new URL('/account', o), o);
      let html = await response.text();
      ({ response, url } = await browser.postForm(new URL(formAction(html, 'identify'), o), { csrf: csrfOf(html), email }, o));
      html = await response.text();
      ({ response, url } = await browser.postForm(new URL(formAction(html, 'password'), o), { csrf: csrfOf(html), password }, o));
      html = await response.text();
      expect(html).toContain('Set up a second step');
      ({ response, url } = await browser.postForm(new URL(formAction(html, 'mfa-enrol'), o), { csrf: csrfOf(html), method: 'totp', start: '1' }, o));
      html = await response.text();
      const secret = /<code data-totp-secret>([A-Z2-7]+)<\/code>/.exec(html)![1]!;
      ({ response, url } = await browser.postForm(new URL(formAction(html, 'mfa-enrol'), o), { csrf: csrfOf(html), method: 'totp', code: totpCodeAt(secret, Date.now()) }, o));
      html = await response.text();
      expect(backupCodesIn(html)).toHaveLength(10);
      ({ response, url } = await browser.postForm(new URL(formAction(html, 'backup-codes'), o), { csrf: csrfOf(html) }, o));
      expect(url.pathname).toBe('/account');
      html = await response.text();
      const csrf = csrfOf(html);
      const [first] = listedFactors(html);
      expect(first).toMatchObject({ type: 'totp' });

      // The only method cannot go.
      const refused = await browser.request(new URL(`/account/mfa/${first!.id}/remove`, o), { method: 'POST', headers: form, body: new URLSearchParams({ csrf }).toString() });
      expect(refused.status).toBe(400);
      expect(errorsOf(await refused.text())).toContain('this is your only second factor and your organisation requires one: add another method first');
      expect(await required.idp.mfa.hasFactor(account.id)).toBe(true);

      // A second authenticator app; it is not the first method, so no new backup codes.
      const started = await browser.request(new URL('/account/mfa/add', o), { method: 'POST', headers: form, body: new URLSearchParams({ csrf, method: 'totp' }).toString() });
      const startedHtml = await started.text();
      const secret2 = /<code data-totp-secret>([A-Z2-7]+)<\/code>/.exec(startedHtml)![1]!;
      const factor2 = /name="factor" value="([^"]+)"/.exec(startedHtml)![1]!;
      const added = await browser.request(new URL('/account/mfa/confirm', o), { method: 'POST', headers: form, body: new URLSearchParams({ csrf, method: 'totp', factor: factor2, code: totpCodeAt(secret2, Date.now()) }).toString() });
      expect(added.status).toBe(303);
      expect(added.headers.get('location')).toBe('/account?done=account.mfaAdded');

      // One of two may go …
      const removed = await browser.request(new URL(`/account/mfa/${first!.id}/remove`, o), { method: 'POST', headers: form, body: new URLSearchParams({ csrf }).toString() });
      expect(removed.status).toBe(303);
      expect(removed.headers.get('location')).toBe('/account?done=account.mfaRemoved');
      // … but not the one left.
      const last = await browser.request(new URL(`/account/mfa/${factor2}/remove`, o), { method: 'POST', headers: form, body: new URLSearchParams({ csrf }).toString() });
      expect(last.status).toBe(400);
      expect(errorsOf(await last.text())).toContain('your organisation requires one');
      const page = await browser.follow(new URL('/account', o), o);
      expect(listedFactors(await page.response.text())).toEqual([{ id: factor2, type: 'totp' }]);
      expect(await required.idp.mfa.methods(account.id)).toMatchObject({ totp: true, backupCodes: 10 });
    });
  });
}

describe.each(backends)('account page second steps on %s', (backend) => suite(backend));
