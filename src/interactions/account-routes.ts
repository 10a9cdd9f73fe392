// The account pages: self-service registration, email verification, invitations and password
// resets (no session needed), and the signed-in account page (sessions, password). The account
// page is authenticated by the IdP's own session cookie; signing in to it goes through a normal
// authorization request of the built-in client `idp-account`, so every login rule applies.
import { createHash, createHmac, randomBytes } from 'node:crypto';
import Router from '@koa/router';
import { formBody, formField } from '../http/forms.ts';
import type { Context } from 'koa';
import type { RateLimiterAbstract } from 'rate-limiter-flexible';
import { PasswordPolicyError } from '../accounts/password-policy.ts';
import { TokenInvalidError, type Actor, type SelfService } from '../accounts/self-service.ts';
import type { AccountService } from '../accounts/service.ts';
import type { AuditSink } from '../audit/types.ts';
import { IdpError } from '../errors.ts';
import { formToken, formTokenMatches, sameToken } from '../http/form-csrf.ts';
import type { ConsentService } from '../consent/service.ts';
import type Provider from 'oidc-provider';
import type { SessionService } from '../sessions/service.ts';
import { escapeHtml, type Views } from '../http/views.ts';
import { accountMfaRoutes, mfaSection, type AccountMfaDeps } from './account-mfa-routes.ts';

export const accountClientId = 'idp-account';

export function accountClient(issuer: string) {
  return {
    client_id: accountClientId,
    client_name: 'Your account',
    token_endpoint_auth_method: 'none',
    redirect_uris: [`${issuer}/account/callback`],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    first_party: true,
  };
}

export interface AccountPageDeps {
  provider: () => Provider;
  views: Views;
  /** Consents to third-party clients: listed, and revocable with the client's grants. */
  consents: Pick<ConsentService, 'list' | 'revoke'>;
  selfService: SelfService;
  accounts: AccountService;
  sessions: SessionService;
  audit: AuditSink;
  issuer: string;
  registrationEnabled: boolean;
  /** Signs the account page's CSRF tokens. */
  secret: string;
  /** Anonymous forms (registration, reset requests) per IP. */
  anonymousLimiter: RateLimiterAbstract;
  /** The second-factor section and its routes. */
  mfa?: AccountMfaDeps;
  /** Upstream identities linked to the account: listed, and unlinked while another way to sign in remains. */
  links?: LinkedSignIns;
}

export interface LinkedSignIns {
  list(accountId: string): Promise<{ id: string; connection: string; email: string | null; createdAt: Date }[]>;
  /** Whether the account can still sign in without the link `id` (a password, a passkey, an emailed code, another link). */
  otherWays(accountId: string, id: string): Promise<boolean>;
  unlink(accountId: string, id: string, context: { ip?: string; userAgent?: string }): Promise<boolean>;
}

export interface SignedIn {
  accountId: string;
  sid: string;
  loginTs: number;
  amr: string[];
  csrf: string;
}

const stateCookie = 'idp.account_state';

const queryToken = (ctx: Context) => (typeof ctx.query.token === 'string' ? ctx.query.token.slice(0, 100) : '');

export function accountRoutes(deps: AccountPageDeps): Router {
  const { views, selfService, sessions, audit } = deps;
  const router = new Router({ prefix: '/account' });
  const lang = (ctx: Context) => views.negotiate(undefined, ctx.get('accept-language'));
  const actor = (ctx: Context, accountId?: string): Actor => ({ actor: accountId ?? null, ip: ctx.ip, userAgent: ctx.get('user-agent'), requestId: ctx.state.requestId as string });

  const render = (ctx: Context, template: string, titleKey: string, vars: Record<string, unknown>, status = 200) => {
    const l = lang(ctx);
    ctx.status = status;
    ctx.type = 'html';
    ctx.set('cache-control', 'no-store');
    ctx.body = views.page(template, views.t(l, titleKey), vars, l);
  };
  const message = (ctx: Context, headingKey: string, messageKey: string, status = 200) => {
    const l = lang(ctx);
    ctx.status = status;
    ctx.type = 'html';
    ctx.set('cache-control', 'no-store');
    ctx.body = views.message(views.t(l, headingKey), views.t(l, messageKey), l);
  };
  const errors = (ctx: Context, keysOrTexts: string[]) => views.errorList(keysOrTexts.map((k) => (k.includes('.') && !k.includes(' ') ? views.t(lang(ctx), k) : k)));

  /** Anonymous form posts: the double-submit token must match, and the per-IP budget must last. */
  function anonymousPost(handler: (ctx: Context) => Promise<void>) {
    return async (ctx: Context) => {
      if (!formTokenMatches(ctx, formField(ctx, 'csrf', 256))) {
        await audit.record({ type: 'csrf.rejected', outcome: 'failure', ip: ctx.ip, userAgent: ctx.get('user-agent'), details: { path: ctx.path } });
        message(ctx, 'error.heading', 'error.csrf', 403);
        return;
      }
      try {
        await deps.anonymousLimiter.consume(ctx.ip);
      } catch {
        ctx.set('retry-after', '3600');
        message(ctx, 'error.heading', 'error.tooManyRequests', 429);
        return;
      }
      await handler(ctx);
    };
  }

  const passwordProblems = (error: unknown): string[] | undefined => (error instanceof PasswordPolicyError ? error.problems.map((p) => `Password ${p}.`) : undefined);

  // ---- Registration ---------------------------------------------------------------------------
  router.get('/register', async (ctx) => {
    if (!deps.registrationEnabled) return message(ctx, 'error.heading', 'error.registrationDisabled', 404);
    render(ctx, 'register', 'register.title', { csrf: formToken(ctx), email: '', name: '', errors: '' });
  });
  router.post('/register', formBody, async (ctx) => {
    if (!deps.registrationEnabled) return message(ctx, 'error.heading', 'error.registrationDisabled', 404);
    await anonymousPost(async () => {
      const email = formField(ctx, 'email', 320).trim();
      const name = formField(ctx, 'name', 200).trim();
      try {
        await selfService.register({ email, name: name || undefined, password: formField(ctx, 'password') }, actor(ctx));
        message(ctx, 'registered.heading', 'registered.message');
      } catch (error) {
        const problems = passwordProblems(error) ?? (error instanceof IdpError && error.status < 500 ? [error.message] : undefined);
        if (!problems) throw error;
        render(ctx, 'register', 'register.title', { csrf: formToken(ctx), email, name, errors: errors(ctx, problems) }, 400);
      }
    })(ctx);
  });

  // ---- Email verification: GET only shows a button (mail scanners follow links) ----------------
  router.get('/verify-email', async (ctx) => {
    render(ctx, 'confirm-email', 'verifyEmail.title', { csrf: formToken(ctx), token: queryToken(ctx), errors: '' });
  });
  router.post('/verify-email', formBody, anonymousPost(async (ctx) => {
    const token = formField(ctx, 'token', 100);
    try {
      const account = await selfService.verifyEmail(token, formField(ctx, 'password'), actor(ctx));
      message(ctx, 'verified.heading', account.approval === 'pending' ? 'verified.pendingApproval' : 'verified.message');
    } catch (error) {
      if (error instanceof TokenInvalidError) return message(ctx, 'error.heading', 'error.linkInvalid', 400);
      if (!(error instanceof IdpError) || error.status >= 500) throw error;
      render(ctx, 'confirm-email', 'verifyEmail.title', { csrf: formToken(ctx), token, errors: errors(ctx, ['error.verifyPassword']) }, 400);
    }
  }));

  // ---- Invitations and password resets: a single-use link leads to a set-password form --------
  const linkForms = [
    { path: 'invitation', purpose: 'invitation', titleKey: 'invitation.title', headingKey: 'invitation.heading', doneKey: 'passwordSet.message', run: selfService.acceptInvitation.bind(selfService) },
    { path: 'reset-password', purpose: 'password_reset', titleKey: 'reset.title', headingKey: 'reset.heading', doneKey: 'passwordReset.message', run: selfService.resetPassword.bind(selfService) },
  ] as const;
  for (const form of linkForms) {
    const show = async (ctx: Context, token: string, problems: string[] = [], status = 200) => {
      const account = await selfService.accountForLink(token, form.purpose);
      if (!account) return message(ctx, 'error.heading', 'error.linkInvalid', 400);
      render(ctx, 'set-password', form.titleKey, { heading: views.t(lang(ctx), form.headingKey), email: account.email, token, action: `/account/${form.path}`, csrf: formToken(ctx), errors: errors(ctx, problems) }, status);
    };
    router.get(`/${form.path}`, async (ctx) => show(ctx, queryToken(ctx)));
    router.post(`/${form.path}`, formBody, anonymousPost(async (ctx) => {
      const token = formField(ctx, 'token', 100);
      const password = formField(ctx, 'password');
      if (password !== formField(ctx, 'confirm')) return show(ctx, token, ['error.passwordMismatch'], 400);
      try {
        await form.run(token, password, actor(ctx));
        message(ctx, 'passwordSet.heading', form.doneKey);
      } catch (error) {
        if (error instanceof TokenInvalidError) return message(ctx, 'error.heading', 'error.linkInvalid', 400);
        const problems = passwordProblems(error);
        if (!problems) throw error;
        await show(ctx, token, problems, 400);
      }
    }));
  }

  router.get('/forgot-password', async (ctx) => {
    render(ctx, 'forgot-password', 'forgot.title', { csrf: formToken(ctx), email: '', errors: '' });
  });
  router.post('/forgot-password', formBody, anonymousPost(async (ctx) => {
    await selfService.requestPasswordReset(formField(ctx, 'email', 320), actor(ctx));
    message(ctx, 'forgotSent.heading', 'forgotSent.message');
  }));

  // ---- The signed-in account page ---------------------------------------------------------------
  const csrfFor = (sid: string) => createHmac('sha256', deps.secret).update(`account-page:${sid}`).digest('base64url');

  async function signedIn(ctx: Context): Promise<SignedIn | undefined> {
    const session = await deps.provider().Session.get(ctx as never);
    if (!session.accountId || !session.uid || !session.loginTs) return undefined;
    return { accountId: session.accountId, sid: session.uid, loginTs: session.loginTs, amr: (session.amr as string[] | undefined) ?? [], csrf: csrfFor(session.uid) };
  }

  /** Starts a sign-in to the account page (again, with `fresh`: for actions that need a recent login). */
  function startSignIn(ctx: Context, fresh = false, mfa = false) {
    const state = randomBytes(16).toString('base64url');
    const verifier = randomBytes(32).toString('base64url');
    ctx.cookies.set(stateCookie, state, { signed: true, httpOnly: true, sameSite: 'lax', path: '/account', secure: ctx.secure, maxAge: 600_000, overwrite: true });
    const url = new URL(`${deps.issuer}/auth`);
    url.search = new URLSearchParams({
      client_id: accountClientId,
      redirect_uri: `${deps.issuer}/account/callback`,
      response_type: 'code',
      scope: 'openid',
      state,
      // The code is never redeemed (the page reads the session itself); PKCE is what public clients must send.
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      ...(fresh ? { prompt: 'login' } : {}),
      ...(mfa ? { acr_values: 'urn:idp:acr:2fa' } : {}),
    }).toString();
    ctx.redirect(url.href);
  }

  router.get('/login', async (ctx) => startSignIn(ctx, ctx.query.fresh === '1', ctx.query.mfa === '1'));
  router.get('/callback', async (ctx) => {
    const expected = ctx.cookies.get(stateCookie, { signed: true });
    const state = typeof ctx.query.state === 'string' ? ctx.query.state : '';
    ctx.cookies.set(stateCookie, null, { path: '/account' });
    if (!expected || !sameToken(expected, state)) return message(ctx, 'error.heading', 'error.sessionNotFound', 400);
    if (typeof ctx.query.error === 'string') return message(ctx, 'error.heading', 'error.loginFailed', 400);
    ctx.redirect('/account');
  });

  async function renderAccount(ctx: Context, who: SignedIn, notice?: string, problems: string[] = [], status = 200) {
    const account = await deps.accounts.findById(who.accountId);
    if (!account) return startSignIn(ctx);
    const l = lang(ctx);
    const rows = (await sessions.list(who.accountId)).map((s) => {
      const current = s.sid === who.sid ? ` <strong>(${escapeHtml(views.t(l, 'account.thisSession'))})</strong>` : '';
      const where = [s.ip, s.location ?? views.t(l, 'account.unknownLocation')].filter(Boolean).join(', ');
      const times = `${views.t(l, 'account.signedIn', { time: s.createdAt.toISOString() })}, ${views.t(l, 'account.lastSeen', { time: s.lastSeenAt.toISOString() })}`;
      const revoke = `<form method="post" action="/account/sessions/${encodeURIComponent(s.sid)}/revoke"><input type="hidden" name="csrf" value="${escapeHtml(who.csrf)}"><button type="submit" class="link">${escapeHtml(views.t(l, 'account.revoke'))}</button></form>`;
      return `<li data-sid="${escapeHtml(s.sid)}">${escapeHtml(s.device)}${current}<br><small>${escapeHtml(where)} · ${escapeHtml(times)}</small>${revoke}</li>`;
    });
    const extra = mfaPart ? await mfaPart(ctx, who) : '';
    const consents = await deps.consents.list(who.accountId);
    const apps = consents.map((c) => {
      const revoke = `<form method="post" action="/account/consents/${encodeURIComponent(c.clientId)}/revoke"><input type="hidden" name="csrf" value="${escapeHtml(who.csrf)}"><button type="submit" class="link">${escapeHtml(views.t(l, 'account.revokeAccess'))}</button></form>`;
      const what = [...c.scopes, ...Object.values(c.resources).flat()].join(', ');
      return `<li data-client="${escapeHtml(c.clientId)}">${escapeHtml(c.clientId)}<br><small>${escapeHtml(what)} · ${escapeHtml(views.t(l, 'account.consentUntil', { time: c.expiresAt.toISOString() }))}</small>${revoke}</li>`;
    });
    const links = (await deps.links?.list(who.accountId)) ?? [];
    render(ctx, 'account', 'account.title', {
      name: account.name ?? '', email: account.email, csrf: who.csrf, sessions: rows.join(''), errors: errors(ctx, problems), mfa: extra,
      applications: apps.join(''), hasApplications: apps.length > 0,
      links: links.map((link) => ({ linkId: link.id, connection: link.connection, linkedEmail: link.email ?? '', linkedAt: link.createdAt.toISOString().slice(0, 10) })), hasLinks: links.length > 0,
      notice: notice ? `<p class="notice" role="status">${escapeHtml(views.t(l, notice))}</p>` : '',
    }, status);
  }

  /** A signed-in form post with the page's CSRF token. */
  function accountPost(handler: (ctx: Context, who: SignedIn) => Promise<void>) {
    return async (ctx: Context) => {
      const who = await signedIn(ctx);
      if (!who) return message(ctx, 'error.heading', 'error.sessionNotFound', 401);
      if (!sameToken(who.csrf, formField(ctx, 'csrf', 256))) {
        await audit.record({ type: 'csrf.rejected', outcome: 'failure', subject: who.accountId, ip: ctx.ip, userAgent: ctx.get('user-agent'), details: { path: ctx.path } });
        return message(ctx, 'error.heading', 'error.csrf', 403);
      }
      await handler(ctx, who);
    };
  }

  const helpers = { views, lang, field: formField, accountPost, render, message, findAccount: (id: string) => deps.accounts.findById(id) };
  const mfaPart = deps.mfa ? mfaSection(helpers, deps.mfa) : undefined;
  if (deps.mfa) accountMfaRoutes(router, helpers, deps.mfa);

  router.get('/', async (ctx) => {
    const who = await signedIn(ctx);
    if (!who) return startSignIn(ctx);
    const notice = typeof ctx.query.done === 'string' && /^[a-zA-Z.]{1,40}$/.test(ctx.query.done) && ctx.query.done.startsWith('account.') ? ctx.query.done : undefined;
    await renderAccount(ctx, who, notice);
  });

  router.post('/sessions/revoke-all', formBody, accountPost(async (ctx, who) => {
    await sessions.revokeAll(who.accountId, 'signed_out_everywhere', who.accountId);
    // This browser's session ended too: its cookie now points nowhere.
    message(ctx, 'loggedOut.heading', 'loggedOut.message');
  }));

  router.post('/sessions/:sid/revoke', formBody, accountPost(async (ctx, who) => {
    const sid = String(ctx.params.sid).slice(0, 100);
    if (!(await sessions.revoke(who.accountId, sid, 'revoked', who.accountId))) return message(ctx, 'error.heading', 'error.sessionNotFound', 404);
    if (sid === who.sid) return message(ctx, 'loggedOut.heading', 'loggedOut.message');
    ctx.status = 303;
    ctx.redirect('/account?done=account.sessionRevoked');
  }));

  // Withdrawing consent: the client's grants (and tokens) go too, and it asks again next time.
  router.post('/consents/:clientId/revoke', formBody, accountPost(async (ctx, who) => {
    const clientId = String(ctx.params.clientId).slice(0, 128);
    const had = await deps.consents.revoke(who.accountId, clientId, who.accountId);
    const grants = await sessions.revokeClient(who.accountId, clientId);
    if (!had && !grants) return message(ctx, 'error.heading', 'error.sessionNotFound', 404);
    ctx.status = 303;
    ctx.redirect('/account?done=account.accessRevoked');
  }));

  // Unlinking an upstream provider: never the account's last way in.
  router.post('/links/:id/unlink', formBody, accountPost(async (ctx, who) => {
    const id = String(ctx.params.id).slice(0, 64);
    if (!deps.links) return message(ctx, 'error.heading', 'error.sessionNotFound', 404);
    const mine = (await deps.links.list(who.accountId)).some((link) => link.id === id);
    if (!mine) return message(ctx, 'error.heading', 'error.sessionNotFound', 404);
    if (!(await deps.links.otherWays(who.accountId, id))) return renderAccount(ctx, who, undefined, ['account.unlinkLast'], 409);
    await deps.links.unlink(who.accountId, id, { ip: ctx.ip, userAgent: ctx.get('user-agent') });
    ctx.status = 303;
    ctx.redirect('/account?done=account.unlinked');
  }));

  router.post('/password', formBody, accountPost(async (ctx, who) => {
    const password = formField(ctx, 'password');
    if (password !== formField(ctx, 'confirm')) return renderAccount(ctx, who, undefined, ['error.passwordMismatch'], 400);
    try {
      await selfService.changePassword(who.accountId, formField(ctx, 'current'), password, who.sid, actor(ctx, who.accountId));
    } catch (error) {
      const problems = passwordProblems(error) ?? (error instanceof IdpError && error.status < 500 ? ['error.currentPassword'] : undefined);
      if (!problems) throw error;
      return renderAccount(ctx, who, undefined, problems, 400);
    }
    ctx.status = 303;
    ctx.redirect('/account?done=account.passwordChanged');
  }));

  return router;
}
