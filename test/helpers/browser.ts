// A minimal HTTP user agent for the interaction screens: a cookie jar (path-scoped, as browsers
// do), manual redirects, and helpers that fill in our forms the way a person would.
import { request as httpRequest } from 'node:http';
import { expect } from 'vitest';

/**
 * A fetch that opens a new connection for every request (no keep-alive): behind `idp serve
 * --workers N` each request may then land on another worker, as behind a load balancer.
 */
export const freshConnections = (url: URL, init: RequestInit): Promise<Response> => new Promise((resolve, reject) => {
  const headers: Record<string, string> = { connection: 'close' };
  new Headers(init.headers).forEach((value, name) => (headers[name] = value));
  const body = typeof init.body === 'string' ? init.body : undefined;
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
  const req = httpRequest(url, { method: init.method ?? 'GET', headers, agent: false }, (res) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => {
      const out = new Headers();
      for (const [name, value] of Object.entries(res.headers)) for (const v of [value ?? []].flat()) out.append(name, v);
      const status = res.statusCode ?? 500;
      resolve(new Response(status === 204 || status === 304 ? null : Buffer.concat(chunks), { status, headers: out }));
    });
    res.on('error', reject);
  });
  req.on('error', reject);
  req.end(body);
});

interface Cookie {
  name: string;
  value: string;
  path: string;
  /** host:port that set it, when the jar keeps hosts apart. */
  host: string;
}

type Fetch = (url: URL, init: RequestInit) => Promise<Response>;

export class Browser {
  readonly #cookies = new Map<string, Cookie>();
  readonly #fetch: Fetch;
  readonly #perHost: boolean;

  /**
   * `fetch` defaults to the global one (keep-alive connections); see freshConnections. `perHost`:
   * cookies go back only to the host:port that set them — for tests whose stand-in upstream
   * identity providers share 127.0.0.1 with us (real ones live on their own domains, and two
   * oidc-provider instances on one host would overwrite each other's session cookies).
   */
  constructor(fetcher: Fetch = (url, init) => fetch(url, init), options: { perHost?: boolean } = {}) {
    this.#fetch = fetcher;
    this.#perHost = options.perHost ?? false;
  }

  cookieHeader(url: URL): string {
    return [...this.#cookies.values()]
      .filter((c) => url.pathname.startsWith(c.path) && (!this.#perHost || c.host === url.host))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  cookie(name: string): string | undefined {
    return [...this.#cookies.values()].find((c) => c.name === name)?.value;
  }

  #store(response: Response, url: URL) {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      const pathAttr = attributes.map((a) => a.trim()).find((a) => a.toLowerCase().startsWith('path='));
      const path = pathAttr ? pathAttr.slice(5) : url.pathname.replace(/\/[^/]*$/, '/') || '/';
      const expired = attributes.some((a) => /^expires=thu, 01 jan 1970/i.test(a.trim())) || attributes.some((a) => /^max-age=0$/i.test(a.trim()));
      const host = this.#perHost ? url.host : '';
      const key = `${host};${name};${path}`;
      if (expired || value === '') this.#cookies.delete(key);
      else this.#cookies.set(key, { name, value, path, host });
    }
  }

  async request(url: string | URL, init: RequestInit = {}): Promise<Response> {
    const target = new URL(url);
    const headers = new Headers(init.headers);
    const cookie = this.cookieHeader(target);
    if (cookie) headers.set('cookie', cookie);
    const response = await this.#fetch(target, { ...init, headers, redirect: 'manual' });
    this.#store(response, target);
    return response;
  }

  /** Follows redirects on `origin` until one leaves it (returned as a URL) or a page is served. */
  async follow(url: string | URL, origin: string, init: RequestInit = {}): Promise<{ response: Response; url: URL }> {
    let current = new URL(url);
    let response = await this.request(current, init);
    for (let hops = 0; hops < 10 && response.status >= 300 && response.status < 400; hops++) {
      const next = new URL(response.headers.get('location')!, current);
      await response.arrayBuffer();
      if (next.origin !== origin) return { response, url: next };
      current = next;
      response = await this.request(current);
    }
    return { response, url: current };
  }

  async postForm(url: string | URL, fields: Record<string, string>, origin: string) {
    return this.follow(url, origin, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields).toString(),
    });
  }
}

export function csrfOf(html: string): string {
  const match = /name="csrf" value="([^"]+)"/.exec(html);
  expect(match, 'the page carries a CSRF token').toBeTruthy();
  return match![1]!;
}

export function formAction(html: string, suffix: string): string {
  const match = new RegExp(`action="(/interaction/[^"]+/${suffix})"`).exec(html);
  expect(match, `the page has a ${suffix} form`).toBeTruthy();
  return match![1]!;
}

/**
 * Signs in through our screens starting from an authorization URL, granting consent if asked.
 * Returns the URL the provider finally redirected to (the client's redirect_uri).
 */
export async function signIn(browser: Browser, authorizationUrl: URL | string, email: string, password: string, options: { consent?: boolean } = {}): Promise<URL> {
  const origin = new URL(authorizationUrl).origin;
  let { response, url } = await browser.follow(authorizationUrl, origin);
  for (let step = 0; step < 6; step++) {
    if (url.origin !== origin) return url;
    const html = await response.text();
    expect(response.status, `page ${url.pathname}: ${html.slice(0, 300)}`).toBe(200);
    const csrf = csrfOf(html);
    if (html.includes('name="email"')) ({ response, url } = await browser.postForm(new URL(formAction(html, 'identify'), origin), { csrf, email }, origin));
    else if (html.includes('name="password"')) ({ response, url } = await browser.postForm(new URL(formAction(html, 'password'), origin), { csrf, password }, origin));
    else if (html.includes('/consent"')) {
      if (options.consent === false) ({ response, url } = await browser.postForm(new URL(formAction(html, 'abort'), origin), { csrf }, origin));
      else ({ response, url } = await browser.postForm(new URL(formAction(html, 'consent'), origin), { csrf }, origin));
    } else throw new Error(`unexpected page at ${url.pathname}: ${html.slice(0, 300)}`);
  }
  throw new Error('sign-in did not finish within 6 pages');
}
