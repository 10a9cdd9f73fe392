// Multi-factor sign-in end to end: openid-client as the relying party, our interaction screens
// posted over HTTP as a browser would, ID tokens verified with jose against the JWKS, and every
// second factor delivered for real: email codes through a real SMTP server, SMS codes through a
// local server speaking Twilio's and Vonage's REST APIs (the real services cannot be reached from
// here, and would need real phones), TOTP codes computed from the secret shown on the enrolment
// screen, passkeys answered by a software WebAuthn authenticator. Both backends: SQLite, and
// PostgreSQL with Redis for the short-lived state.
//
// Two providers per backend: "main" (MFA only for the client "strict", by acr_values, or for
// accounts with a factor; remembered devices; SMS through Twilio) and "required" (MFA_REQUIRED for
// everyone; SMS through Vonage).
import { randomUUID } from 'node:crypto';
import type { PublicKeyCredentialCreationOptionsJSON, PublicKeyCredentialRequestOptionsJSON } from '@simplewebauthn/server';
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { totpCodeAt, totpStep } from '../../src/mfa/totp.ts';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';
import { startFakeSmsProviders, type FakeSmsProviders } from '../helpers/fake-sms-providers.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { backends, startIdp, type Backend, type TestIdp } from '../helpers/server.ts';
import { startSmtp, type TestSmtp } from '../helpers/smtp.ts';
import { SoftAuthenticator } from '../helpers/soft-authenticator.ts';
import { sleep } from '../helpers/time.ts';

const password = 'correct horse battery staple';
const redirectUri = 'http://localhost:8080/callback';
const insecure = { execute: [oidc.allowInsecureRequests] };
const acr1 = 'urn:idp:acr:1fa';
const acr2 = 'urn:idp:acr:2fa';
const acrPhr = 'urn:idp:acr:phr';
const lockoutThreshold = 5;

// ---- The relying party and the provider under test ----------------------------------------------

interface Side {
  t: TestIdp;
  smtp: TestSmtp;
  rps: Map<string, oidc.Configuration>;
  jwks: ReturnType<typeof createRemoteJWKSet>;
}

async function startSide(backend: Backend, smtp: TestSmtp, env: Record<string, string>, clientIds: string[]): Promise<Side> {
  const t = await startIdp(backend, {
    SMTP_URL: smtp.url,
    LOCKOUT_THRESHOLD: String(lockoutThreshold),
    MAX_LOGIN_ATTEMPTS_PER_INTERACTION: '8',
    // Every request of this file comes from 127.0.0.1: the per-network throttle must not interfere.
    SIGNIN_IP_FAILURES: '1000',
    SIGNIN_IP_ACCOUNT_FAILURES: '200',
    ...env,
  });
  const rps = new Map<string, oidc.Configuration>();
  for (const client_id of clientIds) {
    const created = await t.idp.clients.create({ client_id, redirect_uris: [redirectUri], first_party: true });
    rps.set(client_id, await oidc.discovery(new URL(t.issuer), client_id, created.clientSecret!, undefined, insecure));
  }
  return { t, smtp, rps, jwks: createRemoteJWKSet(new URL(rps.get(clientIds[0]!)!.serverMetadata().jwks_uri!)) };
}

type Screen = { kind: 'page'; status: number; html: string; url: URL } | { kind: 'callback'; url: URL };
type Stage = 'identify' | 'password' | 'signin_code' | 'mfa' | 'mfa_enrol' | 'backup_codes' | 'callback' | 'other';

/** One authorization request and the browser walking through its screens. */
interface Visit {
  s: Side;
  browser: Browser;
  clientId: string;
  request: Awaited<ReturnType<typeof authorizationRequest>>;
  screen: Screen;
}

async function screenOf(browser: Browser, pending: Promise<{ response: Response; url: URL }>, origin: string): Promise<Screen> {
  for (let hops = 0; ; hops++) {
    const { response, url } = await pending;
    if (url.origin !== origin) return { kind: 'callback', url };
    const html = await response.text();
    // oidc-provider's self-submitting forms (ending the previous account's session when another
    // account signs in in the same browser): a browser posts them at once.
    const auto = /document\.forms\[0\]\.submit\(\)[\s\S]*?<form method="post" action="([^"]+)">([\s\S]*?)<\/form>/.exec(html);
    if (!auto || hops >= 3) return { kind: 'page', status: response.status, html, url };
    const fields = Object.fromEntries([...auto[2]!.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"\/?>/g)].map((m) => [m[1]!, m[2]!]));
    pending = browser.postForm(new URL(auto[1]!, url), fields, origin);
  }
}

function stageOf(screen: Screen): Stage {
  if (screen.kind === 'callback') return 'callback';
  const has = (suffix: string) => new RegExp(`action="/interaction/[^"]+/${suffix}"`).test(screen.html);
  if (has('identify') && screen.html.includes('name="email"')) return 'identify';
  if (has('password') && screen.html.includes('name="password"')) return 'password';
  if (has('signin-code')) return 'signin_code';
  if (has('mfa-enrol')) return 'mfa_enrol';
  if (has('mfa')) return 'mfa';
  if (has('backup-codes')) return 'backup_codes';
  return 'other';
}

function page(v: Visit): { status: number; html: string; url: URL } {
  expect(v.screen.kind, v.screen.kind === 'callback' ? `redirected to ${v.screen.url.href}` : '').toBe('page');
  return v.screen as Extract<Screen, { kind: 'page' }>;
}

function expectStage(v: Visit, stage: Stage): string {
  const found = stageOf(v.screen);
  const detail = v.screen.kind === 'page' ? v.screen.html.replace(/\s+/g, ' ').slice(0, 600) : v.screen.url.href;
  expect(found, `expected the ${stage} screen: ${detail}`).toBe(stage);
  return v.screen.kind === 'page' ? v.screen.html : '';
}

async function visit(s: Side, browser: Browser, params: Record<string, string> = {}, clientId = 'webapp'): Promise<Visit> {
  const request = await authorizationRequest(s.rps.get(clientId)!, { redirect_uri: redirectUri, scope: 'openid email', ...params });
  return { s, browser, clientId, request, screen: await screenOf(browser, browser.follow(request.url, s.t.issuer), s.t.issuer) };
}

/** Posts the form of the current screen whose action ends with `action`, with the flow's CSRF token. */
async function post(v: Visit, action: string, fields: Record<string, string>): Promise<Screen> {
  const { html } = page(v);
  const target = new URL(formAction(html, action), v.s.t.issuer);
  v.screen = await screenOf(v.browser, v.browser.postForm(target, { csrf: csrfOf(html), ...fields }, v.s.t.issuer), v.s.t.issuer);
  return v.screen;
}

/** The interaction's uid (the flow's key in the short-lived store). */
function uidOf(v: Visit): string {
  return /action="\/interaction\/([^/"]+)\//.exec(page(v).html)![1]!;
}

/** Email and password, as typed on the identify and password screens. */
async function passwordSignIn(v: Visit, email: string): Promise<Screen> {
  expectStage(v, 'identify');
  await post(v, 'identify', { email });
  expectStage(v, 'password');
  return post(v, 'password', { password });
}

/** The relying party redeems the code and verifies the ID token against the provider's JWKS. */
async function idToken(v: Visit): Promise<JWTPayload & { amr?: string[]; acr?: string }> {
  expect(v.screen.kind, v.screen.kind === 'page' ? `still on a page: ${v.screen.html.replace(/\s+/g, ' ').slice(0, 600)}` : '').toBe('callback');
  const callback = v.screen.url;
  expect(callback.searchParams.get('error'), callback.href).toBeNull();
  const rp = v.s.rps.get(v.clientId)!;
  const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: v.request.verifier, expectedState: v.request.state, expectedNonce: v.request.nonce });
  const { payload } = await jwtVerify(tokens.id_token!, v.s.jwks, { issuer: v.s.t.issuer, audience: v.clientId });
  expect(payload.nonce).toBe(v.request.nonce);
  return payload as JWTPayload & { amr?: string[]; acr?: string };
}

async function newAccount(s: Side, email: string, extra: { userType?: string; roles?: string[] } = {}) {
  return s.t.idp.accounts.create({ email, password, emailVerified: true, name: email.split('@')[0], ...extra });
}

/** Audit rows of a type, oldest first. */
async function audits(s: Side, type: string, subject?: string) {
  const rows = await s.t.idp.db.prisma.auditEvent.findMany({ where: { type, ...(subject ? { subject } : {}) }, orderBy: { seq: 'asc' } });
  return rows.map((r) => ({ ...r, data: JSON.parse(r.details) as Record<string, unknown> }));
}

/** The reason of the last rejected second factor of an interaction, from the audit log. */
async function lastMfaRejection(s: Side, uid: string): Promise<unknown> {
  const rows = (await audits(s, 'login.mfa_rejected')).filter((r) => r.data.interaction === uid);
  return rows.at(-1)?.data.reason;
}

// ---- Second factors as the user's devices produce them ---------------------------------------------


/**
 * Waits, if need be, until the current 30-second TOTP step has at least 4 s left, so a code
 * computed now is checked by the server in the same step (it matters for the step before).
 */
async function steadyTotpClock(): Promise<void> {
  const intoStep = Date.now() % 30_000;
  if (intoStep > 26_000) await sleep(30_000 - intoStep + 50);
}

/** A six-digit code that is none of the codes of `secret` around now. */
function wrongTotp(secret: string): string {
  const near = new Set([-2, -1, 0, 1, 2].map((d) => totpCodeAt(secret, Date.now() + d * 30_000)));
  return ['000000', '111111', '222222'].find((c) => !near.has(c))!;
}

/**
 * An authenticator app enrolled through the MFA service. The confirming code spends the current
 * time step; the factor's last used step is then set two minutes back, as if it had been enrolled
 * then, so that every step around now is free for the test.
 */
async function arrangeTotp(s: Side, account: { id: string; email: string }): Promise<string> {
  const enrolment = await s.t.idp.mfa.startTotp(account.id, account.email);
  expect(await s.t.idp.mfa.confirmTotp(account.id, enrolment.factorId, totpCodeAt(enrolment.secret, Date.now()))).toBe(true);
  await s.t.idp.db.prisma.mfaFactor.update({ where: { id: enrolment.factorId }, data: { lastUsedStep: totpStep(Date.now() - 120_000) } });
  return enrolment.secret;
}

/** HTML attribute text back to the characters (escapeHtml writes numeric references). */
function unescapeAttribute(value: string): string {
  return value
    .replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n)))
    .replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

/** The WebAuthn options of the page's passkey form, as the browser script reads them. */
function webauthnOptions<T extends 'register' | 'authenticate'>(html: string, mode: T): T extends 'register' ? PublicKeyCredentialCreationOptionsJSON : PublicKeyCredentialRequestOptionsJSON {
  const match = new RegExp(`data-webauthn="${mode}" data-options="([^"]*)"`).exec(html);
  expect(match, `the page has a passkey form (${mode})`).toBeTruthy();
  return JSON.parse(unescapeAttribute(match![1]!));
}

function backupCodesOn(html: string): string[] {
  return [...html.matchAll(/<li><code>([^<]+)<\/code><\/li>/g)].map((m) => m[1]!);
}

/** The newest email to `to` that arrives after `since` messages, and the code in it. */
async function mailedCode(s: Side, to: string, since: number): Promise<string> {
  const message = await s.smtp.waitFor((m) => m.to.includes(to) && s.smtp.messages.indexOf(m) >= since);
  return s.smtp.codeIn(message);
}

async function smsCode(fake: FakeSmsProviders, since: number): Promise<string> {
  for (let i = 0; i < 100 && fake.received.length <= since; i++) await sleep(20);
  const message = fake.received[since];
  expect(message, 'an SMS reached the provider').toBeDefined();
  return /\b(\d{6})\b/.exec(message!.text)![1]!;
}

/** Makes the pending email / SMS code of this flow expire, in whichever store holds it. */
async function expireCode(s: Side, key: string): Promise<void> {
  const redis = s.t.idp.redis;
  if (redis) {
    // RedisExpiringValues keeps `key` as "kv:<key>" (under the deployment's key prefix).
    expect(await redis.exists(`kv:${key}`), `the code is stored in Redis as kv:${key}`).toBe(1);
    await redis.pexpire(`kv:${key}`, 1);
    for (let i = 0; i < 50 && (await redis.exists(`kv:${key}`)); i++) await sleep(5);
    expect(await redis.exists(`kv:${key}`)).toBe(0);
  } else {
    const { count } = await s.t.idp.db.prisma.expiringValue.updateMany({ where: { key }, data: { expiresAt: new Date(Date.now() - 1000) } });
    expect(count, `the code is stored in the ExpiringValue table as ${key}`).toBe(1);
  }
}

// ---- The suite ---------------------------------------------------------------------------------------

describe.each(backends)('MFA end to end on %s', (backend) => {
  let smtpMain: TestSmtp;
  let smtpRequired: TestSmtp;
  let sms: FakeSmsProviders;
  let main: Side;
  let required: Side;
  const at = (name: string) => `${name}@example.com`;

  beforeAll(async () => {
    [smtpMain, smtpRequired, sms] = await Promise.all([startSmtp(), startSmtp(), startFakeSmsProviders()]);
    [main, required] = await Promise.all([
      startSide(backend, smtpMain, {
        MFA_REQUIRED_CLIENTS: 'strict',
        MFA_REMEMBER_DEVICE_DAYS: '30',
        SMS_PROVIDER: 'twilio',
        SMS_FROM: '+15005550006',
        TWILIO_ACCOUNT_SID: sms.twilio.accountSid,
        TWILIO_AUTH_TOKEN: sms.twilio.authToken,
        SMS_API_BASE_URL: sms.url,
      }, ['webapp', 'strict']),
      startSide(backend, smtpRequired, {
        MFA_REQUIRED: 'true',
        SMS_PROVIDER: 'vonage',
        SMS_FROM: '+447700900000',
        VONAGE_API_KEY: sms.vonage.apiKey,
        VONAGE_API_SECRET: sms.vonage.apiSecret,
        SMS_API_BASE_URL: sms.url,
      }, ['webapp']),
    ]);
  });

  afterAll(async () => {
    await Promise.all([main?.t.stop(), required?.t.stop()]);
    await Promise.all([smtpMain?.stop(), smtpRequired?.stop(), sms?.close()]);
  });

  it('discovery lists the three acr values', () => {
    const supported = main.rps.get('webapp')!.serverMetadata().acr_values_supported;
    expect(supported).toEqual(expect.arrayContaining([acr1, acr2, acrPhr]));
    expect(new Set(supported).size).toBe(supported!.length);
  });

  it('MFA_REQUIRED: enrolment of an authenticator app at sign-in, backup codes once, then TOTP at the next sign-in', async () => {
    const s = required;
    const account = await newAccount(s, at('enrol-totp'));
    const v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    // No token yet: the account has no factor, so it must set one up.
    let html = expectStage(v, 'mfa_enrol');
    for (const method of ['totp', 'webauthn', 'email', 'sms']) expect(html).toContain(`name="method" value="${method}"`);
    expect(html).not.toContain('value="backup_code"');

    await post(v, 'mfa-enrol', { method: 'totp', start: '1' });
    html = expectStage(v, 'mfa_enrol');
    const qr = /<img class="qr" alt="QR code" src="([^"]+)"/.exec(html)?.[1];
    expect(qr, 'a QR code is shown').toBeTruthy();
    const png = unescapeAttribute(qr!);
    expect(png).toMatch(/^data:image\/png;base64,/);
    expect(Buffer.from(png.slice('data:image/png;base64,'.length), 'base64').subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    let secret = /<code data-totp-secret>([A-Z2-7]{32})<\/code>/.exec(html)?.[1];
    expect(secret, 'the secret is shown for typing').toBeTruthy();
    // The secret is shown, never stored in the flow.
    const uid = uidOf(v);
    const storedFlow = s.t.idp.redis ? await s.t.idp.redis.get(`kv:flow:${uid}`) : (await s.t.idp.db.prisma.expiringValue.findUnique({ where: { key: `flow:${uid}` } }))?.value;
    expect(storedFlow).toBeTruthy();
    expect(storedFlow).not.toContain(secret);

    // A wrong first code: refused, nothing enrolled.
    await post(v, 'mfa-enrol', { method: 'totp', code: wrongTotp(secret!) });
    html = expectStage(v, 'mfa_enrol');
    expect(html).toContain('The code is not correct.');
    expect(await s.t.idp.mfa.list(account.id)).toEqual([]);
    // The screen now offers the methods again (see the next test): set the app up afresh. Only the
    // newest QR code counts; the first secret is dropped.
    expect(html).toMatch(/name="method" value="totp"><input type="hidden" name="start" value="1">/);
    await post(v, 'mfa-enrol', { method: 'totp', start: '1' });
    const fresh = /<code data-totp-secret>([A-Z2-7]{32})<\/code>/.exec(expectStage(v, 'mfa_enrol'))![1]!;
    expect(fresh).not.toBe(secret);
    secret = fresh;
    await post(v, 'mfa-enrol', { method: 'totp', code: totpCodeAt(secret, Date.now()) });
    html = expectStage(v, 'backup_codes');
    const codes = backupCodesOn(html);
    expect(codes.length).toBeGreaterThanOrEqual(8);
    expect(new Set(codes).size).toBe(codes.length);
    // Shown once: the same screen loaded again no longer has them.
    const again = await screenOf(v.browser, v.browser.follow(new URL(`/interaction/${uid}`, s.t.issuer), s.t.issuer), s.t.issuer);
    expect(stageOf(again)).toBe('backup_codes');
    expect(backupCodesOn((again as { html: string }).html)).toEqual([]);
    expect((again as { html: string }).html).toContain('shown once');
    v.screen = again;
    await post(v, 'backup-codes', { acknowledged: '1' });
    const token = await idToken(v);
    expect(token).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });
    expect((await s.t.idp.mfa.list(account.id)).map((f) => f.type)).toEqual(['totp']);
    expect((await audits(s, 'mfa.enrolled', account.id)).map((r) => r.data.method)).toEqual(['totp']);

    // The next sign-in (another browser) asks for the app's code.
    const next = await visit(s, new Browser());
    await passwordSignIn(next, account.email);
    html = expectStage(next, 'mfa');
    expect(html).toContain('id="code-totp"');
    // The enrolment spent the current step; the next one is what the app shows in a moment.
    await post(next, 'mfa', { method: 'totp', code: totpCodeAt(secret!, Date.now() + 30_000) });
    expect(await idToken(next)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });
  });

  it('enrolment: after a wrong first authenticator code the code field stays on the screen for another try', async () => {
    // The user has already added the secret to the app; a typo must not force a new QR code.
    const s = required;
    const account = await newAccount(s, at('enrol-retry'));
    const v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    await post(v, 'mfa-enrol', { method: 'totp', start: '1' });
    const secret = /<code data-totp-secret>([A-Z2-7]{32})<\/code>/.exec(expectStage(v, 'mfa_enrol'))![1]!;
    await post(v, 'mfa-enrol', { method: 'totp', code: wrongTotp(secret) });
    const html = expectStage(v, 'mfa_enrol');
    expect(html).toContain('The code is not correct.');
    expect(html, 'the code field of the authenticator app enrolment').toContain('id="code-totp"');
    await post(v, 'mfa-enrol', { method: 'totp', code: totpCodeAt(secret, Date.now()) });
    expectStage(v, 'backup_codes');
  });

  it('TOTP: the step before and after are accepted, a wrong code and a replayed code are refused', async () => {
    const s = main;
    const account = await newAccount(s, at('totp'));
    const secret = await arrangeTotp(s, account);

    await steadyTotpClock();
    const previous = await visit(s, new Browser());
    await passwordSignIn(previous, account.email);
    expectStage(previous, 'mfa');
    await post(previous, 'mfa', { method: 'totp', code: totpCodeAt(secret, Date.now() - 30_000) });
    expect(await idToken(previous)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });

    const current = await visit(s, new Browser());
    await passwordSignIn(current, account.email);
    const code = totpCodeAt(secret, Date.now());
    await post(current, 'mfa', { method: 'totp', code });
    expect(await idToken(current)).toMatchObject({ acr: acr2, amr: ['pwd', 'otp', 'mfa'] });

    const v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    const uid = uidOf(v);
    // The same code again: refused, although it is still in its window.
    await post(v, 'mfa', { method: 'totp', code });
    expect(page(v).status).toBe(401);
    expect(expectStage(v, 'mfa')).toContain('That did not work.');
    expect(await lastMfaRejection(s, uid)).toBe('replayed');
    await post(v, 'mfa', { method: 'totp', code: wrongTotp(secret) });
    expect(page(v).status).toBe(401);
    expect(await lastMfaRejection(s, uid)).toBe('invalid');
    // The step after now (a phone clock slightly ahead) is accepted.
    await post(v, 'mfa', { method: 'totp', code: totpCodeAt(secret, Date.now() + 30_000) });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });
  });

  it(`lockout: after ${lockoutThreshold} wrong second-factor codes the right one is refused too`, async () => {
    const s = main;
    const account = await newAccount(s, at('lockout'));
    const secret = await arrangeTotp(s, account);
    const v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    const uid = uidOf(v);
    for (let i = 0; i < lockoutThreshold; i++) {
      await post(v, 'mfa', { method: 'totp', code: wrongTotp(secret) });
      expect(page(v).status).toBe(401);
      expectStage(v, 'mfa');
    }
    expect(await audits(s, 'mfa.locked', account.id)).toHaveLength(1);
    await post(v, 'mfa', { method: 'totp', code: totpCodeAt(secret, Date.now()) });
    expect(page(v).status).toBe(401);
    expectStage(v, 'mfa');
    expect(await lastMfaRejection(s, uid)).toBe('locked');

    // A new sign-in does not lift it.
    const other = await visit(s, new Browser());
    await passwordSignIn(other, account.email);
    await post(other, 'mfa', { method: 'totp', code: totpCodeAt(secret, Date.now() + 30_000) });
    expect(page(other).status).toBe(401);
    expect(await lastMfaRejection(s, uidOf(other))).toBe('locked');
  });

  it('backup codes: one signs in once; used again it is refused', async () => {
    const s = required;
    const account = await newAccount(s, at('backup'));
    await arrangeTotp(s, account);
    const codes = await s.t.idp.mfa.generateBackupCodes(account.id);

    const v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    const html = expectStage(v, 'mfa');
    expect(html).toContain('id="code-backup_code"');
    await post(v, 'mfa', { method: 'backup_code', code: codes[0]! });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });

    const again = await visit(s, new Browser());
    await passwordSignIn(again, account.email);
    const uid = uidOf(again);
    // A form post without the flow's CSRF token is refused before the code is looked at.
    const forged = await again.browser.postForm(new URL(formAction(page(again).html, 'mfa'), s.t.issuer), { csrf: 'forged', method: 'backup_code', code: codes[1]! }, s.t.issuer);
    expect(forged.response.status).toBe(403);
    await forged.response.arrayBuffer();
    await post(again, 'mfa', { method: 'backup_code', code: codes[0]! });
    expect(page(again).status).toBe(401);
    expectStage(again, 'mfa');
    expect(await lastMfaRejection(s, uid)).toBe('invalid');
    // Another code of the set still works (the forged post did not spend it).
    await post(again, 'mfa', { method: 'backup_code', code: codes[1]! });
    expect(await idToken(again)).toMatchObject({ acr: acr2, amr: ['pwd', 'otp', 'mfa'] });
  });

  it('acr_values 2fa for an account without a factor leads to enrolment (here: email codes), not to a 1fa token; then email codes as the second factor, with the 4th attempt refused', async () => {
    const s = main;
    const account = await newAccount(s, at('email-factor'));
    let v = await visit(s, new Browser(), { acr_values: acr2 });
    await passwordSignIn(v, account.email);
    let html = expectStage(v, 'mfa_enrol');
    for (const method of ['totp', 'webauthn', 'email', 'sms']) expect(html).toContain(`name="method" value="${method}"`);
    let since = s.smtp.messages.length;
    await post(v, 'mfa-enrol', { method: 'email', start: '1' });
    expectStage(v, 'mfa_enrol');
    await post(v, 'mfa-enrol', { method: 'email', code: await mailedCode(s, account.email, since) });
    expectStage(v, 'backup_codes');
    await post(v, 'backup-codes', { acknowledged: '1' });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });

    // Signing in again: the email code is the second factor.
    v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    html = expectStage(v, 'mfa');
    expect(html).toContain('name="send" value="1"');
    since = s.smtp.messages.length;
    await post(v, 'mfa', { method: 'email', send: '1' });
    expect(expectStage(v, 'mfa')).toContain('We have sent you a code.');
    await post(v, 'mfa', { method: 'email', code: await mailedCode(s, account.email, since) });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });

    // Three wrong codes use up the code: the right one is refused at the 4th attempt.
    v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    const uid = uidOf(v);
    since = s.smtp.messages.length;
    await post(v, 'mfa', { method: 'email', send: '1' });
    const code = await mailedCode(s, account.email, since);
    const wrong = code === '000000' ? '000001' : '000000';
    for (let i = 0; i < 3; i++) {
      await post(v, 'mfa', { method: 'email', code: wrong });
      expect(page(v).status).toBe(401);
    }
    await post(v, 'mfa', { method: 'email', code });
    expect(page(v).status).toBe(401);
    expectStage(v, 'mfa');
    const reasons = (await audits(s, 'login.mfa_rejected')).filter((r) => r.data.interaction === uid).map((r) => [r.data.method, r.data.reason]);
    // The third wrong code used the code up: the right one finds none.
    expect(reasons).toEqual([['email', 'invalid'], ['email', 'invalid'], ['email', 'invalid'], ['email', 'expired']]);
  });

  it('email second factor: an expired code is refused, a fresh one works', async () => {
    const s = main;
    const account = await newAccount(s, at('email-expiry'));
    // An email factor confirmed earlier.
    await s.t.idp.db.prisma.mfaFactor.create({ data: { id: randomUUID(), accountId: account.id, type: 'email', name: 'Email', destination: account.email, confirmedAt: new Date() } });
    const v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    expectStage(v, 'mfa');
    const uid = uidOf(v);
    let since = s.smtp.messages.length;
    await post(v, 'mfa', { method: 'email', send: '1' });
    const code = await mailedCode(s, account.email, since);
    await expireCode(s, `otp:email:${uid}`);
    await post(v, 'mfa', { method: 'email', code });
    expect(page(v).status).toBe(401);
    expect(await lastMfaRejection(s, uid)).toBe('expired');
    since = s.smtp.messages.length;
    await post(v, 'mfa', { method: 'email', send: '1' });
    await post(v, 'mfa', { method: 'email', code: await mailedCode(s, account.email, since) });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });
  });

  it('SMS through Twilio: MFA_REQUIRED_CLIENTS asks only for "strict"; enrolment with a phone number there, then SMS codes at sign-in', async () => {
    const s = main;
    const account = await newAccount(s, at('twilio'));
    // Another client: no second factor needed, a one-factor token.
    let v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr1, amr: ['pwd'] });

    v = await visit(s, new Browser(), {}, 'strict');
    await passwordSignIn(v, account.email);
    const html = expectStage(v, 'mfa_enrol');
    expect(html).toContain('name="destination"');
    let since = sms.received.length;
    await post(v, 'mfa-enrol', { method: 'sms', start: '1', destination: '+41 79 123 45 67' });
    expectStage(v, 'mfa_enrol');
    const code = await smsCode(sms, since);
    expect(sms.received[since]).toMatchObject({ provider: 'twilio', api: 'twilio-messages', channel: 'sms', to: '+41791234567', from: '+15005550006' });
    await post(v, 'mfa-enrol', { method: 'sms', code });
    expectStage(v, 'backup_codes');
    await post(v, 'backup-codes', { acknowledged: '1' });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'sms', 'mfa'] });

    // Now that it has a factor, the account is asked for it with any client.
    v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    expect(expectStage(v, 'mfa')).toContain('••••••••4567');
    since = sms.received.length;
    await post(v, 'mfa', { method: 'sms', send: '1' });
    await post(v, 'mfa', { method: 'sms', code: await smsCode(sms, since) });
    expect(sms.received[since]).toMatchObject({ provider: 'twilio', to: '+41791234567' });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'sms', 'mfa'] });
  });

  it('SMS through Vonage: forced enrolment with a phone number, then SMS codes at sign-in', async () => {
    const s = required;
    const account = await newAccount(s, at('vonage'));
    let v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    expectStage(v, 'mfa_enrol');
    // Not a number in international form: refused on the same screen.
    await post(v, 'mfa-enrol', { method: 'sms', start: '1', destination: '07700 900123' });
    expect(expectStage(v, 'mfa_enrol')).toContain('international form');
    let since = sms.received.length;
    await post(v, 'mfa-enrol', { method: 'sms', start: '1', destination: '+447700900123' });
    const code = await smsCode(sms, since);
    expect(sms.received[since]).toMatchObject({ provider: 'vonage', api: 'vonage-sms', channel: 'sms', to: '447700900123', from: '447700900000' });
    await post(v, 'mfa-enrol', { method: 'sms', code });
    expectStage(v, 'backup_codes');
    await post(v, 'backup-codes', { acknowledged: '1' });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'sms', 'mfa'] });

    v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    expectStage(v, 'mfa');
    since = sms.received.length;
    await post(v, 'mfa', { method: 'sms', send: '1' });
    await post(v, 'mfa', { method: 'sms', code: await smsCode(sms, since) });
    expect(sms.received[since]).toMatchObject({ provider: 'vonage', to: '447700900123' });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'sms', 'mfa'] });
  });

  it('passkeys: enrolled for acr phr, then as second factor, then passwordless (discoverable, user handle = account id); a counter regression is refused', async () => {
    const s = main;
    const account = await newAccount(s, at('passkey'));
    const authenticator = new SoftAuthenticator({ origin: s.t.issuer });

    // Asking for phishing resistance: only a passkey can be set up.
    let v = await visit(s, new Browser(), { acr_values: acrPhr });
    await passwordSignIn(v, account.email);
    let html = expectStage(v, 'mfa_enrol');
    expect(html).toContain('name="method" value="webauthn"');
    expect(html).not.toContain('name="method" value="totp"');
    await post(v, 'mfa-enrol', { method: 'webauthn', start: '1' });
    html = expectStage(v, 'mfa_enrol');
    const creation = webauthnOptions(html, 'register');
    expect(Buffer.from(creation.user.id, 'base64url').toString('utf8')).toBe(account.id);
    const registration = authenticator.register(creation);
    await post(v, 'mfa-enrol', { method: 'webauthn', response: JSON.stringify(registration), name: 'Test key' });
    expectStage(v, 'backup_codes');
    await post(v, 'backup-codes', { acknowledged: '1' });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acrPhr, amr: ['pwd', 'hwk', 'mfa'] });
    expect((await s.t.idp.mfa.list(account.id)).map((f) => [f.type, f.name])).toEqual([['webauthn', 'Test key']]);

    // As the second factor after the password.
    v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    html = expectStage(v, 'mfa');
    const request = webauthnOptions(html, 'authenticate');
    expect(request.allowCredentials?.map((c) => c.id)).toEqual([registration.id]);
    await post(v, 'mfa', { method: 'webauthn', response: JSON.stringify(authenticator.authenticate(request)) });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acrPhr, amr: ['pwd', 'hwk', 'mfa'] });

    // Passwordless: the identify screen offers a passkey; the browser picks the discoverable one.
    v = await visit(s, new Browser());
    html = expectStage(v, 'identify');
    const passwordless = webauthnOptions(html, 'authenticate');
    expect(passwordless.allowCredentials ?? []).toEqual([]);
    const assertion = authenticator.authenticate(passwordless);
    expect(Buffer.from(assertion.response.userHandle!, 'base64url').toString('utf8')).toBe(account.id);
    await post(v, 'identify', { method: 'passkey', response: JSON.stringify(assertion) });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acrPhr, amr: ['hwk', 'mfa'] });
    const used = await s.t.idp.db.prisma.mfaFactor.findFirstOrThrow({ where: { accountId: account.id, type: 'webauthn' } });
    expect(used.counter).toBe(authenticator.credentials.get(registration.id)!.counter);

    // A signature counter that went backwards (a cloned authenticator) is refused.
    v = await visit(s, new Browser());
    html = expectStage(v, 'identify');
    await post(v, 'identify', { method: 'passkey', response: JSON.stringify(authenticator.authenticate(webauthnOptions(html, 'authenticate'), { counter: 1 })) });
    expect(expectStage(v, 'identify')).toContain('The passkey could not be used to sign in.');
    const regressions = await audits(s, 'webauthn.counter_regression', account.id);
    expect(regressions).toHaveLength(1);
    expect(regressions[0]!.data).toMatchObject({ newCounter: 1, refused: true });
  });

  it('a passkey without user verification as the first factor cannot be its own second factor', async () => {
    // One authenticator is one factor: the same passkey twice is not two (just as an emailed code
    // cannot be both the first and the second factor).
    const s = main;
    const account = await newAccount(s, at('passkey-nouv'));
    const authenticator = new SoftAuthenticator({ origin: s.t.issuer, userVerifying: false });
    let v = await visit(s, new Browser(), { acr_values: acrPhr });
    await passwordSignIn(v, account.email);
    await post(v, 'mfa-enrol', { method: 'webauthn', start: '1' });
    await post(v, 'mfa-enrol', { method: 'webauthn', response: JSON.stringify(authenticator.register(webauthnOptions(expectStage(v, 'mfa_enrol'), 'register'))), name: 'Key without PIN' });
    const codes = backupCodesOn(expectStage(v, 'backup_codes'));
    await post(v, 'backup-codes', { acknowledged: '1' });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acrPhr, amr: ['pwd', 'hwk', 'mfa'] });

    v = await visit(s, new Browser());
    await post(v, 'identify', { method: 'passkey', response: JSON.stringify(authenticator.authenticate(webauthnOptions(expectStage(v, 'identify'), 'authenticate'))) });
    // Possession only: a second factor is needed, and the same passkey cannot be it. The account
    // has a method already, so nothing new can be enrolled here: what it has left is a backup code.
    const html = expectStage(v, 'mfa');
    expect(html).not.toContain('data-webauthn="authenticate"');
    expect(html).not.toContain('mfa-enrol');
    await post(v, 'mfa', { method: 'backup_code', code: codes[0]! });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acrPhr, amr: ['hwk', 'otp', 'mfa'] });
  });

  it('sign-in with an emailed code instead of the password: amr otp, acr 1fa', async () => {
    const s = main;
    const account = await newAccount(s, at('signin-code'));
    const v = await visit(s, new Browser());
    await post(v, 'identify', { email: account.email });
    expectStage(v, 'password');
    const since = s.smtp.messages.length;
    await post(v, 'password', { send_code: '1' });
    expect(expectStage(v, 'signin_code')).toContain(account.email);
    await post(v, 'signin-code', { code: await mailedCode(s, account.email, since) });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr1, amr: ['otp'] });
  });

  it('sign-in by emailed code: a code mailed to one account never signs in another after "not you?", and an unverified account gets none', async () => {
    const s = main;
    const attacker = await newAccount(s, at('code-attacker'));
    const victim = await newAccount(s, at('code-victim'));
    const unverified = await s.t.idp.accounts.create({ email: at('code-unverified'), password, emailVerified: false, name: 'unverified' });
    const v = await visit(s, new Browser());
    const uid = uidOf(v);
    // The attacker asks for a code to their own address and reads it.
    await post(v, 'identify', { email: attacker.email });
    let since = s.smtp.messages.length;
    await post(v, 'password', { send_code: '1' });
    expect(expectStage(v, 'signin_code')).toContain(attacker.email);
    const attackerCode = await mailedCode(s, attacker.email, since);

    // "Not you?" in the same interaction, then the victim's address, and a code asked for it.
    await post(v, 'signin-code', { restart: '1' });
    expectStage(v, 'identify');
    await post(v, 'identify', { email: victim.email });
    since = s.smtp.messages.length;
    await post(v, 'password', { send_code: '1' });
    expect(expectStage(v, 'signin_code')).toContain(victim.email);
    expect(await mailedCode(s, victim.email, since), 'the victim got a code of their own').not.toBe(attackerCode);
    await post(v, 'signin-code', { code: attackerCode });
    expect(page(v).status).toBe(401);
    expect(expectStage(v, 'signin_code')).toContain('The code is not correct.');

    // A fresh code of the attacker's, then an account whose address is not verified: the same
    // answer, but no code is sent (nor stored), and the attacker's does not fit.
    await post(v, 'signin-code', { restart: '1' });
    await post(v, 'identify', { email: attacker.email });
    since = s.smtp.messages.length;
    await post(v, 'password', { send_code: '1' });
    const freshCode = await mailedCode(s, attacker.email, since);
    await post(v, 'signin-code', { restart: '1' });
    await post(v, 'identify', { email: unverified.email });
    await post(v, 'password', { send_code: '1' });
    expect(expectStage(v, 'signin_code')).toContain('We have sent you a code.');
    await post(v, 'signin-code', { code: freshCode });
    expect(page(v).status).toBe(401);
    expectStage(v, 'signin_code');

    await s.t.idp.afterResponse.settled();
    expect(s.smtp.messages.filter((m) => m.to.includes(unverified.email))).toEqual([]);
    const rejected = (await audits(s, 'login.signin_code_rejected')).filter((r) => r.data.interaction === uid);
    expect(rejected.map((r) => r.data.email)).toEqual([victim.email, unverified.email]);
    expect((await audits(s, 'login.signin_code_verified')).filter((r) => r.data.interaction === uid)).toEqual([]);
  });

  it('sign-in by emailed code: the audit says when no code went out (the screen does not), and a code burnt by wrong tries asks for a new one', async () => {
    const s = main;
    const unverified = await s.t.idp.accounts.create({ email: at('code-audit-unverified'), password, emailVerified: false });
    const v = await visit(s, new Browser());
    const uid = uidOf(v);
    await post(v, 'identify', { email: unverified.email });
    await post(v, 'password', { send_code: '1' });
    expect(expectStage(v, 'signin_code')).toContain('We have sent you a code.');
    const notSent = (await audits(s, 'login.signin_code_not_sent')).filter((r) => r.data.interaction === uid);
    expect(notSent.map((r) => [r.outcome, r.data.reason])).toEqual([['failure', 'unverified']]);
    expect((await audits(s, 'login.signin_code_sent')).filter((r) => r.data.interaction === uid)).toEqual([]);

    const account = await newAccount(s, at('code-burnt'));
    const w = await visit(s, new Browser());
    await post(w, 'identify', { email: account.email });
    const since = s.smtp.messages.length;
    await post(w, 'password', { send_code: '1' });
    const code = await mailedCode(s, account.email, since);
    const wrong = code === '000000' ? '111111' : '000000';
    for (let i = 0; i < 3; i++) await post(w, 'signin-code', { code: wrong });
    // Three wrong tries used the code up: the right one now cannot work, and the screen says what to do.
    await post(w, 'signin-code', { code });
    expect(page(w).status).toBe(401);
    expect(expectStage(w, 'signin_code')).toContain('The code has expired or was already used. Ask for a new one.');
    const since2 = s.smtp.messages.length;
    await post(w, 'signin-code', { resend: '1' });
    await post(w, 'signin-code', { code: await mailedCode(s, account.email, since2) });
    expect(await idToken(w)).toMatchObject({ sub: account.id, amr: ['otp'] });
  });

  it('enrolling email codes proves the address: an unverified account becomes verified', async () => {
    const s = main;
    const account = await s.t.idp.accounts.create({ email: at('code-proves'), password, emailVerified: false });
    const since = s.smtp.messages.length;
    expect(await s.t.idp.mfa.startCodeEnrolment('proving', account.id, 'email', account.email)).toBe('sent');
    expect(await s.t.idp.mfa.confirmCodeEnrolment('proving', account.id, 'email', await mailedCode(s, account.email, since))).toBe('ok');
    expect((await s.t.idp.accounts.findById(account.id))?.emailVerified).toBe(true);
  });

  it('sign-in by emailed code: an unknown address and an account get the same answers, as fast (the code is mailed after the response), and the 4th request in the hour is refused alike', async () => {
    const s = main;
    const victim = await newAccount(s, at('code-limit'));
    const attacker = await newAccount(s, at('code-limit-attacker'));
    const unknown = at('code-limit-nobody');
    const known = await visit(s, new Browser());
    const nobody = await visit(s, new Browser());
    await post(known, 'identify', { email: victim.email });
    await post(nobody, 'identify', { email: unknown });
    const since = s.smtp.messages.length;
    const timed = async (v: Visit, round: number) => {
      const started = performance.now();
      await (round === 0 ? post(v, 'password', { send_code: '1' }) : post(v, 'signin-code', { resend: '1' }));
      const elapsed = performance.now() - started;
      expect(expectStage(v, 'signin_code')).toContain('We have sent you a code.');
      return elapsed;
    };
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    // A slow mail server: a response that waited for the delivery would take at least this long.
    const slowMail = 400;
    s.smtp.delayMs = slowMail;
    const knownTimes: number[] = [];
    const unknownTimes: number[] = [];
    try {
      for (let round = 0; round < 3; round++) {
        if (round % 2) unknownTimes.push(await timed(nobody, round));
        knownTimes.push(await timed(known, round));
        if (!(round % 2)) unknownTimes.push(await timed(nobody, round));
      }
      // With the victim's address at its limit, the attacker mails a code to their own address in
      // the same interaction, comes back to the victim's, and asks once more (the 4th time).
      await post(known, 'signin-code', { restart: '1' });
      await post(known, 'identify', { email: attacker.email });
      const attackerSince = s.smtp.messages.length;
      await post(known, 'password', { send_code: '1' });
      const attackerCode = await mailedCode(s, attacker.email, attackerSince);
      await post(known, 'signin-code', { restart: '1' });
      await post(known, 'identify', { email: victim.email });
      await post(known, 'password', { send_code: '1' });
      await post(nobody, 'signin-code', { resend: '1' });
      // The 4th request: refused alike, whether or not the address has an account.
      const limited = [page(known), page(nobody)];
      for (const p of limited) expect(p.html).toContain('Too many codes were sent.');
      const generic = (html: string) => html.replace(/name="csrf" value="[^"]+"/g, '').replace(/\/interaction\/[^/"]+\//g, '/interaction/UID/').replace(victim.email, 'EMAIL').replace(unknown, 'EMAIL');
      expect(generic(limited[0]!.html)).toBe(generic(limited[1]!.html));
      expect(limited[0]!.status).toBe(limited[1]!.status);
      // The attacker's own code does not open the victim's account.
      await post(known, 'signin-code', { code: attackerCode });
      expect(page(known).status).toBe(401);
      expectStage(known, 'signin_code');
      await s.t.idp.afterResponse.settled();
    } finally {
      s.smtp.delayMs = 0;
    }
    const report = `known ${knownTimes.map(Math.round).join(', ')} ms; unknown ${unknownTimes.map(Math.round).join(', ')} ms`;
    expect(median(knownTimes), report).toBeLessThan(slowMail);
    expect(median(knownTimes), report).toBeLessThan(3 * median(unknownTimes) + 100);
    expect(median(unknownTimes), report).toBeLessThan(3 * median(knownTimes) + 100);
    const mailed = s.smtp.messages.slice(since);
    expect(mailed.filter((m) => m.to.includes(victim.email))).toHaveLength(3);
    expect(mailed.filter((m) => m.to.includes(unknown))).toEqual([]);
  });

  it('sign-in codes asked for the victim\'s address up to its limit (4 requests) do not stop the victim\'s second-factor email code', async () => {
    const s = main;
    const victim = await newAccount(s, at('code-share-victim'));
    await s.t.idp.db.prisma.mfaFactor.create({ data: { id: randomUUID(), accountId: victim.id, type: 'email', name: 'Email', destination: victim.email, confirmedAt: new Date() } });
    // Anyone may ask for sign-in codes to any address: four "email me a code" for the victim's.
    const attacker = await visit(s, new Browser());
    await post(attacker, 'identify', { email: victim.email });
    let since = s.smtp.messages.length;
    await post(attacker, 'password', { send_code: '1' });
    for (let i = 0; i < 3; i++) await post(attacker, 'signin-code', { resend: '1' });
    expect(expectStage(attacker, 'signin_code')).toContain('Too many codes were sent.');
    await s.t.idp.afterResponse.settled();
    expect(s.smtp.messages.slice(since).filter((m) => m.to.includes(victim.email))).toHaveLength(3);

    // The victim signs in with the password: the second-factor code still goes out, and signs in.
    const v = await visit(s, new Browser());
    await passwordSignIn(v, victim.email);
    expectStage(v, 'mfa');
    since = s.smtp.messages.length;
    await post(v, 'mfa', { method: 'email', send: '1' });
    const html = expectStage(v, 'mfa');
    expect(html).toContain('We have sent you a code.');
    expect(html).not.toContain('Too many codes were sent.');
    await post(v, 'mfa', { method: 'email', code: await mailedCode(s, victim.email, since) });
    expect(await idToken(v)).toMatchObject({ sub: victim.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });
  });

  it('an account with an authenticator app asked for acr phr proves the app (no passkey enrolment at sign-in); the token says 2fa', async () => {
    const s = main;
    const account = await newAccount(s, at('phr-has-totp'));
    const secret = await arrangeTotp(s, account);
    const v = await visit(s, new Browser(), { acr_values: acrPhr });
    await passwordSignIn(v, account.email);
    const html = expectStage(v, 'mfa');
    expect(html).toContain('id="code-totp"');
    expect(html).not.toContain('data-webauthn="register"');
    await post(v, 'mfa', { method: 'totp', code: totpCodeAt(secret, Date.now()) });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });
    expect((await s.t.idp.mfa.list(account.id)).map((f) => f.type)).toEqual(['totp']);
  });

  /** An account whose only method is a passkey without user verification, with every backup code spent. */
  async function spentPasskeyAccount(s: Side, name: string) {
    const account = await newAccount(s, at(name));
    const authenticator = new SoftAuthenticator({ origin: s.t.issuer, userVerifying: false });
    const v = await visit(s, new Browser(), { acr_values: acrPhr });
    await passwordSignIn(v, account.email);
    await post(v, 'mfa-enrol', { method: 'webauthn', start: '1' });
    await post(v, 'mfa-enrol', { method: 'webauthn', response: JSON.stringify(authenticator.register(webauthnOptions(expectStage(v, 'mfa_enrol'), 'register'))), name: 'Key without PIN' });
    await post(v, 'backup-codes', { acknowledged: '1' });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acrPhr });
    // Every backup code spent (at earlier sign-ins).
    await s.t.idp.db.prisma.backupCode.updateMany({ where: { accountId: account.id }, data: { usedAt: new Date() } });
    expect(await s.t.idp.mfa.enrolled(account.id)).toEqual(['webauthn']);
    return { account, authenticator };
  }

  /** Passwordless with the passkey: the interaction's end, as the relying party sees it. */
  async function passkeyOnly(s: Side, authenticator: SoftAuthenticator, clientId: string): Promise<{ error: string | null; token?: string }> {
    const v = await visit(s, new Browser(), {}, clientId);
    await post(v, 'identify', { method: 'passkey', response: JSON.stringify(authenticator.authenticate(webauthnOptions(expectStage(v, 'identify'), 'authenticate'))) });
    expect(v.screen.kind, v.screen.kind === 'page' ? `still on a page: ${v.screen.html.replace(/\s+/g, ' ').slice(0, 300)}` : '').toBe('callback');
    const error = v.screen.url.searchParams.get('error');
    if (error) return { error };
    const { acr, amr } = await idToken(v);
    return { error, token: JSON.stringify({ acr, amr }) };
  }

  it('a passkey without user verification as the only method, no backup codes left: at a client requiring MFA its passwordless sign-in is denied, never sent to enrolment', async () => {
    const s = main;
    const { account, authenticator } = await spentPasskeyAccount(s, 'passkey-nouv-spent');
    // Possession of the key alone is one factor, and the account has no other method to prove:
    // it cannot enrol one here (the key alone would add it).
    const result = await passkeyOnly(s, authenticator, 'strict');
    expect(result.error, `signed in: ${result.token}`).toBe('access_denied');
    expect((await s.t.idp.mfa.list(account.id)).map((f) => f.type)).toEqual(['webauthn']);
    expect((await audits(s, 'login.risk_denied', account.id)).map((r) => r.data.reason)).toEqual(['no_usable_factor']);
    expect(await audits(s, 'login.mfa_enrolment_required', account.id)).toHaveLength(1);
  });

  // Regression: the decision once took its reason from the methods usable in this sign-in only, so
  // with the first factor's passkey excluded and no backup codes left, MFA was skipped.
  it('a passkey without user verification as the only method, no backup codes left: at any client its passwordless sign-in is denied, not let in with one factor', async () => {
    const s = main;
    const { account, authenticator } = await spentPasskeyAccount(s, 'passkey-nouv-spent-any');
    const result = await passkeyOnly(s, authenticator, 'webapp');
    expect(result.error, `signed in: ${result.token}`).toBe('access_denied');
    expect((await s.t.idp.mfa.list(account.id)).map((f) => f.type)).toEqual(['webauthn']);
  });

  it('step-up: a password-only session asked for acr 2fa goes straight to the second factor', async () => {
    const s = main;
    const account = await newAccount(s, at('step-up'));
    const browser = new Browser();
    let v = await visit(s, browser);
    await passwordSignIn(v, account.email);
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr1, amr: ['pwd'] });
    const secret = await arrangeTotp(s, account);

    v = await visit(s, browser, { acr_values: acr2 });
    const html = expectStage(v, 'mfa');
    expect(html).not.toContain('name="password"');
    expect(html).toContain('id="code-totp"');
    await post(v, 'mfa', { method: 'totp', code: totpCodeAt(secret, Date.now()) });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });
    // The session now holds the stronger sign-in: the same request passes silently.
    v = await visit(s, browser, { acr_values: acr2, prompt: 'none' });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });
    const stepUps = (await audits(s, 'login.risk_step_up', account.id)).filter((r) => r.data.reason === `acr:${acr2}`);
    expect(stepUps.map((r) => r.data.from)).toEqual(['assess']);
    // No password was asked in the step-up.
    expect((await audits(s, 'login.password_verified', account.id))).toHaveLength(1);

    // acr_values asks for a level, which the session has: for a fresh challenge a relying party
    // sends max_age (or prompt=login) with it, and gets both factors asked again.
    v = await visit(s, browser, { acr_values: acr2, max_age: '0' });
    await passwordSignIn(v, account.email);
    expectStage(v, 'mfa');
    await post(v, 'mfa', { method: 'totp', code: totpCodeAt(secret, Date.now() + 30_000) });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });
    expect((await audits(s, 'login.password_verified', account.id))).toHaveLength(2);
  });

  it('step-up with prompt=none: an acr the session does not satisfy is login_required', async () => {
    const s = main;
    const account = await newAccount(s, at('step-up-none'));
    const browser = new Browser();
    let v = await visit(s, browser);
    await passwordSignIn(v, account.email);
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr1, amr: ['pwd'] });
    await arrangeTotp(s, account);
    // The session is still good for what it achieved.
    v = await visit(s, browser, { prompt: 'none' });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr1, amr: ['pwd'] });
    // Without a screen the stronger sign-in cannot happen: OpenID Connect Core 3.1.2.6 login_required.
    v = await visit(s, browser, { acr_values: acr2, prompt: 'none' });
    expect(v.screen.kind).toBe('callback');
    expect(v.screen.url.searchParams.get('state')).toBe(v.request.state);
    expect(v.screen.url.searchParams.get('error')).toBe('login_required');
  });

  it.each<Record<string, string>>([{ prompt: 'login' }, { max_age: '0' }])('a re-authentication request (%o) with an acr the session lacks asks for the password again, not only the second factor', async (reauth) => {
    const s = main;
    const account = await newAccount(s, at(`step-up-reauth-${Object.keys(reauth)[0]}`));
    const browser = new Browser();
    let v = await visit(s, browser);
    await passwordSignIn(v, account.email);
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr1, amr: ['pwd'] });
    const secret = await arrangeTotp(s, account);
    // The relying party wants a fresh sign-in (OpenID Connect Core 3.1.2.1) and a second factor.
    v = await visit(s, browser, { ...reauth, acr_values: acr2 });
    expect(stageOf(v.screen), 're-authentication asks who is signing in; the earlier password sign-in does not count').toBe('identify');
    await passwordSignIn(v, account.email);
    await post(v, 'mfa', { method: 'totp', code: totpCodeAt(secret, Date.now()) });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });
    expect(await audits(s, 'login.password_verified', account.id)).toHaveLength(2);
  });

  it('remember this device (30 days): the same browser skips MFA, another browser is asked, and acr 2fa still asks', async () => {
    const s = main;
    const account = await newAccount(s, at('remember'));
    const secret = await arrangeTotp(s, account);
    const browser = new Browser();
    let v = await visit(s, browser);
    await passwordSignIn(v, account.email);
    expect(expectStage(v, 'mfa')).toContain('Remember this device for 30 days');
    await post(v, 'mfa', { method: 'totp', code: totpCodeAt(secret, Date.now()), remember: '1' });
    expect(await idToken(v)).toMatchObject({ acr: acr2, amr: ['pwd', 'otp', 'mfa'] });
    expect(browser.cookie('idp.device')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await s.t.idp.db.prisma.trustedDevice.count({ where: { accountId: account.id } })).toBe(1);

    // The same browser signs in again (prompt=login): the password is enough.
    v = await visit(s, browser, { prompt: 'login' });
    await passwordSignIn(v, account.email);
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr1, amr: ['pwd'] });
    const skipped = (await audits(s, 'login.risk_allowed', account.id)).at(-1);
    expect(skipped?.data.reason).toBe('remembered_device');

    // Another browser is asked.
    v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    expectStage(v, 'mfa');

    // The remembered device is bound to its account: another account in the same browser is asked.
    const other = await newAccount(s, at('remember-other'));
    const otherSecret = await arrangeTotp(s, other);
    v = await visit(s, browser, { prompt: 'login' });
    await passwordSignIn(v, other.email);
    expectStage(v, 'mfa');
    await post(v, 'mfa', { method: 'totp', code: totpCodeAt(otherSecret, Date.now()) });
    expect(await idToken(v)).toMatchObject({ sub: other.id, acr: acr2 });

    // A relying party asking for 2fa gets it asked even on the remembered device.
    v = await visit(s, browser, { prompt: 'login' });
    await passwordSignIn(v, account.email);
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr1, amr: ['pwd'] });
    v = await visit(s, browser, { acr_values: acr2 });
    expectStage(v, 'mfa');
    await post(v, 'mfa', { method: 'totp', code: totpCodeAt(secret, Date.now() + 30_000) });
    expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2, amr: ['pwd', 'otp', 'mfa'] });
  });

  it('a remembered device is forgotten when the user signs out everywhere, and when the password is reset: the same browser is asked for the second factor again', async () => {
    const s = main;
    const account = await newAccount(s, at('remember-forget'));
    const secret = await arrangeTotp(s, account);
    const browser = new Browser();
    let step = 0;
    /** Signs in in `browser` with the next TOTP step, remembering the device; then the device skips MFA. */
    const remembered = async () => {
      let v = await visit(s, browser, { prompt: 'login' });
      await passwordSignIn(v, account.email);
      await post(v, 'mfa', { method: 'totp', code: totpCodeAt(secret, Date.now() + 30_000 * step++), remember: '1' });
      expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr2 });
      v = await visit(s, browser, { prompt: 'login' });
      await passwordSignIn(v, account.email);
      expect(await idToken(v), 'the remembered device skips MFA').toMatchObject({ sub: account.id, acr: acr1, amr: ['pwd'] });
      expect(await s.t.idp.db.prisma.trustedDevice.count({ where: { accountId: account.id } })).toBeGreaterThan(0);
    };
    const expectAskedAgain = async (current = password) => {
      expect(await s.t.idp.db.prisma.trustedDevice.count({ where: { accountId: account.id } })).toBe(0);
      const v = await visit(s, browser, { prompt: 'login' });
      await post(v, 'identify', { email: account.email });
      await post(v, 'password', { password: current });
      expectStage(v, 'mfa');
    };

    // "Sign out everywhere" on the account page.
    await remembered();
    const accountPage = await browser.request(new URL('/account', s.t.issuer));
    const html = await accountPage.text();
    expect(accountPage.status, html.slice(0, 300)).toBe(200);
    const done = await browser.postForm(new URL('/account/sessions/revoke-all', s.t.issuer), { csrf: csrfOf(html) }, s.t.issuer);
    expect(done.response.status).toBe(200);
    expect(await done.response.text()).toContain('You are signed out');
    await expectAskedAgain();

    // "Forgot password" and the mailed link.
    await remembered();
    const newPassword = 'a brand new battery staple';
    const forgot = await browser.request(new URL('/account/forgot-password', s.t.issuer));
    const since = s.smtp.messages.length;
    const requested = await browser.postForm(new URL('/account/forgot-password', s.t.issuer), { csrf: csrfOf(await forgot.text()), email: account.email }, s.t.issuer);
    expect(requested.response.status).toBe(200);
    await requested.response.arrayBuffer();
    const link = s.smtp.linkIn(await s.smtp.waitFor((m) => m.to.includes(account.email) && s.smtp.messages.indexOf(m) >= since), '/account/reset-password');
    const form = await browser.request(link);
    const formHtml = await form.text();
    expect(form.status, formHtml.slice(0, 300)).toBe(200);
    const reset = await browser.postForm(new URL('/account/reset-password', s.t.issuer), { csrf: csrfOf(formHtml), token: new URL(link).searchParams.get('token')!, password: newPassword, confirm: newPassword }, s.t.issuer);
    const resetHtml = await reset.response.text();
    expect(reset.response.status, resetHtml.replace(/\s+/g, ' ').slice(0, 400)).toBe(200);
    await expectAskedAgain(newPassword);
  });

  it('MFA_REQUIRED after a sign-in by emailed code: the same mailbox cannot be enrolled as the second factor', async () => {
    // The mailbox that gave the first factor cannot give the second one too (today: acr 2fa, amr [otp, mfa]).
    const s = required;
    const account = await newAccount(s, at('signin-code-enrol'));
    const v = await visit(s, new Browser());
    await post(v, 'identify', { email: account.email });
    let since = s.smtp.messages.length;
    await post(v, 'password', { send_code: '1' });
    await post(v, 'signin-code', { code: await mailedCode(s, account.email, since) });
    const html = expectStage(v, 'mfa_enrol');
    expect(html).toContain('name="method" value="totp"');
    // What a browser can do on this screen: pick codes by email, if offered.
    if (html.includes('name="method" value="email"')) {
      since = s.smtp.messages.length;
      await post(v, 'mfa-enrol', { method: 'email', start: '1' });
      if (page(v).html.includes('id="code-email"')) await post(v, 'mfa-enrol', { method: 'email', code: await mailedCode(s, account.email, since) });
      expect(stageOf(v.screen), 'the mailbox of the first factor was enrolled as the second').toBe('mfa_enrol');
    }
  });

  it('an administrator\'s reset: every factor goes, the next sign-in must enrol again, audited as mfa.reset', async () => {
    const s = required;
    const account = await newAccount(s, at('reset'));
    const secret = await arrangeTotp(s, account);
    const codes = await s.t.idp.mfa.generateBackupCodes(account.id);
    let v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    expectStage(v, 'mfa');

    expect(await s.t.idp.mfa.reset(account.id, 'admin@example.com')).toMatchObject({ factors: 1 });
    const resets = await audits(s, 'mfa.reset', account.id);
    expect(resets).toHaveLength(1);
    expect(resets[0]).toMatchObject({ outcome: 'success', actor: 'admin@example.com' });
    expect(await s.t.idp.mfa.list(account.id)).toEqual([]);

    // The old code and backup codes are useless: the next sign-in asks for a new enrolment.
    v = await visit(s, new Browser());
    await passwordSignIn(v, account.email);
    const html = expectStage(v, 'mfa_enrol');
    expect(html).not.toContain('id="code-totp"');
    expect(codes.length).toBeGreaterThan(0);
    expect(secret).toBeTruthy();
  });

  // Two more providers, without an SMS provider: "plain" (no MFA_REQUIRED; sign-in by emailed code
  // switched off) and "requiredNoSms" (MFA_REQUIRED).
  describe('without an SMS provider', () => {
    let smtpPlain: TestSmtp;
    let smtpRequiredNoSms: TestSmtp;
    let plain: Side;
    let requiredNoSms: Side;

    beforeAll(async () => {
      [smtpPlain, smtpRequiredNoSms] = await Promise.all([startSmtp(), startSmtp()]);
      [plain, requiredNoSms] = await Promise.all([
        startSide(backend, smtpPlain, { SMS_PROVIDER: 'none', EMAIL_CODE_SIGNIN: 'false' }, ['webapp']),
        startSide(backend, smtpRequiredNoSms, { SMS_PROVIDER: 'none', MFA_REQUIRED: 'true' }, ['webapp']),
      ]);
    });

    afterAll(async () => {
      await Promise.all([plain?.t.stop(), requiredNoSms?.t.stop()]);
      await Promise.all([smtpPlain?.stop(), smtpRequiredNoSms?.stop()]);
    });

    it.each([['without MFA_REQUIRED', () => plain], ['with MFA_REQUIRED', () => requiredNoSms]] as const)('an account whose only factor is SMS is denied (access_denied) %s, never sent to enrolment', async (label, side) => {
      const s = side();
      const account = await newAccount(s, at(`sms-only-${label.startsWith('with ') ? 'required' : 'plain'}`));
      await s.t.idp.db.prisma.mfaFactor.create({ data: { id: randomUUID(), accountId: account.id, type: 'sms', name: 'Phone', destination: '+41791234567', confirmedAt: new Date() } });
      const v = await visit(s, new Browser());
      await passwordSignIn(v, account.email);
      // Not a one-factor token, and not the enrolment screen (where the password alone would add a factor).
      const detail = v.screen.kind === 'page' ? `stage ${stageOf(v.screen)}: ${v.screen.html.replace(/\s+/g, ' ').slice(0, 300)}` : v.screen.url.href;
      expect(v.screen.kind, detail).toBe('callback');
      expect(v.screen.url.searchParams.get('error'), detail).toBe('access_denied');
      expect(v.screen.url.searchParams.get('code')).toBeNull();
      expect((await audits(s, 'login.risk_denied', account.id)).map((r) => r.data.reason)).toEqual(['no_usable_factor']);
      expect(await audits(s, 'login.mfa_enrolment_required', account.id)).toEqual([]);
      expect((await s.t.idp.mfa.list(account.id)).map((f) => f.type)).toEqual(['sms']);
    });

    it('with EMAIL_CODE_SIGNIN=false, "email me a code" posted anyway changes nothing: the password screen again, no mail; the password still signs in', async () => {
      const s = plain;
      const account = await newAccount(s, at('no-email-code'));
      const v = await visit(s, new Browser());
      await post(v, 'identify', { email: account.email });
      expect(expectStage(v, 'password')).not.toContain('name="send_code"');
      const since = s.smtp.messages.length;
      for (let i = 0; i < 2; i++) {
        await post(v, 'password', { send_code: '1' });
        const html = expectStage(v, 'password');
        expect(page(v).status).toBe(200);
        expect(html).not.toContain('We have sent you a code.');
        expect(html).not.toContain('Too many codes were sent.');
      }
      await s.t.idp.afterResponse.settled();
      expect(s.smtp.messages.slice(since)).toEqual([]);
      // No code stored for the account, and nothing counted against its address.
      const redis = s.t.idp.redis;
      const traces = redis
        ? [...(await redis.keys(`*otp*${account.id}*`)), ...(await redis.keys(`*otp*${account.email}*`))]
        : [
          ...(await s.t.idp.db.prisma.expiringValue.findMany({ where: { key: { contains: account.id } } })).map((r) => r.key).filter((key) => key.includes('otp')),
          ...(await s.t.idp.db.prisma.attemptCounter.findMany({ where: { key: { contains: account.email } } })).map((r) => r.key).filter((key) => key.includes('otp')),
        ];
      expect(traces).toEqual([]);
      await post(v, 'password', { password });
      expect(await idToken(v)).toMatchObject({ sub: account.id, acr: acr1, amr: ['pwd'] });
    });
  });
});
