// A tiny relying party mounted at /demo by `idp serve --demo`, so that a new user can sign in to
// the demo client right after `npm start`. It keeps its per-login state (PKCE verifier, state,
// nonce) in a short-lived signed cookie, never in process memory.
import Router from '@koa/router';
import type { Context } from 'koa';
import * as oidc from 'openid-client';
import { escapeHtml } from '../http/views.ts';

export interface DemoClient {
  issuer: string;
  clientId: string;
  clientSecret: string;
  redirectUri: string;
}

const cookieName = 'idp_demo_rp';

function page(title: string, body: string): string {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeHtml(title)}</title><link rel="stylesheet" href="/static/styles.css"></head><body><main class="card">${body}</main></body></html>`;
}

export function demoRelyingParty(current: () => DemoClient | undefined): Router {
  const router = new Router({ prefix: '/demo' });
  let configuration: Promise<oidc.Configuration> | undefined;
  const client = () => {
    const demo = current();
    if (!demo) throw Object.assign(new Error('the demo client is not set up yet'), { status: 503 });
    return demo;
  };
  const discover = (demo = client()) =>
    (configuration ??= oidc
      .discovery(new URL(demo.issuer), demo.clientId, demo.clientSecret, undefined, demo.issuer.startsWith('http:') ? { execute: [oidc.allowInsecureRequests] } : {})
      .catch((error: unknown) => {
        configuration = undefined;
        throw error;
      }));

  router.get('/', async (ctx: Context) => {
    const demo = client();
    const config = await discover();
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    ctx.cookies.set(cookieName, JSON.stringify({ verifier, state, nonce }), { signed: true, httpOnly: true, sameSite: 'lax', maxAge: 10 * 60 * 1000, path: '/demo' });
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: demo.redirectUri,
      scope: 'openid profile email offline_access',
      prompt: 'consent',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    ctx.redirect(url.href);
  });

  router.get('/callback', async (ctx: Context) => {
    const saved = ctx.cookies.get(cookieName, { signed: true });
    ctx.cookies.set(cookieName, null, { path: '/demo' });
    ctx.type = 'html';
    if (!saved) {
      ctx.status = 400;
      ctx.body = page('Demo client', '<h1>Demo client</h1><p>This sign-in has expired. <a href="/demo">Start again</a>.</p>');
      return;
    }
    const { verifier, state, nonce } = JSON.parse(saved) as { verifier: string; state: string; nonce: string };
    try {
      const config = await discover();
      const current = new URL(ctx.href);
      const tokens = await oidc.authorizationCodeGrant(config, current, { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce });
      const claims = tokens.claims() ?? { sub: "" };
      const userinfo = await oidc.fetchUserInfo(config, tokens.access_token, String(claims.sub));
      ctx.body = page('Signed in', `<h1>Signed in to the demo client</h1><p>ID token claims:</p><pre>${escapeHtml(JSON.stringify(claims, null, 2))}</pre><p>Userinfo:</p><pre>${escapeHtml(JSON.stringify(userinfo, null, 2))}</pre><p>Refresh token issued: ${tokens.refresh_token ? 'yes' : 'no'}. <a href="/demo">Sign in again</a></p>`);
    } catch (error) {
      ctx.status = 400;
      const e = error as { error?: string; error_description?: string; message?: string };
      ctx.body = page('Demo client', `<h1>Sign-in did not complete</h1><p>${escapeHtml(e.error ?? '')} ${escapeHtml(e.error_description ?? e.message ?? '')}</p><p><a href="/demo">Start again</a></p>`);
    }
  });
  return router;
}
