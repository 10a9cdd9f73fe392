// The interaction screens: thin routes that read oidc-provider's interaction, hand the user's
// input to the login flow engine, and render, redirect, or finish the interaction.
import { bodyParser } from '@koa/bodyparser';
import Router from '@koa/router';
import type { Context } from 'koa';
import type { InteractionResults } from 'oidc-provider';
import type { AuditSink } from '../audit/types.ts';
import { acrOf, type Flow } from '../flow/machine.ts';
import type { FlowEngine, RequestInfo } from '../flow/engine.ts';
import type { StageInput } from '../flow/stages.ts';
import type { SignInThrottle } from '../accounts/throttle.ts';
import { sameToken } from '../http/form-csrf.ts';
import type { Provider } from '../provider/provider.ts';
import { escapeHtml, type Views } from './views.ts';

export interface InteractionDeps {
  /** The current provider: it is rebuilt when the signing keys change. */
  provider: () => Provider;
  flows: FlowEngine;
  views: Views;
  audit: AuditSink;
  throttle: SignInThrottle;
  registrationEnabled: boolean;
}

type Interaction = Awaited<ReturnType<Provider['interactionDetails']>>;
const emailShape = /^[^\s@\p{Cc}]{1,64}@[^\s@\p{Cc}]{1,253}$/u;

function field(ctx: Context, name: string, max = 4096): string {
  const value = (ctx.request.body as Record<string, unknown> | undefined)?.[name];
  return typeof value === 'string' ? value.slice(0, max) : '';
}

export function interactionRoutes(deps: InteractionDeps): Router {
  const { provider, flows, views, audit, throttle } = deps;
  const router = new Router({ prefix: '/interaction/:uid' });
  const forms = bodyParser({ enableTypes: ['form'], formLimit: '16kb', encoding: 'utf-8' });

  const lang = (ctx: Context, interaction?: Interaction) =>
    views.negotiate(interaction?.params.ui_locales as string | undefined, ctx.get('accept-language'));

  const requestInfo = (ctx: Context, interaction: Interaction): RequestInfo => ({
    ip: ctx.ip,
    userAgent: ctx.get('user-agent'),
    requestId: ctx.state.requestId as string,
    clientId: interaction.params.client_id as string,
  });

  const showMessage = (ctx: Context, status: number, key: string, interaction?: Interaction) => {
    const l = lang(ctx, interaction);
    ctx.status = status;
    ctx.type = 'html';
    ctx.body = views.message(views.t(l, 'error.heading'), views.t(l, key), l);
  };

  /** The interaction this browser holds, if it is the one in the URL. */
  async function interactionOf(ctx: Context): Promise<Interaction | undefined> {
    try {
      const interaction = await provider().interactionDetails(ctx.req, ctx.res);
      if (interaction.uid === ctx.params.uid) return interaction;
    } catch (error) {
      if ((error as { name?: string }).name !== 'SessionNotFound') throw error;
    }
    showMessage(ctx, 400, 'error.sessionNotFound');
    return undefined;
  }

  async function clientName(interaction: Interaction): Promise<string> {
    const client = await provider().Client.find(interaction.params.client_id as string);
    return (client?.clientName as string | undefined) ?? (interaction.params.client_id as string);
  }

  async function renderStage(ctx: Context, interaction: Interaction, flow: Flow, errors: string[] = []) {
    const l = lang(ctx, interaction);
    const shown = [...errors, ...(flow.problems ?? []).map((p) => (p.startsWith('the ') ? `${p[0]!.toUpperCase()}${p.slice(1)}.` : `Password ${p}.`)), ...(flow.notice === 'verify_email' ? [views.t(l, 'error.verifyEmail')] : [])];
    const common = { uid: interaction.uid, csrf: flow.csrf, errors: views.errorList(shown) };
    ctx.type = 'html';
    ctx.set('cache-control', 'no-store');
    switch (flow.stage) {
      case 'identify':
        ctx.body = views.page('identify', views.t(l, 'identify.title'), {
          ...common, clientName: await clientName(interaction), email: interaction.params.login_hint ?? '',
          registerLink: deps.registrationEnabled ? `<p class="links"><a href="/account/register">${escapeHtml(views.t(l, 'identify.register'))}</a></p>` : '',
        }, l);
        return;
      case 'change_password':
        ctx.body = views.page('change-password', views.t(l, 'changePassword.title'), { ...common, email: flow.email }, l);
        return;
      case 'password':
        ctx.body = views.page('password', views.t(l, 'password.title'), { ...common, email: flow.email }, l);
        return;
      case 'mfa':
        showMessage(ctx, 200, 'error.mfaUnavailable', interaction);
        return;
      default:
        showMessage(ctx, 400, 'error.loginFailed', interaction);
    }
  }

  async function renderConsent(ctx: Context, interaction: Interaction, flow: Flow) {
    const l = lang(ctx, interaction);
    const details = interaction.prompt.details as { missingOIDCScope?: string[]; missingResourceScopes?: Record<string, string[]> };
    const scopes = [...(details.missingOIDCScope ?? []), ...Object.values(details.missingResourceScopes ?? {}).flat()];
    const items = [...new Set(scopes)].map((scope) => {
      const key = `scope.${scope}`;
      const text = views.t(l, key) === key ? views.t(l, 'scope.other', { scope }) : views.t(l, key);
      return `<li>${escapeHtml(text)}</li>`;
    });
    ctx.type = 'html';
    ctx.set('cache-control', 'no-store');
    ctx.body = views.page('consent', views.t(l, 'consent.title'), { uid: interaction.uid, csrf: flow.csrf, clientName: await clientName(interaction), scopes: items.join('') }, l);
  }

  async function finish(ctx: Context, result: InteractionResults) {
    const redirectTo = await provider().interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(redirectTo);
  }

  /** Runs a form post: the interaction must match, the CSRF token must match the flow's. */
  function formPost(handler: (ctx: Context, interaction: Interaction, flow: Flow) => Promise<void>) {
    return async (ctx: Context) => {
      const interaction = await interactionOf(ctx);
      if (!interaction) return;
      const flow = await flows.load(interaction.uid);
      if (!flow || !sameToken(flow.csrf, field(ctx, 'csrf', 256))) {
        await audit.record({ type: 'csrf.rejected', outcome: 'failure', ...requestInfo(ctx, interaction), details: { path: ctx.path } });
        showMessage(ctx, 403, 'error.csrf', interaction);
        return;
      }
      await handler(ctx, interaction, flow);
    };
  }

  async function afterLoginStep(ctx: Context, interaction: Interaction, flow: Flow, errors: string[]) {
    if (flow.stage === 'done' && flow.accountId) {
      await flows.discard(interaction.uid);
      await finish(ctx, { login: { accountId: flow.accountId, acr: acrOf(flow), amr: flow.amr, remember: true } });
      return;
    }
    if (flow.stage === 'failed') {
      await flows.discard(interaction.uid);
      const description = flow.failure === 'too_many_attempts' ? 'too many failed sign-in attempts' : 'sign-in failed';
      await finish(ctx, { error: 'access_denied', error_description: description });
      return;
    }
    await renderStage(ctx, interaction, flow, errors);
  }

  const loginStep = (toInput: (ctx: Context) => StageInput | string) =>
    formPost(async (ctx, interaction, flow) => {
      if (interaction.prompt.name !== 'login') {
        showMessage(ctx, 400, 'error.sessionNotFound', interaction);
        return;
      }
      const input = toInput(ctx);
      if (typeof input === 'string') {
        ctx.status = 400;
        await renderStage(ctx, interaction, flow, [views.t(lang(ctx, interaction), input)]);
        return;
      }
      const isPassword = input.stage === 'password' && 'password' in input && flow.email !== undefined;
      if (isPassword) {
        const verdict = await throttle.check(ctx.ip, flow.email!);
        if (!verdict.allowed) {
          await audit.record({ type: 'login.throttled', outcome: 'failure', ...requestInfo(ctx, interaction), details: { interaction: interaction.uid, email: flow.email, retryAfterSeconds: verdict.retryAfterSeconds } });
          ctx.status = 429;
          ctx.set('retry-after', String(verdict.retryAfterSeconds));
          const l = lang(ctx, interaction);
          await renderStage(ctx, interaction, flow, [views.t(l, 'error.throttled', { minutes: String(Math.max(1, Math.ceil(verdict.retryAfterSeconds / 60))) })]);
          return;
        }
      }
      const before = flow.failedAttempts;
      const next = await flows.submit(interaction.uid, input, requestInfo(ctx, interaction));
      const rejected = next.failedAttempts > before;
      if (isPassword && rejected) await throttle.failed(ctx.ip, flow.email!);
      if (isPassword && next.stage === 'done') await throttle.succeeded(ctx.ip, flow.email!);
      if (rejected && next.stage === 'password') ctx.status = 401;
      await afterLoginStep(ctx, interaction, next, rejected ? [views.t(lang(ctx, interaction), 'error.invalidCredentials')] : []);
    });

  router.get('/', async (ctx) => {
    const interaction = await interactionOf(ctx);
    if (!interaction) return;
    const flow = await flows.begin(interaction.uid);
    if (interaction.prompt.name === 'login') await renderStage(ctx, interaction, flow);
    else if (interaction.prompt.name === 'consent') await renderConsent(ctx, interaction, flow);
    else showMessage(ctx, 400, 'error.loginFailed', interaction);
  });

  router.post('/identify', forms, loginStep((ctx) => {
    const email = field(ctx, 'email', 320).trim();
    return emailShape.test(email) ? { stage: 'identify', email } : 'error.invalidEmail';
  }));
  router.post('/password', forms, loginStep((ctx) => ({ stage: 'password', password: field(ctx, 'password') })));
  router.post('/restart', forms, loginStep(() => ({ stage: 'password', restart: true })));
  router.post('/change-password', forms, loginStep((ctx) => ({ stage: 'change_password', password: field(ctx, 'password'), confirm: field(ctx, 'confirm') })));

  router.post('/consent', forms, formPost(async (ctx, interaction) => {
    if (interaction.prompt.name !== 'consent' || !interaction.session?.accountId) {
      showMessage(ctx, 400, 'error.sessionNotFound', interaction);
      return;
    }
    const details = interaction.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
    const clientId = interaction.params.client_id as string;
    const grant = (interaction.grantId ? await provider().Grant.find(interaction.grantId) : undefined)
      ?? new (provider().Grant)({ accountId: interaction.session.accountId, clientId });
    if (details.missingOIDCScope?.length) grant.addOIDCScope(details.missingOIDCScope.join(' '));
    if (details.missingOIDCClaims?.length) grant.addOIDCClaims(details.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
    const grantId = await grant.save();
    await audit.record({ type: 'consent.granted', outcome: 'success', ...requestInfo(ctx, interaction), subject: interaction.session.accountId, details: { scopes: details.missingOIDCScope ?? [], resources: Object.keys(details.missingResourceScopes ?? {}) } });
    await flows.discard(interaction.uid);
    await finish(ctx, { consent: { grantId } });
  }));

  router.post('/abort', forms, formPost(async (ctx, interaction) => {
    await flows.submit(interaction.uid, { stage: 'abort' }, requestInfo(ctx, interaction)).catch(() => undefined);
    await flows.discard(interaction.uid);
    if (interaction.prompt.name === 'consent') {
      await audit.record({ type: 'consent.denied', outcome: 'failure', ...requestInfo(ctx, interaction), subject: interaction.session?.accountId ?? null });
    }
    await finish(ctx, { error: 'access_denied', error_description: 'End-User aborted interaction' });
  }));

  return router;
}
