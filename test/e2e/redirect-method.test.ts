// A sign-in method that sends the browser to an upstream provider (the shape of the coming OIDC
// and SAML connections), registered as one module: its button on the identify screen, the
// redirect, and the upstream's answer as a cross-site POST that carries only the sign-in's binding
// cookie, found by the state the method sent — once, and only through the browser sent upstream. Then back in our chain and to the client.
import { randomBytes } from 'node:crypto';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SignInMethod } from '../../src/flow/methods/types.ts';
import { Browser, csrfOf } from '../helpers/browser.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { backends, startIdp, type TestIdp } from '../helpers/server.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const redirectUri = 'http://localhost:8080/callback';
const upstream = 'https://upstream.example.test';

/** A stand-in upstream method: the upstream says who signed in when it answers with code=good. */
function upstreamMethod(accountId: () => string): SignInMethod {
  return {
    id: 'upstream-test',
    identifierFirst: false,
    offer: async () => ({ template: 'offer-button', vars: { label: 'Continue with Upstream' } }),
    async submit() {
      const state = randomBytes(24).toString('base64url');
      return { kind: 'redirect', event: 'upstream_redirected', url: `${upstream}/authorize?state=${state}`, state };
    },
    async callback(_flow, params) {
      return params.code === 'good'
        ? { kind: 'verified', event: 'upstream_verified', accountId: accountId(), amr: ['pwd'] }
        : { kind: 'rejected', event: 'upstream_rejected', reason: 'upstream_error', notice: { key: 'error.loginFailed', kind: 'rejected' } };
    },
  };
}

describe.each(backends)('a redirect sign-in method on %s', (backend) => {
  let t: TestIdp;
  let rp: oidc.Configuration;
  let accountId = '';

  beforeAll(async () => {
    t = await startIdp(backend, {}, { methods: [upstreamMethod(() => accountId)] });
    accountId = (await t.idp.accounts.create({ email: 'fed@example.com', emailVerified: true })).id;
    const created = await t.idp.clients.create({ client_id: 'webapp', redirect_uris: [redirectUri], first_party: true });
    rp = await oidc.discovery(new URL(t.issuer), 'webapp', created.clientSecret!, undefined, insecure);
  });
  afterAll(async () => t?.stop());

  /** The button on the identify screen, clicked: returns the upstream URL the browser is sent to. */
  async function toUpstream(browser: Browser) {
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri });
    const identify = await browser.follow(request.url, t.issuer);
    const html = await identify.response.text();
    expect(html).toContain('Continue with Upstream');
    const uid = /\/interaction\/([^/"]+)\/identify/.exec(html)![1]!;
    const clicked = await browser.request(`${t.issuer}/interaction/${uid}/identify`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ csrf: csrfOf(html), method: 'upstream-test' }).toString(),
    });
    expect(clicked.status).toBe(303);
    return { request, uid, to: new URL(clicked.headers.get('location')!) };
  }

  /**
   * The upstream's answer, posted by its page: another site, so of our cookies only the sign-in's
   * binding cookie comes with it (SameSite=None on https; the interaction's own cookies stay home).
   * `browser`: the one that was sent upstream; without it, the answer comes through a stranger's.
   */
  const answer = (fields: Record<string, string>, browser?: Browser) => {
    const url = `${t.issuer}/interaction/callback/upstream-test`;
    const init: RequestInit = { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded', origin: upstream }, body: new URLSearchParams(fields).toString() };
    return browser ? browser.request(url, init) : fetch(url, init);
  };

  it('sends the browser upstream, takes the cookie-less answer by its state, and signs the user in', async () => {
    const browser = new Browser();
    const { request, uid, to } = await toUpstream(browser);
    expect(to.origin).toBe(upstream);
    const state = to.searchParams.get('state')!;
    const back = await answer({ state, code: 'good' }, browser);
    expect(back.status).toBe(303);
    expect(back.headers.get('location')).toBe(`/interaction/${uid}`);
    // The state works once: a replayed answer finds no flow.
    expect((await answer({ state, code: 'good' }, browser)).status).toBe(400);
    // The browser continues at its interaction, with its cookies: the login finishes.
    const done = await browser.follow(`${t.issuer}${back.headers.get('location')}`, t.issuer);
    expect(done.url.origin + done.url.pathname).toBe(redirectUri);
    const tokens = await oidc.authorizationCodeGrant(rp, done.url, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
    expect(tokens.claims()).toMatchObject({ sub: accountId, amr: ['pwd'] });
    const types = (await t.idp.db.prisma.auditEvent.findMany({ where: { type: { startsWith: 'login.' } }, orderBy: { seq: 'asc' } }))
      .filter((r) => (JSON.parse(r.details) as { interaction?: string }).interaction === uid).map((r) => r.type);
    expect(types).toEqual(['login.method_chosen', 'login.upstream_redirected', 'login.upstream_verified', 'login.risk_allowed']);
  });

  it('an answer with an unknown, malformed or missing state is refused with our page, never a 500', async () => {
    const answers: Record<string, string>[] = [{ state: randomBytes(24).toString('base64url'), code: 'good' }, { state: 'x', code: 'good' }, { code: 'good' }];
    for (const fields of answers) {
      const response = await answer(fields);
      expect(response.status).toBe(400);
      expect(response.headers.get('content-type')).toMatch(/^text\/html/);
    }
  });

  it('an answer that comes through another browser than the one sent upstream signs nobody in (a handed-over upstream link)', async () => {
    const attacker = new Browser();
    const { uid, to } = await toUpstream(attacker);
    // The attacker sends the upstream URL to a victim signed in there: the answer arrives in the victim's browser.
    const victim = await answer({ state: to.searchParams.get('state')!, code: 'good' }, new Browser());
    expect(victim.status).toBe(400);
    expect(await victim.text()).toContain('does not belong to a sign-in in progress');
    const refused = (await t.idp.db.prisma.auditEvent.findMany({ where: { type: 'federation.refused' }, orderBy: { seq: 'asc' } })).at(-1)!;
    expect(JSON.parse(refused.details)).toMatchObject({ reason: 'other_browser' });
    // The attacker's sign-in did not move: no code for the attacker.
    const reload = await attacker.follow(`${t.issuer}/interaction/${uid}`, t.issuer);
    expect(reload.url.origin).toBe(new URL(t.issuer).origin);
  });

  it('made-up answers are audited up to a budget per origin, then refused with 429 and no more audit rows', async () => {
    const refusals = async () => t.idp.db.prisma.auditEvent.count({ where: { type: 'federation.refused' } });
    await t.idp.audit.flush();
    const before = await refusals();
    const statuses: number[] = [];
    for (let i = 0; i < 35; i++) statuses.push((await answer({ state: randomBytes(24).toString('base64url'), code: 'x' })).status);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);
    expect(statuses.every((s) => s === 400 || s === 429)).toBe(true);
    await t.idp.audit.flush();
    // Never more rows than the budget (30 per 10 minutes), whatever came before in this file.
    expect((await refusals()) - before).toBeLessThanOrEqual(30);
  });

  it('a refused upstream answer counts as a failed attempt and leaves the user on our screens', async () => {
    const browser = new Browser();
    const { uid, to } = await toUpstream(browser);
    const back = await answer({ state: to.searchParams.get('state')!, code: 'bad' }, browser);
    expect(back.status).toBe(303);
    const rejected = await t.idp.db.prisma.auditEvent.findMany({ where: { type: 'login.upstream_rejected' } });
    expect(rejected.some((r) => (JSON.parse(r.details) as { interaction?: string }).interaction === uid)).toBe(true);
    // Back at the start of the sign-in, free to try again or another way.
    const again = await browser.follow(`${t.issuer}${back.headers.get('location')}`, t.issuer);
    expect(await again.response.text()).toContain('name="email"');
  });
});
