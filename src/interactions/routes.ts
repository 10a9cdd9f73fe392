// The interaction screens: thin routes that read oidc-provider's interaction, hand each form post
// to the login flow engine as it came, and render, redirect, or finish the interaction. No route
// knows a sign-in method: the flow names the screen, the method fills it.
import Router from '@koa/router';
import type { RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Context } from 'koa';
import type { InteractionResults } from 'oidc-provider';
import type { AuditSink } from '../audit/types.ts';
import type { AccountService } from '../accounts/service.ts';
import { FlowBusyError, type FlowEngine, type RequestInfo } from '../flow/engine.ts';
import { acrOf, type Flow, type Notice } from '../flow/machine.ts';
import type { FormFields, MethodRegistry } from '../flow/methods/types.ts';
import { sameToken } from '../http/form-csrf.ts';
import { formBody, formFields } from '../http/forms.ts';
import type { MfaService } from '../mfa/service.ts';
import { acrStepUpReason } from '../mfa/policy.ts';
import { grantableClaims } from '../consent/claims.ts';
import type { ConsentService } from '../consent/service.ts';
import type Provider from 'oidc-provider';
import { backupCodeList, challengeMethods, enrolmentContent } from './mfa-views.ts';
import { escapeHtml, type Views } from '../http/views.ts';

export interface InteractionDeps {
  /** The current provider: it is rebuilt when the signing keys change. */
  provider: () => Provider;
  flows: FlowEngine;
  methods: MethodRegistry;
  views: Views;
  audit: AuditSink;
  accounts: AccountService;
  mfa: MfaService;
  /** Consents remembered per account and client. */
  consents: Pick<ConsentService, 'record'>;
  registrationEnabled: boolean;
  /** Claims that only their scope releases (see consent/claims.ts). */
  scopeBoundClaims: Map<string, string>;
}

const deviceCookie = 'idp.device';
/** `idp.up.<interaction uid>`: this browser was sent upstream for that sign-in. */
const upstreamCookie = 'idp.up.';
/** The form actions of the stages' screens; each sign-in method's screen adds its own (the flow decides which apply). */
const stageActions = ['identify', 'restart', 'mfa', 'mfa-enrol', 'backup-codes', 'change-password'];

type Interaction = Awaited<ReturnType<Provider['interactionDetails']>>;

/** The HTTP status of a screen, from what the step reports. */
function statusOf(flow: Flow): number {
  const kinds = new Set((flow.display?.notices ?? []).map((n) => n.kind));
  if (kinds.has('throttled')) return 429;
  if (kinds.has('rejected') && flow.stage !== 'failed') return 401;
  if (kinds.has('invalid') || flow.display?.problems?.length) return 400;
  return 200;
}

/** Unmet rules read as sentences: "Password must be …" or "The code …". */
const problemText = (p: string) => (p.startsWith('the ') ? `${p[0]!.toUpperCase()}${p.slice(1)}.` : `Password ${p}.`);

export function interactionRoutes(deps: InteractionDeps): Router {
  const { provider, flows, views, audit } = deps;
  const router = new Router({ prefix: '/interaction/:uid' });

  const lang = (ctx: Context, interaction?: Interaction) =>
    views.negotiate(interaction?.params.ui_locales as string | undefined, ctx.get('accept-language'));

  const requestInfo = (ctx: Context, interaction: Interaction): RequestInfo => ({
    ip: ctx.ip,
    userAgent: ctx.get('user-agent'),
    requestId: ctx.state.requestId as string,
    clientId: interaction.params.client_id as string,
    acrValues: typeof interaction.params.acr_values === 'string' ? interaction.params.acr_values.split(' ').filter(Boolean) : [],
    deviceToken: ctx.cookies.get(deviceCookie, { signed: true }),
    freshLogin: interaction.prompt.name === 'login' && interaction.prompt.reasons.some((r) => r === 'login_prompt' || r === 'max_age'),
  });

  const showMessage = (ctx: Context, status: number, key: string, interaction?: Interaction) => {
    const l = lang(ctx, interaction);
    ctx.status = status;
    ctx.type = 'html';
    ctx.body = views.message(views.t(l, 'error.heading'), views.t(l, key), l);
  };

  /** Another submission of this sign-in holds its lock: a page to retry from, never raw JSON. */
  function busy(ctx: Context, interaction: Interaction) {
    const l = lang(ctx, interaction);
    ctx.status = 429;
    ctx.type = 'html';
    ctx.set('retry-after', '2');
    ctx.set('cache-control', 'no-store');
    ctx.body = views.message(views.t(l, 'error.heading'), views.t(l, 'error.busy'), l, {}, [{ href: `/interaction/${interaction.uid}`, label: views.t(l, 'error.continue') }]);
  }

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

  /** The screen of the flow's stage: the same shape for every stage and every method. */
  async function renderStage(ctx: Context, interaction: Interaction, flow: Flow) {
    const l = lang(ctx, interaction);
    const notices = (flow.display?.notices ?? []).map((n: Notice) => views.t(l, n.key, n.params));
    const shown = [...(flow.display?.problems ?? []).map(problemText), ...notices];
    const common = { uid: interaction.uid, csrf: flow.csrf, errors: views.errorList(shown), email: flow.email ?? '' };
    const page = (template: string, titleKey: string, vars: Record<string, unknown>) => {
      ctx.status = statusOf(flow);
      const retryAfter = flow.display?.notices?.find((n) => n.kind === 'throttled')?.params?.seconds;
      if (retryAfter) ctx.set('retry-after', retryAfter);
      ctx.type = 'html';
      ctx.set('cache-control', 'no-store');
      ctx.body = views.page(template, views.t(l, titleKey), { ...common, ...vars }, l);
    };
    const request = requestInfo(ctx, interaction);
    switch (flow.stage) {
      case 'identify': {
        // Buttons of the methods that identify the account themselves (a passkey, upstream providers).
        const offers: string[] = [];
        for (const method of deps.methods.all()) {
          const offer = await method.offer?.(flow, request);
          if (offer) offers.push(views.fragment(offer.template, { ...common, ...offer.vars, method: method.id }, l));
        }
        return page('identify', 'identify.title', {
          clientName: await clientName(interaction), email: (interaction.params.login_hint as string | undefined) ?? '',
          registration: deps.registrationEnabled, offers: offers.join(''),
        });
      }
      case 'authenticate': {
        const method = deps.methods.get(flow.method);
        if (!method?.screen) return showMessage(ctx, 400, 'error.loginFailed', interaction);
        return page(method.screen.template, `${method.screen.template.replace(/-(\w)/g, (_, c: string) => c.toUpperCase())}.title`, { action: `/interaction/${interaction.uid}/${method.screen.path}`, ...(await method.view?.(flow)) });
      }
      case 'mfa': {
        const available = await deps.mfa.methods(flow.accountId!);
        const webauthnOptions = flow.mfaMethods?.includes('webauthn') && available.webauthn ? await deps.mfa.webauthn.authenticationOptions(interaction.uid, flow.accountId!) : undefined;
        return page('mfa', 'mfa.title', { methods: challengeMethods(views, l, flow, available, webauthnOptions, deps.mfa.rememberDays) });
      }
      case 'mfa_enrol':
        return page('mfa-enrol', 'enrol.title', { content: enrolmentContent(views, l, flow) });
      case 'backup_codes':
        return page('backup-codes', 'backupCodes.title', { codes: backupCodeList(views, l, flow.display?.backupCodes as string[] | undefined) });
      case 'change_password':
        return page('change-password', 'changePassword.title', {});
      default:
        showMessage(ctx, 400, 'error.loginFailed', interaction);
    }
  }

  async function renderConsent(ctx: Context, interaction: Interaction, flow: Flow) {
    const l = lang(ctx, interaction);
    const details = interaction.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
    const missing = [...(details.missingOIDCScope ?? []), ...Object.values(details.missingResourceScopes ?? {}).flat()];
    // Asked again (prompt=consent) for what was consented before: the user sees all it covers.
    const scopes = missing.length ? missing : String(interaction.params.scope ?? '').split(' ').filter(Boolean);
    // Claims asked for by name are shown too: the user consents to what is released.
    const namedClaims = grantableClaims(details.missingOIDCClaims ?? [], [...(details.missingOIDCScope ?? []), ...String(interaction.params.scope ?? '').split(' ')], deps.scopeBoundClaims);
    const items = [...new Set(scopes)].map((scope) => {
      const key = `scope.${scope}`;
      const text = views.t(l, key) === key ? views.t(l, 'scope.other', { scope }) : views.t(l, key);
      return `<li>${escapeHtml(text)}</li>`;
    });
    if (namedClaims.length) items.push(`<li>${escapeHtml(views.t(l, 'consent.claims', { claims: namedClaims.join(', ') }))}</li>`);
    ctx.type = 'html';
    ctx.set('cache-control', 'no-store');
    ctx.body = views.page('consent', views.t(l, 'consent.title'), { uid: interaction.uid, csrf: flow.csrf, clientName: await clientName(interaction), scopes: items.join('') }, l);
  }

  async function finish(ctx: Context, result: InteractionResults, merge = false) {
    const redirectTo = await provider().interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: merge });
    ctx.status = 303;
    ctx.redirect(redirectTo);
  }

  /** Runs a form post: the interaction must match, the CSRF token must match the flow's. */
  function formPost(handler: (ctx: Context, interaction: Interaction, flow: Flow, fields: FormFields) => Promise<void>) {
    return async (ctx: Context) => {
      const interaction = await interactionOf(ctx);
      if (!interaction) return;
      const flow = await flows.load(interaction.uid);
      const fields = formFields(ctx);
      if (!flow || !sameToken(flow.csrf, (fields.csrf ?? '').slice(0, 256))) {
        await audit.record({ type: 'csrf.rejected', outcome: 'failure', ...requestInfo(ctx, interaction), details: { path: ctx.path } });
        showMessage(ctx, 403, 'error.csrf', interaction);
        return;
      }
      try {
        await handler(ctx, interaction, flow, fields);
      } catch (error) {
        if (!(error instanceof FlowBusyError)) throw error;
        busy(ctx, interaction);
      }
    };
  }

  /** What follows a step: the next screen, the upstream, or the end of the login. */
  async function afterLoginStep(ctx: Context, interaction: Interaction, flow: Flow) {
    const deviceToken = flow.display?.deviceToken;
    if (typeof deviceToken === 'string') {
      ctx.cookies.set(deviceCookie, deviceToken, { signed: true, httpOnly: true, sameSite: 'lax', secure: ctx.secure, maxAge: deps.mfa.rememberDays * 86_400_000, overwrite: true });
    }
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
    if (flow.display?.redirect) {
      // Binds the upstream's answer to this browser (see FlowEngine.callback). SameSite=None on
      // https, so that an answer posted cross-site (SAML, form_post) still carries it; Lax on http.
      ctx.cookies.set(`${upstreamCookie}${interaction.uid}`, '1', {
        signed: true, httpOnly: true, path: '/interaction/callback/', maxAge: 3_600_000, overwrite: true,
        sameSite: ctx.secure ? 'none' : 'lax', secure: ctx.secure,
      });
      ctx.status = 303;
      ctx.redirect(flow.display.redirect);
      return;
    }
    await renderStage(ctx, interaction, flow);
  }

  router.get('/', async (ctx) => {
    const interaction = await interactionOf(ctx);
    if (!interaction) return;
    // Only a pure step-up keeps the first factor: prompt=login or max_age ask for the first factor again.
    const stepUp = interaction.prompt.name === 'login' && interaction.prompt.reasons.length === 1 && interaction.prompt.reasons[0] === acrStepUpReason && interaction.session?.accountId;
    // (prompt=login and max_age start at the address again: the session in this browser may not
    // be the user's own, and "not you?" must not be the only way out of someone else's.)
    const account = stepUp ? await deps.accounts.findById(interaction.session!.accountId) : null;
    let flow: Flow;
    try {
      flow = account
        ? await flows.beginStepUp(interaction.uid, { accountId: account.id, email: account.email, amr: (interaction.session?.amr as string[] | undefined) ?? [] }, requestInfo(ctx, interaction))
        : await flows.begin(interaction.uid);
    } catch (error) {
      if (!(error instanceof FlowBusyError)) throw error;
      return busy(ctx, interaction);
    }
    if (interaction.prompt.name === 'login') await afterLoginStep(ctx, interaction, flows.shown(flow));
    else if (interaction.prompt.name === 'consent') await renderConsent(ctx, interaction, flow);
    else showMessage(ctx, 400, 'error.loginFailed', interaction);
  });

  const loginActions = [...new Set([...stageActions, ...deps.methods.all().flatMap((m) => (m.screen ? [m.screen.path] : []))])];
  for (const action of loginActions) {
    router.post(`/${action}`, formBody, formPost(async (ctx, interaction, _flow, fields) => {
      if (interaction.prompt.name !== 'login') {
        showMessage(ctx, 400, 'error.sessionNotFound', interaction);
        return;
      }
      await afterLoginStep(ctx, interaction, await flows.submit(interaction.uid, action, fields, requestInfo(ctx, interaction)));
    }));
  }

  router.post('/consent', formBody, formPost(async (ctx, interaction) => {
    if (interaction.prompt.name !== 'consent' || !interaction.session?.accountId) {
      showMessage(ctx, 400, 'error.sessionNotFound', interaction);
      return;
    }
    const details = interaction.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
    const clientId = interaction.params.client_id as string;
    const grant = (interaction.grantId ? await provider().Grant.find(interaction.grantId) : undefined)
      ?? new (provider().Grant)({ accountId: interaction.session.accountId, clientId });
    if (details.missingOIDCScope?.length) grant.addOIDCScope(details.missingOIDCScope.join(' '));
    const scopes = [...(details.missingOIDCScope ?? []), ...String(interaction.params.scope ?? '').split(' ')];
    const claims = grantableClaims(details.missingOIDCClaims ?? [], scopes, deps.scopeBoundClaims);
    if (claims.length) grant.addOIDCClaims(claims);
    // Claims only their scope releases are refused outright (not asked again) when it is absent.
    const refused = (details.missingOIDCClaims ?? []).filter((claim) => !claims.includes(claim));
    if (refused.length) grant.rejectOIDCClaims(refused);
    for (const [indicator, resourceScopes] of Object.entries(details.missingResourceScopes ?? {})) grant.addResourceScope(indicator, resourceScopes.join(' '));
    const grantId = await grant.save();
    await deps.consents.record(interaction.session.accountId, clientId, { scopes: details.missingOIDCScope ?? [], claims, resources: details.missingResourceScopes ?? {} });
    await audit.record({ type: 'consent.granted', outcome: 'success', ...requestInfo(ctx, interaction), subject: interaction.session.accountId, details: { scopes: details.missingOIDCScope ?? [], claims, resources: Object.keys(details.missingResourceScopes ?? {}) } });
    await flows.discard(interaction.uid);
    // The login of this authorization request (an earlier interaction's result) stands: without
    // it, prompt=login or max_age would ask for the sign-in again after every consent.
    await finish(ctx, { consent: { grantId } }, true);
  }));

  router.post('/abort', formBody, formPost(async (ctx, interaction) => {
    await flows.submit(interaction.uid, 'abort', {}, requestInfo(ctx, interaction)).catch(() => undefined);
    await flows.discard(interaction.uid);
    if (interaction.prompt.name === 'consent') {
      await audit.record({ type: 'consent.denied', outcome: 'failure', ...requestInfo(ctx, interaction), subject: interaction.session?.accountId ?? null });
    }
    await finish(ctx, { error: 'access_denied', error_description: 'End-User aborted interaction' });
  }));

  return router;
}

/**
 * Upstream answers for redirect methods (OIDC, SAML): GET or a cross-site POST to
 * /interaction/callback/:method, which carries none of the browser's SameSite cookies. The flow is
 * found by the state it sent; the browser then continues at its interaction, where a top-level
 * GET brings the cookies back.
 */
export function callbackRoutes(deps: Pick<InteractionDeps, 'flows' | 'views' | 'audit'> & { refusals: RateLimiterAbstract }): Router {
  const router = new Router({ prefix: '/interaction/callback' });
  const handle = async (ctx: Context) => {
    const params: Record<string, string> = {};
    for (const source of [ctx.query, ctx.method === 'POST' ? (ctx.request.body as Record<string, unknown> | undefined) ?? {} : {}]) {
      for (const [name, value] of Object.entries(source)) if (typeof value === 'string') params[name] = value.slice(0, 16_384);
    }
    const method = String(ctx.params.method).slice(0, 64);
    const key = typeof ctx.params.key === 'string' ? ctx.params.key.slice(0, 64) : undefined;
    // The sign-ins this browser was sent upstream for: binding cookies with a valid signature.
    const started = [...(ctx.get('cookie').matchAll(/(?:^|;\s*)idp\.up\.([A-Za-z0-9_-]{1,128})=/g))].map((m) => m[1]!)
      .filter((uid) => ctx.cookies.get(`${upstreamCookie}${uid}`, { signed: true }) === '1').slice(0, 20);
    const request = { ip: ctx.ip, userAgent: ctx.get('user-agent'), requestId: ctx.state.requestId as string, callbackKey: key, startedFlows: started };
    const result = await deps.flows.callback(method, params, request);
    if ('refused' in result) {
      // Refusals are audited per origin up to a budget: anyone can send made-up answers, and the
      // audit log keeps every row forever.
      const withinBudget = await deps.refusals.consume(request.ip ?? '').then(() => true, () => false);
      const l = deps.views.negotiate(undefined, ctx.get('accept-language'));
      if (!withinBudget) {
        ctx.status = 429;
        ctx.type = 'html';
        ctx.set('retry-after', '600');
        ctx.body = deps.views.message(deps.views.t(l, 'error.heading'), deps.views.t(l, 'error.tooManyRequests'), l);
        return;
      }
      // A replayed, unknown or expired state, an answer for another method, or one that came
      // through another browser than the one sent upstream: nothing is signed in.
      const detail = result.refused === 'other_browser' ? 'the answer came through a browser that was not sent upstream for this sign-in'
        : params.error ? `upstream error ${params.error.slice(0, 64)} for no pending sign-in` : 'no pending sign-in has this state (replayed, expired or forged)';
      await deps.audit.record({
        type: 'federation.refused', outcome: 'failure', ip: request.ip, userAgent: request.userAgent, requestId: request.requestId,
        details: { connection: key ?? method, reason: result.refused, detail },
      });
      ctx.status = 400;
      ctx.type = 'html';
      ctx.set('cache-control', 'no-store');
      ctx.body = deps.views.message(deps.views.t(l, 'error.heading'), deps.views.t(l, 'error.upstreamStateUnknown'), l, {}, [{ href: '/account', label: deps.views.t(l, 'error.toAccount') }]);
      return;
    }
    ctx.cookies.set(`${upstreamCookie}${result.uid}`, null, { path: '/interaction/callback/' });
    ctx.status = 303;
    ctx.redirect(`/interaction/${result.uid}`);
  };
  router.get('/:method', handle);
  router.post('/:method', formBody, handle);
  router.get('/:method/:key', handle);
  router.post('/:method/:key', formBody, handle);
  return router;
}
