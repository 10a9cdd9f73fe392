// Passkeys in a real browser: Debian's Chromium (driven by playwright-core) with a CDP virtual
// authenticator (CTAP2, platform, resident keys, user verification), against the real IdP.
// interactions/static/passkey.js and the vendored @simplewebauthn/browser bundle run the
// ceremonies under the screens' strict CSP. Covered: adding a passkey on the account page and
// signing in with it alone (no password) at a relying party, whose ID token then says hwk + mfa and
// the phishing-resistant acr; and enrolment forced at sign-in by acr_values, then the passkey as
// the second step after a password.
//
// Why the issuer is http://localhost:PORT and not http://127.0.0.1:PORT: WebAuthn needs a secure
// context, which both are in Chromium (loopback is "potentially trustworthy"), but its RP ID must
// be a domain: the provider derives the RP ID from the issuer's host name, and with an IP address
// Chromium refuses the ceremony ("SecurityError: 127.0.0.1 is an invalid domain"). So the IdP is
// reached under "localhost" on a port of our own that serves the same app.
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import * as oidc from 'openid-client';
import { chromium, type Browser, type BrowserContext, type CDPSession, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorizationRequest } from '../helpers/oidc.ts';
import { backends, freePort, startIdp, type TestIdp } from '../helpers/server.ts';

const chromiumPath = '/usr/bin/chromium';
const password = 'correct horse battery staple';
const redirectUri = 'http://localhost:8080/callback';
const insecure = { execute: [oidc.allowInsecureRequests] };

interface BrowserPage {
  context: BrowserContext;
  page: Page;
  cdp: CDPSession;
  authenticatorId: string;
  /** Console messages and page errors about the Content Security Policy. */
  cspViolations: string[];
  /** Every page error and console error, for failure messages. */
  problems: string[];
  /** Content type of every response, by URL path. */
  contentTypes: Map<string, string>;
}

interface VirtualCredential {
  credentialId: string;
  isResidentCredential: boolean;
  rpId?: string;
  userHandle?: string;
  signCount: number;
}

describe.each(backends)('passkeys in a real browser on %s', (backend) => {
  let t: TestIdp;
  let browser: Browser;
  let front: Server;
  let issuer: string;
  let rp: oidc.Configuration;
  const pages: BrowserContext[] = [];

  beforeAll(async () => {
    expect(existsSync(chromiumPath), `${chromiumPath} exists (Debian package chromium)`).toBe(true);
    const port = await freePort();
    issuer = `http://localhost:${port}`;
    t = await startIdp(backend, { ISSUER: issuer });
    // startIdp listens on 127.0.0.1:<its own port>; the browser must use the issuer's name and port.
    front = createServer(t.idp.app.callback());
    await new Promise<void>((resolve) => front.listen(port, 'localhost', resolve));
    const created = await t.idp.clients.create({ client_id: 'shop', client_name: 'The Shop', redirect_uris: [redirectUri], grant_types: ['authorization_code'] });
    rp = await oidc.discovery(new URL(issuer), 'shop', created.clientSecret!, undefined, insecure);
    browser = await chromium.launch({ executablePath: chromiumPath, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  });

  afterAll(async () => {
    for (const context of pages) await context.close().catch(() => undefined);
    await browser?.close();
    front?.closeAllConnections();
    await new Promise<void>((resolve) => (front ? front.close(() => resolve()) : resolve()));
    await t?.stop();
  });

  /** A new browser context and page with a virtual platform authenticator that verifies the user. */
  async function openPage(): Promise<BrowserPage> {
    const context = await browser.newContext();
    pages.push(context);
    // The relying party's callback: the browser lands here with the code; nothing listens on 8080.
    await context.route(`${new URL(redirectUri).origin}/**`, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<!DOCTYPE html><title>callback</title><h1>Relying party</h1>' }));
    const page = await context.newPage();
    const cspViolations: string[] = [];
    const problems: string[] = [];
    const contentTypes = new Map<string, string>();
    page.on('console', (message) => {
      if (/Content Security Policy|Refused to/i.test(message.text())) cspViolations.push(message.text());
      if (message.type() === 'error' || message.type() === 'warning') problems.push(`${message.type()}: ${message.text()}`);
    });
    page.on('pageerror', (error) => {
      if (/Content Security Policy/i.test(error.message)) cspViolations.push(error.message);
      problems.push(`pageerror: ${error.message}`);
    });
    page.on('response', (response) => {
      const url = new URL(response.url());
      if (url.origin === issuer) contentTypes.set(url.pathname, response.headers()['content-type'] ?? '');
    });
    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable');
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
    });
    return { context, page, cdp, authenticatorId, cspViolations, problems, contentTypes };
  }

  async function credentials(b: BrowserPage): Promise<VirtualCredential[]> {
    return ((await b.cdp.send('WebAuthn.getCredentials', { authenticatorId: b.authenticatorId })) as { credentials: VirtualCredential[] }).credentials;
  }

  const heading = (page: Page) => page.locator('h1').first().textContent();

  /** Waits for the page whose heading is `expected`; on failure says where the browser is and what it shows. */
  async function expectPage(b: BrowserPage, expected: string, selector?: string) {
    try {
      await expect.poll(() => heading(b.page), { timeout: 10_000 }).toBe(expected);
      if (selector) await b.page.waitForSelector(selector, { timeout: 10_000 });
    } catch {
      const shown = (await b.page.locator('main').textContent().catch(() => ''))?.replace(/\s+/g, ' ').trim();
      throw new Error(`expected the page "${expected}"${selector ? ` with ${selector}` : ''} at ${b.page.url()}, got: ${shown}\nconsole: ${b.problems.join('\n')}`);
    }
  }

  /** Email and password on our screens (from the identify screen). */
  async function typePassword(page: Page, email: string) {
    await expect.poll(() => heading(page)).toBe('Sign in');
    await page.fill('#email', email);
    await page.click('form[action$="/identify"]:not([data-webauthn]) button[type=submit]');
    await page.waitForSelector('#password');
    await page.fill('#password', password);
    await page.click('form[action$="/password"]:has(#password) button[type=submit]');
  }

  /** Grants consent when asked, and waits for the relying party's callback. */
  async function toCallback(page: Page): Promise<URL> {
    const where = async () => (page.url().startsWith(redirectUri) ? 'callback' : `${await heading(page).catch(() => '')} at ${page.url()}`);
    await expect.poll(where, { timeout: 15_000 }).toMatch(/^(callback|Allow access at .*)$/);
    if (!page.url().startsWith(redirectUri)) {
      await page.click('form[action$="/consent"] button[type=submit]');
      await expect.poll(where, { timeout: 15_000 }).toBe('callback');
    }
    return new URL(page.url());
  }

  async function newAccount(label: string) {
    const email = `${label}-${backend.replace(/\W/g, '')}-${Date.now().toString(36)}@example.com`;
    const account = await t.idp.accounts.create({ email, password, name: label, emailVerified: true });
    return { email, id: account.id };
  }

  it('serves the vendored browser helper as JavaScript', async () => {
    const response = await fetch(`${issuer}/static/vendor/simplewebauthn-browser.js`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/javascript\b/);
    expect(await response.text()).toContain('SimpleWebAuthnBrowser');
    const script = await fetch(`${issuer}/static/passkey.js`);
    expect(script.status).toBe(200);
    expect(script.headers.get('content-type')).toMatch(/^text\/javascript\b/);
  });

  it('adds a passkey on the account page, then signs in with it alone: the ID token says hwk, mfa and acr phr', async () => {
    const { email, id } = await newAccount('ada');
    const b = await openPage();
    const { page } = b;

    // Sign in to the account page with the password.
    await page.goto(`${issuer}/account`);
    await typePassword(page, email);
    await expectPage(b, 'Your account');
    expect(await page.locator('body').textContent()).toContain('No second step is set up.');

    // Add a passkey: the enrolment page runs the registration ceremony on the button's click.
    await page.click('form[action="/account/mfa/add"]:has(input[name="method"][value="webauthn"]) button[type=submit]');
    await expectPage(b, 'Second step', 'form[data-webauthn="register"]');
    await page.fill('#passkey-name', 'Test laptop');
    await page.click('form[data-webauthn="register"] button[type=submit]');
    // The first method comes with backup codes, shown once.
    await expectPage(b, 'Second step', 'ul.backup-codes');
    expect(await page.locator('ul.backup-codes li').count()).toBe(10);

    const [credential, ...others] = await credentials(b);
    expect(others).toEqual([]);
    expect(credential!.isResidentCredential).toBe(true);
    expect(credential!.rpId).toBe('localhost');
    const stored = await t.idp.db.prisma.mfaFactor.findMany({ where: { accountId: id } });
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({ type: 'webauthn', name: 'Test laptop', discoverable: true });
    expect(Buffer.from(stored[0]!.credentialId!, 'base64url')).toEqual(Buffer.from(credential!.credentialId, 'base64'));

    await page.goto(`${issuer}/account`);
    const row = page.locator('li[data-type="webauthn"]');
    expect(await row.count()).toBe(1);
    expect(await row.textContent()).toContain('Test laptop');
    expect(await page.locator('body').textContent()).toContain('Backup codes left: 10');

    // Sign out everywhere, then sign in at a relying party with the passkey alone.
    await page.click('form[action="/account/sessions/revoke-all"] button[type=submit]');
    await expectPage(b, 'You are signed out');

    const request = await authorizationRequest(rp, { redirect_uri: redirectUri, scope: 'openid email' });
    await page.goto(request.url.href);
    await expect.poll(() => heading(page)).toBe('Sign in');
    expect(await page.locator('form[data-webauthn="authenticate"] button').textContent()).toBe('Sign in with a passkey');
    await page.click('form[data-webauthn="authenticate"] button[type=submit]');
    const callback = await toCallback(page);
    expect(callback.searchParams.get('code')).toBeTruthy();

    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
    const claims = tokens.claims()!;
    expect(claims.sub).toBe(id);
    expect(claims.amr).toEqual(expect.arrayContaining(['hwk', 'mfa']));
    expect(claims.amr).not.toContain('pwd');
    expect(claims.acr).toBe('urn:idp:acr:phr');
    // The authenticator signed once more.
    expect((await credentials(b))[0]!.signCount).toBeGreaterThan(credential!.signCount);

    // Removing the passkey on the account page revokes it: the authenticator still holds it, the IdP refuses it.
    await page.goto(`${issuer}/account`);
    await expectPage(b, 'Your account');
    await page.click('li[data-type="webauthn"] form[action$="/remove"] button[type=submit]');
    await expectPage(b, 'Your account');
    expect(await page.locator('body').textContent()).toContain('The method has been removed.');
    expect(await page.locator('li[data-type="webauthn"]').count()).toBe(0);
    expect(await t.idp.db.prisma.mfaFactor.count({ where: { accountId: id } })).toBe(0);
    await page.click('form[action="/account/sessions/revoke-all"] button[type=submit]');
    await expectPage(b, 'You are signed out');
    const refused = await authorizationRequest(rp, { redirect_uri: redirectUri, scope: 'openid' });
    await page.goto(refused.url.href);
    await expectPage(b, 'Sign in');
    await page.click('form[data-webauthn="authenticate"] button[type=submit]');
    await expect.poll(() => page.locator('ul.errors').first().textContent().catch(() => ''), { timeout: 10_000 }).toContain('The passkey could not be used to sign in.');
    expect(new URL(page.url()).pathname).toMatch(/^\/interaction\/[^/]+\/identify$/);
    expect(await credentials(b)).toHaveLength(1);

    expect(b.contentTypes.get('/static/vendor/simplewebauthn-browser.js')).toMatch(/^text\/javascript\b/);
    expect(b.contentTypes.get('/static/passkey.js')).toMatch(/^text\/javascript\b/);
    expect(b.cspViolations).toEqual([]);
  });

  it('enrols a passkey at sign-in when a relying party asks for acr phr, then takes it as the second step after a password', async () => {
    const { email, id } = await newAccount('grace');
    const b = await openPage();
    const { page } = b;

    const first = await authorizationRequest(rp, { redirect_uri: redirectUri, scope: 'openid', acr_values: 'urn:idp:acr:phr' });
    await page.goto(first.url.href);
    await typePassword(page, email);
    // Only a passkey satisfies the requested acr: the screen offers that one method to set up.
    await expect.poll(() => heading(page)).toBe('Set up a second step');
    const choices = page.locator('form[action$="/mfa-enrol"]:has(input[name="start"]) input[name="method"]');
    expect(await choices.evaluateAll((inputs) => inputs.map((i) => (i as unknown as { value: string }).value))).toEqual(['webauthn']);
    await page.click('form[action$="/mfa-enrol"]:has(input[name="start"]) button[type=submit]');
    await page.waitForSelector('form[data-webauthn="register"]');
    await page.click('form[data-webauthn="register"] button[type=submit]');
    await expectPage(b, 'Save your backup codes', 'ul.backup-codes');
    expect(await page.locator('ul.backup-codes li').count()).toBe(10);
    await page.click('form[action$="/backup-codes"] button[type=submit]');
    const callback = await toCallback(page);
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: first.verifier, expectedState: first.state, expectedNonce: first.nonce });
    expect(tokens.claims()).toMatchObject({ sub: id, acr: 'urn:idp:acr:phr' });
    expect(tokens.claims()!.amr).toEqual(expect.arrayContaining(['pwd', 'hwk', 'mfa']));
    expect(await credentials(b)).toHaveLength(1);

    // A new sign-in (prompt=login) with the password: the passkey is the second step.
    const second = await authorizationRequest(rp, { redirect_uri: redirectUri, scope: 'openid', prompt: 'login' });
    await page.goto(second.url.href);
    await typePassword(page, email);
    await expectPage(b, 'Confirm it is you', 'form[data-webauthn="authenticate"][action$="/mfa"]');
    await page.click('form[data-webauthn="authenticate"][action$="/mfa"] button[type=submit]');
    const again = await toCallback(page);
    const secondTokens = await oidc.authorizationCodeGrant(rp, again, { pkceCodeVerifier: second.verifier, expectedState: second.state, expectedNonce: second.nonce });
    expect(secondTokens.claims()).toMatchObject({ sub: id, acr: 'urn:idp:acr:phr' });
    expect(secondTokens.claims()!.amr).toEqual(expect.arrayContaining(['pwd', 'hwk', 'mfa']));
    expect(b.cspViolations).toEqual([]);
  });
});
