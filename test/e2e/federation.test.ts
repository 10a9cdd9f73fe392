// Upstream OpenID Connect federation, end to end: our IdP as the relying party of real OpenID
// providers on loopback that stand in for Microsoft Entra ID, Google and Okta (oidc-provider
// instances configured with their quirks, test/helpers/upstreams.ts) and an independently written
// one (oauth2-mock-server) for the generic connection — the cloud services cannot be reached from
// here. Our application is openid-client; the browser a cookie jar that follows every redirect.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NewConnection } from '../../src/federation/settings.ts';
import { totpCodeAt } from '../../src/mfa/totp.ts';
import { startSmtp, type TestSmtp } from '../helpers/smtp.ts';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { backends, startIdp, type TestIdp } from '../helpers/server.ts';
import { DEFAULT_ENTRA_TENANTS, startEntraUpstream, startMockServerUpstream, startOidcUpstream, type EntraUpstream, type MockUpstream, type StandInUpstream } from '../helpers/upstreams.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const redirectUri = 'http://localhost:8080/callback';
const [allowedTenant, otherTenant] = DEFAULT_ENTRA_TENANTS as [string, string];
const secret = 'upstream-client-secret-0123456789';

describe.each(backends)('upstream OIDC federation on %s', (backend) => {
  let t: TestIdp;
  let rp: oidc.Configuration;
  let thirdParty: oidc.Configuration;
  let entra: EntraUpstream;
  let google: StandInUpstream;
  let okta: StandInUpstream;
  let plain: StandInUpstream;
  let mock: MockUpstream;
  let smtp: TestSmtp;
  const upstreams = () => [entra, google, okta, plain, mock];

  const callback = (id: string) => `${t.issuer}/interaction/callback/oidc/${id}`;
  const client = (...ids: string[]) => ({ client_id: 'our-idp', client_secret: secret, redirect_uris: ids.map(callback) });

  async function connect(input: Partial<NewConnection> & Pick<NewConnection, 'id' | 'preset' | 'display_name'>) {
    return t.idp.connections.create({ client_id: 'our-idp', client_secret: secret, clients: ['webapp'], ...input } as NewConnection, 'test');
  }

  beforeAll(async () => {
    smtp = await startSmtp();
    t = await startIdp(backend, { FEDERATION_ALLOW_HTTP: 'true', FEDERATION_TIMEOUT_SECONDS: '2', APPROVAL_USER_TYPES: 'partner', SMTP_URL: smtp.url, SMTP_FROM: 'IdP <no-reply@idp.test>' });
    entra = await startEntraUpstream({ clients: [client('contoso', 'contoso-ca')] });
    google = await startOidcUpstream({ flavour: 'google', clients: [client('google')] });
    okta = await startOidcUpstream({ flavour: 'okta', clients: [client('okta')] });
    plain = await startOidcUpstream({ flavour: 'plain', clients: [{ ...client('plain', 'plain-nojit', 'plain-sso'), post_logout_redirect_uris: [`${t.issuer}/interaction/logged-out`] }] });
    mock = await startMockServerUpstream({ clientId: 'our-idp' });

    const created = await t.idp.clients.create({ client_id: 'webapp', redirect_uris: [redirectUri], post_logout_redirect_uris: ['http://localhost:8080/logged-out'], first_party: true });
    rp = await oidc.discovery(new URL(t.issuer), 'webapp', created.clientSecret!, undefined, insecure);
    const other = await t.idp.clients.create({ client_id: 'partner-app', client_name: 'Partner App', redirect_uris: [redirectUri] });
    thirdParty = await oidc.discovery(new URL(t.issuer), 'partner-app', other.clientSecret!, undefined, insecure);

    await connect({ id: 'contoso', preset: 'entra', display_name: 'Contoso', issuer: entra.issuer, tenants: [allowedTenant], domains: ['contoso.test'], clients: ['webapp', 'partner-app'] });
    await connect({ id: 'contoso-ca', preset: 'entra', display_name: 'Contoso CA', issuer: entra.tenantIssuer(allowedTenant), mfa: { trust: 'conditional_access' } });
    await connect({ id: 'google', preset: 'google', display_name: 'Google', issuer: google.issuer, hosted_domains: ['example.org'], authoritative_domains: ['example.org'] });
    await connect({ id: 'okta', preset: 'okta', display_name: 'Okta', issuer: okta.issuer, scopes: ['openid', 'email', 'profile', 'groups'], domains: ['okta-corp.test'], group_roles: { Engineering: 'engineer' }, mfa: { trust: 'asserted' } });
    await connect({ id: 'plain', preset: 'jumpcloud', display_name: 'JumpCloud', issuer: plain.issuer, claim_mapping: { attributes: { department: 'name' } }, jit: { user_type: 'partner' } });
    await connect({ id: 'plain-nojit', preset: 'generic', display_name: 'No JIT', issuer: plain.issuer, jit: { enabled: false } });
    await connect({ id: 'plain-sso', preset: 'generic', display_name: 'Plain SSO', issuer: plain.issuer, end_session: true });
    await connect({ id: 'mock', preset: 'generic', display_name: 'Generic', issuer: mock.issuer });
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
    await smtp?.stop();
    for (const upstream of upstreams()) await upstream?.stop();
  });

  /** From the RP's authorization request to the identify screen. */
  async function identifyScreen(browser: Browser, config = rp, extra: Record<string, string> = {}) {
    const request = await authorizationRequest(config, { redirect_uri: redirectUri, scope: 'openid email profile', ...extra });
    const { response, url } = await browser.follow(request.url, t.issuer);
    const html = await response.text();
    expect(response.status, html.slice(0, 300)).toBe(200);
    return { request, html, url };
  }

  /** Clicks "Continue with …": returns where the browser is sent. */
  async function clickConnection(browser: Browser, html: string, connection: string) {
    const clicked = await browser.request(new URL(formAction(html, 'identify'), t.issuer), {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ csrf: csrfOf(html), method: 'oidc', connection }).toString(),
    });
    return clicked;
  }

  /** Through the upstream (its own origin) and back to our callback, then on at our IdP. */
  async function throughUpstream(browser: Browser, to: URL) {
    const upstream = await browser.follow(to, to.origin);
    expect(upstream.url.origin, 'the upstream sends the browser back to us').toBe(new URL(t.issuer).origin);
    expect(upstream.url.pathname).toMatch(/^\/interaction\/callback\/oidc\//);
    return { callbackUrl: upstream.url, ...(await browser.follow(upstream.url, t.issuer)) };
  }

  /** The whole button flow: returns the final URL (the RP's redirect_uri) or the page we stopped on. */
  async function federatedSignIn(browser: Browser, connection: string, config = rp) {
    const { request, html } = await identifyScreen(browser, config);
    const clicked = await clickConnection(browser, html, connection);
    expect(clicked.status).toBe(303);
    const back = await throughUpstream(browser, new URL(clicked.headers.get('location')!));
    return { request, ...back };
  }

  async function tokensFor(url: URL, request: Awaited<ReturnType<typeof authorizationRequest>>, config = rp, page?: Response) {
    if (url.origin + url.pathname !== redirectUri && page) expect.fail(`stopped at ${url.pathname}: ${JSON.stringify((await auditOf('federation.refused')).at(-1)?.details)} ${(await page.text()).slice(0, 400)}`);
    expect(url.origin + url.pathname, 'the sign-in reached the application').toBe(redirectUri);
    return oidc.authorizationCodeGrant(config, url, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
  }

  const auditOf = async (type: string) => (await t.idp.db.prisma.auditEvent.findMany({ where: { type }, orderBy: { seq: 'asc' } }))
    .map((row) => ({ ...row, details: JSON.parse(row.details) as Record<string, unknown> }));

  it('shows a button for each connection enabled for the client, and none of another client\'s', async () => {
    const { html } = await identifyScreen(new Browser(undefined, { perHost: true }));
    for (const name of ['Contoso', 'Contoso CA', 'Google', 'Okta', 'JumpCloud', 'Generic', 'Plain SSO']) expect(html).toContain(`Continue with ${name}</button>`);
    const partner = await identifyScreen(new Browser(undefined, { perHost: true }), thirdParty);
    expect(partner.html).toContain('Continue with Contoso</button>');
    expect(partner.html).not.toContain('Continue with Google');
  });

  it('JIT: the first upstream sign-in creates the account with the mapped claims; the next one finds it by (connection, issuer, subject)', async () => {
    plain.signInAs({ id: 'jc-user-1', claims: { email: 'jit.user@jumpcloud.test', email_verified: true, name: 'Jit User' } });
    const browser = new Browser(undefined, { perHost: true });
    const first = await federatedSignIn(browser, 'plain');
    const tokens = await tokensFor(first.url, first.request);
    const account = (await t.idp.accounts.findByEmail('jit.user@jumpcloud.test'))!;
    expect(account).toMatchObject({ name: 'Jit User', emailVerified: true, userType: 'partner', approval: 'pending', attributes: { department: 'Jit User' }, passwordHash: null });
    expect(tokens.claims()).toMatchObject({ sub: account.id, amr: ['fed'] });
    const links = await t.idp.federatedAccounts.linksOf(account.id);
    expect(links).toEqual([expect.objectContaining({ connectionId: 'plain', issuer: plain.issuer, subject: 'jc-user-1' })]);
    const created = await auditOf('federation.account_created');
    expect(created.at(-1)).toMatchObject({ subject: account.id, details: { connection: 'plain', upstreamSubject: 'jc-user-1', userType: 'partner' } });
    // The upstream's tokens are never written anywhere in the audit log.
    const all = JSON.stringify(await t.idp.db.prisma.auditEvent.findMany());
    expect(all).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/);

    // Again, in a fresh browser: the same account, no second one.
    const again = await federatedSignIn(new Browser(undefined, { perHost: true }), 'plain');
    expect((await tokensFor(again.url, again.request)).claims()!.sub).toBe(account.id);
    expect(await t.idp.db.prisma.account.count({ where: { email: 'jit.user@jumpcloud.test' } })).toBe(1);
  });

  it('home-realm discovery: an address of a routed domain goes straight upstream (no password), with a login hint; Okta groups come from userinfo', async () => {
    okta.signInAs({ id: 'okta-7', claims: { email: 'dev@okta-corp.test', email_verified: true, name: 'Dev', groups: ['Engineering', 'Everyone'] }, amr: ['pwd'] });
    const browser = new Browser(undefined, { perHost: true });
    const { request, html } = await identifyScreen(browser);
    const typed = await browser.request(new URL(formAction(html, 'identify'), t.issuer), {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ csrf: csrfOf(html), email: 'Dev@okta-corp.test' }).toString(),
    });
    expect(typed.status).toBe(303);
    const to = new URL(typed.headers.get('location')!);
    expect(to.origin).toBe(new URL(okta.issuer).origin);
    expect(to.searchParams.get('login_hint')).toBe('Dev@okta-corp.test');
    expect(to.searchParams.get('code_challenge_method')).toBe('S256');
    expect(to.searchParams.get('nonce')).toBeTruthy();
    const back = await throughUpstream(browser, to);
    const claims = (await tokensFor(back.url, request)).claims();
    const account = (await t.idp.accounts.findByEmail('dev@okta-corp.test'))!;
    expect(account.roles).toEqual(['engineer']);
    // Okta said pwd only: no MFA evidence, so amr is fed alone.
    expect(claims).toMatchObject({ sub: account.id, amr: ['fed'] });
  });

  it('trusted upstream MFA: Okta\'s amr mfa skips our second factor and our tokens say so; untrusted, our MFA applies', async () => {
    // An account with an authenticator app: any sign-in that is not multi-factor yet asks for it.
    const account = await t.idp.accounts.create({ email: 'mfa.user@okta-corp.test', emailVerified: true });
    const enrolment = await t.idp.mfa.startTotp(account.id, account.email);
    expect(await t.idp.mfa.confirmTotp(account.id, enrolment.factorId, totpCodeAt(enrolment.secret, t.clock.now()))).toBe(true);
    // Okta is not authoritative for any domain here: the identity is linked as a proof sign-in would have.
    await t.idp.db.prisma.upstreamIdentity.create({ data: { id: 'link-okta-mfa', connectionId: 'okta', issuer: okta.issuer, subject: 'okta-mfa', accountId: account.id } });

    okta.signInAs({ id: 'okta-mfa', claims: { email: account.email, email_verified: true }, amr: ['pwd', 'mfa'] });
    const trusted = await federatedSignIn(new Browser(undefined, { perHost: true }), 'okta');
    const claims = (await tokensFor(trusted.url, trusted.request)).claims()!;
    expect(claims).toMatchObject({ sub: account.id, amr: ['fed', 'mfa'] });
    const signedIn = (await auditOf('federation.signed_in')).at(-1)!;
    expect(signedIn.details).toMatchObject({ connection: 'okta', mfaEvidence: 'amr:mfa', upstreamSubject: 'okta-mfa' });

    {
      okta.signInAs({ id: 'okta-mfa', claims: { email: account.email, email_verified: true }, amr: ['pwd'] });
      const untrusted = await federatedSignIn(new Browser(undefined, { perHost: true }), 'okta');
      expect(untrusted.url.pathname).toMatch(/^\/interaction\//);
      expect(await untrusted.response.text()).toContain('name="code"');
    }
  });

  it('prompt=login and a stronger acr_values ask the upstream for a fresh sign-in (prompt=login, max_age=0); its MFA then meets the acr', async () => {
    okta.signInAs({ id: 'okta-7', claims: { email: 'dev@okta-corp.test', email_verified: true, groups: ['Engineering'] }, amr: ['pwd', 'mfa'] });
    for (const extra of [{ prompt: 'login' }, { acr_values: 'urn:idp:acr:2fa' }] as Record<string, string>[]) {
      const browser = new Browser(undefined, { perHost: true });
      const { request, html } = await identifyScreen(browser, rp, extra);
      const clicked = await clickConnection(browser, html, 'okta');
      const to = new URL(clicked.headers.get('location')!);
      expect(to.searchParams.get('prompt'), JSON.stringify(extra)).toBe('login');
      expect(to.searchParams.get('max_age')).toBe('0');
      const back = await throughUpstream(browser, to);
      const claims = (await tokensFor(back.url, request, rp, back.response)).claims()!;
      expect(claims.amr).toEqual(['fed', 'mfa']);
      if (extra.acr_values) expect(claims.acr).toBe('urn:idp:acr:2fa');
    }
    // Without either, the upstream may reuse its session.
    const browser = new Browser(undefined, { perHost: true });
    const { html } = await identifyScreen(browser);
    const plainClick = new URL((await clickConnection(browser, html, 'okta')).headers.get('location')!);
    expect(plainClick.searchParams.has('prompt')).toBe(false);
  });

  it('Entra ID multi-tenant: the {tenantid} issuer is resolved from the token, an allowed tenant signs in keyed by tid and oid; another tenant is refused', async () => {
    entra.signInAs({ id: 'entra-sub-1', claims: { tid: allowedTenant, oid: 'aaaaaaaa-0000-4000-8000-000000000001', email: 'alice@contoso.test', name: 'Alice' } });
    const signedIn = await federatedSignIn(new Browser(undefined, { perHost: true }), 'contoso');
    const claims = (await tokensFor(signedIn.url, signedIn.request, rp, signedIn.response)).claims();
    const account = (await t.idp.accounts.findByEmail('alice@contoso.test'))!;
    expect(claims!.sub).toBe(account.id);
    // Entra gives no email_verified: the address is kept, never trusted.
    expect(account.emailVerified).toBe(false);
    expect(await t.idp.federatedAccounts.linksOf(account.id)).toEqual([expect.objectContaining({ issuer: entra.tenantIssuer(allowedTenant), subject: `${allowedTenant}:aaaaaaaa-0000-4000-8000-000000000001` })]);

    entra.signInAs({ id: 'entra-sub-2', claims: { tid: otherTenant, oid: 'bbbbbbbb-0000-4000-8000-000000000002', email: 'mallory@fabrikam.test' } });
    const refused = await federatedSignIn(new Browser(undefined, { perHost: true }), 'contoso');
    expect(refused.response.status).toBe(401);
    const page = await refused.response.text();
    expect(page).toContain('could not be accepted');
    expect(page).toContain('name="email"');
    expect(await t.idp.accounts.findByEmail('mallory@fabrikam.test')).toBeNull();
    expect((await auditOf('federation.refused')).at(-1)!.details).toMatchObject({ connection: 'contoso', reason: 'tenant_refused' });
  });

  it('nOAuth: an Entra account carrying someone else\'s address never reaches their account; proving the account links it', async () => {
    const victim = await t.idp.accounts.create({ email: 'victim@contoso.test', password: 'Correct-Horse-Battery-9', emailVerified: true });
    entra.signInAs({ id: 'entra-attacker', claims: { tid: allowedTenant, oid: 'cccccccc-0000-4000-8000-000000000003', email: 'victim@contoso.test' } });
    const attackerBrowser = new Browser(undefined, { perHost: true });
    const attacker = await federatedSignIn(attackerBrowser, 'contoso');
    // Not signed in: asked for the existing account's password instead.
    expect(attacker.url.origin).toBe(new URL(t.issuer).origin);
    const html = await attacker.response.text();
    expect(html).toContain('name="password"');
    expect(html).toContain('Sign in to it once to link your Contoso sign-in');
    expect(await t.idp.federatedAccounts.linksOf(victim.id)).toEqual([]);
    expect((await auditOf('federation.link_required')).at(-1)).toMatchObject({ subject: victim.id, details: { connection: 'contoso' } });
    // The attacker cannot prove it: a wrong password is a failed attempt, and no link.
    const wrong = await attackerBrowser.postForm(new URL(formAction(html, 'password'), t.issuer), { csrf: csrfOf(html), password: 'a-guess-of-the-attacker' }, t.issuer);
    expect(wrong.response.status).toBe(401);
    expect(wrong.url.origin).toBe(new URL(t.issuer).origin);
    expect(await t.idp.federatedAccounts.linksOf(victim.id)).toEqual([]);

    // The real owner (same upstream account, say after an admin fixed it) proves the account: linked.
    entra.signInAs({ id: 'entra-owner', claims: { tid: allowedTenant, oid: 'dddddddd-0000-4000-8000-000000000004', email: 'victim@contoso.test' } });
    const browser = new Browser(undefined, { perHost: true });
    const owner = await federatedSignIn(browser, 'contoso');
    const proof = await owner.response.text();
    const proved = await browser.postForm(new URL(formAction(proof, 'password'), t.issuer), { csrf: csrfOf(proof), password: 'Correct-Horse-Battery-9' }, t.issuer);
    const claims = (await tokensFor(proved.url, owner.request)).claims();
    expect(claims).toMatchObject({ sub: victim.id, amr: ['pwd'] });
    expect(await t.idp.federatedAccounts.linksOf(victim.id)).toEqual([expect.objectContaining({ subject: `${allowedTenant}:dddddddd-0000-4000-8000-000000000004` })]);
    expect((await auditOf('federation.linked')).at(-1)!.details).toMatchObject({ by: 'proof', connection: 'contoso' });
    // From now on the upstream sign-in alone reaches the account.
    const next = await federatedSignIn(new Browser(undefined, { perHost: true }), 'contoso');
    expect((await tokensFor(next.url, next.request)).claims()).toMatchObject({ sub: victim.id, amr: ['fed'] });
  });

  it('Google: a verified address of an authoritative Workspace domain links the existing account; another hd is refused', async () => {
    const existing = await t.idp.accounts.create({ email: 'bob@example.org', password: 'Correct-Horse-Battery-9', emailVerified: true });
    google.signInAs({ id: 'google-bob', claims: { email: 'bob@example.org', email_verified: true, hd: 'example.org', name: 'Bob' } });
    const linked = await federatedSignIn(new Browser(undefined, { perHost: true }), 'google');
    expect((await tokensFor(linked.url, linked.request)).claims()).toMatchObject({ sub: existing.id, amr: ['fed'] });
    expect((await auditOf('federation.linked')).at(-1)!.details).toMatchObject({ by: 'verified_email', connection: 'google' });

    google.signInAs({ id: 'google-eve', claims: { email: 'eve@gmail.test', email_verified: true, name: 'Eve' } });
    const refused = await federatedSignIn(new Browser(undefined, { perHost: true }), 'google');
    expect(refused.response.status).toBe(401);
    expect((await auditOf('federation.refused')).at(-1)!.details).toMatchObject({ connection: 'google', reason: 'domain_refused' });
  });

  it('Entra with a Conditional Access statement: our MFA is skipped, amr says mfa, and the audit records the statement', async () => {
    entra.signInAs({ id: 'entra-ca', claims: { tid: allowedTenant, oid: 'eeeeeeee-0000-4000-8000-000000000005', email: 'carol@contoso.test' } });
    const signedIn = await federatedSignIn(new Browser(undefined, { perHost: true }), 'contoso-ca');
    expect((await tokensFor(signedIn.url, signedIn.request)).claims()!.amr).toEqual(['fed', 'mfa']);
    expect((await auditOf('federation.signed_in')).at(-1)!.details).toMatchObject({ connection: 'contoso-ca', mfaEvidence: 'conditional_access_statement' });
  });

  it('the generic connection works with an independently written provider (oauth2-mock-server)', async () => {
    mock.signInAs({ id: 'mock-user', claims: { email: 'generic@mock.test', email_verified: true, name: 'Generic' } });
    const signedIn = await federatedSignIn(new Browser(undefined, { perHost: true }), 'mock');
    const account = (await t.idp.accounts.findByEmail('generic@mock.test'))!;
    expect((await tokensFor(signedIn.url, signedIn.request)).claims()).toMatchObject({ sub: account.id, amr: ['fed'] });
  });

  it('refuses ID tokens that fail a check — nonce, issuer, audience, azp, expiry, signature — with a page and an audit row', async () => {
    mock.signInAs({ id: 'mock-user', claims: { email: 'generic@mock.test', email_verified: true } });
    const now = Math.floor(Date.now() / 1000);
    const cases: [string, { claims?: Record<string, unknown>; forgeSignature?: boolean }, RegExp][] = [
      ['nonce', { claims: { nonce: 'another-sign-in' } }, /nonce/],
      ['issuer', { claims: { iss: 'https://evil.example' } }, /iss/],
      ['audience', { claims: { aud: 'another-client' } }, /aud/],
      ['azp', { claims: { aud: ['our-idp', 'another-client'], azp: 'another-client' } }, /azp/],
      ['expiry', { claims: { exp: now - 3600, iat: now - 7200 } }, /exp/],
      ['signature', { forgeSignature: true }, /signature/i],
    ];
    for (const [name, tamper, detail] of cases) {
      mock.tamperNextIdToken(tamper);
      const refused = await federatedSignIn(new Browser(undefined, { perHost: true }), 'mock');
      expect(refused.response.status, name).toBe(401);
      expect(await refused.response.text(), name).toContain('could not be accepted');
      const row = (await auditOf('federation.refused')).at(-1)!;
      expect(row.details, name).toMatchObject({ connection: 'mock', reason: 'invalid_response' });
      expect(String(row.details.detail), name).toMatch(detail);
    }
  });

  it('a third-party client sees consent after the upstream round trip', async () => {
    entra.signInAs({ id: 'entra-sub-1', claims: { tid: allowedTenant, oid: 'aaaaaaaa-0000-4000-8000-000000000001', email: 'alice@contoso.test' } });
    const back = await federatedSignIn(new Browser(undefined, { perHost: true }), 'contoso', thirdParty);
    expect(back.url.origin).toBe(new URL(t.issuer).origin);
    expect(await back.response.text()).toContain('/consent"');
  });

  it('refusals are pages with a way on, audited, never a 500: upstream error, no JIT, replayed state, another connection\'s callback, upstream down', async () => {
    // The user cancels at the upstream.
    plain.failNextWith('access_denied');
    const cancelled = await federatedSignIn(new Browser(undefined, { perHost: true }), 'plain');
    expect(cancelled.response.status).toBe(401);
    expect(await cancelled.response.text()).toContain('was cancelled or refused');
    expect((await auditOf('federation.refused')).at(-1)!.details).toMatchObject({ connection: 'plain', reason: 'upstream_error', detail: 'access_denied' });

    // JIT off and no account.
    plain.signInAs({ id: 'nobody', claims: { email: 'nobody@jumpcloud.test', email_verified: true } });
    const noAccount = await federatedSignIn(new Browser(undefined, { perHost: true }), 'plain-nojit');
    expect(await noAccount.response.text()).toContain('There is no account here for your No JIT sign-in');
    expect(await t.idp.accounts.findByEmail('nobody@jumpcloud.test')).toBeNull();

    // The same answer twice: the second finds no sign-in.
    plain.signInAs({ id: 'jc-user-1', claims: { email: 'jit.user@jumpcloud.test', email_verified: true } });
    const once = await federatedSignIn(new Browser(undefined, { perHost: true }), 'plain');
    expect(once.url.origin + once.url.pathname).toBe(redirectUri);
    const replay = await fetch(once.callbackUrl, { redirect: 'manual' });
    expect(replay.status).toBe(400);
    expect(await replay.text()).toContain('does not belong to a sign-in in progress');
    expect((await auditOf('federation.refused')).at(-1)!.details).toMatchObject({ reason: 'unknown_state' });

    // An answer delivered to another connection's callback (a mix-up) is refused.
    const browser = new Browser(undefined, { perHost: true });
    const { html } = await identifyScreen(browser);
    const clicked = await clickConnection(browser, html, 'plain');
    const upstream = await browser.follow(new URL(clicked.headers.get('location')!), new URL(plain.issuer).origin);
    const misrouted = new URL(upstream.url.href.replace('/oidc/plain?', '/oidc/mock?'));
    const mixed = await browser.follow(misrouted, t.issuer);
    expect(mixed.response.status).toBe(401);
    expect(mixed.url.origin).toBe(new URL(t.issuer).origin);
    expect((await auditOf('federation.refused')).at(-1)!.details).toMatchObject({ connection: 'mock', reason: 'invalid_response' });

    // The upstream is down: discovery fails; the user stays on our screen with a notice.
    await connect({ id: 'down', preset: 'generic', display_name: 'Down Inc', issuer: 'http://127.0.0.1:9' });
    const downBrowser = new Browser(undefined, { perHost: true });
    const screen = await identifyScreen(downBrowser);
    const down = await clickConnection(downBrowser, screen.html, 'down');
    expect(down.status).toBe(401);
    expect(await down.text()).toContain('Down Inc cannot be reached right now');
    expect((await auditOf('federation.refused')).at(-1)!.details).toMatchObject({ connection: 'down', reason: 'upstream_unreachable' });
    await t.idp.connections.delete('down', 'test');

    // An upstream that accepts the connection and never answers: given up after FEDERATION_TIMEOUT_SECONDS.
    const silent = createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      await connect({ id: 'silent', preset: 'generic', display_name: 'Silent Corp', issuer: `http://127.0.0.1:${(silent.address() as AddressInfo).port}` });
      const silentBrowser = new Browser(undefined, { perHost: true });
      const silentScreen = await identifyScreen(silentBrowser);
      const started = Date.now();
      const timedOut = await clickConnection(silentBrowser, silentScreen.html, 'silent');
      expect(timedOut.status).toBe(401);
      expect(Date.now() - started).toBeLessThan(6000);
      expect(await timedOut.text()).toContain('Silent Corp cannot be reached right now');
      expect((await auditOf('federation.refused')).at(-1)!.details).toMatchObject({ connection: 'silent', reason: 'upstream_unreachable', detail: expect.stringMatching(/in time/) });
    } finally {
      silent.closeAllConnections();
      silent.close();
      await t.idp.connections.delete('silent', 'test');
    }
  });

  it('an answer sent many times at once signs in once: the state is taken by one of them', async () => {
    plain.signInAs({ id: 'jc-user-1', claims: { email: 'jit.user@jumpcloud.test', email_verified: true } });
    const browser = new Browser(undefined, { perHost: true });
    const { html } = await identifyScreen(browser);
    const clicked = await clickConnection(browser, html, 'plain');
    const upstream = await browser.follow(new URL(clicked.headers.get('location')!), new URL(plain.issuer).origin);
    const answers = await Promise.all(Array.from({ length: 6 }, () => browser.request(upstream.url)));
    const statuses = answers.map((r) => r.status).sort();
    expect(statuses).toEqual([303, 400, 400, 400, 400, 400]);
    // The one that won continues the sign-in in the browser.
    const won = answers.find((r) => r.status === 303)!;
    const done = await browser.follow(new URL(won.headers.get('location')!, t.issuer), t.issuer);
    expect(done.url.origin + done.url.pathname).toBe(redirectUri);
  });

  it('the account page lists linked providers and unlinks one only while another way to sign in remains', async () => {
    /** Signs in to /account through a connection's button; returns the account page. */
    async function accountPage(browser: Browser, connection: string) {
      const start = await browser.follow(`${t.issuer}/account`, t.issuer);
      const html = await start.response.text();
      const clicked = await clickConnection(browser, html, connection);
      expect(clicked.status).toBe(303);
      await throughUpstream(browser, new URL(clicked.headers.get('location')!));
      const page = await browser.follow(`${t.issuer}/account`, t.issuer);
      const text = await page.response.text();
      expect(text).toContain('Sign-in with other providers');
      return text;
    }
    const unlink = (browser: Browser, html: string) => {
      const action = /action="(\/account\/links\/[^"]+\/unlink)"/.exec(html)![1]!;
      return browser.request(new URL(action, t.issuer), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ csrf: csrfOf(html) }).toString() });
    };

    // Alice only signs in through Contoso (no password, an address Entra never verified): her only way in.
    entra.signInAs({ id: 'entra-sub-1', claims: { tid: allowedTenant, oid: 'aaaaaaaa-0000-4000-8000-000000000001', email: 'alice@contoso.test' } });
    const alice = new Browser(undefined, { perHost: true });
    const alicePage = await accountPage(alice, 'contoso');
    expect(alicePage).toContain('Contoso<br><small>alice@contoso.test');
    const refused = await unlink(alice, alicePage);
    expect(refused.status).toBe(409);
    expect(await refused.text()).toContain('This is your only way to sign in');
    const aliceId = (await t.idp.accounts.findByEmail('alice@contoso.test'))!.id;
    expect(await t.idp.federatedAccounts.linksOf(aliceId)).toHaveLength(1);

    // The victim of the nOAuth test has a password besides: the link can go.
    entra.signInAs({ id: 'entra-owner', claims: { tid: allowedTenant, oid: 'dddddddd-0000-4000-8000-000000000004', email: 'victim@contoso.test' } });
    const owner = new Browser(undefined, { perHost: true });
    const ownerPage = await accountPage(owner, 'contoso');
    const done = await unlink(owner, ownerPage);
    expect(done.status).toBe(303);
    expect(done.headers.get('location')).toBe('/account?done=account.unlinked');
    const victimId = (await t.idp.accounts.findByEmail('victim@contoso.test'))!.id;
    expect(await t.idp.federatedAccounts.linksOf(victimId)).toEqual([]);
    expect((await auditOf('federation.unlinked')).at(-1)).toMatchObject({ subject: victimId, details: { connection: 'contoso', upstreamSubject: `${allowedTenant}:dddddddd-0000-4000-8000-000000000004` } });
    // Unlinked: the next Contoso sign-in must prove the account again.
    const again = await federatedSignIn(new Browser(undefined, { perHost: true }), 'contoso');
    expect(await again.response.text()).toContain('name="password"');
  });

  it('RP-initiated logout of a federated session continues at the upstream (end_session) and comes back to where the RP asked', async () => {
    plain.signInAs({ id: 'sso-user', claims: { email: 'sso.user@jumpcloud.test', email_verified: true } });
    const browser = new Browser(undefined, { perHost: true });
    const signedIn = await federatedSignIn(browser, 'plain-sso');
    const tokens = await tokensFor(signedIn.url, signedIn.request);
    const logout = oidc.buildEndSessionUrl(rp, { id_token_hint: tokens.id_token!, post_logout_redirect_uri: 'http://localhost:8080/logged-out', state: 'rp-state' });
    const confirm = await browser.follow(logout, t.issuer);
    const form = await confirm.response.text();
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(form)![1]!;
    const done = await browser.request(new URL('/session/end/confirm', t.issuer), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ xsrf, logout: 'yes' }).toString() });
    expect(done.status).toBe(303);
    const upstreamLogout = new URL(done.headers.get('location')!);
    expect(upstreamLogout.origin + upstreamLogout.pathname).toBe(`${plain.issuer}/session/end`);
    expect(upstreamLogout.searchParams.get('client_id')).toBe('our-idp');
    expect(upstreamLogout.searchParams.get('post_logout_redirect_uri')).toBe(`${t.issuer}/interaction/logged-out`);
    // The upstream accepts it (its own confirmation page), and sends the browser back with our state.
    const atUpstream = await browser.request(upstreamLogout);
    expect(atUpstream.status).toBe(200);
    const back = await browser.request(new URL(`/interaction/logged-out?state=${upstreamLogout.searchParams.get('state')}`, t.issuer));
    expect(back.status).toBe(303);
    expect(back.headers.get('location')).toBe('http://localhost:8080/logged-out?state=rp-state');
    // Once: the same state again only shows our signed-out page.
    const again = await fetch(new URL(`/interaction/logged-out?state=${upstreamLogout.searchParams.get('state')}`, t.issuer), { redirect: 'manual' });
    expect(again.status).toBe(200);

    // A connection without end_session: our logout ends here, as before.
    plain.signInAs({ id: 'jc-user-1', claims: { email: 'jit.user@jumpcloud.test', email_verified: true } });
    const local = new Browser(undefined, { perHost: true });
    const other = await federatedSignIn(local, 'plain');
    const otherTokens = await tokensFor(other.url, other.request);
    const page = await (await local.follow(oidc.buildEndSessionUrl(rp, { id_token_hint: otherTokens.id_token!, post_logout_redirect_uri: 'http://localhost:8080/logged-out' }), t.issuer)).response.text();
    const localDone = await local.request(new URL('/session/end/confirm', t.issuer), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ xsrf: /name="xsrf" value="([^"]+)"/.exec(page)![1]!, logout: 'yes' }).toString() });
    expect(localDone.headers.get('location')).toBe('http://localhost:8080/logged-out');
  });

  it('a JIT account made from an address nobody verified loses that link when the mailbox\'s owner proves it (a reset link)', async () => {
    // Someone at the Entra tenant puts the CEO's address on their profile and signs in first.
    entra.signInAs({ id: 'entra-squatter', claims: { tid: allowedTenant, oid: 'ffffffff-0000-4000-8000-000000000006', email: 'ceo@contoso.test' } });
    const squatted = await federatedSignIn(new Browser(undefined, { perHost: true }), 'contoso');
    await tokensFor(squatted.url, squatted.request);
    const account = (await t.idp.accounts.findByEmail('ceo@contoso.test'))!;
    expect(await t.idp.federatedAccounts.linksOf(account.id)).toHaveLength(1);
    // The real CEO resets the password through the mailbox: the squatter's link goes.
    await t.idp.selfService.requestPasswordReset('ceo@contoso.test', {});
    const mail = await smtp.waitFor((m) => m.to.includes('ceo@contoso.test'));
    const token = new URL(smtp.linkIn(mail, '/account/reset-password')).searchParams.get('token')!;
    await t.idp.selfService.resetPassword(token, 'Quartz-Lantern-Meadow-8', {});
    expect(await t.idp.federatedAccounts.linksOf(account.id)).toEqual([]);
    expect((await auditOf('federation.unlinked')).at(-1)).toMatchObject({ subject: account.id, details: { reason: 'address_proven_by_owner', connection: 'contoso' } });
    // The squatter's next upstream sign-in must prove the account, which it cannot.
    const again = await federatedSignIn(new Browser(undefined, { perHost: true }), 'contoso');
    expect(await again.response.text()).toContain('name="password"');

    // A JIT link from a verified address stays through a reset.
    const verified = (await t.idp.accounts.findByEmail('jit.user@jumpcloud.test'))!;
    await t.idp.selfService.requestPasswordReset('jit.user@jumpcloud.test', {});
    const verifiedMail = await smtp.waitFor((m) => m.to.includes('jit.user@jumpcloud.test'));
    await t.idp.selfService.resetPassword(new URL(smtp.linkIn(verifiedMail, '/account/reset-password')).searchParams.get('token')!, 'Quartz-Lantern-Meadow-9', {});
    expect(await t.idp.federatedAccounts.linksOf(verified.id)).toHaveLength(1);
  });

  it('keeps the client secret only wrapped: the stored row never holds it, and no view shows it', async () => {
    const row = await t.idp.db.prisma.connection.findUniqueOrThrow({ where: { id: 'plain' } });
    expect(row.secret).not.toContain(secret);
    expect(row.settings).not.toContain(secret);
    expect(JSON.parse(row.secret!)).toMatchObject({ v: 1, provider: expect.any(String) });
    const { connectionView } = await import('../../src/federation/connections.ts');
    expect(JSON.stringify(connectionView((await t.idp.connections.find('plain'))!))).not.toContain(secret);
  });
});
