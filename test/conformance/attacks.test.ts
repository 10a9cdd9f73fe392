// Attack and robustness: property-based fuzzing of every public endpoint, session fixation,
// CSRF on every form, reflected XSS, clickjacking, open redirects, security headers on every kind
// of response, Host header poisoning, malformed HTTP and oversized requests, all against the real
// IdP of the conformance setup (PostgreSQL + Redis unless CONFORMANCE_BACKEND says otherwise).
//
// Every response a check sees goes through `expectAll`: never a 5xx, never a stack trace or a
// path into node_modules, nosniff and no-referrer always, frame-ancestors 'none' + DENY and a
// script-src without 'unsafe-inline' on HTML, no injected markup, and redirects or auto-submitted
// forms only towards the IdP itself or a registered redirect URI.
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { request as httpRequest } from 'node:http';
import fc from 'fast-check';
import { SignJWT, type JWTPayload } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf } from '../helpers/browser.ts';
import { startIdp, type Backend, type TestIdp } from '../helpers/server.ts';
import { authorizationRequest, loginAndRedeem, postLogoutUri, redirectUri, secondRedirectUri, startConformance, user, type Conformance } from './setup.ts';

// ---------------------------------------------------------------------------------------------
// Responses and the invariants every one of them must hold
// ---------------------------------------------------------------------------------------------

interface Reply {
  label: string;
  status: number;
  headers: Headers;
  body: string;
  location: string | null;
  contentType: string;
}

const form = 'application/x-www-form-urlencoded';
const stackTrace = /at .+\.(js|ts):\d+/;
const probe = 'xss-probe';
const registeredTargets = [redirectUri, secondRedirectUri, postLogoutUri];

let c: Conformance;
/** Where the conformance IdP listens (its issuer too). */
let base: string;

async function send(path: string | URL, init: RequestInit = {}, via?: Browser): Promise<Reply> {
  const url = path instanceof URL ? path : new URL(path, base);
  const withTimeout: RequestInit = { signal: AbortSignal.timeout(15_000), ...init };
  const response = via ? await via.request(url, withTimeout) : await fetch(url, { redirect: 'manual', ...withTimeout });
  const body = await response.text();
  const sent = typeof init.body === 'string' ? ` body=${JSON.stringify(init.body.slice(0, 200))}` : '';
  return {
    label: `${init.method ?? 'GET'} ${JSON.stringify((url.pathname + url.search).slice(0, 300))}${sent}`,
    status: response.status,
    headers: response.headers,
    body,
    location: response.headers.get('location'),
    contentType: response.headers.get('content-type') ?? '',
  };
}

function postForm(path: string | URL, fields: [string, string][] | Record<string, string>, via?: Browser, headers: Record<string, string> = {}): Promise<Reply> {
  return send(path, { method: 'POST', headers: { 'content-type': form, ...headers }, body: new URLSearchParams(fields).toString() }, via);
}

const isHtml = (r: Reply) => r.contentType.startsWith('text/html');

function directive(csp: string, name: string): string | undefined {
  return csp.split(';').map((d) => d.trim()).find((d) => d === name || d.startsWith(`${name} `));
}

function expectSane(r: Reply) {
  expect(r.status, `${r.label} answered ${r.status}: ${r.body.slice(0, 400)}`).toBeLessThan(500);
  expect(r.body, `${r.label} leaks a stack trace`).not.toMatch(stackTrace);
  expect(r.body, `${r.label} leaks a module path`).not.toContain('node_modules');
}

function expectFramingAndScriptPolicy(r: Reply) {
  const csp = r.headers.get('content-security-policy') ?? '';
  expect(directive(csp, 'frame-ancestors'), `${r.label}: frame-ancestors in ${csp}`).toBe("frame-ancestors 'none'");
  expect(r.headers.get('x-frame-options'), `${r.label}: X-Frame-Options`).toBe('DENY');
  const scriptSrc = directive(csp, 'script-src') ?? directive(csp, 'default-src') ?? '';
  expect(scriptSrc, `${r.label}: script-src in ${csp}`).toMatch(/^(script|default)-src /);
  expect(scriptSrc, `${r.label}: script-src`).not.toContain("'unsafe-inline'");
  expect(scriptSrc, `${r.label}: script-src`).not.toContain("'unsafe-eval'");
}

function expectSecurityHeaders(r: Reply) {
  expect(r.headers.get('x-content-type-options'), `${r.label}: nosniff`).toBe('nosniff');
  expect(r.headers.get('referrer-policy'), `${r.label}: Referrer-Policy`).toBe('no-referrer');
  if (isHtml(r)) expectFramingAndScriptPolicy(r);
}

/** Markup an attacker's parameter would leave behind if it reached an HTML page unescaped. */
const injectedMarkup = [/<\/?xss-probe/i, /["'`]\s*xss-probe/i, /<svg/i, /<img/i, /<iframe/i, /<script>\s*xss/i, /onerror=xss/i, /onload=alert/i];

function expectNoInjectedMarkup(r: Reply) {
  if (!isHtml(r)) return;
  for (const pattern of injectedMarkup) {
    const match = pattern.exec(r.body);
    expect(match ? r.body.slice(Math.max(0, match.index - 120), match.index + 120) : null, `${r.label}: unescaped injection ${pattern}`).toBeNull();
  }
}

function decodeEntities(value: string): string {
  return value
    .replace(/&#x([0-9a-f]+);/gi, (_, hex: string) => String.fromCodePoint(parseInt(hex, 16)))
    .replace(/&#(\d+);/g, (_, dec: string) => String.fromCodePoint(Number(dec)))
    .replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

/** The IdP itself, or a registered redirect / post-logout URI (exactly, plus its response parameters). */
function allowedTarget(href: string): boolean {
  let target: URL;
  try {
    target = new URL(href, base);
  } catch {
    return false;
  }
  if (target.origin === new URL(base).origin) return true;
  return registeredTargets.some((uri) => target.href === uri || target.href.startsWith(`${uri}?`) || target.href.startsWith(`${uri}#`));
}

function expectOnlyAllowedTargets(r: Reply) {
  if (r.location !== null) expect(allowedTarget(r.location), `${r.label} redirects to ${r.location}`).toBe(true);
  if (isHtml(r)) {
    for (const match of r.body.matchAll(/<form\b[^>]*\saction="([^"]*)"/gi)) {
      expect(allowedTarget(decodeEntities(match[1]!)), `${r.label} has a form posting to ${match[1]}`).toBe(true);
    }
    expect(r.body, `${r.label}: meta refresh`).not.toMatch(/http-equiv=["']?refresh/i);
  }
}

function expectAll(r: Reply) {
  expectSane(r);
  expectSecurityHeaders(r);
  expectNoInjectedMarkup(r);
  expectOnlyAllowedTargets(r);
}

/** Longer than the 8 KB the IdP accepts for path plus query. */
const tooLong = (url: URL) => (url.pathname + url.search).length > 8192;

async function expectHealthy() {
  const r = await send('/healthz');
  expect(r.status, 'the server still answers /healthz').toBe(200);
  expect(JSON.parse(r.body)).toEqual({ status: 'ok' });
}

// ---------------------------------------------------------------------------------------------
// Browsers, logins and pages
// ---------------------------------------------------------------------------------------------

/** A browser whose jar starts with cookies an attacker planted (sent until the server replaces them). */
class PlantedBrowser extends Browser {
  readonly planted: Record<string, string>;

  constructor(planted: Record<string, string>) {
    super();
    this.planted = planted;
  }

  override cookieHeader(url: URL): string {
    const own = super.cookieHeader(url);
    const names = new Set(own.split('; ').filter(Boolean).map((pair) => pair.slice(0, pair.indexOf('='))));
    const extra = Object.entries(this.planted).filter(([name]) => !names.has(name)).map(([name, value]) => `${name}=${value}`);
    return [own, ...extra].filter(Boolean).join('; ');
  }
}

interface LoginPage {
  page: URL;
  html: string;
  csrf: string;
  uid: string;
}

async function openLogin(browser: Browser, config = c.basic, extra: Record<string, string> = {}): Promise<LoginPage> {
  const { url } = await authorizationRequest(config, extra);
  const { response, url: page } = await browser.follow(url, base);
  const html = await response.text();
  expect(response.status, html.slice(0, 300)).toBe(200);
  expect(html).toContain('name="email"');
  return { page, html, csrf: csrfOf(html), uid: page.pathname.split('/')[2]! };
}

/** Opens a login and gets past the email screen: the password page of the same interaction. */
async function openPasswordStage(browser: Browser, config = c.basic, extra: Record<string, string> = {}): Promise<LoginPage> {
  const login = await openLogin(browser, config, extra);
  const r = await postForm(`${login.page.href}/identify`, { csrf: login.csrf, email: user.email }, browser);
  expectAll(r);
  expect(r.status).toBe(200);
  expect(r.body).toContain('name="password"');
  return { ...login, html: r.body, csrf: csrfOf(r.body) };
}

/**
 * Signs in with a fresh browser up to the consent screen (a new interaction). The relying party
 * asks for consent (prompt=consent): consent given earlier by this user is remembered otherwise.
 */
async function openConsentStage(browser: Browser, config = c.post): Promise<LoginPage> {
  const password = await openPasswordStage(browser, config, { prompt: 'consent' });
  const { response, url } = await browser.postForm(new URL(`${password.page.href}/password`), { csrf: password.csrf, password: user.password }, base);
  const html = await response.text();
  expect(response.status, html.slice(0, 300)).toBe(200);
  expect(html).toContain('/consent"');
  return { page: url, html, csrf: csrfOf(html), uid: url.pathname.split('/')[2]! };
}

/**
 * Drives a browser from an authorization URL to the relying party like a person would: follows
 * redirects, fills the email/password screens, grants consent and lets oidc-provider's
 * auto-submitting forms submit. Every response on the way is checked with expectAll.
 */
async function drive(browser: Browser, start: URL | string, email: string, password: string): Promise<URL> {
  let url = new URL(start);
  let r = await send(url, {}, browser);
  for (let step = 0; step < 20; step++) {
    expectAll(r);
    if (r.location) {
      url = new URL(r.location, url);
      if (url.origin !== new URL(base).origin) return url;
      r = await send(url, {}, browser);
      continue;
    }
    expect(r.status, `${r.label}: ${r.body.replace(/^[\s\S]*<main class="card">/, '').slice(0, 600)}`).toBe(200);
    const autoSubmit = /<form method="post" action="([^"]+)">([\s\S]*?)<\/form>/.exec(r.body);
    if (r.body.includes('name="csrf"')) {
      const csrf = csrfOf(r.body);
      const action = (suffix: string) => new URL(`${url.pathname.replace(/\/$/, '')}/${suffix}`, base);
      if (r.body.includes('name="email"')) r = await postForm(action('identify'), { csrf, email }, browser);
      else if (r.body.includes('name="password"')) r = await postForm(action('password'), { csrf, password }, browser);
      else if (r.body.includes('/consent"')) r = await postForm(action('consent'), { csrf }, browser);
      else throw new Error(`unexpected page at ${url.pathname}: ${r.body.slice(0, 300)}`);
    } else if (autoSubmit) {
      const target = new URL(decodeEntities(autoSubmit[1]!), url);
      expect(target.origin, 'an auto-submitting form stays on the IdP').toBe(new URL(base).origin);
      const fields = [...autoSubmit[2]!.matchAll(/name="([^"]+)" value="([^"]*)"/g)].map((m) => [m[1]!, decodeEntities(m[2]!)] as [string, string]);
      url = target;
      r = await postForm(target, fields, browser);
    } else {
      throw new Error(`unexpected page at ${url.pathname}: ${r.body.slice(0, 300)}`);
    }
  }
  throw new Error('the login did not reach the relying party within 20 steps');
}

/** A prompt=none authorization: the redirect the browser's current session earns. */
async function silentAuthorization(browser: Browser): Promise<URL> {
  const { url } = await authorizationRequest(c.basic, { prompt: 'none' });
  const { url: landed } = await browser.follow(url, base);
  return landed;
}

function logoutXsrf(html: string): string {
  const match = /name="xsrf" value="([^"]+)"/.exec(html);
  expect(match, 'the logout page carries an xsrf token').toBeTruthy();
  return match![1]!;
}

const basicAuth = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

function rawHttp(port: number, payload: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let data = '';
    const done = () => resolve(data);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('end', done);
    socket.on('close', done);
    socket.on('error', done);
    socket.setTimeout(timeoutMs, () => socket.destroy());
    socket.write(payload);
  });
}

/**
 * A request through node:http on a fresh connection: for headers fetch will not send (Host), and
 * for oversized bodies, where the server may answer before the upload ends and a pooled
 * keep-alive connection would blur whose reset is whose. Resolves with the response if one came,
 * even when the upload is then cut short.
 */
function nodeRequest(url: string | URL, headers: Record<string, string>, method = 'GET', body?: string | Buffer): Promise<Reply> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = httpRequest({ host: target.hostname, port: target.port, path: target.pathname + target.search, method, headers, agent: false }, (res) => {
      answered = true;
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('error', () => undefined);
      res.on('close', () => {
        const h = new Headers();
        for (const [name, value] of Object.entries(res.headers)) if (value !== undefined) h.set(name, Array.isArray(value) ? value.join(', ') : value);
        resolve({ label: `${method} ${target.pathname}${target.search.slice(0, 100)} (Host: ${headers.host ?? target.host})`, status: res.statusCode!, headers: h, body: text, location: h.get('location'), contentType: h.get('content-type') ?? '' });
      });
    });
    req.setTimeout(15_000, () => req.destroy(new Error('timed out')));
    req.on('error', (error: Error & { code?: string }) => {
      if (!answered) reject(new Error(`${method} ${target.pathname}: the connection failed (${error.code ?? error.message}) before any HTTP answer`));
    });
    req.end(body);
  });
}

// ---------------------------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------------------------

const clientIds = ['rp-basic', 'rp-post', 'rp-key', 'rp-public'] as const;

const xssPayloads = [
  '<xss-probe>',
  '"><xss-probe>',
  "'><xss-probe>",
  '</title><xss-probe>',
  '</textarea><xss-probe>',
  '" xss-probe="1',
  "' xss-probe='1",
  '` xss-probe=`1',
  '<svg/onload=alert(1)>',
  '<img src=x onerror=xss-probe>',
  '--><xss-probe><!--',
  ']]><xss-probe>',
  '<script>xss-probe</script>',
  '<iframe src=javascript:alert(1)>',
  'javascript:alert(1)//xss-probe',
];
const xss = fc.tuple(fc.constantFrom('', 'a', 'openid ', 'x@example.com', 'en '), fc.constantFrom(...xssPayloads)).map(([prefix, payload]) => prefix + payload);

const weird = fc.constantFrom(
  '', ' ', '%', '%00', '%E0%A4%A', '\r\n', '\uFEFF', '\u202E', '𝕏', '👩‍👩‍👧', 'null', 'undefined', 'true', '[]', '{}',
  '[object Object]', '-1', '0', '1e309', 'NaN', 'Infinity', '9'.repeat(40), '__proto__', 'constructor', 'toString', 'hasOwnProperty',
  '../../etc/passwd', 'data:text/html,hi', '${7*7}', '{{7*7}}', "' OR '1'='1", 'a'.repeat(3000), 'é'.repeat(1500),
  'openid openid openid', 'S256', 'plain', 'code', 'none', 'login consent', 'https://evil.example/',
  '//evil.example', redirectUri, `${redirectUri}/../evil`, 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.', 'a.b.c', 'a.b.c.d.e',
);

// Random text never looks like a stack trace (error descriptions may echo it). NUL bytes are in
// the mix on purpose; they also have a deterministic check ('NUL bytes in client ids…' below).
const safeText = (s: string) => !stackTrace.test(s) && !s.includes('node_modules');
const text = fc.oneof(
  { arbitrary: fc.string({ maxLength: 40 }), weight: 4 },
  { arbitrary: fc.string({ unit: 'grapheme', maxLength: 30 }), weight: 2 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 20 }), weight: 1 },
  { arbitrary: weird, weight: 3 },
  { arbitrary: fc.json({ maxDepth: 2 }), weight: 1 },
  { arbitrary: xss, weight: 1 },
).filter(safeText);

/** `arbitrary`'s value in `percent` % of the runs, null in the others. */
function maybe<T>(arbitrary: fc.Arbitrary<T>, percent: number): fc.Arbitrary<T | null> {
  return fc.oneof({ arbitrary: fc.constant(null), weight: 100 - percent }, { arbitrary, weight: percent });
}

/** Printable ASCII: anything fetch accepts as a header value. */
const headerText = (maxLength = 80) => fc.string({ unit: 'grapheme-ascii', maxLength }).filter(safeText);

const oddKeys = fc.constantFrom('__proto__', 'constructor', 'prototype', 'a[]', 'a[b]', 'csrf[]', 'csrf[0]', 'email[]', '', ' ', '%', '=', 'client_id[]', 'scope[0]');
function pairsOf(keys: readonly string[], maxLength = 10) {
  const key = fc.oneof({ arbitrary: fc.constantFrom(...keys), weight: 5 }, { arbitrary: oddKeys, weight: 1 }, { arbitrary: fc.string({ unit: 'grapheme', maxLength: 12 }).filter(safeText), weight: 1 });
  return fc.array(fc.tuple(key, text), { maxLength });
}

const rawQueryTail = fc.constantFrom('', '', '', '&%', '&=&&==', '&a=%ZZ', '&%E0%A4%A=1', '&scope', '&client_id', '&&&&', '&a=1;b=2', '&%00=%00', '&+=+');

const acceptHeader = fc.constantFrom(undefined, 'text/html', 'application/json', '*/*', 'text/html;q=0.1, application/json', 'image/png', 'text/*', '');
const cookieHeader = fc.oneof(
  { arbitrary: fc.constant(undefined), weight: 3 },
  {
    arbitrary: fc.array(fc.tuple(fc.constantFrom('_session', '_session.sig', '_interaction', '_interaction.sig', '_interaction_resume', '_interaction_resume.sig', '_session.legacy', 'x'), headerText(60).map((v) => v.replace(/[;,\s]/g, ''))), { minLength: 1, maxLength: 4 })
      .map((pairs) => pairs.map(([n, v]) => `${n}=${v}`).join('; ')),
    weight: 2,
  },
  { arbitrary: headerText(200), weight: 1 },
);
const contentType = fc.oneof(
  { arbitrary: fc.constantFrom(form, `${form}; charset=utf-8`), weight: 6 },
  { arbitrary: fc.constantFrom(`${form}; charset=latin1`, `${form}; charset=bogus`, 'application/json', 'text/plain', 'multipart/form-data; boundary=x', 'application/jwt', '*/*', '', undefined), weight: 3 },
  { arbitrary: headerText(60), weight: 1 },
);

function headersOf(h: { accept?: string | undefined; cookie?: string | undefined; contentType?: string | undefined; authorization?: string | undefined; extra?: Record<string, string> }): Record<string, string> {
  const out: Record<string, string> = { ...h.extra };
  if (h.accept !== undefined) out.accept = h.accept;
  if (h.cookie !== undefined) out.cookie = h.cookie;
  if (h.contentType !== undefined) out['content-type'] = h.contentType;
  if (h.authorization !== undefined) out.authorization = h.authorization;
  return out;
}

const authKeys = ['client_id', 'response_type', 'redirect_uri', 'scope', 'state', 'nonce', 'code_challenge', 'code_challenge_method', 'prompt', 'max_age', 'login_hint', 'ui_locales', 'claims_locales', 'claims', 'acr_values', 'id_token_hint', 'request', 'request_uri', 'response_mode', 'resource', 'registration', 'display', 'authorization_details', 'dpop_jkt'];
const baseAuthKeys = ['client_id', 'response_type', 'redirect_uri', 'scope', 'state', 'nonce', 'code_challenge', 'code_challenge_method'];
const authValue = fc.oneof(
  { arbitrary: text, weight: 4 },
  {
    arbitrary: fc.constantFrom('rp-basic', 'rp-public', 'code', 'id_token', 'code id_token', 'openid', 'openid email profile offline_access', 'openid api:read', 'none', 'login', 'consent', 'select_account', 'login none',
      'query', 'fragment', 'form_post', 'jwt', 'web_message', 'https://api.example.test', 'https://unknown.example', redirectUri, secondRedirectUri, '0', '-5', '1.5',
      '{"id_token":{"email":null}}', '{"userinfo":{"email":{"essential":true}}}', '{"id_token":"x"}', '[{"type":"x"}]', 'urn:idp:acr:1fa', 'urn:ietf:params:oauth:request_uri:abc'),
    weight: 3,
  },
);

const requestObjectClaims = fc.record({
  iss: fc.oneof(fc.constant('rp-key'), text),
  aud: fc.oneof(fc.constant('@issuer'), text, fc.array(text, { maxLength: 2 })),
  client_id: fc.oneof(fc.constant('rp-key'), text),
  response_type: fc.oneof(fc.constant('code'), text),
  redirect_uri: fc.oneof(fc.constant(redirectUri), text),
  scope: fc.oneof(fc.constant('openid'), text),
  exp: fc.oneof(fc.constant(-1), fc.integer({ min: -(2 ** 31), max: 2 ** 31 })),
  ui_locales: fc.oneof(text, fc.integer(), fc.array(text, { maxLength: 2 }), fc.constant(null)),
  claims: fc.oneof(fc.jsonValue({ maxDepth: 3 }), text),
  max_age: fc.oneof(fc.integer(), text),
  state: text,
}, { requiredKeys: ['iss', 'aud'] });

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

describe('Attack and robustness', () => {
  let challenge: string;
  let tokens: { access: string; id: string; refresh: string | undefined };

  beforeAll(async () => {
    c = await startConformance();
    base = c.t.url;
    expect(c.issuer).toBe(base);
    challenge = createHash('sha256').update('a-code-verifier-that-is-long-enough-for-pkce-0123456789').digest('base64url');
    const issued = await loginAndRedeem(c.basic, { scope: 'openid email offline_access', prompt: 'consent' });
    tokens = { access: issued.tokens.access_token, id: issued.tokens.id_token!, refresh: issued.tokens.refresh_token };
  });
  afterAll(async () => c?.stop());

  async function signedRequestObject(claims: Record<string, unknown>): Promise<string> {
    const payload = { ...claims, ...(claims.aud === '@issuer' ? { aud: base } : {}) } as JWTPayload;
    return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid: 'rp-key-1' }).sign(c.keyJwtPrivate);
  }

  async function clientAssertion(claims: Record<string, unknown>): Promise<string> {
    return new SignJWT(claims as JWTPayload).setProtectedHeader({ alg: 'RS256', kid: 'rp-key-1' }).sign(c.keyJwtPrivate);
  }

  describe('Attack and robustness: fuzzing every public endpoint', () => {
    afterEach(expectHealthy);

    it('authorization endpoint: mutated, duplicated, unicode, oversized and garbage parameters (GET and POST)', async () => {
      const mutation = fc.oneof(
        // Light: a valid request with one or two parameters changed, so many runs get deep into the provider and our screens.
        fc.record({
          drop: fc.constant([] as string[]),
          set: fc.array(fc.tuple(fc.constantFrom(...authKeys.filter((k) => k !== 'client_id' && k !== 'redirect_uri')), authValue), { maxLength: 2 }),
          dup: fc.constant([] as [string, string][]),
          extra: fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 12 }).filter(safeText), text), { maxLength: 2 }),
        }),
        // Heavy: anything goes.
        fc.record({
          drop: fc.subarray(baseAuthKeys),
          set: fc.array(fc.tuple(fc.constantFrom(...authKeys), authValue), { maxLength: 4 }),
          dup: fc.array(fc.tuple(fc.constantFrom(...authKeys), authValue), { maxLength: 2 }),
          extra: pairsOf(authKeys, 4),
        }),
      );
      const request = fc.record({
        client: fc.constantFrom(...clientIds, 'unknown-client'),
        mutation,
        requestObject: maybe(requestObjectClaims, 15),
        tail: rawQueryTail,
        method: fc.constantFrom('GET', 'GET', 'POST'),
        accept: acceptHeader,
        cookie: cookieHeader,
        contentType,
      });
      await fc.assert(fc.asyncProperty(request, async (a) => {
        const params = new Map<string, string>([
          ['client_id', a.client], ['response_type', 'code'], ['redirect_uri', redirectUri], ['scope', 'openid'],
          ['code_challenge', challenge], ['code_challenge_method', 'S256'], ['state', 'st'], ['nonce', 'nn'],
        ]);
        for (const key of a.mutation.drop) params.delete(key);
        for (const [key, value] of a.mutation.set) params.set(key, value);
        const pairs: [string, string][] = [...params, ...a.mutation.dup, ...a.mutation.extra];
        if (a.requestObject) pairs.push(['request', await signedRequestObject(a.requestObject)]);
        const query = new URLSearchParams(pairs).toString() + a.tail;
        const browser = new Browser();
        const r = a.method === 'GET'
          ? await send(`/auth?${query}`, { headers: headersOf({ accept: a.accept, cookie: a.cookie }) }, browser)
          : await send('/auth', { method: 'POST', headers: headersOf({ accept: a.accept, cookie: a.cookie, contentType: a.contentType }), body: query }, browser);
        expectAll(r);
        // Follow the IdP's own redirects a few hops (POST-as-GET, the login screen) as a browser would.
        let next = r;
        for (let hop = 0; hop < 3 && next.location && new URL(next.location, base).origin === new URL(base).origin; hop++) {
          next = await send(new URL(next.location, base), { headers: headersOf({ accept: a.accept, cookie: a.cookie }) }, browser);
          expectAll(next);
        }
      }), { numRuns: 80 });
    });

    it('token endpoint: random form and JSON bodies, content types and Authorization headers', async () => {
      const tokenKeys = ['grant_type', 'code', 'redirect_uri', 'code_verifier', 'refresh_token', 'scope', 'resource', 'client_id', 'client_secret', 'client_assertion', 'client_assertion_type', 'device_code', 'auth_req_id', 'audience', 'subject_token'];
      const grantType = fc.oneof(fc.constantFrom('authorization_code', 'refresh_token', 'client_credentials', 'urn:ietf:params:oauth:grant-type:device_code', 'urn:openid:params:grant-type:ciba', 'urn:ietf:params:oauth:grant-type:token-exchange', 'password', 'implicit'), text);
      const authorization = fc.oneof(
        fc.constant(undefined),
        { arbitrary: fc.constant('@basic'), weight: 4 },
        headerText(80).map((s) => `Basic ${s}`),
        fc.tuple(text, text).map(([id, secret]) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`),
        fc.tuple(fc.constantFrom(...clientIds), text).map(([id, secret]) => basicAuth(id, secret)),
        headerText(80).map((s) => `Bearer ${s}`),
        headerText(80).map((s) => `DPoP ${s}`),
        headerText(120),
      );
      const assertion = maybe(fc.record({
        iss: fc.oneof(fc.constant('rp-key'), text),
        sub: fc.oneof(fc.constant('rp-key'), text),
        aud: fc.oneof(fc.constant('@token'), fc.constant('@issuer'), text),
        exp: fc.oneof(fc.constant(4_102_444_800), fc.integer({ min: -(2 ** 31), max: 2 ** 31 })),
        jti: fc.oneof(text, fc.uuid()),
      }, { requiredKeys: [] }), 20);
      const request = fc.record({
        grantType: maybe(grantType, 85),
        pairs: pairsOf(tokenKeys, 8),
        realToken: fc.constantFrom(undefined, 'refresh', 'access', 'id'),
        assertion,
        json: maybe(fc.jsonValue({ maxDepth: 3 }), 15),
        contentType,
        authorization,
        accept: acceptHeader,
        dpop: maybe(headerText(120), 15),
      });
      await fc.assert(fc.asyncProperty(request, async (a) => {
        const pairs: [string, string][] = [];
        if (a.grantType !== null) pairs.push(['grant_type', a.grantType]);
        pairs.push(...a.pairs);
        if (a.realToken === 'refresh' && tokens.refresh) pairs.push(['refresh_token', tokens.refresh]);
        if (a.realToken === 'access') pairs.push(['code', tokens.access]);
        if (a.realToken === 'id') pairs.push(['client_assertion', tokens.id]);
        if (a.assertion) {
          const aud = a.assertion.aud === '@token' ? `${base}/token` : a.assertion.aud === '@issuer' ? base : a.assertion.aud;
          pairs.push(['client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'], ['client_assertion', await clientAssertion({ ...a.assertion, aud })]);
        }
        const body = a.json !== null ? JSON.stringify(a.json) : new URLSearchParams(pairs).toString();
        const authorization = a.authorization === '@basic' ? basicAuth('rp-basic', c.basicSecret) : a.authorization;
        const extra: Record<string, string> = a.dpop !== null ? { dpop: a.dpop } : {};
        const r = await send('/token', { method: 'POST', headers: headersOf({ contentType: a.contentType, authorization, accept: a.accept, extra }), body: Buffer.from(body) });
        expectAll(r);
        // The token endpoint hands out nothing to requests this broken.
        if (r.status === 200) expect(a.realToken === 'refresh' || a.authorization === '@basic' || a.assertion !== null, r.body).toBe(true);
      }), { numRuns: 80 });
    });

    it('userinfo endpoint: random bearer tokens and schemes, GET and POST, header, query and body', async () => {
      const request = fc.record({
        method: fc.constantFrom('GET', 'POST'),
        scheme: fc.constantFrom('Bearer ', 'bearer ', 'DPoP ', 'Basic ', '', 'Bearer  ', 'Bearer\t'),
        token: fc.oneof(headerText(200), fc.constantFrom('@access', '@id', '@refresh', 'a.b.c', 'e30.e30.', '..', '')),
        inHeader: fc.boolean(),
        inQuery: maybe(text, 25),
        inBody: maybe(text, 25),
        contentType,
        accept: acceptHeader,
        cookie: cookieHeader,
      });
      await fc.assert(fc.asyncProperty(request, async (a) => {
        const token = a.token === '@access' ? tokens.access : a.token === '@id' ? tokens.id : a.token === '@refresh' ? (tokens.refresh ?? 'none') : a.token;
        const query = a.inQuery !== null ? `?${new URLSearchParams({ access_token: a.inQuery })}` : '';
        const headers = headersOf({ authorization: a.inHeader ? `${a.scheme}${token}` : undefined, accept: a.accept, cookie: a.cookie, contentType: a.method === 'POST' ? a.contentType : undefined });
        const r = await send(`/me${query}`, { method: a.method, headers, ...(a.method === 'POST' ? { body: a.inBody !== null ? new URLSearchParams({ access_token: a.inBody }).toString() : '' } : {}) });
        expectAll(r);
        if (r.status === 200) expect(token).toBe(tokens.access);
      }), { numRuns: 60 });
    });

    it('introspection and revocation: random tokens and hints, with and without (valid or broken) client authentication', async () => {
      const request = fc.record({
        path: fc.constantFrom('/token/introspection', '/token/revocation'),
        token: fc.oneof(text, fc.constantFrom('@access', '@refresh', '@id', '')),
        hint: maybe(fc.oneof(fc.constantFrom('access_token', 'refresh_token', 'client_credentials', 'id_token'), text), 50),
        auth: fc.constantFrom('none', 'basic', 'basic-wrong', 'post', 'post-wrong', 'public', 'key', 'garbage'),
        pairs: pairsOf(['token', 'token_type_hint', 'client_id', 'client_secret', 'client_assertion', 'client_assertion_type'], 4),
        contentType,
        accept: acceptHeader,
        garbage: headerText(100),
      });
      await fc.assert(fc.asyncProperty(request, async (a) => {
        const token = a.token === '@access' ? tokens.access : a.token === '@refresh' ? (tokens.refresh ?? '') : a.token === '@id' ? tokens.id : a.token;
        const pairs: [string, string][] = [['token', token]];
        if (a.hint !== null) pairs.push(['token_type_hint', a.hint]);
        let authorization: string | undefined;
        switch (a.auth) {
          case 'basic': authorization = basicAuth('rp-basic', c.basicSecret); break;
          case 'basic-wrong': authorization = basicAuth('rp-basic', `${c.basicSecret}x`); break;
          case 'post': pairs.push(['client_id', 'rp-post'], ['client_secret', c.postSecret]); break;
          case 'post-wrong': pairs.push(['client_id', 'rp-post'], ['client_secret', 'wrong']); break;
          case 'public': pairs.push(['client_id', 'rp-public']); break;
          case 'key':
            pairs.push(['client_id', 'rp-key'], ['client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'],
              ['client_assertion', await clientAssertion({ iss: 'rp-key', sub: 'rp-key', aud: base, exp: Math.floor(Date.now() / 1000) + 60, jti: crypto.randomUUID() })]);
            break;
          case 'garbage': authorization = a.garbage; break;
          default:
        }
        pairs.push(...a.pairs);
        const r = await send(a.path, { method: 'POST', headers: headersOf({ authorization, contentType: a.contentType, accept: a.accept }), body: new URLSearchParams(pairs).toString() });
        expectAll(r);
        if (r.status === 200 && a.path === '/token/introspection') {
          const body = JSON.parse(r.body) as { active?: boolean };
          // Only an authenticated client learns anything about a token.
          if (body.active) expect(['basic', 'post', 'key', 'public']).toContain(a.auth);
        }
      }), { numRuns: 80 });
    });

    it('end_session and its confirmation: random parameters, GET and POST, with and without a session', async () => {
      const withSession = new Browser();
      await loginAndRedeem(c.basic, {}, withSession);
      const value = fc.oneof(text, fc.constantFrom('@id_token', 'rp-basic', 'rp-post', postLogoutUri, 'https://evil.example/', `${postLogoutUri}?x=1`, 'yes', 'eyJhbGciOiJSUzI1NiJ9.e30.x'));
      const request = fc.record({
        confirm: fc.boolean(),
        method: fc.constantFrom('GET', 'POST'),
        pairs: pairsOf(['id_token_hint', 'post_logout_redirect_uri', 'state', 'ui_locales', 'client_id', 'logout_hint', 'xsrf', 'logout'], 6).chain((pairs) =>
          fc.array(fc.tuple(fc.constantFrom('id_token_hint', 'post_logout_redirect_uri', 'client_id', 'xsrf'), value), { maxLength: 3 }).map((more) => [...pairs, ...more])),
        session: fc.boolean(),
        accept: acceptHeader,
        cookie: cookieHeader,
        contentType,
      });
      await fc.assert(fc.asyncProperty(request, async (a) => {
        const pairs = a.pairs.map(([k, v]) => [k, v === '@id_token' ? tokens.id : v] as [string, string]);
        const path = a.confirm ? '/session/end/confirm' : '/session/end';
        const query = new URLSearchParams(pairs).toString();
        const method = a.confirm ? 'POST' : a.method;
        const headers = headersOf({ accept: a.accept, cookie: a.session ? undefined : a.cookie, contentType: method === 'POST' ? a.contentType : undefined });
        const r = method === 'GET'
          ? await send(`${path}?${query}`, { headers }, a.session ? withSession : undefined)
          : await send(path, { method, headers, body: query }, a.session ? withSession : undefined);
        expectAll(r);
        // A random xsrf never confirms anything.
        if (a.confirm) expect(r.status, r.body).toBeGreaterThanOrEqual(400);
      }), { numRuns: 60 });
      // The session survived: nothing above logged it out.
      expect((await silentAuthorization(withSession)).searchParams.get('code')).toBeTruthy();
    });

    it('interaction endpoints with random uids, methods, fields, content types and cookies', async () => {
      const uid = fc.oneof(
        fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }).filter(safeText).map(encodeURIComponent),
        fc.stringMatching(/^[A-Za-z0-9_-]{43}$/),
        fc.constantFrom('%', '%E0%A4%A', '%2e%2e', '%00', '%2F', 'a%2Fb', ';', 'a;b=c', '%ZZ', 'x'.repeat(2000), '%F0%9F%98%80', '..%2F..%2Fhealthz', xssPayloads[0]!),
      );
      const request = fc.record({
        uid,
        action: fc.constantFrom('', '/', '/identify', '/password', '/consent', '/abort', '/restart', '/unknown', '/identify/extra'),
        method: fc.constantFrom('GET', 'POST', 'POST', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'),
        fields: pairsOf(['csrf', 'email', 'password', 'consent'], 6),
        contentType,
        accept: acceptHeader,
        cookie: cookieHeader,
        language: maybe(headerText(60), 30),
      });
      await fc.assert(fc.asyncProperty(request, async (a) => {
        const hasBody = !['GET', 'HEAD'].includes(a.method);
        const extra: Record<string, string> = a.language !== null ? { 'accept-language': a.language } : {};
        const r = await send(`/interaction/${a.uid}${a.action}`, {
          method: a.method,
          headers: headersOf({ accept: a.accept, cookie: a.cookie, contentType: hasBody ? a.contentType : undefined, extra }),
          ...(hasBody ? { body: new URLSearchParams(a.fields).toString() } : {}),
        });
        expectAll(r);
        // Nobody gets past a form without the interaction's cookie.
        expect(r.status, r.label).not.toBe(303);
      }), { numRuns: 80 });
    });

    it('a real interaction at each stage refuses random form posts (random fields, random csrf) and still works afterwards', async () => {
      const post = fc.record({
        action: fc.constantFrom('identify', 'password', 'restart', 'consent', 'abort'),
        csrf: maybe(fc.oneof(headerText(64), text, fc.stringMatching(/^[A-Za-z0-9_-]{43}$/)), 80),
        fields: pairsOf(['email', 'password', 'csrf'], 5),
        contentType: fc.constantFrom(form, `${form}; charset=utf-8`, 'text/plain', 'application/json', 'multipart/form-data; boundary=x', undefined),
        query: maybe(text, 30),
      });
      const stages: [string, (b: Browser) => Promise<LoginPage>][] = [
        ['identify', (b) => openLogin(b)],
        ['password', (b) => openPasswordStage(b)],
        ['consent', (b) => openConsentStage(b)],
      ];
      for (const [stage, open] of stages) {
        const browser = new Browser();
        const page = await open(browser);
        await fc.assert(fc.asyncProperty(post, async (a) => {
          const fields: [string, string][] = a.csrf !== null ? [['csrf', a.csrf], ...a.fields] : a.fields;
          const query = a.query !== null ? `?${new URLSearchParams({ q: a.query })}` : '';
          const url = new URL(`${page.page.href}/${a.action}${query}`);
          const r = await send(url, { method: 'POST', headers: headersOf({ contentType: a.contentType }), body: new URLSearchParams(fields).toString() }, browser);
          expectAll(r);
          expect(r.status, `${stage}: ${r.label}`).toBe(tooLong(url) ? 414 : 403);
        }), { numRuns: 30 });
        // Nothing moved, and the real user can still finish.
        const again = await send(page.page, {}, browser);
        expectAll(again);
        expect(again.status).toBe(200);
        expect(csrfOf(again.body)).toBe(page.csrf);
        const callback = await drive(browser, page.page, user.email, user.password);
        expect(callback.searchParams.get('code'), `${stage}: ${callback.href}`).toBeTruthy();
      }
    });

    it('GET of a real interaction with random query strings, headers and languages', async () => {
      const browser = new Browser();
      const login = await openLogin(browser);
      const request = fc.record({ pairs: pairsOf(['ui_locales', 'lang', 'csrf', 'uid'], 5), tail: rawQueryTail, language: headerText(80), accept: acceptHeader });
      await fc.assert(fc.asyncProperty(request, async (a) => {
        const url = new URL(`${login.page.href}?${new URLSearchParams(a.pairs).toString()}${a.tail}`);
        const r = await send(url, { headers: headersOf({ accept: a.accept, extra: { 'accept-language': a.language } }) }, browser);
        expectAll(r);
        if (tooLong(url)) expect(r.status, r.label).toBe(414);
        else {
          expect(r.status, r.label).toBe(200);
          expect(r.body).toContain('name="email"');
        }
      }), { numRuns: 40 });
    });

    it('discovery, /jwks, operator endpoints and unknown paths: random methods, queries and headers', async () => {
      const request = fc.record({
        path: fc.oneof(
          fc.constantFrom('/.well-known/openid-configuration', '/jwks', '/healthz', '/readyz', '/metrics', '/static/styles.css', '/.well-known/oauth-authorization-server', '/', '/favicon.ico', '/static/../healthz', '/session/end/success', '/auth/x', '/request'),
          fc.string({ unit: 'grapheme', maxLength: 30 }).filter(safeText).map((s) => `/${encodeURIComponent(s)}`),
        ),
        method: fc.constantFrom('GET', 'GET', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH'),
        query: pairsOf(['format', 'kid', 'name[]', 'x'], 4),
        tail: rawQueryTail,
        accept: acceptHeader,
        cookie: cookieHeader,
        requestId: maybe(fc.oneof(headerText(140), fc.uuid()), 40),
        language: maybe(headerText(60), 30),
        origin: maybe(fc.constantFrom('https://evil.example', 'null', 'http://localhost:8080'), 25),
        range: maybe(fc.constantFrom('bytes=0-10', 'bytes=-1', 'bytes=999999-', 'bytes=a-b'), 20),
        ifNoneMatch: maybe(headerText(40), 20),
      });
      await fc.assert(fc.asyncProperty(request, async (a) => {
        const extra: Record<string, string> = {};
        if (a.requestId !== null) extra['x-request-id'] = a.requestId;
        if (a.language !== null) extra['accept-language'] = a.language;
        if (a.origin !== null) extra.origin = a.origin;
        if (a.range !== null) extra.range = a.range;
        if (a.ifNoneMatch !== null) extra['if-none-match'] = a.ifNoneMatch;
        const url = new URL(`${a.path}?${new URLSearchParams(a.query).toString()}${a.tail}`, base);
        const r = await send(url, { method: a.method, headers: headersOf({ accept: a.accept, cookie: a.cookie, extra }) });
        expectAll(r);
        // The request id is echoed only when it is a safe token.
        expect(r.headers.get('x-request-id') ?? '', r.label).toMatch(/^[A-Za-z0-9._:-]{1,128}$/);
        if (a.requestId !== null && !/^[A-Za-z0-9._:-]{1,128}$/.test(a.requestId.trim())) expect(r.headers.get('x-request-id')).not.toBe(a.requestId);
        if (tooLong(url)) expect(r.status, r.label).toBe(414);
        else if (a.method === 'GET' && ['/healthz', '/jwks', '/.well-known/openid-configuration'].includes(a.path)) expect(r.status, r.label).toBe(200);
        if (r.status === 200 && a.method === 'GET' && a.path === '/jwks') {
          for (const key of (JSON.parse(r.body) as { keys: Record<string, unknown>[] }).keys) {
            for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) expect(key, 'the JWKS publishes no private key material').not.toHaveProperty(secret);
          }
        }
      }), { numRuns: 60 });
    });

    it('NUL bytes in client ids, tokens, codes and emails are refused with a 4xx, never handed to the database as a 500', async () => {
      // The random properties above reach these only now and then; here every entry point once.
      const basic = basicAuth('rp-basic', c.basicSecret);
      const html = { accept: 'text/html' };
      const requests: [string, string | URL, RequestInit][] = [
        ['authorization, client_id', `/auth?client_id=%00&response_type=code&scope=openid&redirect_uri=${encodeURIComponent(redirectUri)}`, { headers: html }],
        ['authorization, client_id with a NUL inside', `/auth?client_id=rp-basic%00&response_type=code&scope=openid`, {}],
        ['token, client_secret_post client_id', '/token', { method: 'POST', headers: { 'content-type': form }, body: 'grant_type=client_credentials&client_id=%00&client_secret=x' }],
        ['token, refresh_token', '/token', { method: 'POST', headers: { 'content-type': form, authorization: basic }, body: 'grant_type=refresh_token&refresh_token=a%00b' }],
        ['token, authorization code', '/token', { method: 'POST', headers: { 'content-type': form, authorization: basic }, body: `grant_type=authorization_code&code=%00&redirect_uri=${encodeURIComponent(redirectUri)}` }],
        ['introspection, token', '/token/introspection', { method: 'POST', headers: { 'content-type': form, authorization: basic }, body: 'token=%00' }],
        ['revocation, token', '/token/revocation', { method: 'POST', headers: { 'content-type': form, authorization: basic }, body: 'token=a%00b&token_type_hint=refresh_token' }],
        ['userinfo, access_token', '/me?access_token=%00', {}],
        ['end_session, client_id', '/session/end?client_id=%00', { headers: html }],
        ['end_session, id_token_hint', `/session/end?id_token_hint=${tokens.id}%00`, {}],
      ];
      const failures: string[] = [];
      for (const [name, path, init] of requests) {
        const r = await send(path, init);
        if (r.status >= 500) failures.push(`${name}: ${r.label} → ${r.status} ${isHtml(r) ? '(HTML error page)' : r.body.slice(0, 100)}`);
        else expectAll(r);
      }
      // An email with a NUL that passes the form's shape check, then a password.
      const browser = new Browser();
      const login = await openLogin(browser);
      const identified = await postForm(`${login.page.href}/identify`, { csrf: login.csrf, email: 'nul\u0000byte@example.com' }, browser);
      if (identified.status >= 500) failures.push(`identify with a NUL in the email → ${identified.status}`);
      else if (identified.body.includes('name="password"')) {
        const password = await postForm(`${login.page.href}/password`, { csrf: csrfOf(identified.body), password: 'whatever password' }, browser);
        if (password.status >= 500) failures.push(`password step after an email with a NUL → ${password.status} ${password.body.slice(0, 100)}`);
        else expectAll(password);
      }
      expect(failures, 'requests answered with a 5xx').toEqual([]);
    });

    it('a burst of concurrent garbage requests to every endpoint: no 5xx, still healthy', async () => {
      const samples = fc.sample(fc.record({
        path: fc.constantFrom('/auth', '/token', '/me', '/token/introspection', '/token/revocation', '/session/end', '/session/end/confirm', '/interaction/x/identify', '/interaction/x', '/jwks', '/.well-known/openid-configuration', '/healthz', '/readyz', '/metrics'),
        method: fc.constantFrom('GET', 'POST'),
        pairs: pairsOf(['client_id', 'grant_type', 'token', 'csrf', 'scope', 'redirect_uri'], 6),
        authorization: maybe(headerText(60).map((s) => `Basic ${s}`), 50),
      }), 120);
      const replies = await Promise.all(samples.map((a) => {
        const body = new URLSearchParams(a.pairs).toString();
        const headers = headersOf({ authorization: a.authorization ?? undefined, contentType: a.method === 'POST' ? form : undefined });
        return a.method === 'GET' ? send(`${a.path}?${body}`, { headers }) : send(a.path, { method: 'POST', headers, body });
      }));
      for (const r of replies) expectAll(r);
    });

    it('metrics keep bounded route labels however random the paths (no cardinality blow-up)', async () => {
      const paths = fc.sample(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }).filter(safeText).map((s) => `/${encodeURIComponent(s)}/${probe}`), 40);
      for (const path of paths) expectAll(await send(path));
      for (const path of paths.slice(0, 10)) expectAll(await send(`/interaction${path}`));
      const metrics = await send('/metrics');
      expectAll(metrics);
      const routes = new Set([...metrics.body.matchAll(/^idp_http_request_duration_seconds_count\{route="([^"]*)"/gm)].map((m) => m[1]!));
      expect(routes.size, [...routes].join(', ')).toBeLessThan(40);
      for (const route of routes) expect(route, 'a route label is a route name or pattern').toMatch(/^([a-z_.]+|\/[A-Za-z0-9_/:.-]*)$/);
      expect(metrics.body).not.toContain(probe);
    });
  });

  describe('Attack and robustness: session fixation', () => {
    const attacker = { email: 'attacker@example.com', password: 'mallory was here 1' };

    beforeAll(async () => {
      await c.t.idp.accounts.create({ email: attacker.email, password: attacker.password, name: 'Attacker', emailVerified: true });
    });

    it('a login with prompt=login replaces the session cookie and drops the old session server-side', async () => {
      const browser = new Browser();
      await loginAndRedeem(c.basic, {}, browser);
      const before = { id: browser.cookie('_session'), sig: browser.cookie('_session.sig') };
      expect(before.id, 'a session cookie after the first login').toBeTruthy();
      const first = await c.t.idp.provider.Session.find(before.id!);
      expect(first?.accountId).toBeTruthy();

      const { url } = await authorizationRequest(c.basic, { prompt: 'login' });
      const callback = await drive(browser, url, user.email, user.password);
      expect(callback.searchParams.get('code')).toBeTruthy();
      const after = { id: browser.cookie('_session'), sig: browser.cookie('_session.sig') };
      expect(after.id).toBeTruthy();
      expect(after.id, 'the session id changes across a login').not.toBe(before.id);
      expect(after.sig).not.toBe(before.sig);
      expect(await c.t.idp.provider.Session.find(before.id!), 'the pre-login session is gone').toBeUndefined();
      expect((await c.t.idp.provider.Session.find(after.id!))?.accountId).toBe(first!.accountId);
      // And the old cookie, replayed, is worth nothing.
      const replay = new PlantedBrowser({ _session: before.id!, '_session.sig': before.sig! });
      expect((await silentAuthorization(replay)).searchParams.get('error')).toBe('login_required');
    });

    it('an attacker-chosen, unsigned _session value is never adopted', async () => {
      const planted = 'attacker-chosen-session-id-0123456789';
      const victim = new PlantedBrowser({ _session: planted, '_session.sig': 'forged-signature' });
      const { url } = await authorizationRequest(c.basic);
      const callback = await drive(victim, url, user.email, user.password);
      expect(callback.searchParams.get('code')).toBeTruthy();
      const issued = victim.cookie('_session');
      expect(issued, 'the victim got a session cookie of the server\'s making').toBeTruthy();
      expect(issued).not.toBe(planted);
      expect(await c.t.idp.provider.Session.find(planted)).toBeUndefined();
      expect((await c.t.idp.provider.Session.find(issued!))?.accountId).toBeTruthy();
    });

    it('an attacker\'s own valid session planted in the victim\'s browser is replaced at the victim\'s login, and the attacker cannot ride it', async () => {
      const attackerBrowser = new Browser();
      const { url: attackerUrl } = await authorizationRequest(c.basic);
      expect((await drive(attackerBrowser, attackerUrl, attacker.email, attacker.password)).searchParams.get('code')).toBeTruthy();
      const stolen = { _session: attackerBrowser.cookie('_session')!, '_session.sig': attackerBrowser.cookie('_session.sig')! };
      expect(stolen._session).toBeTruthy();

      // The victim signs in as someone else in a session that is already the attacker's: oidc-provider
      // logs that session out (an auto-submitted form to /session/end/confirm, which also revokes the
      // attacker's grant), then resumes the interaction with a fresh session.
      const victim = new PlantedBrowser(stolen);
      const { url } = await authorizationRequest(c.basic, { prompt: 'login' });
      const callback = await drive(victim, url, user.email, user.password);
      const code = callback.searchParams.get('code');
      expect(code, callback.href).toBeTruthy();
      const issued = victim.cookie('_session');
      expect(issued).toBeTruthy();
      expect(issued, 'the planted session id is not kept').not.toBe(stolen._session);
      expect(await c.t.idp.provider.Session.find(stolen._session), 'the planted session is destroyed').toBeUndefined();
      const victimSession = await c.t.idp.provider.Session.find(issued!);
      const victimAccount = await c.t.idp.accounts.authenticate(user.email, user.password);
      expect(victimAccount.ok).toBe(true);
      expect(victimSession?.accountId, 'the session is the victim\'s own').toBe(victimAccount.ok ? victimAccount.account.id : 'n/a');
      // The attacker's browser, holding the planted cookie, is not signed in as the victim.
      const ride = await silentAuthorization(attackerBrowser);
      expect(ride.searchParams.get('code')).toBeNull();
      expect(ride.searchParams.get('error')).toBe('login_required');
    });
  });

  describe('Attack and robustness: CSRF on every form', () => {
    /** Posts the forged variants to `action` and expects a 403 for every one. */
    async function expectRefused(browser: Browser, action: string, own: string, foreign: string[], fields: Record<string, string> = {}) {
      const variants: [string, [string, string][]][] = [
        ['no token', Object.entries(fields)],
        ['empty token', [['csrf', ''], ...Object.entries(fields)]],
        ['a token of another interaction', [['csrf', foreign[0]!], ...Object.entries(fields)]],
        ['a token of another browser\'s interaction', [['csrf', foreign[1]!], ...Object.entries(fields)]],
        ['a truncated token', [['csrf', own.slice(0, -1)], ...Object.entries(fields)]],
        ['a token with one more character', [['csrf', `${own}A`], ...Object.entries(fields)]],
        ['the token twice', [['csrf', own], ['csrf', own], ...Object.entries(fields)]],
        ['the token in the query string only', Object.entries(fields)],
      ];
      for (const [name, body] of variants) {
        const url = name.includes('query') ? `${action}?${new URLSearchParams({ csrf: own })}` : action;
        const r = await postForm(url, body, browser);
        expectAll(r);
        expect(r.status, `${action} with ${name}`).toBe(403);
        expect(r.location, `${action} with ${name}`).toBeNull();
      }
      // The token as a JSON body is not a form post either.
      const json = await send(action, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ csrf: own, ...fields }) }, browser);
      expectAll(json);
      expect(json.status, `${action} with a JSON body`).toBe(403);
    }

    it('identify and abort (first screen) refuse a missing or foreign token; the interaction does not move', async () => {
      const browser = new Browser();
      const login = await openLogin(browser);
      const sameBrowserOther = await openLogin(browser);
      const otherBrowser = await openLogin(new Browser());
      expect(new Set([login.csrf, sameBrowserOther.csrf, otherBrowser.csrf]).size).toBe(3);
      await expectRefused(browser, `${login.page.href}/identify`, login.csrf, [sameBrowserOther.csrf, otherBrowser.csrf], { email: user.email });
      await expectRefused(browser, `${login.page.href}/abort`, login.csrf, [sameBrowserOther.csrf, otherBrowser.csrf]);
      const still = await send(login.page, {}, browser);
      expect(still.status).toBe(200);
      expect(still.body).toContain('name="email"');
      // With its own token, the same interaction goes on.
      const ok = await postForm(`${login.page.href}/identify`, { csrf: login.csrf, email: user.email }, browser);
      expect(ok.status).toBe(200);
      expect(ok.body).toContain('name="password"');
    });

    it('password and restart (second screen) refuse a missing or foreign token; the interaction does not move', async () => {
      const browser = new Browser();
      const stage = await openPasswordStage(browser);
      const other = await openPasswordStage(browser);
      const otherBrowser = await openPasswordStage(new Browser());
      await expectRefused(browser, `${stage.page.href}/password`, stage.csrf, [other.csrf, otherBrowser.csrf], { password: user.password });
      await expectRefused(browser, `${stage.page.href}/restart`, stage.csrf, [other.csrf, otherBrowser.csrf]);
      const still = await send(stage.page, {}, browser);
      expect(still.status).toBe(200);
      expect(still.body, 'still on the password screen').toContain('name="password"');
      const callback = await drive(browser, stage.page, user.email, user.password);
      expect(callback.searchParams.get('code')).toBeTruthy();
    });

    it('consent and abort (consent screen) refuse a missing or foreign token; no grant is made', async () => {
      const browser = new Browser();
      const stage = await openConsentStage(browser);
      const otherBrowser = await openConsentStage(new Browser());
      // A second consent interaction in the same browser.
      const { url } = await authorizationRequest(c.post, { prompt: 'consent' });
      const { response, url: secondPage } = await browser.follow(url, base);
      const secondHtml = await response.text();
      expect(secondHtml).toContain('/consent"');
      const second = { csrf: csrfOf(secondHtml), page: secondPage };
      const grantsBefore = await c.t.idp.db.prisma.auditEvent.count({ where: { type: 'consent.granted' } });
      await expectRefused(browser, `${stage.page.href}/consent`, stage.csrf, [second.csrf, otherBrowser.csrf]);
      await expectRefused(browser, `${stage.page.href}/abort`, stage.csrf, [second.csrf, otherBrowser.csrf]);
      expect(await c.t.idp.db.prisma.auditEvent.count({ where: { type: 'consent.granted' } }), 'no consent was recorded').toBe(grantsBefore);
      const still = await send(stage.page, {}, browser);
      expect(still.status).toBe(200);
      expect(still.body).toContain('/consent"');
      const granted = await browser.postForm(new URL(`${stage.page.href}/consent`), { csrf: stage.csrf }, base);
      expect(granted.url.searchParams.get('code')).toBeTruthy();
    });

    it('the RP-initiated logout confirmation refuses a missing or foreign xsrf: no logout happens', async () => {
      const browser = new Browser();
      await loginAndRedeem(c.basic, {}, browser);
      const page = await send(`/session/end?client_id=rp-basic&post_logout_redirect_uri=${encodeURIComponent(postLogoutUri)}`, {}, browser);
      expectAll(page);
      expect(page.status).toBe(200);
      const own = logoutXsrf(page.body);
      const other = new Browser();
      await loginAndRedeem(c.basic, {}, other);
      const foreign = logoutXsrf((await send('/session/end?client_id=rp-basic', {}, other)).body);
      const forged: [string, Record<string, string>][] = [
        ['no xsrf', { logout: 'yes' }],
        ['empty xsrf', { logout: 'yes', xsrf: '' }],
        ['another session\'s xsrf', { logout: 'yes', xsrf: foreign }],
        ['a truncated xsrf', { logout: 'yes', xsrf: own.slice(0, -1) }],
        ['no xsrf, no logout flag', {}],
      ];
      for (const [name, fields] of forged) {
        const r = await postForm('/session/end/confirm', fields, browser);
        expectAll(r);
        expect(r.status, name).toBe(400);
        expect(r.location, name).toBeNull();
      }
      // A cross-site GET of the confirmation is no logout either.
      const get = await send(`/session/end/confirm?xsrf=${own}&logout=yes`, {}, browser);
      expectAll(get);
      expect(get.location).toBeNull();
      const silent = await silentAuthorization(browser);
      expect(silent.searchParams.get('code'), `still signed in: ${silent.href}`).toBeTruthy();
      expect((await silentAuthorization(other)).searchParams.get('code'), 'the other session is untouched').toBeTruthy();
      // Positive control: the page's own token does log out.
      const fresh = logoutXsrf((await send('/session/end?client_id=rp-basic', {}, browser)).body);
      const done = await postForm('/session/end/confirm', { xsrf: fresh, logout: 'yes' }, browser);
      expectAll(done);
      expect(done.status).toBe(303);
      expect((await silentAuthorization(browser)).searchParams.get('error')).toBe('login_required');
    });
  });

  describe('Attack and robustness: reflected XSS', () => {
    it('payloads in every authorization parameter never reach our pages unescaped (property)', async () => {
      const echoed = ['login_hint', 'ui_locales', 'state', 'nonce', 'acr_values', 'claims_locales', 'display', 'max_age', 'claims', 'resource', 'scope', 'prompt', 'response_mode'];
      await fc.assert(fc.asyncProperty(fc.subarray(echoed, { minLength: 1 }), xss, fc.constantFrom(...clientIds), async (params, payload, client) => {
        const browser = new Browser();
        const extra = Object.fromEntries(params.map((p) => [p, p === 'scope' ? `openid ${payload}` : p === 'claims' ? JSON.stringify({ id_token: { [payload]: null } }) : payload]));
        const config = { 'rp-basic': c.basic, 'rp-post': c.post, 'rp-key': c.keyJwt, 'rp-public': c.publicClient }[client];
        const { url } = await authorizationRequest(config, extra);
        let r = await send(url, { headers: { accept: 'text/html' } }, browser);
        for (let hop = 0; hop < 5; hop++) {
          expectAll(r);
          if (!r.location || !new URL(r.location, base).href.startsWith(base)) break;
          r = await send(new URL(r.location, base), { headers: { accept: 'text/html' } }, browser);
        }
        expectAll(r);
      }), { numRuns: 30 });
    });

    it('login_hint lands in the email field escaped, and a hostile but well-formed email is escaped on the password screen', async () => {
      for (const payload of ['"><xss-probe>@example.com', "'><img/src=x/onerror=xss-probe>@x", '"autofocus/onfocus=alert(1)//@x']) {
        const browser = new Browser();
        const login = await openLogin(browser, c.basic, { login_hint: payload });
        expectAll(await send(login.page, {}, browser));
        expect(login.html).not.toContain(payload);
        expect(login.html, 'the hint sits escaped inside the value attribute').toContain(`value="${payload.replace(/[&<>"'`=]/g, (ch) => `&#${ch.charCodeAt(0)};`)}"`);
        const r = await postForm(`${login.page.href}/identify`, { csrf: login.csrf, email: payload }, browser);
        expectAll(r);
        expect(r.status).toBe(200);
        expect(r.body, 'the password screen shows the email').toContain('name="password"');
        expect(r.body).not.toContain(payload);
        expect(r.body).not.toMatch(/"autofocus\/onfocus/);
      }
    });

    it('error pages escape client_id, scope, state and redirect_uri (invalid client or redirect)', async () => {
      const payload = '"><xss-probe><script>xss-probe</script>';
      const cases: Record<string, string>[] = [
        { client_id: payload, redirect_uri: redirectUri, scope: 'openid', response_type: 'code' },
        { client_id: 'rp-basic', redirect_uri: `https://evil.example/${payload}`, scope: `openid ${payload}`, state: payload, response_type: 'code' },
        { client_id: 'rp-basic', redirect_uri: payload, response_type: payload, state: payload },
        { client_id: 'rp-basic', redirect_uri: redirectUri, scope: payload, state: payload, response_type: 'code', response_mode: 'form_post' },
        { client_id: 'rp-basic', redirect_uri: redirectUri, state: payload, response_type: 'code', response_mode: payload },
        { client_id: 'rp-basic', state: payload, prompt: payload, redirect_uri: redirectUri, response_type: 'code', scope: 'openid' },
        { client_id: 'rp-basic', request: payload, redirect_uri: redirectUri, response_type: 'code', state: payload },
        { client_id: 'rp-basic', claims: payload, redirect_uri: `${redirectUri}x`, response_type: 'code', state: payload },
      ];
      for (const params of cases) {
        for (const accept of ['text/html', 'application/json']) {
          const r = await send(`/auth?${new URLSearchParams(params)}`, { headers: { accept } });
          expectAll(r);
          if (r.location) expect(r.location).not.toMatch(/[<>"]/);
        }
      }
    });

    it('HTML error pages of the token, userinfo, introspection and revocation endpoints escape every echoed parameter (property)', async () => {
      const endpoints = ['/token', '/me', '/token/introspection', '/token/revocation', '/session/end', '/session/end/confirm', '/auth', '/interaction/x/identify'];
      const keys = ['grant_type', 'resource', 'scope', 'client_id', 'token', 'token_type_hint', 'redirect_uri', 'code', 'refresh_token', 'state', 'ui_locales', 'logout_hint', 'id_token_hint', 'post_logout_redirect_uri', 'xsrf', 'access_token', 'csrf', 'email', 'response_type'];
      await fc.assert(fc.asyncProperty(fc.constantFrom(...endpoints), fc.array(fc.tuple(fc.constantFrom(...keys), xss), { minLength: 1, maxLength: 6 }), fc.constantFrom('GET', 'POST'), fc.constantFrom(undefined, '@basic', '@post'), async (path, pairs, method, auth) => {
        const all: [string, string][] = auth === '@post' ? [['client_id', 'rp-post'], ['client_secret', c.postSecret], ...pairs] : pairs;
        const headers = headersOf({ accept: 'text/html', authorization: auth === '@basic' ? basicAuth('rp-basic', c.basicSecret) : undefined, contentType: method === 'POST' ? form : undefined });
        const body = new URLSearchParams(all).toString();
        const r = method === 'GET' ? await send(`${path}?${body}`, { headers }) : await send(path, { method, headers, body });
        expectAll(r);
      }), { numRuns: 60 });
    });

    it('end_session parameters are never reflected unescaped, with or without a session', async () => {
      const payload = '"><xss-probe>\'><svg/onload=alert(1)>';
      const browser = new Browser();
      await loginAndRedeem(c.basic, {}, browser);
      const queries: Record<string, string>[] = [
        { state: payload, ui_locales: payload, logout_hint: payload },
        { client_id: 'rp-basic', post_logout_redirect_uri: postLogoutUri, state: payload, ui_locales: payload },
        { client_id: 'rp-basic', post_logout_redirect_uri: `${postLogoutUri}${payload}`, state: payload },
        { client_id: payload, state: payload },
        { id_token_hint: payload, state: payload },
        { id_token_hint: tokens.id, post_logout_redirect_uri: payload },
      ];
      for (const query of queries) {
        for (const via of [browser, undefined]) {
          expectAll(await send(`/session/end?${new URLSearchParams(query)}`, { headers: { accept: 'text/html' } }, via));
          expectAll(await send('/session/end', { method: 'POST', headers: { accept: 'text/html', 'content-type': form }, body: new URLSearchParams(query).toString() }, via));
        }
      }
      // And confirmed: the state travels to the registered URI URL-encoded, not into a page.
      const page = await send(`/session/end?${new URLSearchParams({ client_id: 'rp-basic', post_logout_redirect_uri: postLogoutUri, state: payload })}`, {}, browser);
      const done = await postForm('/session/end/confirm', { xsrf: logoutXsrf(page.body), logout: 'yes' }, browser);
      expectAll(done);
      expect(done.status).toBe(303);
      const target = new URL(done.location!);
      expect(`${target.origin}${target.pathname}`).toBe(postLogoutUri);
      expect(target.searchParams.get('state')).toBe(payload);
      expect(done.location).not.toMatch(/[<>"']/);
    });

    it('oidc-provider\'s auto-submitting form page keeps a hash-based CSP, no unsafe-inline', async () => {
      const r = await send('/session/end', { headers: { accept: 'text/html' } });
      expectAll(r);
      expect(r.status).toBe(200);
      const script = /<script>([\s\S]*?)<\/script>/.exec(r.body);
      expect(script, 'the page auto-submits with an inline script').toBeTruthy();
      const digest = createHash('sha256').update(script![1]!).digest('base64');
      const scriptSrc = directive(r.headers.get('content-security-policy') ?? '', 'script-src') ?? '';
      expect(scriptSrc, 'that one script is allowed by its hash').toContain(`'sha256-${digest}'`);
      expect(scriptSrc).not.toContain("'unsafe-inline'");
    });
  });

  describe('Attack and robustness: clickjacking', () => {
    it('every kind of HTML response forbids framing (frame-ancestors \'none\' and X-Frame-Options DENY)', async () => {
      const seen = new Map<string, Reply>();
      const browser = new Browser();
      const login = await openLogin(browser);
      seen.set('identify page', await send(login.page, {}, browser));
      seen.set('interaction 403 (csrf)', await postForm(`${login.page.href}/identify`, { csrf: 'x', email: user.email }, browser));
      seen.set('identify re-rendered with an error', await postForm(`${login.page.href}/identify`, { csrf: login.csrf, email: 'not an email' }, browser));
      seen.set('password page', await postForm(`${login.page.href}/identify`, { csrf: login.csrf, email: user.email }, browser));
      seen.set('password page after a wrong password (401)', await postForm(`${login.page.href}/password`, { csrf: login.csrf, password: 'wrong password' }, browser));
      const consentBrowser = new Browser();
      const consent = await openConsentStage(consentBrowser);
      seen.set('consent page', await send(consent.page, {}, consentBrowser));
      seen.set('redirect (303) body', await send(`/auth?${new URLSearchParams({ client_id: 'rp-basic', response_type: 'code', scope: 'openid', redirect_uri: redirectUri, code_challenge: challenge, code_challenge_method: 'S256' })}`, { headers: { accept: 'text/html' } }));
      seen.set('interaction 400 (unknown)', await send('/interaction/does-not-exist', { headers: { accept: 'text/html' } }));
      seen.set('provider error page', await send('/auth?client_id=nope', { headers: { accept: 'text/html' } }));
      seen.set('token error as HTML', await send('/token', { method: 'POST', headers: { accept: 'text/html' } }));
      seen.set('auto-submitting logout form', await send('/session/end', { headers: { accept: 'text/html' } }));
      const loggedIn = new Browser();
      await loginAndRedeem(c.basic, {}, loggedIn);
      const logoutPage = await send('/session/end', {}, loggedIn);
      seen.set('logout confirmation page', logoutPage);
      const confirmed = await postForm('/session/end/confirm', { xsrf: logoutXsrf(logoutPage.body), logout: 'yes' }, loggedIn);
      seen.set('logged-out page', await send(new URL(confirmed.location!, base), {}, loggedIn));
      for (const [kind, r] of seen) {
        expect(isHtml(r), `${kind} is HTML (${r.contentType})`).toBe(true);
        expectAll(r);
        expectFramingAndScriptPolicy(r);
      }
    });
  });

  describe('Attack and robustness: open redirects', () => {
    const evil = 'https://evil.example/steal';
    const redirectVariations = [
      evil, `${redirectUri}/`, `${redirectUri}/extra`, `${redirectUri}/../evil`, `${redirectUri}%2F..%2Fevil`, `${redirectUri}?next=${evil}`, `${redirectUri}?`,
      `${redirectUri}#frag`, `${redirectUri}x`, `${redirectUri}.evil.example`, 'HTTP://LOCALHOST:8080/cb', 'http://localhost:8080/CB', 'http://localhost:8081/cb',
      'http://127.0.0.1:8080/cb', 'https://localhost:8080/cb', 'http://localhost:8080@evil.example/cb', 'http://evil.example\\@localhost:8080/cb',
      '//evil.example/cb', `${redirectUri} `, ` ${redirectUri}`, `${redirectUri}%00`, `${redirectUri}\t`, 'javascript:alert(1)//localhost:8080/cb', 'http://localhost:8080/cb/..;/cb',
    ];

    it('an authorization request whose redirect_uri is not registered exactly is refused without any redirect', async () => {
      for (const client of ['rp-basic', 'rp-post', 'rp-public']) {
        for (const redirect of redirectVariations) {
          for (const accept of ['text/html', 'application/json']) {
            const r = await send(`/auth?${new URLSearchParams({ client_id: client, response_type: 'code', scope: 'openid', redirect_uri: redirect, state: 's', code_challenge: challenge, code_challenge_method: 'S256' })}`, { headers: { accept } });
            expectAll(r);
            expect(r.status, `${client} → ${redirect}: ${r.body.slice(0, 200)}`).toBe(400);
            expect(r.location, `${client} → ${redirect}`).toBeNull();
            expect(r.body).not.toContain('evil.example');
          }
        }
      }
    });

    it('random path, query, fragment and case variations of a registered redirect_uri are refused without redirect (property)', async () => {
      const variation = fc.record({
        registered: fc.constantFrom(redirectUri, secondRedirectUri),
        suffix: fc.oneof(
          fc.webSegment().map((s) => `/${s}`),
          fc.webQueryParameters().map((q) => `?${q}`),
          fc.webFragments().map((f) => `#${f}`),
          fc.string({ unit: 'grapheme', minLength: 1, maxLength: 10 }).filter(safeText),
          fc.constantFrom('/', '?', '#', '%2F', '/.', '/..', '.', '@evil.example', ':80'),
        ),
        upper: fc.boolean(),
        mode: fc.constantFrom('query', 'fragment', 'form_post', undefined),
        method: fc.constantFrom('GET', 'POST'),
      });
      await fc.assert(fc.asyncProperty(variation, async (v) => {
        let redirect = v.registered + v.suffix;
        if (v.upper) redirect = redirect.replace('localhost', 'LocalHost');
        fc.pre(redirect !== redirectUri && redirect !== secondRedirectUri);
        const params = new URLSearchParams({ client_id: 'rp-basic', response_type: 'code', scope: 'openid', redirect_uri: redirect, code_challenge: challenge, code_challenge_method: 'S256', state: 's', ...(v.mode ? { response_mode: v.mode } : {}) });
        let r: Reply;
        if (v.method === 'GET') r = await send(`/auth?${params}`, { headers: { accept: 'text/html' } });
        else {
          // A POST to /auth may be answered with a 303 to the same request as a GET on the IdP: follow that one hop.
          r = await send('/auth', { method: 'POST', headers: { accept: 'text/html', 'content-type': form }, body: params.toString() });
          expectAll(r);
          if (r.status === 303 && r.location && new URL(r.location, base).pathname === '/auth') r = await send(new URL(r.location, base), { headers: { accept: 'text/html' } });
        }
        expectAll(r);
        expect(r.status, `${redirect}: ${r.body.slice(0, 200)}`).toBe(400);
        expect(r.location).toBeNull();
      }), { numRuns: 60 });
    });

    it('a duplicated redirect_uri (registered plus attacker\'s) never redirects to the attacker', async () => {
      for (const client of ['rp-basic', 'rp-post']) {
        const query = `client_id=${client}&response_type=code&scope=openid&redirect_uri=${encodeURIComponent(redirectUri)}&redirect_uri=${encodeURIComponent(evil)}&code_challenge=${challenge}&code_challenge_method=S256`;
        const r = await send(`/auth?${query}`, { headers: { accept: 'text/html' } });
        expectAll(r);
        expect(r.status).toBeGreaterThanOrEqual(300);
        if (r.location) expect(r.location.startsWith(`${redirectUri}?`), r.location).toBe(true);
      }
    });

    it('an unregistered post_logout_redirect_uri (or a variation of the registered one) gets an error, never a redirect', async () => {
      const browser = new Browser();
      await loginAndRedeem(c.basic, {}, browser);
      const variations = [evil, `${postLogoutUri}/`, `${postLogoutUri}x`, `${postLogoutUri}?next=${evil}`, `${postLogoutUri}#x`, 'http://localhost:8080@evil.example/logged-out', 'HTTP://localhost:8080/logged-out', '//evil.example/logged-out', redirectUri, 'javascript:alert(1)'];
      for (const uri of variations) {
        for (const who of [{ client_id: 'rp-basic' }, { id_token_hint: tokens.id }, { client_id: 'rp-post' }] as Record<string, string>[]) {
          const r = await send(`/session/end?${new URLSearchParams({ ...who, post_logout_redirect_uri: uri, state: 's' })}`, { headers: { accept: 'text/html' } }, browser);
          expectAll(r);
          expect(r.status, `${JSON.stringify(who)} → ${uri}`).toBe(400);
          expect(r.location).toBeNull();
          expect(r.body).not.toContain('evil.example');
        }
      }
      // Without a client to check it against, the URI is dropped: the logout ends on the IdP.
      const page = await send(`/session/end?${new URLSearchParams({ post_logout_redirect_uri: evil, state: 's' })}`, {}, browser);
      expectAll(page);
      expect(page.status).toBe(200);
      const done = await postForm('/session/end/confirm', { xsrf: logoutXsrf(page.body), logout: 'yes' }, browser);
      expectAll(done);
      expect(done.status).toBe(303);
      expect(new URL(done.location!, base).origin, done.location!).toBe(new URL(base).origin);
    });

    it('a registered post_logout_redirect_uri is honoured (positive control)', async () => {
      const browser = new Browser();
      await loginAndRedeem(c.basic, {}, browser);
      const page = await send(`/session/end?${new URLSearchParams({ client_id: 'rp-basic', post_logout_redirect_uri: postLogoutUri, state: 'abc' })}`, {}, browser);
      const done = await postForm('/session/end/confirm', { xsrf: logoutXsrf(page.body), logout: 'yes' }, browser);
      expectAll(done);
      expect(done.location).toBe(`${postLogoutUri}?state=abc`);
    });

    it('absolute URLs the IdP publishes or posts to do not follow an attacker-supplied Host header', async () => {
      // A request can carry any Host (a cache or proxy in front keyed on the path, a client that
      // resolves the IdP's name to an attacker's load balancer...). The URLs the IdP hands out must
      // come from its issuer, never from that header.
      const problems: string[] = [];
      for (const host of ['evil.example', `evil.example:${new URL(base).port}`]) {
        const discovery = await nodeRequest(`${base}/.well-known/openid-configuration`, { host });
        expectSane(discovery);
        const metadata = JSON.parse(discovery.body) as Record<string, unknown>;
        for (const [key, value] of Object.entries(metadata)) {
          if (typeof value === 'string' && /^https?:\/\//.test(value) && !value.startsWith(base)) problems.push(`discovery ${key} = ${value} (Host: ${host})`);
        }
        const logoutForm = await nodeRequest(`${base}/session/end`, { host, accept: 'text/html' });
        expectSane(logoutForm);
        const action = /<form method="post" action="([^"]+)"/.exec(logoutForm.body)?.[1];
        if (!action?.startsWith(base)) problems.push(`logout auto-submit form posts its xsrf token to ${action} (Host: ${host})`);
        const authorize = await nodeRequest(`${base}/auth?${new URLSearchParams({ client_id: 'rp-basic', response_type: 'code', scope: 'openid', redirect_uri: redirectUri, code_challenge: challenge, code_challenge_method: 'S256' })}`, { host });
        expectSane(authorize);
        const uid = authorize.location?.split('/').pop() ?? '';
        const interaction = uid ? await c.t.idp.provider.Interaction.find(uid) : undefined;
        if (interaction && !interaction.returnTo.startsWith(base)) problems.push(`the interaction resumes at ${interaction.returnTo} (Host: ${host})`);
      }
      // Forwarded headers are not trusted (TRUST_PROXY is off).
      const forwarded = await send('/.well-known/openid-configuration', { headers: { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https', forwarded: 'host=evil.example;proto=https' } });
      if (forwarded.body.includes('evil.example')) problems.push('discovery follows X-Forwarded-Host / Forwarded');
      expect(problems, 'URLs built from the request Host instead of the issuer').toEqual([]);
    });
  });

  describe('Attack and robustness: security headers on every response type', () => {
    async function responseKinds(server: string, browser?: Browser): Promise<Map<string, Reply>> {
      const at = (path: string) => new URL(path, server);
      const kinds = new Map<string, Reply>();
      kinds.set('JSON endpoint (discovery)', await send(at('/.well-known/openid-configuration')));
      kinds.set('JSON endpoint (jwks)', await send(at('/jwks')));
      kinds.set('JSON error (token 400)', await send(at('/token'), { method: 'POST' }));
      kinds.set('JSON error (userinfo 401)', await send(at('/me'), { headers: { authorization: 'Bearer nope' } }));
      kinds.set('HTML error page', await send(at('/auth?client_id=nope'), { headers: { accept: 'text/html' } }));
      kinds.set('interaction error page', await send(at('/interaction/nope'), { headers: { accept: 'text/html' } }));
      kinds.set('404', await send(at('/no/such/path')));
      kinds.set('405/OPTIONS', await send(at('/interaction/x/identify'), { method: 'OPTIONS' }));
      kinds.set('metrics', await send(at('/metrics')));
      kinds.set('healthz', await send(at('/healthz')));
      kinds.set('readyz', await send(at('/readyz')));
      kinds.set('static CSS', await send(at('/static/styles.css')));
      kinds.set('414', await send(at(`/auth?x=${'a'.repeat(9000)}`)));
      kinds.set('413', await send(at('/interaction/x/identify'), { method: 'POST', headers: { 'content-type': form }, body: `csrf=x&email=${'a'.repeat(20_000)}` }));
      if (browser) {
        const login = await openLogin(browser);
        kinds.set('HTML page (identify)', await send(login.page, {}, browser));
        kinds.set('redirect (303)', await send(`/auth?${new URLSearchParams({ client_id: 'rp-basic', response_type: 'code', scope: 'openid', redirect_uri: redirectUri, code_challenge: challenge, code_challenge_method: 'S256' })}`));
      }
      return kinds;
    }

    it('nosniff and Referrer-Policy no-referrer on HTML, JSON, errors, 404, 413, 414, metrics; no HSTS over an http issuer', async () => {
      const kinds = await responseKinds(base, new Browser());
      expect(kinds.get('404')!.status).toBe(404);
      expect(kinds.get('413')!.status).toBe(413);
      expect(kinds.get('414')!.status).toBe(414);
      for (const [kind, r] of kinds) {
        expectSane(r);
        expectSecurityHeaders({ ...r, label: kind });
        expect(r.headers.get('strict-transport-security'), `${kind}: no HSTS for an http issuer`).toBeNull();
        expect(r.headers.get('x-powered-by'), kind).toBeNull();
      }
      const json = kinds.get('JSON error (token 400)')!;
      expect(json.contentType).toMatch(/^application\/json/);
    });

    it('HSTS on every response type when the issuer is https', async () => {
      const backend = (process.env.CONFORMANCE_BACKEND as Backend | undefined) ?? 'postgresql+redis';
      const tls: TestIdp = await startIdp(backend, { ISSUER: 'https://idp.example.test' });
      try {
        const kinds = await responseKinds(tls.url);
        for (const [kind, r] of kinds) {
          expectSane(r);
          expectSecurityHeaders({ ...r, label: kind });
          const hsts = r.headers.get('strict-transport-security') ?? '';
          expect(hsts, `${kind}: HSTS`).toMatch(/max-age=(\d+)/);
          expect(Number(/max-age=(\d+)/.exec(hsts)![1]), kind).toBeGreaterThanOrEqual(31_536_000);
          expect(hsts, kind).toContain('includeSubDomains');
        }
      } finally {
        await tls.stop();
      }
    });
  });

  describe('Attack and robustness: oversized and malformed requests', () => {
    afterEach(expectHealthy);

    it('form bodies over 16 KB to every interaction form get 413 (and just under the limit do not)', async () => {
      const browser = new Browser();
      const login = await openLogin(browser);
      for (const action of ['identify', 'password', 'consent', 'abort', 'restart']) {
        const big = await postForm(`${login.page.href}/${action}`, { csrf: login.csrf, email: 'a'.repeat(17 * 1024) }, browser);
        expectSane(big);
        expectSecurityHeaders(big);
        expect(big.status, `${action}: ${big.body}`).toBe(413);
        const huge = await nodeRequest(`${login.page.href}/${action}`, { 'content-type': form, cookie: browser.cookieHeader(login.page) }, 'POST', `csrf=${login.csrf}&x=${'b'.repeat(3_000_000)}`);
        expect(huge.status, `${action} with 3 MB`).toBe(413);
        const under = await postForm(`${login.page.href}/${action}`, { csrf: 'wrong', email: 'a'.repeat(15 * 1024) }, browser);
        expectAll(under);
        expect(under.status, `${action} just under the limit`).toBe(403);
      }
      // Streamed without a Content-Length (chunked), the limit holds too.
      const chunk = new TextEncoder().encode('a'.repeat(4096));
      let sent = 0;
      const stream = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent === 0) controller.enqueue(new TextEncoder().encode(`csrf=${login.csrf}&email=`));
          if (sent++ >= 10) controller.close();
          else controller.enqueue(chunk);
        },
      });
      const chunked = await send(`${login.page.href}/identify`, { method: 'POST', headers: { 'content-type': form }, body: stream, duplex: 'half' } as RequestInit, browser);
      expect(chunked.status).toBe(413);
      // The interaction is intact.
      const page = await send(login.page, {}, browser);
      expect(page.status).toBe(200);
      expect(page.body).toContain('name="email"');
    });

    it('multi-megabyte bodies to the token, introspection, revocation, userinfo and end_session endpoints get a 4xx', async () => {
      const junk = 'x'.repeat(4 * 1024 * 1024);
      const targets: [string, Record<string, string>][] = [
        ['/token', { authorization: basicAuth('rp-basic', c.basicSecret) }],
        ['/token', {}],
        ['/token/introspection', { authorization: basicAuth('rp-basic', c.basicSecret) }],
        ['/token/revocation', {}],
        ['/me', { authorization: `Bearer ${tokens.access}` }],
        ['/session/end', {}],
        ['/session/end/confirm', {}],
        ['/auth', {}],
      ];
      for (const [path, headers] of targets) {
        const r = await nodeRequest(new URL(path, base), { 'content-type': form, ...headers }, 'POST', `grant_type=client_credentials&token=x&junk=${junk}`);
        expectSane(r);
        expectSecurityHeaders(r);
        expect(r.status, `${path}: ${r.body.slice(0, 200)}`).toBeGreaterThanOrEqual(400);
        if (path.startsWith('/token')) expect([400, 413], `${path}: ${r.status}`).toContain(r.status);
      }
      // A JSON body of the same size.
      const json = await nodeRequest(new URL('/token', base), { 'content-type': 'application/json' }, 'POST', JSON.stringify({ grant_type: 'client_credentials', junk }));
      expectSane(json);
      expect(json.status).toBeGreaterThanOrEqual(400);
      // Many parameters rather than one big one.
      const many = await send('/token', { method: 'POST', headers: { 'content-type': form, authorization: basicAuth('rp-basic', c.basicSecret) }, body: Array.from({ length: 20_000 }, (_, i) => `p${i}=${i}`).join('&') });
      expectSane(many);
      expect(many.status).toBeGreaterThanOrEqual(400);
    });

    it('URLs over 8 KB get 414 on every kind of route; 8 KB minus a little does not', async () => {
      const long = 'a'.repeat(8300);
      for (const path of ['/auth', '/token', '/interaction/x', '/interaction/x/identify', '/healthz', '/.well-known/openid-configuration', '/jwks', '/session/end', '/me', '/no/such/path']) {
        for (const method of ['GET', 'POST']) {
          const r = await send(`${path}?junk=${long}`, { method, ...(method === 'POST' ? { headers: { 'content-type': form }, body: 'a=b' } : {}) });
          expectSane(r);
          expectSecurityHeaders(r);
          expect(r.status, `${method} ${path}`).toBe(414);
        }
      }
      expect((await send(`/interaction/${'u'.repeat(9000)}`)).status).toBe(414);
      const under = await send(`/healthz?junk=${'a'.repeat(8000)}`);
      expect(under.status).toBe(200);
    });

    it('a ~60 KB header, a flood of headers and a 60 KB cookie get 431/4xx from Node, and the server stays up', async () => {
      const cases: Record<string, string>[] = [
        { 'x-big': 'a'.repeat(60_000) },
        Object.fromEntries(Array.from({ length: 1500 }, (_, i) => [`x-h${i}`, 'v'.repeat(40)])),
        { cookie: `_session=${'c'.repeat(60_000)}` },
        { authorization: `Bearer ${'t'.repeat(60_000)}` },
      ];
      for (const headers of cases) {
        for (const path of ['/healthz', '/token', '/auth?client_id=rp-basic']) {
          let status: number;
          try {
            const r = await fetch(new URL(path, base), { method: path === '/token' ? 'POST' : 'GET', headers, redirect: 'manual', signal: AbortSignal.timeout(10_000) });
            await r.arrayBuffer();
            status = r.status;
          } catch (error) {
            // Node may close the connection instead of answering; that is a refusal too.
            status = 0;
            expect(String((error as Error & { cause?: { code?: string } }).cause?.code ?? (error as Error).message)).toMatch(/ECONNRESET|EPIPE|UND_ERR_SOCKET|other side closed|terminated/i);
          }
          if (status !== 0) {
            expect(status, `${path} with ${Object.keys(headers).length} header(s)`).toBeGreaterThanOrEqual(400);
            expect(status).toBeLessThan(500);
          }
        }
        await expectHealthy();
      }
      // ~12 KB of headers is still fine.
      expect((await send('/healthz', { headers: { 'x-medium': 'm'.repeat(12_000) } })).status).toBe(200);
    });

    it('malformed and smuggling-shaped HTTP is refused with 400 and answered once', async () => {
      const port = Number(new URL(base).port);
      const payloads = [
        // Content-Length and Transfer-Encoding together (CL.TE smuggling).
        'POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
        // Two different Content-Lengths.
        'POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc',
        // A broken chunk size.
        'POST /token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n',
        // Whitespace before the colon.
        'GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n',
        // A control character in a header value.
        'GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\u0001b\r\n\r\n',
        // Not HTTP at all.
        '\u0016\u0003\u0001\u0002\u0000\u0001\u0000\u0001\u00fc\u0003\u0003garbage\r\n\r\n',
      ];
      for (const payload of payloads) {
        const reply = await rawHttp(port, payload);
        expect(reply, JSON.stringify(payload.slice(0, 60))).toMatch(/^HTTP\/1\.1 4\d\d /);
        expect(reply.match(/HTTP\/1\.1 \d{3} /g)?.length, `one response only for ${JSON.stringify(payload.slice(0, 60))}: ${reply.slice(0, 400)}`).toBe(1);
        expect(reply).not.toMatch(stackTrace);
      }
      // A well-formed request on a raw socket for comparison.
      expect(await rawHttp(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /);
    });
  });
});
