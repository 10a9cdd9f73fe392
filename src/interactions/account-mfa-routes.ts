// The account page's second-factor section: the user's methods with their removal, backup codes,
// and adding a method (authenticator app, passkey, email or SMS codes). Changing these needs a
// recent sign-in: otherwise the user is sent to sign in again first (a step-up, like any RP's).
import type Router from '@koa/router';
import { formBody } from '../http/forms.ts';
import type { Context } from 'koa';
import { escapeHtml, type Views } from '../http/views.ts';
import { backupCodeList, codeForm, hidden, passkeyForm, totpSetup } from './mfa-views.ts';
import type { MfaMethod } from '../flow/machine.ts';
import type { MfaService } from '../mfa/service.ts';
import type { AccountRecord } from '../store/accounts.ts';
import type { ExpiringValues } from '../store/expiring-values.ts';
import type { SignedIn } from './account-routes.ts';

export interface AccountPageHelpers {
  views: Views;
  lang(ctx: Context): string;
  field(ctx: Context, name: string, max?: number): string;
  accountPost(handler: (ctx: Context, who: SignedIn) => Promise<void>): (ctx: Context) => Promise<void>;
  render(ctx: Context, template: string, titleKey: string, vars: Record<string, unknown>, status?: number): void;
  message(ctx: Context, headingKey: string, messageKey: string, status?: number): void;
  findAccount(id: string): Promise<AccountRecord | null>;
}

export interface AccountMfaDeps {
  mfa: MfaService;
  /** Whether policy makes MFA compulsory for the account (the last method cannot be removed). */
  requiredFor(account: AccountRecord): boolean;
  /** Seconds a sign-in counts as recent for changes to the second factors. */
  recentSeconds: number;
  /** Shared short-lived store: which factors a session added itself. */
  store: ExpiringValues;
}

const csrfField = (csrf: string) => `<input type="hidden" name="csrf" value="${escapeHtml(csrf)}">`;

export function mfaSection(h: AccountPageHelpers, deps: AccountMfaDeps) {
  return async (ctx: Context, who: SignedIn): Promise<string> => {
    const l = h.lang(ctx);
    const t = (key: string, params?: Record<string, string>) => escapeHtml(h.views.t(l, key, params));
    const factors = await deps.mfa.list(who.accountId);
    const methods = await deps.mfa.methods(who.accountId);
    const rows = factors.map((f) => `<li data-factor="${escapeHtml(f.id)}" data-type="${escapeHtml(f.type)}">${escapeHtml(f.name)}${f.detail ? ` (${escapeHtml(f.detail)})` : ''}`
      + `<form method="post" action="/account/mfa/${encodeURIComponent(f.id)}/remove">${csrfField(who.csrf)}<button type="submit" class="link">${t('account.mfaRemove')}</button></form></li>`);
    const add = ['totp', 'webauthn', 'email', ...(deps.mfa.smsAvailable ? ['sms'] : [])].map((m) => {
      const phone = m === 'sms' ? `<input name="destination" type="tel" autocomplete="tel" maxlength="20" required aria-label="${t('field.phone')}" placeholder="+41791234567">` : '';
      return `<form method="post" action="/account/mfa/add">${csrfField(who.csrf)}<input type="hidden" name="method" value="${m}">${phone}<button type="submit" class="secondary">${t(`enrol.${m}`)}</button></form>`;
    });
    const backup = factors.length
      ? `<p>${t('account.backupRemaining', { count: String(methods.backupCodes) })}</p><form method="post" action="/account/mfa/backup-codes">${csrfField(who.csrf)}<button type="submit" class="secondary">${t('account.backupRegenerate')}</button></form>`
      : '';
    return `<h2>${t('account.mfa')}</h2>${rows.length ? `<ul class="sessions">${rows.join('')}</ul>` : `<p>${t('account.mfaNone')}</p>`}${backup}<h3>${t('account.mfaAdd')}</h3>${add.join('')}`;
  };
}

export function accountMfaRoutes(router: Router, h: AccountPageHelpers, deps: AccountMfaDeps): void {
  const { mfa } = deps;
  const key = (who: SignedIn) => `account:${who.sid}`;
  const addedKey = (who: SignedIn) => `mfa-added:${who.sid}`;

  /** Changes to second factors need a recent sign-in; otherwise sign in again (with the current second factor). */
  const recent = (handler: (ctx: Context, who: SignedIn) => Promise<void>) =>
    h.accountPost(async (ctx, who) => {
      // A session changes second factors only after a sign-in that used one (a remembered device
      // does not count) — unless every factor of the account was added by this very session.
      const addedHere = (await deps.store.get<string[]>(addedKey(who))) ?? [];
      const needsMfa = (await mfa.list(who.accountId)).some((f) => !addedHere.includes(f.id));
      if (Date.now() / 1000 - who.loginTs > deps.recentSeconds || (needsMfa && !who.amr.includes('mfa'))) {
        ctx.status = 303;
        ctx.redirect(`/account/login?fresh=1${needsMfa ? '&mfa=1' : ''}`);
        return;
      }
      await handler(ctx, who);
    });

  const enrolPage = (ctx: Context, who: SignedIn, content: string, errors: string[] = [], status = 200) =>
    h.render(ctx, 'account-mfa', 'enrol.title', { content, csrf: who.csrf, errors: h.views.errorList(errors) }, status);

  /** The confirm form of an enrolment; a TOTP one carries its pending factor. */
  const confirmForm = (ctx: Context, who: SignedIn, method: MfaMethod, factorId = h.field(ctx, 'factor', 64)) =>
    codeForm(h.views, h.lang(ctx), '/account/mfa/confirm', who.csrf, method, h.views.t(h.lang(ctx), 'field.code'), hidden('factor', factorId));

  router.post('/mfa/add', formBody, recent(async (ctx, who) => {
    const account = await h.findAccount(who.accountId);
    if (!account) return h.message(ctx, 'error.heading', 'error.sessionNotFound', 401);
    const l = h.lang(ctx);
    const method = h.field(ctx, 'method', 20);
    if (method === 'totp') {
      const enrolment = await mfa.startTotp(account.id, account.email);
      return enrolPage(ctx, who, `${totpSetup(h.views, l, enrolment)}${confirmForm(ctx, who, 'totp', enrolment.factorId)}`);
    }
    if (method === 'webauthn') {
      const options = await mfa.webauthn.registrationOptions(key(who), { id: account.id, email: account.email, name: account.name });
      const name = `<label for="passkey-name">${escapeHtml(h.views.t(l, 'field.passkeyName'))}</label><input id="passkey-name" name="name" type="text" maxlength="64" value="Passkey"><input type="hidden" name="method" value="webauthn">`;
      return enrolPage(ctx, who, passkeyForm(h.views, l, '/account/mfa/confirm', who.csrf, 'register', options, h.views.t(l, 'enrol.webauthn'), name));
    }
    if (method === 'email' || method === 'sms') {
      const destination = method === 'email' ? account.email : h.field(ctx, 'destination', 32).replace(/[\s()-]/g, '');
      try {
        const sent = await mfa.startCodeEnrolment(key(who), account.id, method, destination);
        if (sent === 'rate_limited') return enrolPage(ctx, who, '', [h.views.t(l, 'mfa.codeRateLimited')], 429);
        if (sent === 'unavailable') return enrolPage(ctx, who, '', [h.views.t(l, 'error.methodUnavailable')], 400);
      } catch (error) {
        if ((error as { status?: number }).status !== 400) throw error;
        return enrolPage(ctx, who, '', [(error as Error).message], 400);
      }
      return enrolPage(ctx, who, `<p>${escapeHtml(h.views.t(l, 'mfa.codeSent'))}</p>${confirmForm(ctx, who, method)}`);
    }
    h.message(ctx, 'error.heading', 'error.mfaFailed', 400);
  }));

  router.post('/mfa/confirm', formBody, recent(async (ctx, who) => {
    const method = h.field(ctx, 'method', 20);
    const l = h.lang(ctx);
    const before = new Set((await mfa.list(who.accountId)).map((f) => f.id));
    let ok = false;
    let problem = h.views.t(l, 'error.codeInvalid');
    if (method === 'totp') ok = await mfa.confirmTotp(who.accountId, h.field(ctx, 'factor', 64), h.field(ctx, 'code', 16));
    else if (method === 'email' || method === 'sms') {
      const check = await mfa.confirmCodeEnrolment(key(who), who.accountId, method, h.field(ctx, 'code', 16));
      ok = check === 'ok';
      if (check === 'expired' || check === 'exhausted') problem = h.views.t(l, 'error.codeExpired');
    } else if (method === 'webauthn') {
      try {
        await mfa.registerPasskey(key(who), who.accountId, h.field(ctx, 'response', 16_384), h.field(ctx, 'name', 64) || 'Passkey');
        ok = true;
      } catch (error) {
        if ((error as { name?: string }).name !== 'WebAuthnError') throw error;
        problem = (error as Error).message;
      }
    }
    if (!ok) return enrolPage(ctx, who, method === 'totp' || method === 'email' || method === 'sms' ? confirmForm(ctx, who, method) : '', [problem], 400);
    const added = (await mfa.list(who.accountId)).filter((f) => !before.has(f.id)).map((f) => f.id);
    const earlier = (await deps.store.get<string[]>(addedKey(who))) ?? [];
    await deps.store.set(addedKey(who), [...earlier, ...added], deps.recentSeconds);
    // The first method comes with backup codes, shown once.
    if ((await mfa.methods(who.accountId)).backupCodes === 0) {
      const codes = await mfa.generateBackupCodes(who.accountId);
      return enrolPage(ctx, who, `<p>${escapeHtml(h.views.t(l, 'backupCodes.explain'))}</p>${backupCodeList(h.views, l, codes)}<p><a href="/account">${escapeHtml(h.views.t(l, 'account.title'))}</a></p>`);
    }
    ctx.status = 303;
    ctx.redirect('/account?done=account.mfaAdded');
  }));

  router.post('/mfa/backup-codes', formBody, recent(async (ctx, who) => {
    const l = h.lang(ctx);
    if (!(await mfa.hasFactor(who.accountId))) return h.message(ctx, 'error.heading', 'error.mfaFailed', 400);
    const codes = await mfa.generateBackupCodes(who.accountId);
    enrolPage(ctx, who, `<p>${escapeHtml(h.views.t(l, 'backupCodes.explain'))}</p>${backupCodeList(h.views, l, codes)}<p><a href="/account">${escapeHtml(h.views.t(l, 'account.title'))}</a></p>`);
  }));

  router.post('/mfa/:id/remove', formBody, recent(async (ctx, who) => {
    const account = await h.findAccount(who.accountId);
    if (!account) return h.message(ctx, 'error.heading', 'error.sessionNotFound', 401);
    try {
      await mfa.remove(account.id, String(ctx.params.id).slice(0, 64), deps.requiredFor(account));
    } catch (error) {
      const status = (error as { status?: number }).status;
      if (status !== 400 && status !== 404) throw error;
      return enrolPage(ctx, who, `<p><a href="/account">${escapeHtml(h.views.t(h.lang(ctx), 'account.title'))}</a></p>`, [(error as Error).message], status);
    }
    ctx.status = 303;
    ctx.redirect('/account?done=account.mfaRemoved');
  }));
}
