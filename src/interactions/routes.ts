// The interaction screens: thin routes that read oidc-provider's interaction, hand the user's
// input to the login flow engine, and render, redirect, or finish the interaction.
import Router from '@koa/router';
import { formBody, formField } from '../http/forms.ts';
import type { Context } from 'koa';
import type { InteractionResults } from 'oidc-provider';
import type { AuditSink } from '../audit/types.ts';
import { acrOf, type Flow } from '../flow/machine.ts';
import { FlowBusyError, type FlowEngine, type RequestInfo } from '../flow/engine.ts';
import type { StageInput } from '../flow/stages.ts';
import type { SignInThrottle } from '../accounts/throttle.ts';
import type { AccountService } from '../accounts/service.ts';
import type { MfaService } from '../mfa/service.ts';
import { acrStepUpReason } from '../mfa/policy.ts';
import type { MfaMethod } from '../flow/machine.ts';
import { backupCodeList, challengeMethods, enrolmentContent, passkeyForm } from './mfa-views.ts';
import { sameToken } from '../http/form-csrf.ts';
import type { Provider } from '../provider/provider.ts';
import { escapeHtml, type Views } from './views.ts';
import { grantableClaims } from '../provider/configuration.ts';

export interface InteractionDeps {
  /** The current provider: it is rebuilt when the signing keys change. */
  provider: () => Provider;
  flows: FlowEngine;
  views: Views;
  audit: AuditSink;
  throttle: SignInThrottle;
  accounts: AccountService;
  mfa: MfaService;
  registrationEnabled: boolean;
  /** Claims that only their scope releases (see provider/configuration.ts). */
  scopeBoundClaims: Map<string, string>;
  passkeySignIn: boolean;
  emailCodeSignIn: boolean;
}

const deviceCookie = 'idp.device';
const mfaMethods = new Set<string>(['totp', 'webauthn', 'email', 'sms', 'backup_code']);

type Interaction = Awaited<ReturnType<Provider['interactionDetails']>>;
const emailShape = /^[^\s@\p{Cc}]{1,64}@[^\s@\p{Cc}]{1,253}$/u;

export function interactionRoutes(deps: InteractionDeps): Router {
  const { provider, flows, views, audit, throttle } = deps;
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
    const notices: Record<string, string> = { verify_email: 'error.verifyEmail', code_sent: 'mfa.codeSent', code_rate_limited: 'mfa.codeRateLimited', mfa_locked: 'error.mfaLocked' };
    const noticeKey = flow.notice ? notices[flow.notice] : undefined;
    const shown = [...errors, ...(flow.problems ?? []).map((p) => (p.startsWith('the ') ? `${p[0]!.toUpperCase()}${p.slice(1)}.` : `Password ${p}.`)), ...(noticeKey ? [views.t(l, noticeKey)] : []), ...(flow.display?.passkeyFailed ? [views.t(l, 'error.passkeyFailed')] : [])];
    const common = { uid: interaction.uid, csrf: flow.csrf, errors: views.errorList(shown) };
    ctx.type = 'html';
    ctx.set('cache-control', 'no-store');
    switch (flow.stage) {
      case 'identify':
        ctx.body = views.page('identify', views.t(l, 'identify.title'), {
          ...common, clientName: await clientName(interaction), email: interaction.params.login_hint ?? '',
          registerLink: deps.registrationEnabled ? `<p class="links"><a href="/account/register">${escapeHtml(views.t(l, 'identify.register'))}</a></p>` : '',
          passkey: deps.passkeySignIn
            ? `<p class="links">${escapeHtml(views.t(l, 'identify.or'))}</p>${passkeyForm(views, l, `/interaction/${interaction.uid}/identify`, flow.csrf, 'authenticate', await deps.mfa.webauthn.authenticationOptions(interaction.uid), views.t(l, 'identify.passkey'))}<script type="module" src="/static/passkey.js"></script>`
            : '',
        }, l);
        return;
      case 'signin_code':
        ctx.body = views.page('signin-code', views.t(l, 'signinCode.title'), { ...common, email: flow.email }, l);
        return;
      case 'mfa': {
        const available = await deps.mfa.methods(flow.accountId!);
        const webauthnOptions = flow.mfaMethods?.includes('webauthn') && available.webauthn ? await deps.mfa.webauthn.authenticationOptions(interaction.uid, flow.accountId!) : undefined;
        ctx.body = views.page('mfa', views.t(l, 'mfa.title'), { ...common, email: flow.email, methods: challengeMethods(views, l, flow, available, webauthnOptions, deps.mfa.rememberDays) }, l);
        return;
      }
      case 'mfa_enrol':
        ctx.body = views.page('mfa-enrol', views.t(l, 'enrol.title'), { ...common, content: enrolmentContent(views, l, flow) }, l);
        return;
      case 'backup_codes':
        ctx.body = views.page('backup-codes', views.t(l, 'backupCodes.title'), { ...common, codes: backupCodeList(views, l, flow.display?.backupCodes as string[] | undefined) }, l);
        return;
      case 'change_password':
        ctx.body = views.page('change-password', views.t(l, 'changePassword.title'), { ...common, email: flow.email }, l);
        return;
      case 'password':
        ctx.body = views.page('password', views.t(l, 'password.title'), {
          ...common, email: flow.email,
          emailCode: deps.emailCodeSignIn
            ? `<form method="post" action="/interaction/${escapeHtml(interaction.uid)}/password"><input type="hidden" name="csrf" value="${escapeHtml(flow.csrf)}"><button type="submit" name="send_code" value="1" class="link">${escapeHtml(views.t(l, 'password.emailCode'))}</button></form>`
            : '',
        }, l);
        return;
      default:
        showMessage(ctx, 400, 'error.loginFailed', interaction);
    }
  }

  async function renderConsent(ctx: Context, interaction: Interaction, flow: Flow) {
    const l = lang(ctx, interaction);
    const details = interaction.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
    const scopes = [...(details.missingOIDCScope ?? []), ...Object.values(details.missingResourceScopes ?? {}).flat()];
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
      if (!flow || !sameToken(flow.csrf, formField(ctx, 'csrf', 256))) {
        await audit.record({ type: 'csrf.rejected', outcome: 'failure', ...requestInfo(ctx, interaction), details: { path: ctx.path } });
        showMessage(ctx, 403, 'error.csrf', interaction);
        return;
      }
      try {
        await handler(ctx, interaction, flow);
      } catch (error) {
        if (!(error instanceof FlowBusyError)) throw error;
        busy(ctx, interaction);
      }
    };
  }

  /** Another submission of this sign-in holds its lock: a page to retry from, never raw JSON. */
  function busy(ctx: Context, interaction: Interaction) {
    const l = lang(ctx, interaction);
    ctx.status = 429;
    ctx.type = 'html';
    ctx.set('retry-after', '2');
    ctx.set('cache-control', 'no-store');
    ctx.body = views.message(views.t(l, 'error.heading'), views.t(l, 'error.busy'), l, {}, [{ href: `/interaction/${interaction.uid}`, label: views.t(l, 'error.continue') }]);
  }

  async function afterLoginStep(ctx: Context, interaction: Interaction, flow: Flow, errors: string[]) {
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
      if (input.stage === 'mfa' && !('send' in input)) {
        // Wrong second-factor codes are throttled per network origin like wrong passwords.
        const verdict = await throttle.check(ctx.ip, flow.email ?? '');
        if (!verdict.allowed) {
          ctx.status = 429;
          ctx.set('retry-after', String(verdict.retryAfterSeconds));
          await renderStage(ctx, interaction, flow, [views.t(lang(ctx, interaction), 'error.throttled', { minutes: String(Math.max(1, Math.ceil(verdict.retryAfterSeconds / 60))) })]);
          return;
        }
      }
      const next = await flows.submit(interaction.uid, input, requestInfo(ctx, interaction));
      const rejected = next.failedAttempts > before;
      if ((isPassword || input.stage === 'mfa') && rejected) await throttle.failed(ctx.ip, flow.email ?? '');
      if (isPassword && next.stage === 'done') await throttle.succeeded(ctx.ip, flow.email!);
      if (rejected && next.stage !== 'failed') ctx.status = 401;
      else if (next.problems?.length) ctx.status = 400;
      const rejectionKey = next.stage === 'password' ? 'error.invalidCredentials' : next.stage === 'signin_code' ? 'error.codeInvalid' : 'error.mfaFailed';
      await afterLoginStep(ctx, interaction, next, rejected ? [views.t(lang(ctx, interaction), rejectionKey)] : []);
    });

  router.get('/', async (ctx) => {
    const interaction = await interactionOf(ctx);
    if (!interaction) return;
    // Only a pure step-up keeps the first factor: prompt=login or max_age ask for the password again.
    const stepUp = interaction.prompt.name === 'login' && interaction.prompt.reasons.length === 1 && interaction.prompt.reasons[0] === acrStepUpReason && interaction.session?.accountId;
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
    if (interaction.prompt.name === 'login' && (flow.stage === 'done' || flow.stage === 'failed')) await afterLoginStep(ctx, interaction, flow, []);
    else if (interaction.prompt.name === 'login') await renderStage(ctx, interaction, flow);
    else if (interaction.prompt.name === 'consent') await renderConsent(ctx, interaction, flow);
    else showMessage(ctx, 400, 'error.loginFailed', interaction);
  });

  router.post('/identify', formBody, loginStep((ctx) => {
    const passkey = formField(ctx, 'response', 16_384);
    if (passkey) return { stage: 'identify', passkey };
    const email = formField(ctx, 'email', 320).trim();
    return emailShape.test(email) ? { stage: 'identify', email } : 'error.invalidEmail';
  }));
  router.post('/password', formBody, loginStep((ctx) => (formField(ctx, 'send_code') ? { stage: 'password', sendCode: true } : { stage: 'password', password: formField(ctx, 'password') })));
  router.post('/signin-code', formBody, loginStep((ctx) => {
    if (formField(ctx, 'restart')) return { stage: 'signin_code', restart: true };
    if (formField(ctx, 'resend')) return { stage: 'signin_code', resend: true };
    return { stage: 'signin_code', code: formField(ctx, 'code', 32) };
  }));
  const methodOf = (ctx: Context): MfaMethod | undefined => {
    const method = formField(ctx, 'method', 20);
    return mfaMethods.has(method) ? (method as MfaMethod) : undefined;
  };
  router.post('/mfa', formBody, loginStep((ctx) => {
    const method = methodOf(ctx);
    if (!method) return 'error.mfaFailed';
    if (formField(ctx, 'send')) return { stage: 'mfa', method, send: true };
    return { stage: 'mfa', method, code: formField(ctx, 'code', 64), response: formField(ctx, 'response', 16_384), remember: formField(ctx, 'remember') === '1' };
  }));
  router.post('/mfa-enrol', formBody, loginStep((ctx) => {
    const method = methodOf(ctx);
    if (!method) return 'error.mfaFailed';
    if (formField(ctx, 'start')) return { stage: 'mfa_enrol', method, start: true, destination: formField(ctx, 'destination', 32) };
    return { stage: 'mfa_enrol', method, code: formField(ctx, 'code', 64), response: formField(ctx, 'response', 16_384), name: formField(ctx, 'name', 64) };
  }));
  router.post('/backup-codes', formBody, loginStep(() => ({ stage: 'backup_codes', acknowledged: true })));
  router.post('/restart', formBody, loginStep(() => ({ stage: 'password', restart: true })));
  router.post('/change-password', formBody, loginStep((ctx) => ({ stage: 'change_password', password: formField(ctx, 'password'), confirm: formField(ctx, 'confirm') })));

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
    for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
    const grantId = await grant.save();
    await audit.record({ type: 'consent.granted', outcome: 'success', ...requestInfo(ctx, interaction), subject: interaction.session.accountId, details: { scopes: details.missingOIDCScope ?? [], claims, resources: Object.keys(details.missingResourceScopes ?? {}) } });
    await flows.discard(interaction.uid);
    await finish(ctx, { consent: { grantId } });
  }));

  router.post('/abort', formBody, formPost(async (ctx, interaction) => {
    await flows.submit(interaction.uid, { stage: 'abort' }, requestInfo(ctx, interaction)).catch(() => undefined);
    await flows.discard(interaction.uid);
    if (interaction.prompt.name === 'consent') {
      await audit.record({ type: 'consent.denied', outcome: 'failure', ...requestInfo(ctx, interaction), subject: interaction.session?.accountId ?? null });
    }
    await finish(ctx, { error: 'access_denied', error_description: 'End-User aborted interaction' });
  }));

  return router;
}
