// Sessions end to end: the account page's list of signed-in browsers, ending one or all of them
// (by the user, by an administrator through `idp sessions`, by the concurrent-session limit),
// and the idle and absolute lifetimes. Ending a session must show everywhere a relying party
// can see it: the browser is signed out, the refresh token of that sign-in is refused, and a
// back-channel logout token for that session's sid reaches the client. Every browser here is a
// cookie jar with its own User-Agent; the relying party is openid-client.
import { createServer, type Server } from 'node:http';
import { createRemoteJWKSet, decodeJwt, jwtVerify, type JWTPayload } from 'jose';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, signIn } from '../helpers/browser.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { jsonOf, runIdp, type RunResult } from '../helpers/processes.ts';
import { backends, freePort, startIdp, type Backend, type TestIdp } from '../helpers/server.ts';
import { sleep, sleepUntil } from '../helpers/time.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const password = 'correct horse battery staple';
const redirectUri = 'http://localhost:8080/callback';
const backchannelEvent = 'http://schemas.openid.net/event/backchannel-logout';

const userAgents = {
  firefoxLinux: 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0',
  chromeWindows: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36',
  safariIphone: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1',
};

/** A browser: its own cookie jar, and its User-Agent on every request (redirects included). */
class Device extends Browser {
  readonly userAgent: string;
  constructor(userAgent: string) {
    super();
    this.userAgent = userAgent;
  }
  override request(url: string | URL, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    headers.set('user-agent', this.userAgent);
    return super.request(url, { ...init, headers });
  }
}


/** One IdP under test, its relying party (with a back-channel logout receiver) and what that receiver got. */
interface Site {
  t: TestIdp;
  rp: oidc.Configuration;
  jwks: ReturnType<typeof createRemoteJWKSet>;
  logoutTokens: string[];
  receiver: Server;
}

async function startSite(backend: Backend, env: Record<string, string> = {}): Promise<Site> {
  // The receiver is on loopback, which the provider refuses by default (SSRF guard).
  const t = await startIdp(backend, { FETCH_ALLOW_PRIVATE_ADDRESSES: 'true', ...env });
  const logoutTokens: string[] = [];
  const receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      logoutTokens.push(new URLSearchParams(body).get('logout_token') ?? '');
      res.writeHead(200).end();
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => receiver.listen(port, '127.0.0.1', resolve));
  const { clientSecret } = await t.idp.clients.create({
    client_id: 'webapp',
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    backchannel_logout_uri: `http://127.0.0.1:${port}/backchannel`,
    backchannel_logout_session_required: true,
  });
  const rp = await oidc.discovery(new URL(t.issuer), 'webapp', clientSecret!, undefined, insecure);
  return { t, rp, jwks: createRemoteJWKSet(new URL(rp.serverMetadata().jwks_uri!)), logoutTokens, receiver };
}

async function stopSite(site: Site | undefined) {
  site?.receiver.close();
  await site?.t.stop();
}

let accounts = 0;
/** A new account of its own for each test, so no test sees another's sessions. */
async function newUser(site: Site, name: string): Promise<{ email: string; id: string }> {
  const email = `${name}-${++accounts}@example.com`;
  const account = await site.t.idp.accounts.create({ email, password, name, emailVerified: true });
  return { email, id: account.id };
}

/** Signs `browser` in at the relying party. offline_access: the refresh token does not end with the session by itself, so only ending the session properly (revoking its grant) can make it refused. */
async function login(site: Site, browser: Browser, email: string) {
  const request = await authorizationRequest(site.rp, { redirect_uri: redirectUri, scope: 'openid offline_access', prompt: 'consent' });
  const callback = await signIn(browser, request.url, email, password);
  const tokens = await oidc.authorizationCodeGrant(site.rp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
  expect(tokens.refresh_token, 'a refresh token for offline_access').toBeTruthy();
  const claims = decodeJwt(tokens.id_token!);
  expect(claims.sid, 'the ID token of a session-required client carries sid').toBeTruthy();
  return { tokens, claims, refreshToken: tokens.refresh_token!, sid: claims.sid as string };
}

/** A silent authorization request in `browser`: the code when the session is alive, else the error. */
async function silentAuthorization(site: Site, browser: Browser): Promise<{ code: string | null; error: string | null }> {
  const request = await authorizationRequest(site.rp, { redirect_uri: redirectUri, prompt: 'none' });
  const { url } = await browser.follow(request.url, site.t.url);
  expect(`${url.origin}${url.pathname}`, 'the provider answers at the redirect_uri').toBe(redirectUri);
  return { code: url.searchParams.get('code'), error: url.searchParams.get('error') };
}

interface Row {
  sid: string;
  device: string;
  current: boolean;
  details: string;
}

/** The session list of the account page. */
function sessionRows(html: string): Row[] {
  const list = /<ul class="sessions">([\s\S]*?)<\/ul>/.exec(html);
  expect(list, 'the account page has a session list').toBeTruthy();
  return [...list![1]!.matchAll(/<li data-sid="([^"]+)">([^<]*?)( <strong>\(this browser\)<\/strong>)?<br><small>([^<]*)<\/small>/g)].map((m) => ({
    sid: m[1]!,
    device: m[2]!,
    current: Boolean(m[3]),
    details: m[4]!,
  }));
}

/** The signed-in account page of `browser`. */
async function accountPage(site: Site, browser: Browser) {
  const response = await browser.request(`${site.t.url}/account`);
  const html = await response.text();
  expect(response.status, `GET /account: ${html.slice(0, 300)}`).toBe(200);
  return { html, csrf: csrfOf(html), rows: sessionRows(html) };
}

/** `browser` has no session: the account page sends it to sign in, and a silent request needs a login. */
async function expectSignedOut(site: Site, browser: Browser) {
  const response = await browser.request(`${site.t.url}/account`);
  await response.arrayBuffer();
  expect(response.status, 'GET /account without a session').toBe(302);
  const location = new URL(response.headers.get('location')!, site.t.url);
  expect(`${location.origin}${location.pathname}`).toBe(`${site.t.issuer}/auth`);
  expect(location.searchParams.get('client_id')).toBe('idp-account');
  expect((await silentAuthorization(site, browser)).error).toBe('login_required');
}

async function expectSignedIn(site: Site, browser: Browser) {
  const { rows } = await accountPage(site, browser);
  expect(rows.filter((r) => r.current)).toHaveLength(1);
  expect((await silentAuthorization(site, browser)).code).toBeTruthy();
}

async function expectRefreshRefused(site: Site, refreshToken: string) {
  await expect(oidc.refreshTokenGrant(site.rp, refreshToken)).rejects.toMatchObject({ error: 'invalid_grant' });
}

/** Waits for the back-channel logout token of `sid` and verifies it against the JWKS. */
async function logoutTokenFor(site: Site, sid: string): Promise<JWTPayload> {
  const sids = () => site.logoutTokens.map((token) => decodeJwt(token).sid);
  await expect.poll(sids, { timeout: 5000, message: `a back-channel logout token for sid ${sid}` }).toContain(sid);
  const token = site.logoutTokens.find((candidate) => decodeJwt(candidate).sid === sid)!;
  const { payload, protectedHeader } = await jwtVerify(token, site.jwks, { issuer: site.t.issuer, audience: 'webapp', typ: 'logout+jwt' });
  expect(protectedHeader.alg).toBe('RS256');
  expect(payload.events).toEqual({ [backchannelEvent]: {} });
  expect(payload).not.toHaveProperty('nonce');
  return payload;
}

function form(fields: Record<string, string>): RequestInit {
  return { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString() };
}

async function post(site: Site, browser: Browser, path: string, fields: Record<string, string>) {
  const response = await browser.request(`${site.t.url}${path}`, form(fields));
  return { status: response.status, location: response.headers.get('location'), html: await response.text() };
}

const revokePath = (sid: string) => `/account/sessions/${encodeURIComponent(sid)}/revoke`;

async function auditEvents(site: Site, type: string, subject: string) {
  const rows = await site.t.idp.db.prisma.auditEvent.findMany({ where: { type, subject }, orderBy: { seq: 'asc' } });
  return rows.map((row) => ({ ...row, details: JSON.parse(row.details) as Record<string, unknown> }));
}

/** The `idp` command, as an operator runs it, on the same database (and Redis) as `site`'s server. */
function cliOf(site: Site, args: string[]): Promise<RunResult> {
  const { config } = site.t;
  return runIdp(args, {
    env: {
      DATABASE_URL: config.DATABASE_URL,
      MASTER_KEY_FILE: config.MASTER_KEY_FILE,
      ISSUER: config.ISSUER,
      LOG_LEVEL: 'warn',
      FETCH_ALLOW_PRIVATE_ADDRESSES: 'true',
      ...(config.REDIS_URL ? { REDIS_URL: config.REDIS_URL, REDIS_KEY_PREFIX: config.REDIS_KEY_PREFIX } : {}),
    },
  });
}

function expectExit(result: RunResult, code: number) {
  expect(result.code, `exit code\nstdout: ${result.stdout}\nstderr: ${result.stderr}`).toBe(code);
}

describe.each(backends)('sessions on %s', (backend) => {
  let site: Site;
  /** MAX_CONCURRENT_SESSIONS=1. */
  let limited: Site;
  /** SESSION_IDLE_TIMEOUT=2. */
  let idle: Site;
  /** SESSION_TTL=3 (and the default, long, idle timeout). */
  let absolute: Site;

  beforeAll(async () => {
    [site, limited, idle, absolute] = await Promise.all([
      startSite(backend),
      startSite(backend, { MAX_CONCURRENT_SESSIONS: '1' }),
      startSite(backend, { SESSION_IDLE_TIMEOUT: '2' }),
      startSite(backend, { SESSION_TTL: '3' }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([stopSite(site), stopSite(limited), stopSite(idle), stopSite(absolute)]);
  });

  it('sends a browser without a session to sign in through the idp-account client, and back to the account page', async () => {
    const user = await newUser(site, 'account-login');
    const browser = new Device(userAgents.firefoxLinux);
    const response = await browser.request(`${site.t.url}/account`);
    expect(response.status).toBe(302);
    const location = new URL(response.headers.get('location')!);
    expect(`${location.origin}${location.pathname}`).toBe(`${site.t.issuer}/auth`);
    expect(Object.fromEntries(location.searchParams)).toMatchObject({
      client_id: 'idp-account',
      redirect_uri: `${site.t.issuer}/account/callback`,
      response_type: 'code',
      scope: 'openid',
      code_challenge_method: 'S256',
    });
    expect(location.searchParams.get('state')).toBeTruthy();

    // Through our sign-in screens (a first-party client: no consent) and back.
    let { response: page, url } = await browser.follow(location, site.t.url);
    for (let step = 0; step < 4 && url.pathname.startsWith('/interaction/'); step++) {
      const html = await page.text();
      const action = /action="(\/interaction\/[^"]+\/(?:identify|password))"/.exec(html);
      expect(action, `a sign-in form at ${url.pathname}: ${html.slice(0, 300)}`).toBeTruthy();
      const fields: Record<string, string> = action![1]!.endsWith('/identify') ? { email: user.email } : { password };
      ({ response: page, url } = await browser.postForm(new URL(action![1]!, site.t.url), { csrf: csrfOf(html), ...fields }, site.t.url));
    }
    expect(url.pathname).toBe('/account');
    expect(page.status).toBe(200);
    const rows = sessionRows(await page.text());
    expect(rows.map((r) => [r.device, r.current])).toEqual([['Firefox 128 on Linux', true]]);
  });

  it('lists the sessions of two browsers with their device, address and times, and marks this browser', async () => {
    const user = await newUser(site, 'lister');
    const firefox = new Device(userAgents.firefoxLinux);
    const iphone = new Device(userAgents.safariIphone);
    await login(site, firefox, user.email);
    await login(site, iphone, user.email);

    const fromFirefox = await accountPage(site, firefox);
    expect(fromFirefox.html).toContain(user.email);
    expect(fromFirefox.rows).toHaveLength(2);
    const stored = await site.t.idp.db.prisma.userSession.findMany({ where: { accountId: user.id } });
    expect(fromFirefox.rows.map((r) => r.sid).sort()).toEqual(stored.map((s) => s.sid).sort());
    const firefoxRow = fromFirefox.rows.find((r) => r.device === 'Firefox 128 on Linux');
    const iphoneRow = fromFirefox.rows.find((r) => r.device === 'Mobile Safari 17 on iOS 17.5 (iPhone)');
    expect(firefoxRow, `rows: ${JSON.stringify(fromFirefox.rows)}`).toBeTruthy();
    expect(iphoneRow, `rows: ${JSON.stringify(fromFirefox.rows)}`).toBeTruthy();
    expect(firefoxRow!.current).toBe(true);
    expect(iphoneRow!.current).toBe(false);
    for (const row of [firefoxRow!, iphoneRow!]) {
      const session = stored.find((s) => s.sid === row.sid)!;
      expect(row.details).toContain('127.0.0.1');
      expect(row.details).toContain(`signed in ${session.createdAt.toISOString()}`);
      expect(row.details).toMatch(/last active \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/);
    }
    // Every session row carries its own revoke form with the page's CSRF token.
    for (const row of fromFirefox.rows) {
      expect(fromFirefox.html).toContain(`action="${revokePath(row.sid)}"><input type="hidden" name="csrf" value="${fromFirefox.csrf}">`);
    }

    // The other browser sees the same two sessions, with itself marked.
    const fromIphone = await accountPage(site, iphone);
    expect(fromIphone.rows.map((r) => [r.sid, r.current]).sort()).toEqual([
      [firefoxRow!.sid, false],
      [iphoneRow!.sid, true],
    ].sort());
    // CSRF tokens are per session.
    expect(fromIphone.csrf).not.toBe(fromFirefox.csrf);
  });

  it('shows no storage id or cookie value of any session, on the page or in `idp sessions list`, and only escaped user agents', async () => {
    const user = await newUser(site, 'leaks');
    const chrome = new Device(userAgents.chromeWindows);
    const hostile = new Device('<img src=x onerror=alert(1)>');
    await login(site, chrome, user.email);
    await login(site, hostile, user.email);
    const { html, rows } = await accountPage(site, chrome);
    const stored = await site.t.idp.db.prisma.userSession.findMany({ where: { accountId: user.id } });
    expect(stored).toHaveLength(2);
    // A user agent nobody recognises is shown as sent, as text.
    expect(html).not.toContain('<img src=x');
    const decode = (text: string) => text.replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)));
    expect(rows.map((r) => decode(r.device))).toContain('<img src=x onerror=alert(1)>');
    const secrets = [...stored.map((s) => s.storageId), chrome.cookie('_session'), chrome.cookie('_session.sig'), hostile.cookie('_session'), hostile.cookie('_session.sig')];
    expect(chrome.cookie('_session'), 'the session cookie is the storage id').toBe(stored.find((s) => s.userAgent === userAgents.chromeWindows)!.storageId);
    for (const secret of secrets) {
      expect(secret).toBeTruthy();
      expect(html).not.toContain(secret!);
    }
    const listed = JSON.stringify(await site.t.idp.sessions.list(user.id));
    for (const secret of secrets) expect(listed).not.toContain(secret!);
    expect(listed).not.toContain('storageId');
  });

  it('lets the user sign out another browser: it is signed out, its refresh token refused, the RP told by back-channel logout', async () => {
    const user = await newUser(site, 'revoker');
    const chrome = new Device(userAgents.chromeWindows);
    const iphone = new Device(userAgents.safariIphone);
    const mine = await login(site, chrome, user.email);
    const theirs = await login(site, iphone, user.email);
    site.logoutTokens.length = 0;

    const page = await accountPage(site, chrome);
    const other = page.rows.find((r) => !r.current)!;
    expect(other.device).toBe('Mobile Safari 17 on iOS 17.5 (iPhone)');
    const revoked = await post(site, chrome, revokePath(other.sid), { csrf: page.csrf });
    expect(revoked.status, revoked.html.slice(0, 300)).toBe(303);
    expect(revoked.location).toBe('/account?done=account.sessionRevoked');

    // The revoking browser stays signed in, and its list has only itself left.
    const after = await chrome.request(new URL(revoked.location!, site.t.url));
    const afterHtml = await after.text();
    expect(after.status).toBe(200);
    expect(afterHtml).toContain('The session has been signed out.');
    expect(sessionRows(afterHtml).map((r) => [r.device, r.current])).toEqual([['Chrome 126 on Windows 10', true]]);
    await expectSignedIn(site, chrome);
    const kept = await oidc.refreshTokenGrant(site.rp, mine.refreshToken);
    expect(kept.access_token).toBeTruthy();

    // The other browser is signed out, and the refresh token of its sign-in is dead.
    await expectSignedOut(site, iphone);
    await expectRefreshRefused(site, theirs.refreshToken);

    const logout = await logoutTokenFor(site, theirs.sid);
    expect(logout.sub).toBe(user.id);
    expect(logout.sub).toBe(theirs.claims.sub);
    expect(logout.iss).toBe(site.t.issuer);
    expect(logout.aud).toBe('webapp');
    // Only the revoked session was announced.
    expect(site.logoutTokens.map((token) => decodeJwt(token).sid)).not.toContain(mine.sid);

    const row = await site.t.idp.db.prisma.userSession.findUniqueOrThrow({ where: { sid: other.sid } });
    expect(row.endReason).toBe('revoked');
    const events = await auditEvents(site, 'session.revoked', user.id);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ actor: user.id, details: { sid: other.sid, reason: 'revoked' } });
    await expect.poll(() => site.t.idp.db.prisma.auditEvent.count({ where: { type: 'backchannel_logout.sent', subject: user.id, clientId: 'webapp' } })).toBe(1);
  });

  it('signs out everywhere: every session ends, this browser\'s too, and every refresh token is refused', async () => {
    const user = await newUser(site, 'everywhere');
    const browsers = [new Device(userAgents.firefoxLinux), new Device(userAgents.chromeWindows), new Device(userAgents.safariIphone)];
    const logins = [];
    for (const browser of browsers) logins.push(await login(site, browser, user.email));
    site.logoutTokens.length = 0;

    const page = await accountPage(site, browsers[0]!);
    expect(page.rows).toHaveLength(3);
    expect(page.html).toContain('action="/account/sessions/revoke-all"');
    const done = await post(site, browsers[0]!, '/account/sessions/revoke-all', { csrf: page.csrf });
    expect(done.status, done.html.slice(0, 300)).toBe(200);
    expect(done.html).toContain('You are signed out');

    for (const browser of browsers) await expectSignedOut(site, browser);
    for (const { refreshToken } of logins) await expectRefreshRefused(site, refreshToken);
    for (const { sid } of logins) expect((await logoutTokenFor(site, sid)).sub).toBe(user.id);
    expect(await site.t.idp.sessions.list(user.id)).toEqual([]);
    const ended = await site.t.idp.db.prisma.userSession.findMany({ where: { accountId: user.id } });
    expect(ended.map((s) => s.endReason)).toEqual(['signed_out_everywhere', 'signed_out_everywhere', 'signed_out_everywhere']);
    const events = await auditEvents(site, 'session.revoked_all', user.id);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ actor: user.id, details: { reason: 'signed_out_everywhere', count: 3 } });
  });

  it('signing out everywhere also revokes the offline grant of a session already gone (as after an idle timeout): its refresh token is refused', async () => {
    const user = await newUser(site, 'offline-orphan');
    const gone = new Device(userAgents.firefoxLinux);
    const { refreshToken } = await login(site, gone, user.email);
    // The session disappears as an idle timeout makes it disappear: its record leaves the
    // provider's store, and with it the session index.
    const storageId = gone.cookie('_session');
    expect(storageId, 'the browser holds a session cookie').toBeTruthy();
    await site.t.idp.provider.Session.adapter.destroy(storageId!);
    expect(await site.t.idp.sessions.list(user.id)).toEqual([]);
    expect((await site.t.idp.db.prisma.userSession.findMany({ where: { accountId: user.id } })).map((row) => row.endReason)).toEqual(['logout']);
    await expectSignedOut(site, gone);
    // offline_access: the refresh token outlives the session.
    const refreshed = await oidc.refreshTokenGrant(site.rp, refreshToken);
    expect(refreshed.access_token).toBeTruthy();
    const offline = refreshed.refresh_token ?? refreshToken;

    // "Sign out everywhere", from another browser.
    const other = new Device(userAgents.chromeWindows);
    await login(site, other, user.email);
    const page = await accountPage(site, other);
    expect(page.rows).toHaveLength(1);
    const done = await post(site, other, '/account/sessions/revoke-all', { csrf: page.csrf });
    expect(done.status, done.html.slice(0, 300)).toBe(200);
    await expectRefreshRefused(site, offline);
    const events = await auditEvents(site, 'session.revoked_all', user.id);
    expect(events).toHaveLength(1);
    expect(events[0]!.details).toMatchObject({ reason: 'signed_out_everywhere', count: 1 });
    expect(events[0]!.details.grantsRevoked).toBeGreaterThanOrEqual(1);
  });

  it('lets an administrator end one session with `idp sessions revoke` and all of them through the session service, with audit events', async () => {
    const user = await newUser(site, 'admin-target');
    const firefox = new Device(userAgents.firefoxLinux);
    const chrome = new Device(userAgents.chromeWindows);
    const iphone = new Device(userAgents.safariIphone);
    const first = await login(site, firefox, user.email);
    const second = await login(site, chrome, user.email);
    const third = await login(site, iphone, user.email);
    site.logoutTokens.length = 0;

    const cli = (args: string[]) => cliOf(site, args);
    const listed = await cli(['sessions', 'list', user.email]);
    expectExit(listed, 0);
    const sessions = jsonOf<{ sid: string; device: string; ip: string }[]>(listed);
    expect(sessions.map((s) => s.device).sort()).toEqual(['Chrome 126 on Windows 10', 'Firefox 128 on Linux', 'Mobile Safari 17 on iOS 17.5 (iPhone)']);
    expect(sessions.every((s) => s.ip === '127.0.0.1')).toBe(true);
    const chromeSid = sessions.find((s) => s.device === 'Chrome 126 on Windows 10')!.sid;

    const revoked = await cli(['sessions', 'revoke', user.email, chromeSid]);
    expectExit(revoked, 0);
    expect(jsonOf(revoked)).toEqual({ revoked: 1 });
    await expectSignedOut(site, chrome);
    await expectRefreshRefused(site, second.refreshToken);
    expect((await logoutTokenFor(site, second.sid)).sub).toBe(user.id);
    await expectSignedIn(site, firefox);
    await expectSignedIn(site, iphone);
    expect(await auditEvents(site, 'session.revoked', user.id)).toMatchObject([{ actor: 'cli', details: { sid: chromeSid, reason: 'admin_revoked' } }]);

    // The same sid again: no longer an active session.
    const again = await cli(['sessions', 'revoke', user.email, chromeSid]);
    expectExit(again, 2);
    expect(again.stderr).toMatch(/no active session/);

    // Everything else, through the service the CLI uses.
    expect(await site.t.idp.sessions.revokeAll(user.id, 'admin_revoked', 'admin@example.com')).toBe(2);
    for (const browser of [firefox, iphone]) await expectSignedOut(site, browser);
    for (const { refreshToken } of [first, third]) await expectRefreshRefused(site, refreshToken);
    for (const { sid } of [first, third]) expect((await logoutTokenFor(site, sid)).sub).toBe(user.id);
    expect(await auditEvents(site, 'session.revoked_all', user.id)).toMatchObject([{ actor: 'admin@example.com', details: { reason: 'admin_revoked', count: 2 } }]);
    const ended = await site.t.idp.db.prisma.userSession.findMany({ where: { accountId: user.id } });
    expect(ended.every((s) => s.endedAt !== null && s.endReason === 'admin_revoked')).toBe(true);
  });

  it('`idp sessions revoke` takes the sid claim of the session\'s ID token, as its help says', async () => {
    // `idp sessions revoke --help`: "[sid]  the session id (sid claim)". What an operator has in
    // hand is that claim, from a relying party's ID token or logout token.
    const user = await newUser(site, 'sid-claim');
    const browser = new Device(userAgents.firefoxLinux);
    const { sid, refreshToken } = await login(site, browser, user.email);
    const revoked = await cliOf(site, ['sessions', 'revoke', user.email, sid]);
    expectExit(revoked, 0);
    expect(jsonOf(revoked)).toEqual({ revoked: 1 });
    await expectSignedOut(site, browser);
    await expectRefreshRefused(site, refreshToken);
  });

  it('refuses account page forms without the page\'s CSRF token (403) and sessions of other users (404), revoking nothing', async () => {
    const user = await newUser(site, 'csrf');
    const stranger = await newUser(site, 'stranger');
    const mine = new Device(userAgents.firefoxLinux);
    const other = new Device(userAgents.chromeWindows);
    const theirs = new Device(userAgents.safariIphone);
    const myLogins = [await login(site, mine, user.email), await login(site, other, user.email)];
    const strangerLogin = await login(site, theirs, stranger.email);
    site.logoutTokens.length = 0;

    const page = await accountPage(site, mine);
    const otherPage = await accountPage(site, other);
    const otherSid = page.rows.find((r) => !r.current)!.sid;
    const strangerPage = await accountPage(site, theirs);
    const strangerSid = strangerPage.rows[0]!.sid;

    for (const fields of [{} as Record<string, string>, { csrf: '' }, { csrf: 'not-the-token' }, { csrf: otherPage.csrf }, { csrf: strangerPage.csrf }, { csrf: `${page.csrf}x` }]) {
      for (const path of [revokePath(otherSid), '/account/sessions/revoke-all']) {
        const refused = await post(site, mine, path, fields);
        expect(refused.status, `${path} with ${JSON.stringify(fields)}`).toBe(403);
      }
    }
    const rejected = await auditEvents(site, 'csrf.rejected', user.id);
    expect(rejected).toHaveLength(12);

    // The right token, but a session that is not this user's, or none at all.
    for (const sid of [strangerSid, 'no-such-session']) {
      const missing = await post(site, mine, revokePath(sid), { csrf: page.csrf });
      expect(missing.status, `revoking ${sid}`).toBe(404);
    }
    // Without a session there is no form to post.
    expect((await post(site, new Device(userAgents.firefoxLinux), revokePath(otherSid), { csrf: page.csrf })).status).toBe(401);

    // Nothing was revoked.
    expect((await site.t.idp.sessions.list(user.id)).map((s) => s.sid).sort()).toEqual(page.rows.map((r) => r.sid).sort());
    expect((await site.t.idp.sessions.list(stranger.id)).map((s) => s.sid)).toEqual([strangerSid]);
    for (const browser of [mine, other, theirs]) await expectSignedIn(site, browser);
    for (const { refreshToken } of [...myLogins, strangerLogin]) expect((await oidc.refreshTokenGrant(site.rp, refreshToken)).access_token).toBeTruthy();
    expect(site.logoutTokens).toEqual([]);
    expect(await site.t.idp.db.prisma.auditEvent.count({ where: { type: { in: ['session.revoked', 'session.revoked_all'] }, subject: { in: [user.id, stranger.id] } } })).toBe(0);
  });

  it('MAX_CONCURRENT_SESSIONS=1: signing in on a second browser ends the first', async () => {
    const user = await newUser(limited, 'limited');
    const firefox = new Device(userAgents.firefoxLinux);
    const chrome = new Device(userAgents.chromeWindows);
    const first = await login(limited, firefox, user.email);
    const firstSid = (await limited.t.idp.sessions.list(user.id))[0]!.sid;
    limited.logoutTokens.length = 0;
    const second = await login(limited, chrome, user.email);

    await expectSignedOut(limited, firefox);
    await expectRefreshRefused(limited, first.refreshToken);
    expect((await logoutTokenFor(limited, first.sid)).sub).toBe(user.id);
    const { rows } = await accountPage(limited, chrome);
    expect(rows.map((r) => [r.device, r.current])).toEqual([['Chrome 126 on Windows 10', true]]);
    expect((await oidc.refreshTokenGrant(limited.rp, second.refreshToken)).access_token).toBeTruthy();

    const events = await auditEvents(limited, 'session.ended_by_limit', user.id);
    expect(events).toHaveLength(1);
    expect(events[0]!.details).toMatchObject({ sid: firstSid, newSid: rows[0]!.sid, limit: 1 });
    expect((await limited.t.idp.db.prisma.userSession.findUniqueOrThrow({ where: { sid: firstSid } })).endReason).toBe('session_limit');
  });

  describe('lifetimes', () => {
    // Real waits, a few seconds each: the three run side by side.
    it.concurrent('SESSION_IDLE_TIMEOUT=2: a session left unused for 3 s is gone', async ({ expect }) => {
      const user = await newUser(idle, 'idle-unused');
      const browser = new Device(userAgents.firefoxLinux);
      const { refreshToken } = await login(idle, browser, user.email);
      expect(await idle.t.idp.sessions.list(user.id)).toHaveLength(1);
      await sleep(3000);
      expect(await idle.t.idp.sessions.list(user.id)).toEqual([]);
      await expectSignedOut(idle, browser);
      // offline_access: the refresh token is not bound to the idle session.
      expect((await oidc.refreshTokenGrant(idle.rp, refreshToken)).access_token).toBeTruthy();
    });

    it.concurrent('SESSION_IDLE_TIMEOUT=2: a session used every second lives on past 3 s', async ({ expect }) => {
      const user = await newUser(idle, 'idle-used');
      const browser = new Device(userAgents.chromeWindows);
      await login(idle, browser, user.email);
      const start = Date.now();
      for (let second = 1; second <= 4; second++) {
        await sleepUntil(start + second * 1000);
        const silent = await silentAuthorization(idle, browser);
        expect(silent, `use after ${second} s`).toMatchObject({ error: null });
        expect(silent.code).toBeTruthy();
      }
      expect(Date.now() - start).toBeGreaterThanOrEqual(4000);
      const { rows } = await accountPage(idle, browser);
      expect(rows).toHaveLength(1);
    });

    it.concurrent('SESSION_TTL=3: a session in constant use still ends about 3 s after sign-in', async ({ expect }) => {
      const user = await newUser(absolute, 'absolute');
      const browser = new Device(userAgents.safariIphone);
      await login(absolute, browser, user.email);
      const [session] = await absolute.t.idp.sessions.list(user.id);
      // createdAt is the sign-in time oidc-provider records (loginTs, whole seconds).
      const signedInAt = session!.createdAt.getTime();
      // Used every 0.8 s until it ends, or until well past the lifetime. Under a second: a gap
      // between uses must not be what ends it (that would be the idle timeout's doing).
      const uses: { at: number; alive: boolean }[] = [];
      for (let at = 800; at <= 4800 && uses.at(-1)?.alive !== false; at += 800) {
        if (Date.now() > signedInAt + at + 400) continue; // the sign-in itself took that long
        await sleepUntil(signedInAt + at);
        const startedAt = (Date.now() - signedInAt) / 1000;
        const silent = await silentAuthorization(absolute, browser);
        expect(silent.code ?? silent.error, `use at ${at} ms`).toMatch(silent.code ? /./ : /^login_required$/);
        uses.push({ at: startedAt, alive: Boolean(silent.code) });
      }
      const report = JSON.stringify(uses);
      // Alive while within SESSION_TTL of the sign-in…
      expect(uses.filter((u) => u.at < 2.5).every((u) => u.alive), report).toBe(true);
      expect(uses.some((u) => u.at >= 2 && u.at < 2.5), report).toBe(true);
      // …and ended at most about a second past it, however busy.
      const ended = uses.find((u) => !u.alive);
      expect(ended, `the session was still alive at every use: ${report}`).toBeDefined();
      expect(ended!.at, report).toBeLessThan(4.1);
      await expectSignedOut(absolute, browser);
      expect(await absolute.t.idp.sessions.list(user.id)).toEqual([]);
    });
  });
});
