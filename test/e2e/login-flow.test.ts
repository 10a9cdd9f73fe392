// Outcomes of the login and consent screens other than success: denial, too many attempts,
// expired codes. Each reaches the relying party as a proper OAuth error.
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction, signIn } from '../helpers/browser.ts';
import { startIdp, type TestIdp } from '../helpers/server.ts';

const redirectUri = 'http://localhost:8080/callback';
const password = 'a long enough password';

describe('login flow outcomes', () => {
  let t: TestIdp;
  let rp: oidc.Configuration;

  beforeAll(async () => {
    t = await startIdp('sqlite', { AUTHORIZATION_CODE_TTL: '1', MAX_LOGIN_ATTEMPTS_PER_INTERACTION: '3' });
    await t.idp.accounts.create({ email: 'bob@example.com', password });
    const created = await t.idp.clients.create({ client_id: 'webapp', redirect_uris: [redirectUri] });
    rp = await oidc.discovery(new URL(t.issuer), 'webapp', created.clientSecret!, undefined, { execute: [oidc.allowInsecureRequests] });
  });
  afterAll(async () => t?.stop());

  async function start() {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(rp, { redirect_uri: redirectUri, scope: 'openid email', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state });
    return { url, verifier, state };
  }

  it('returns access_denied to the client when the user denies consent', async () => {
    const request = await start();
    const callback = await signIn(new Browser(), request.url, 'bob@example.com', password, { consent: false });
    expect(callback.searchParams.get('error')).toBe('access_denied');
    expect(callback.searchParams.get('state')).toBe(request.state);
    expect(await t.idp.db.prisma.auditEvent.count({ where: { type: 'consent.denied' } })).toBe(1);
  });

  it('ends the interaction with access_denied after too many wrong passwords', async () => {
    const request = await start();
    const browser = new Browser();
    const first = await browser.follow(request.url, t.issuer);
    let html = await first.response.text();
    let next = await browser.postForm(new URL(formAction(html, 'identify'), t.issuer), { csrf: csrfOf(html), email: 'bob@example.com' }, t.issuer);
    for (let attempt = 1; attempt <= 2; attempt++) {
      html = await next.response.text();
      next = await browser.postForm(new URL(formAction(html, 'password'), t.issuer), { csrf: csrfOf(html), password: `wrong ${attempt}` }, t.issuer);
      expect(next.response.status).toBe(401);
    }
    html = await next.response.text();
    next = await browser.postForm(new URL(formAction(html, 'password'), t.issuer), { csrf: csrfOf(html), password: 'wrong 3' }, t.issuer);
    expect(next.url.origin).toBe('http://localhost:8080');
    expect(next.url.searchParams.get('error')).toBe('access_denied');
    expect(next.url.searchParams.get('error_description')).toBe('too many failed sign-in attempts');
    const events = await t.idp.db.prisma.auditEvent.findMany({ where: { type: { in: ['login.password_rejected', 'login.attempts_exhausted'] } } });
    expect(events.filter((e) => e.type === 'login.password_rejected')).toHaveLength(3);
    expect(events.filter((e) => e.type === 'login.attempts_exhausted')).toHaveLength(1);
    expect(events.every((e) => e.outcome === 'failure')).toBe(true);
  });

  it('lets the user go back and use another account', async () => {
    const request = await start();
    const browser = new Browser();
    const first = await browser.follow(request.url, t.issuer);
    let html = await first.response.text();
    const passwordPage = await browser.postForm(new URL(formAction(html, 'identify'), t.issuer), { csrf: csrfOf(html), email: 'someone@example.com' }, t.issuer);
    html = await passwordPage.response.text();
    const back = await browser.postForm(new URL(formAction(html, 'restart'), t.issuer), { csrf: csrfOf(html) }, t.issuer);
    expect(await back.response.text()).toContain('name="email"');
  });

  it('refuses an expired authorization code with invalid_grant', async () => {
    const request = await start();
    const callback = await signIn(new Browser(), request.url, 'bob@example.com', password);
    await new Promise((resolve) => setTimeout(resolve, 2100));
    await expect(oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state })).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  it('rehashes a password made with weaker argon2 parameters at the next login', async () => {
    // Created with the configured minimum (m=19456, t=2); the service below is configured stronger.
    const account = await t.idp.accounts.create({ email: 'carol@example.com', password: 'rehash me please!' });
    const weak = account.passwordHash!;
    expect(weak).toMatch(/m=19456,p=1,t=2\$/);
    const strongerHasher = (await import('../../src/accounts/passwords.ts')).PasswordHasher;
    const { AccountService } = await import('../../src/accounts/service.ts');
    const { AccountStore } = await import('../../src/store/accounts.ts');
    const service = new AccountService(new AccountStore(t.idp.db.prisma), new strongerHasher({ memoryCost: 32768, timeCost: 3, parallelism: 1 }));
    const result = await service.authenticate('Carol@Example.com', 'rehash me please!');
    expect(result.ok).toBe(true);
    const after = await t.idp.db.prisma.account.findUniqueOrThrow({ where: { id: account.id } });
    expect(after.passwordHash).toMatch(/^\$argon2id\$v=19\$m=32768,p=1,t=3\$/);
    expect(after.passwordHash).not.toBe(weak);
  });
});
