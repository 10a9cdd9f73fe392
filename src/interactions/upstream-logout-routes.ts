// After RP-initiated logout of a federated session, the browser continues to the upstream's own
// logout (connections with end_session) and returns here, to go where the relying party asked.
import Router from '@koa/router';
import type { Context, Middleware, Next } from 'koa';
import type Provider from 'oidc-provider';
import type { Views } from '../http/views.ts';

export interface UpstreamLogoutDeps {
  provider: () => Provider;
  views: Views;
  logout: {
    continueAt(accountId: string, returnTo: string | undefined): Promise<string | undefined>;
    returned(state: string): Promise<string | undefined>;
  };
}

/** Around oidc-provider's logout confirmation: who was signed in, and whether the logout happened. */
export function continueLogoutUpstream(deps: UpstreamLogoutDeps): Middleware {
  return async (ctx: Context, next: Next) => {
    if (ctx.method !== 'POST' || ctx.path !== '/session/end/confirm') return next();
    const session = await deps.provider().Session.get(ctx as never);
    const accountId = session.accountId;
    const federated = ((session as { amr?: string[] }).amr ?? []).includes('fed');
    await next();
    if (!accountId || !federated) return;
    // "No, stay signed in" leaves the session as it was.
    if ((await deps.provider().Session.find(session.jti))?.accountId) return;
    const returnTo = ctx.status >= 300 && ctx.status < 400 ? ctx.response.get('location') || undefined : undefined;
    const upstream = await deps.logout.continueAt(accountId, returnTo);
    if (!upstream) return;
    ctx.status = 303;
    ctx.redirect(upstream);
  };
}

/** The upstream's way back (its post_logout_redirect_uri). */
export function upstreamLogoutRoutes(deps: UpstreamLogoutDeps): Router {
  const router = new Router();
  router.get('/interaction/logged-out', async (ctx: Context) => {
    const returnTo = await deps.logout.returned(typeof ctx.query.state === 'string' ? ctx.query.state : '');
    if (returnTo) {
      ctx.status = 303;
      ctx.redirect(returnTo);
      return;
    }
    const l = deps.views.negotiate(undefined, ctx.get('accept-language'));
    ctx.type = 'html';
    ctx.set('cache-control', 'no-store');
    ctx.body = deps.views.message(deps.views.t(l, 'loggedOut.heading'), deps.views.t(l, 'loggedOut.message'), l);
  });
  return router;
}
