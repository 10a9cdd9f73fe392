// Passkey ceremonies on the interaction screens, loaded with <script type="module"> (the CSP
// forbids inline script). A form marked data-webauthn="register" or "authenticate" carries the
// server's options as JSON text in data-options. On submit the browser ceremony runs inside the
// user's click (Safari insists on that), its JSON answer goes into the hidden input
// name="response", and the form is posted. Failures are shown in [data-webauthn-error]; its
// data-msg-* attributes, when present, replace the English texts below (for translations).
//
// The vendor file is @simplewebauthn/browser's UMD bundle: as a module it defines no exports and
// sets globalThis.SimpleWebAuthnBrowser instead.
import '/static/vendor/simplewebauthn-browser.js';

const { startRegistration, startAuthentication, browserSupportsWebAuthn } = globalThis.SimpleWebAuthnBrowser;

const messages = {
  unsupported: 'This browser does not support passkeys or security keys.',
  cancelled: 'The passkey request was cancelled or timed out. Please try again.',
  exists: 'This passkey or security key is already registered.',
  invalid: 'The passkey request could not be started. Please reload the page.',
  failed: 'The passkey could not be used. Please try again.',
};

function errorElement(form) {
  return form.querySelector('[data-webauthn-error]') ?? document.querySelector('[data-webauthn-error]');
}

function showError(form, key) {
  const element = errorElement(form);
  if (!element) return;
  const attribute = `msg${key[0].toUpperCase()}${key.slice(1)}`;
  element.textContent = element.dataset[attribute] || messages[key];
  element.hidden = false;
}

function clearError(form) {
  const element = errorElement(form);
  if (!element) return;
  element.textContent = '';
  element.hidden = true;
}

function submitButtons(form) {
  return [...form.querySelectorAll('button, input[type="submit"]')].filter((b) => b.type === 'submit');
}

function setBusy(form, busy) {
  for (const button of submitButtons(form)) button.disabled = busy;
  form.toggleAttribute('aria-busy', busy);
}

/** Which message a failed ceremony deserves; the library names the cases it recognises. */
function failureKey(error) {
  const code = error?.code ?? '';
  const name = error?.name ?? '';
  if (code === 'ERROR_AUTHENTICATOR_PREVIOUSLY_REGISTERED' || name === 'InvalidStateError') return 'exists';
  if (code === 'ERROR_CEREMONY_ABORTED' || name === 'NotAllowedError' || name === 'AbortError') return 'cancelled';
  return 'failed';
}

function responseInput(form) {
  let input = form.querySelector('input[name="response"]');
  if (!input) {
    input = document.createElement('input');
    input.type = 'hidden';
    input.name = 'response';
    form.append(input);
  }
  return input;
}

function attach(form) {
  const mode = form.dataset.webauthn;
  if (mode !== 'register' && mode !== 'authenticate') return;
  if (!browserSupportsWebAuthn()) {
    showError(form, 'unsupported');
    for (const button of submitButtons(form)) button.disabled = true;
    return;
  }
  let busy = false;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (busy) return;
    let optionsJSON;
    try {
      optionsJSON = JSON.parse(form.dataset.options ?? '');
    } catch {
      showError(form, 'invalid');
      return;
    }
    busy = true;
    setBusy(form, true);
    clearError(form);
    try {
      const result = mode === 'register' ? await startRegistration({ optionsJSON }) : await startAuthentication({ optionsJSON });
      responseInput(form).value = JSON.stringify(result);
      // The prototype's submit, in case a control is named "submit"; it posts without firing
      // this listener again.
      HTMLFormElement.prototype.submit.call(form);
    } catch (error) {
      console.warn('passkey ceremony failed', error);
      showError(form, failureKey(error));
      busy = false;
      setBusy(form, false);
    }
  });
  // The buttons come disabled: a click before this script ran would post the form without a
  // passkey response. They work from now on.
  setBusy(form, false);
  // Back from the next page out of the back/forward cache, the form must work again.
  window.addEventListener('pageshow', (event) => {
    if (!event.persisted) return;
    busy = false;
    setBusy(form, false);
  });
}

for (const form of document.querySelectorAll('form[data-webauthn]')) attach(form);
