// HTML fragments of the second-factor screens (sign-in challenge, enrolment, backup codes), built
// and escaped here and slotted into the templates as {{{fragments}}}.
import type { Flow, MfaMethod } from '../flow/machine.ts';
import type { AvailableMethods } from '../mfa/service.ts';
import { escapeHtml, type Views } from '../http/views.ts';

const csrfField = (csrf: string) => `<input type="hidden" name="csrf" value="${escapeHtml(csrf)}">`;
export const hidden = (name: string, value: string) => `<input type="hidden" name="${escapeHtml(name)}" value="${escapeHtml(value)}">`;

/** A form that posts one code for a method (sign-in, enrolment, the account page). */
export function codeForm(views: Views, l: string, action: string, csrf: string, method: MfaMethod, label: string, extra = ''): string {
  return `<form method="post" action="${escapeHtml(action)}">${csrfField(csrf)}${hidden('method', method)}`
    + `<label for="code-${method}">${escapeHtml(label)}</label>`
    + `<input id="code-${method}" name="code" type="text" inputmode="${method === 'backup_code' ? 'text' : 'numeric'}" autocomplete="one-time-code" required maxlength="24">`
    + `${extra}<button type="submit">${escapeHtml(views.t(l, 'action.verify'))}</button></form>`;
}

function sendForm(views: Views, l: string, action: string, csrf: string, method: MfaMethod): string {
  return `<form method="post" action="${escapeHtml(action)}">${csrfField(csrf)}${hidden('method', method)}${hidden('send', '1')}<button type="submit" class="secondary">${escapeHtml(views.t(l, 'action.sendCode'))}</button></form>`;
}

export function passkeyForm(views: Views, l: string, action: string, csrf: string, mode: 'authenticate' | 'register', options: unknown, label: string, extra = ''): string {
  return `<form method="post" action="${escapeHtml(action)}" data-webauthn="${mode}" data-options="${escapeHtml(JSON.stringify(options))}">${csrfField(csrf)}${extra}`
    + `<input type="hidden" name="response" value=""><p class="errors" data-webauthn-error hidden></p>`
    + `<button type="submit" disabled>${escapeHtml(label)}</button></form>`;
}

/** The challenge screen: one form per method the sign-in may use. */
export function challengeMethods(views: Views, l: string, flow: Flow, available: AvailableMethods, webauthnOptions: unknown, rememberDays: number): string {
  const action = `/interaction/${flow.uid}/mfa`;
  const remember = rememberDays > 0
    ? `<label class="check"><input type="checkbox" name="remember" value="1"> ${escapeHtml(views.t(l, 'mfa.remember', { days: String(rememberDays) }))}</label>`
    : '';
  const parts: string[] = [];
  for (const method of flow.mfaMethods ?? []) {
    if (method === 'totp' && available.totp) parts.push(codeForm(views, l, action, flow.csrf, 'totp', views.t(l, 'mfa.totp'), remember));
    if (method === 'webauthn' && available.webauthn && webauthnOptions) parts.push(passkeyForm(views, l, action, flow.csrf, 'authenticate', webauthnOptions, views.t(l, 'mfa.webauthn'), `${hidden('method', 'webauthn')}${remember}`));
    if (method === 'email' && available.email) parts.push(`${sendForm(views, l, action, flow.csrf, 'email')}${codeForm(views, l, action, flow.csrf, 'email', views.t(l, 'mfa.email', { destination: available.email }), remember)}`);
    if (method === 'sms' && available.sms) parts.push(`${sendForm(views, l, action, flow.csrf, 'sms')}${codeForm(views, l, action, flow.csrf, 'sms', views.t(l, 'mfa.sms', { destination: available.sms }), remember)}`);
    if (method === 'backup_code' && available.backupCodes > 0) parts.push(`<details><summary>${escapeHtml(views.t(l, 'mfa.backupCode'))}</summary>${codeForm(views, l, action, flow.csrf, 'backup_code', views.t(l, 'mfa.backupCode'))}</details>`);
  }
  return parts.map((p) => `<section class="method">${p}</section>`).join('');
}

/** The QR code and the typed-in key of an authenticator-app enrolment (shown once). */
export function totpSetup(views: Views, l: string, totp: { secret: string; qrDataUrl: string }): string {
  return `<p>${escapeHtml(views.t(l, 'enrol.totpScan'))}</p><img class="qr" alt="QR code" src="${escapeHtml(totp.qrDataUrl)}" width="200" height="200">`
    + `<p>${escapeHtml(views.t(l, 'enrol.secret'))}: <code data-totp-secret>${escapeHtml(totp.secret)}</code></p>`;
}

/** The enrolment screen: the method choice, or the step of the method being set up. */
export function enrolmentContent(views: Views, l: string, flow: Flow): string {
  const action = `/interaction/${flow.uid}/mfa-enrol`;
  const display = flow.display ?? {};
  const method = flow.enrolment?.method;
  const restart = `<form method="post" action="${action}">${csrfField(flow.csrf)}${hidden('method', method ?? '')}${hidden('start', '1')}<button type="submit" class="link">${escapeHtml(views.t(l, 'enrol.restart'))}</button></form>`;
  if (method === 'totp' && display.totp) {
    return `${totpSetup(views, l, display.totp as { secret: string; qrDataUrl: string })}${codeForm(views, l, action, flow.csrf, 'totp', views.t(l, 'mfa.totp'))}`;
  }
  if (method === 'webauthn' && display.webauthnOptions) {
    const name = `<label for="passkey-name">${escapeHtml(views.t(l, 'field.passkeyName'))}</label><input id="passkey-name" name="name" type="text" maxlength="64" value="Passkey">`;
    return passkeyForm(views, l, action, flow.csrf, 'register', display.webauthnOptions, views.t(l, 'enrol.webauthn'), `${hidden('method', 'webauthn')}${name}`);
  }
  // A wrong first code: the app already holds the secret, so only the code form comes back.
  if ((method === 'email' || method === 'sms' || (method === 'totp' && flow.enrolment?.factorId)) && flow.enrolment) {
    return `${codeForm(views, l, action, flow.csrf, method, views.t(l, 'field.code'))}${restart}`;
  }
  // Nothing in progress (or a reload lost the one-time output): offer every method.
  return (flow.mfaMethods ?? []).map((m) => {
    const phone = m === 'sms' ? `<label for="phone">${escapeHtml(views.t(l, 'field.phone'))}</label><input id="phone" name="destination" type="tel" autocomplete="tel" required maxlength="20">` : '';
    return `<section class="method"><form method="post" action="${action}">${csrfField(flow.csrf)}${hidden('method', m)}${hidden('start', '1')}<h2>${escapeHtml(views.t(l, `enrol.${m}`))}</h2>${phone}<button type="submit" class="secondary">${escapeHtml(views.t(l, 'enrol.start'))}</button></form></section>`;
  }).join('');
}

export function backupCodeList(views: Views, l: string, codes: string[] | undefined): string {
  if (!codes?.length) return `<p>${escapeHtml(views.t(l, 'backupCodes.gone'))}</p>`;
  return `<ul class="backup-codes">${codes.map((c) => `<li><code>${escapeHtml(c)}</code></li>`).join('')}</ul>`;
}
