// Every prompt and max_age a relying party may send, for a first-party and a third-party client,
// walked as a browser walks them with openid-client as the relying party: each request must end
// in a code after at most one sign-in and at most one consent screen — never a loop back to the
// sign-in screen (a defect found from outside: prompt=login with consent repeated forever).
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { backends, startIdp, type TestIdp } from '../helpers/server.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const redirectUri = 'http://localhost:8080/callback';
const email = 'pat@example.com';
const password = 'a password for every prompt';

interface Walk {
  callback: URL;
  /** The screens shown, in order. */
  screens: ('identify' | 'password' | 'consent')[];
}

/** Follows one authorization request through our screens, answering each as a user would. */
async function walk(browser: Browser, url: URL, origin: string): Promise<Walk> {
  const screens: Walk['screens'] = [];
  let { response, url: at } = await browser.follow(url, origin);
  for (let step = 0; step < 8; step++) {
    if (at.origin !== origin) return { callback: at, screens };
    const html = await response.text();
    expect(response.status, `${at.pathname}: ${html.slice(0, 300)}`).toBe(200);
    const csrf = csrfOf(html);
    if (html.includes('name="email"')) {
      screens.push('identify');
      ({ response, url: at } = await browser.postForm(new URL(formAction(html, 'identify'), origin), { csrf, email }, origin));
    } else if (html.includes('name="password"')) {
      screens.push('password');
      ({ response, url: at } = await browser.postForm(new URL(formAction(html, 'password'), origin), { csrf, password }, origin));
    } else if (html.includes('/consent"')) {
      screens.push('consent');
      ({ response, url: at } = await browser.postForm(new URL(formAction(html, 'consent'), origin), { csrf }, origin));
    } else {
      throw new Error(`unexpected page ${at.pathname}: ${html.slice(0, 300)}`);
    }
  }
  throw new Error(`no code after 8 screens: ${screens.join(' → ')}`);
}

describe.each(backends)('prompt and max_age variants on %s', (backend) => {
  let t: TestIdp;
  let accountId: string;
  const rps: Record<'first-party' | 'third-party', oidc.Configuration> = {} as never;

  beforeAll(async () => {
    t = await startIdp(backend);
    accountId = (await t.idp.accounts.create({ email, password, emailVerified: true })).id;
    for (const [kind, firstParty] of [['first-party', true], ['third-party', false]] as const) {
      const created = await t.idp.clients.create({ client_id: kind, redirect_uris: [redirectUri], first_party: firstParty });
      rps[kind] = await oidc.discovery(new URL(t.issuer), kind, created.clientSecret!, undefined, insecure);
    }
  });
  afterAll(async () => t?.stop());

  const variants: Record<string, Record<string, string>> = {
    'prompt=login': { prompt: 'login' },
    'prompt=consent': { prompt: 'consent' },
    'prompt=login consent': { prompt: 'login consent' },
    'max_age=0': { max_age: '0' },
  };

  /** One authorization request at `kind` with `params`, walked to the code and redeemed. */
  async function authorize(kind: keyof typeof rps, params: Record<string, string>, browser: Browser) {
    const rp = rps[kind];
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri, scope: 'openid email', ...params });
    const result = await walk(browser, request.url, t.issuer);
    expect(result.callback.searchParams.get('error'), result.callback.href).toBeNull();
    const tokens = await oidc.authorizationCodeGrant(rp, result.callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce, ...(params.max_age ? { maxAge: Number(params.max_age) } : {}) });
    expect(tokens.claims()?.sub).toBe(accountId);
    return result.screens;
  }

  for (const kind of ['first-party', 'third-party'] as const) {
    for (const [name, params] of Object.entries(variants)) {
      it(`${kind}, ${name}: one sign-in, at most one consent, a code — the first time and again after consent`, async () => {
        // An account that never consented to the client (consent is remembered per account and client).
        await t.idp.db.prisma.consent.deleteMany({});
        const browser = new Browser();
        const asksConsent = kind === 'third-party' || params.prompt?.includes('consent');
        // A fresh browser: sign in, consent where the client needs it, code.
        expect(await authorize(kind, params, browser)).toEqual(['identify', 'password', ...(asksConsent ? ['consent'] : [])]);
        // The same browser and request again: a signed-in session, consent given already.
        const again = await authorize(kind, params, browser);
        const signIn = params.prompt?.includes('login') || params.max_age === '0' ? ['identify', 'password'] : [];
        expect(again).toEqual([...signIn, ...(params.prompt?.includes('consent') ? ['consent'] : [])]);
      });
    }
  }
});

describe.each(backends)('consent remembered per account and client on %s', (backend) => {
  let t: TestIdp;
  let rp: oidc.Configuration;

  beforeAll(async () => {
    t = await startIdp(backend, { RESOURCE_SERVERS: JSON.stringify([{ indicator: 'https://api.example.test', scopes: ['api:read'], accessTokenFormat: 'jwt', accessTokenTTL: 600 }]) });
    await t.idp.accounts.create({ email, password, emailVerified: true });
    const created = await t.idp.clients.create({ client_id: 'thirdparty', redirect_uris: [redirectUri], grant_types: ['authorization_code', 'refresh_token'] });
    rp = await oidc.discovery(new URL(t.issuer), 'thirdparty', created.clientSecret!, undefined, insecure);
  });
  afterAll(async () => t?.stop());

  async function authorize(browser: Browser, scope: string) {
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri, scope });
    const result = await walk(browser, request.url, t.issuer);
    const tokens = await oidc.authorizationCodeGrant(rp, result.callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
    return { screens: result.screens, tokens };
  }

  /** RP-initiated logout, confirmed on our page: the session (and its grants) end. */
  async function signOut(browser: Browser) {
    const page = await browser.request(`${t.issuer}/session/end`);
    const html = await page.text();
    const action = /<form[^>]*id="op\.logoutForm"[^>]*action="([^"]+)"/.exec(html)?.[1] ?? /action="([^"]*\/session\/end\/confirm)"/.exec(html)![1]!;
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(html)![1]!;
    const done = await browser.request(new URL(action, t.issuer), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ xsrf, logout: 'yes' }).toString() });
    expect([200, 302, 303]).toContain(done.status);
    expect(browser.cookie('_session')).toBeUndefined();
  }

  it('asks once: after signing out and in again the same client gets its code without consent; more scopes are asked for', async () => {
    const browser = new Browser();
    expect((await authorize(browser, 'openid email')).screens).toEqual(['identify', 'password', 'consent']);
    await signOut(browser);
    expect((await authorize(browser, 'openid email')).screens).toEqual(['identify', 'password']);
    // A new browser, too: consent is the account's, not the session's.
    expect((await authorize(new Browser(), 'openid')).screens).toEqual(['identify', 'password']);
    // More than was consented: asked for, then remembered as well.
    expect((await authorize(browser, 'openid email profile')).screens).toEqual(['consent']);
    expect((await authorize(new Browser(), 'openid profile')).screens).toEqual(['identify', 'password']);
  });

  it('withdrawn on the account page: the client\'s tokens stop working and it asks again', async () => {
    const browser = new Browser();
    const { tokens } = await authorize(browser, 'openid');
    expect((await oidc.tokenIntrospection(rp, tokens.access_token)).active).toBe(true);
    // The account page (its own sign-in, a first-party client: no consent) lists the client.
    const { response } = await browser.follow(`${t.issuer}/account`, t.issuer);
    const page = await response.text();
    expect(page).toContain('data-client="thirdparty"');
    const csrf = csrfOf(page);
    const revoked = await browser.request(`${t.issuer}/account/consents/thirdparty/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ csrf }).toString() });
    expect(revoked.status).toBe(303);
    expect((await oidc.tokenIntrospection(rp, tokens.access_token)).active).toBe(false);
    expect((await authorize(new Browser(), 'openid')).screens).toEqual(['identify', 'password', 'consent']);
    expect(await t.idp.db.prisma.auditEvent.count({ where: { type: 'consent.revoked' } })).toBe(1);
  });

  it('lasts GRANT_TTL: an expired consent is asked for again', async () => {
    const account = await t.idp.accounts.findByEmail(email);
    await t.idp.db.prisma.consent.updateMany({ where: { accountId: account!.id }, data: { expiresAt: new Date(Date.now() - 1000) } });
    expect((await authorize(new Browser(), 'openid')).screens).toEqual(['identify', 'password', 'consent']);
  });
});
