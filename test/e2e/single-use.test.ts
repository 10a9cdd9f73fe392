// Everything that works once, redeemed by N requests at the same time: authorization codes and
// refresh tokens at the token endpoint (openid-client as the relying party), mailed links
// (password reset, email verification, invitation) through the account pages with a real SMTP
// server, and second-factor codes (backup codes, emailed codes) through the MFA service over the
// real stores. Exactly one redemption wins on SQLite and on PostgreSQL + Redis; every other one
// is a clean refusal (never a 500), and for OAuth a lost race counts as reuse: the grant is
// revoked. The same races across two server processes are in test/e2e/multi-node.test.ts.
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, signIn } from '../helpers/browser.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { backends, startIdp, type TestIdp } from '../helpers/server.ts';
import { startSmtp, type TestSmtp } from '../helpers/smtp.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const redirectUri = 'http://localhost:8080/callback';
const password = 'correct horse battery staple';
const parallel = 10;
const formHeaders = { 'content-type': 'application/x-www-form-urlencoded' };

/** Runs `attempt` `parallel` times at once; returns the settled results in order. */
async function race<T>(attempt: (i: number) => Promise<T>): Promise<PromiseSettledResult<T>[]> {
  return Promise.allSettled(Array.from({ length: parallel }, (_, i) => attempt(i)));
}

describe.each(backends)('single-use credentials redeemed in parallel on %s', (backend) => {
  let t: TestIdp;
  let smtp: TestSmtp;
  let rp: oidc.Configuration;
  let accountId: string;

  beforeAll(async () => {
    smtp = await startSmtp();
    // TRUST_PROXY lets each mailed-link race come from an address of its own: the anonymous forms
    // allow 20 posts per address and hour.
    t = await startIdp(backend, { SMTP_URL: smtp.url, TRUST_PROXY: 'true', REGISTRATION_ENABLED: 'true' });
    accountId = (await t.idp.accounts.create({ email: 'alice@example.com', password, emailVerified: true })).id;
    const created = await t.idp.clients.create({ client_id: 'webapp', redirect_uris: [redirectUri], grant_types: ['authorization_code', 'refresh_token'], first_party: true });
    rp = await oidc.discovery(new URL(t.issuer), 'webapp', created.clientSecret!, undefined, insecure);
  });

  afterAll(async () => {
    await t?.stop();
    await smtp?.stop();
  });

  async function signedInCallback() {
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri, scope: 'openid offline_access', prompt: 'consent' });
    const callback = await signIn(new Browser(), request.url, 'alice@example.com', password);
    return { request, callback };
  }

  /** The OAuth error of a rejected openid-client call (undefined for anything else, e.g. a 500). */
  const oauthError = (result: PromiseSettledResult<unknown>) => (result.status === 'rejected' ? (result.reason as { error?: string }).error : 'fulfilled');

  it('an authorization code: exactly one of N parallel redemptions gets tokens, the rest invalid_grant, and the grant is revoked', async () => {
    const { request, callback } = await signedInCallback();
    const results = await race(() => oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce }));
    const winners = results.filter((r) => r.status === 'fulfilled') as PromiseFulfilledResult<oidc.TokenEndpointResponse>[];
    expect(winners, JSON.stringify(results.map(oauthError))).toHaveLength(1);
    expect(results.map(oauthError).filter((e) => e !== 'fulfilled')).toEqual(Array(parallel - 1).fill('invalid_grant'));
    // A second redemption is a reuse (RFC 6749 §4.1.2): the tokens issued from the code are revoked.
    const tokens = winners[0]!.value;
    expect((await oidc.tokenIntrospection(rp, tokens.access_token)).active).toBe(false);
    await expect(oidc.refreshTokenGrant(rp, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    // The audit log commits in groups after the response: wait for what is on its way.
    await t.idp.audit.flush();
    const failures = await t.idp.db.prisma.auditEvent.findMany({ where: { type: { in: ['token.failed', 'server_error', 'grant.revoked'] } } });
    expect(failures.filter((e) => e.type === 'server_error')).toEqual([]);
    expect(failures.some((e) => e.type === 'grant.revoked')).toBe(true);
  });

  it('a refresh token: exactly one of N parallel refreshes succeeds, and the reuse revokes the grant (no fork)', async () => {
    const { request, callback } = await signedInCallback();
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
    const results = await race(() => oidc.refreshTokenGrant(rp, tokens.refresh_token!));
    const winners = results.filter((r) => r.status === 'fulfilled') as PromiseFulfilledResult<oidc.TokenEndpointResponse>[];
    expect(winners, JSON.stringify(results.map(oauthError))).toHaveLength(1);
    expect(results.map(oauthError).filter((e) => e !== 'fulfilled')).toEqual(Array(parallel - 1).fill('invalid_grant'));
    // The one rotated refresh token does not live on: the grant went with the reuse.
    await expect(oidc.refreshTokenGrant(rp, winners[0]!.value.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  it('a sequential second redemption of a code is refused the same way (no regression of the plain case)', async () => {
    const { request, callback } = await signedInCallback();
    const grant = () => oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
    const tokens = await grant();
    await expect(grant()).rejects.toMatchObject({ error: 'invalid_grant' });
    expect((await oidc.tokenIntrospection(rp, tokens.access_token)).active).toBe(false);
  });

  /** The token of the newest mail to `to` whose link leads to `path`. */
  async function mailedToken(to: string, path: string): Promise<string> {
    await t.idp.afterResponse.settled();
    const mails = smtp.messages.filter((m) => m.to.includes(to));
    const links = mails.flatMap((m) => m.text.match(/https?:\/\/[^\s<>"]+/g) ?? []).map((u) => new URL(u.replace(/[.,;:!?)\]'"]+$/, ''))).filter((u) => u.pathname === path);
    expect(links.length, `a mailed link to ${path}`).toBeGreaterThan(0);
    return links.at(-1)!.searchParams.get('token')!;
  }

  /** N parallel posts of one mailed link's form, from one browser holding the form's CSRF cookie. */
  async function raceLinkForm(path: string, token: string, fields: Record<string, string>, origin: string) {
    const browser = new Browser();
    const page = await browser.request(`${t.issuer}${path}?token=${token}`, { headers: { 'x-forwarded-for': origin } });
    const csrf = csrfOf(await page.text());
    const results = await race(async () => {
      const response = await browser.request(`${t.issuer}${path}`, { method: 'POST', headers: { ...formHeaders, 'x-forwarded-for': origin }, body: new URLSearchParams({ csrf, token, ...fields }).toString() });
      return { status: response.status, html: await response.text() };
    });
    return results.map((r) => (r.status === 'fulfilled' ? r.value : { status: 0, html: String(r.reason) }));
  }

  it('a password-reset link: one of N parallel posts sets the password, the others see an invalid link', async () => {
    const email = 'reset-race@example.com';
    await t.idp.accounts.create({ email, password, emailVerified: true });
    await t.idp.selfService.requestPasswordReset(email, {});
    const token = await mailedToken(email, '/account/reset-password');
    const answers = await raceLinkForm('/account/reset-password', token, { password: 'a brand new passphrase', confirm: 'a brand new passphrase' }, '198.51.100.1');
    expect(answers.map((a) => a.status).sort()).toEqual([200, ...Array(parallel - 1).fill(400)]);
    const audit = await t.idp.db.prisma.auditEvent.count({ where: { type: 'password_reset.completed' } });
    expect(audit).toBe(1);
  });

  it('an invitation link: one of N parallel posts sets the password', async () => {
    const email = 'invite-race@example.com';
    await t.idp.selfService.invite({ email, name: null }, {});
    const token = await mailedToken(email, '/account/invitation');
    const answers = await raceLinkForm('/account/invitation', token, { password: 'a welcoming passphrase', confirm: 'a welcoming passphrase' }, '198.51.100.2');
    expect(answers.map((a) => a.status).sort()).toEqual([200, ...Array(parallel - 1).fill(400)]);
    expect(await t.idp.db.prisma.auditEvent.count({ where: { type: 'account.invitation_accepted' } })).toBe(1);
  });

  it('an email-verification link: one of N parallel confirmations verifies the address', async () => {
    const email = 'verify-race@example.com';
    await t.idp.selfService.register({ email, password: 'a registered passphrase' }, {});
    const token = await mailedToken(email, '/account/verify-email');
    const answers = await raceLinkForm('/account/verify-email', token, { password: 'a registered passphrase' }, '198.51.100.3');
    expect(answers.filter((a) => a.status >= 500)).toEqual([]);
    expect(answers.filter((a) => a.status === 200)).toHaveLength(1);
    expect(await t.idp.db.prisma.auditEvent.count({ where: { type: 'account.email_verified' } })).toBe(1);
  });

  it('a backup code: of N parallel sign-ins presenting it, one passes', async () => {
    const [code] = await t.idp.mfa.generateBackupCodes(accountId);
    const results = await race((i) => t.idp.mfa.verify(`backup-race-${i}`, accountId, { method: 'backup_code', code: code! }));
    const values = results.map((r) => (r.status === 'fulfilled' ? r.value.ok : r.reason));
    expect(values.filter((v) => v === true)).toHaveLength(1);
    expect(values.filter((v) => v === false)).toHaveLength(parallel - 1);
  });

  it('an emailed code: of N parallel checks of the right code, one passes', async () => {
    const key = 'email-code-race';
    expect(await t.idp.mfa.sendCodeTo(key, 'email', 'alice@example.com', accountId)).toBe('sent');
    await t.idp.afterResponse.settled();
    const mail = smtp.messages.filter((m) => m.to.includes('alice@example.com')).at(-1)!;
    const code = /\b(\d{6})\b/.exec(mail.text)![1]!;
    const results = await race(() => t.idp.mfa.checkCode(key, 'email', code));
    const values = results.map((r) => (r.status === 'fulfilled' ? r.value : `rejected: ${String(r.reason)}`));
    expect(values.filter((v) => v === 'ok'), JSON.stringify(values)).toHaveLength(1);
    // Every check counts as an attempt before the comparison, so the later ones find the code burnt.
    expect(values.filter((v) => v !== 'ok').every((v) => v === 'expired' || v === 'invalid' || v === 'exhausted'), JSON.stringify(values)).toBe(true);
  });
});
