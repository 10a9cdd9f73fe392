// The login client: one full sign-in through our real screens as a browser does it, with a fresh
// cookie jar per login and keep-alive fetch: the authorization request (PKCE S256, state,
// nonce), every form (identify, password, the TOTP second factor when asked, consent when shown),
// then the code redeemed at the token endpoint and the ID token verified against the JWKS.
import { createHash, randomBytes } from 'node:crypto';
import { jwtVerify, type JWTVerifyGetKey } from 'jose';
import { totpCodeAt, totpStep } from '../../src/mfa/totp.ts';
import { BenchError } from './proc.ts';
import { sleep } from './stats.ts';

export interface LoginTarget {
  issuer: string;
  authorizationEndpoint: string;
  tokenEndpoint: string;
  clientId: string;
  clientSecret: string;
  redirectUri: string;
  jwks: JWTVerifyGetKey;
}

export interface LoginUser {
  id: string;
  email: string;
  password: string;
  totp?: TotpDevice;
}

/**
 * An authenticator app. The server accepts a code of the step before, at or after its clock, and
 * each step only once per account (a step at or before the last used one is a replay), so the
 * device remembers the last step it gave out and always gives the smallest step still allowed.
 */
export class TotpDevice {
  readonly secret: string;
  lastStep: number;

  constructor(secret: string, lastStep: number) {
    this.secret = secret;
    this.lastStep = lastStep;
  }

  /** Whether a login started now can be answered without waiting, even if the step changes meanwhile. */
  ready(now = Date.now()): boolean {
    return this.lastStep <= totpStep(now);
  }

  /**
   * The code to type now. The step before is used only early in the current step, so the server
   * (a moment later, under load) still accepts it; the step after is accepted until 30 s after
   * the next boundary, far longer than a form post takes.
   */
  code(now = Date.now()): string {
    const step = totpStep(now);
    const intoStep = now % 30_000;
    const candidates = [...(intoStep < 15_000 ? [step - 1] : []), step, step + 1].filter((s) => s > this.lastStep);
    const chosen = candidates[0];
    if (chosen === undefined) throw new BenchError(`no TOTP step left for now (last used ${this.lastStep}, now ${step})`);
    this.lastStep = chosen;
    return totpCodeAt(this.secret, chosen * 30_000 + 1000);
  }
}

/** Waits until every device can answer a login started now. */
export async function waitForTotpSteps(devices: TotpDevice[]): Promise<number> {
  const start = Date.now();
  for (;;) {
    const now = Date.now();
    if (devices.every((d) => d.ready(now))) return Date.now() - start;
    await sleep(30_000 - (now % 30_000) + 50);
  }
}

class CookieJar {
  readonly #cookies = new Map<string, { name: string; value: string; path: string }>();

  header(url: URL): string {
    return [...this.#cookies.values()].filter((c) => url.pathname.startsWith(c.path)).map((c) => `${c.name}=${c.value}`).join('; ');
  }

  store(response: Response, url: URL): void {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      const attrs = attributes.map((a) => a.trim());
      const pathAttr = attrs.find((a) => a.toLowerCase().startsWith('path='));
      const path = pathAttr ? pathAttr.slice(5) : url.pathname.replace(/\/[^/]*$/, '/') || '/';
      const expired = attrs.some((a) => /^expires=thu, 01 jan 1970/i.test(a) || /^max-age=0$/i.test(a));
      const key = `${name};${path}`;
      if (expired || value === '') this.#cookies.delete(key);
      else this.#cookies.set(key, { name, value, path });
    }
  }
}

type Screen = { kind: 'page'; status: number; html: string; url: URL } | { kind: 'callback'; url: URL };

class Browser {
  readonly #jar = new CookieJar();
  readonly #origin: string;
  requests = 0;

  constructor(origin: string) {
    this.#origin = origin;
  }

  async #request(url: URL, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    const cookie = this.#jar.header(url);
    if (cookie) headers.set('cookie', cookie);
    headers.set('accept', 'text/html');
    this.requests++;
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    this.#jar.store(response, url);
    return response;
  }

  /** Follows redirects on the issuer's origin until a page is served or one leaves it (the callback). */
  async go(url: URL, init: RequestInit = {}): Promise<Screen> {
    let current = url;
    let response = await this.#request(current, init);
    for (let hops = 0; response.status >= 300 && response.status < 400; hops++) {
      if (hops >= 10) throw new BenchError(`more than 10 redirects from ${url.pathname}`);
      const next = new URL(response.headers.get('location')!, current);
      await response.arrayBuffer();
      if (next.origin !== this.#origin) return { kind: 'callback', url: next };
      current = next;
      response = await this.#request(current);
    }
    return { kind: 'page', status: response.status, html: await response.text(), url: current };
  }

  post(action: string, fields: Record<string, string>): Promise<Screen> {
    return this.go(new URL(action, this.#origin), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields).toString(),
    });
  }
}

const actionOf = (html: string, suffix: string) => new RegExp(`action="(/interaction/[^"]+/${suffix})"`).exec(html)?.[1];
const csrfOf = (html: string) => /name="csrf" value="([^"]+)"/.exec(html)?.[1];
const snippet = (html: string) => html.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200);

export interface LoginOutcome {
  ms: number;
  /** Time of each step: authorize, identify, password, mfa, consent, token. */
  steps: Record<string, number>;
  consentShown: boolean;
  requests: number;
  accessToken: string;
}

const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

/** One sign-in; throws a BenchError naming the step that went wrong. */
export async function login(target: LoginTarget, user: LoginUser, scope = 'openid email'): Promise<LoginOutcome> {
  const started = performance.now();
  const steps: Record<string, number> = {};
  const browser = new Browser(new URL(target.issuer).origin);
  const verifier = randomBytes(32).toString('base64url');
  const state = randomBytes(16).toString('base64url');
  const nonce = randomBytes(16).toString('base64url');
  const url = new URL(target.authorizationEndpoint);
  url.search = new URLSearchParams({
    response_type: 'code', client_id: target.clientId, redirect_uri: target.redirectUri, scope, state, nonce,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256',
  }).toString();

  let t = performance.now();
  let screen = await browser.go(url);
  steps.authorize = performance.now() - t;
  let consentShown = false;
  const done = new Set<string>();
  for (let pages = 0; screen.kind === 'page'; pages++) {
    const { html, status } = screen;
    if (pages >= 6 || status !== 200) throw new BenchError(`login of ${user.email}: ${status} at ${screen.url.pathname}: ${snippet(html)}`);
    const csrf = csrfOf(html);
    let step: string;
    let action: string | undefined;
    let fields: Record<string, string>;
    if ((action = actionOf(html, 'identify')) && html.includes('name="email"')) {
      step = 'identify';
      fields = { email: user.email };
    } else if ((action = actionOf(html, 'password')) && html.includes('name="password"')) {
      step = 'password';
      fields = { password: user.password };
    } else if ((action = actionOf(html, 'mfa')) && html.includes('id="code-totp"') && user.totp) {
      step = 'mfa';
      fields = { method: 'totp', code: user.totp.code() };
    } else if ((action = actionOf(html, 'consent'))) {
      step = 'consent';
      consentShown = true;
      fields = {};
    } else {
      throw new BenchError(`login of ${user.email}: unexpected page at ${screen.url.pathname}: ${snippet(html)}`);
    }
    if (!csrf) throw new BenchError(`login of ${user.email}: the ${step} page has no CSRF token`);
    if (done.has(step)) throw new BenchError(`login of ${user.email}: the ${step} page came back: ${snippet(html)}`);
    done.add(step);
    t = performance.now();
    screen = await browser.post(action, { csrf, ...fields });
    steps[step] = performance.now() - t;
  }

  const callback = screen.url;
  if (`${callback.origin}${callback.pathname}` !== target.redirectUri) throw new BenchError(`login of ${user.email}: redirected to ${callback.href}`);
  if (callback.searchParams.get('error')) throw new BenchError(`login of ${user.email}: ${callback.searchParams.get('error')}: ${callback.searchParams.get('error_description')}`);
  if (callback.searchParams.get('state') !== state) throw new BenchError(`login of ${user.email}: state mismatch`);
  const code = callback.searchParams.get('code');
  if (!code) throw new BenchError(`login of ${user.email}: no code in ${callback.href}`);
  if (user.totp && !done.has('mfa')) throw new BenchError(`login of ${user.email}: signed in without the second factor`);

  t = performance.now();
  const response = await fetch(target.tokenEndpoint, {
    method: 'POST',
    headers: { authorization: basic(target.clientId, target.clientSecret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: target.redirectUri, code_verifier: verifier }).toString(),
  });
  const tokens = (await response.json()) as { id_token?: string; access_token?: string; token_type?: string; error?: string };
  steps.token = performance.now() - t;
  if (response.status !== 200 || !tokens.id_token || !tokens.access_token) throw new BenchError(`login of ${user.email}: token endpoint answered ${response.status} ${JSON.stringify(tokens)}`);
  const { payload } = await jwtVerify(tokens.id_token, target.jwks, { issuer: target.issuer, audience: target.clientId, algorithms: ['RS256'] }).catch((error: Error) => {
    throw new BenchError(`login of ${user.email}: ID token did not verify: ${error.message}`);
  });
  if (payload.nonce !== nonce || payload.sub !== user.id) throw new BenchError(`login of ${user.email}: ID token for ${payload.sub} with nonce ${String(payload.nonce)}`);
  const amr = (payload.amr as string[] | undefined) ?? [];
  if (!amr.includes('pwd') || (user.totp && !amr.includes('otp'))) throw new BenchError(`login of ${user.email}: ID token amr ${JSON.stringify(amr)}`);
  return { ms: performance.now() - started, steps, consentShown, requests: browser.requests + 1, accessToken: tokens.access_token };
}
