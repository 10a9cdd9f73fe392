// TOTP (RFC 6238) as authenticator apps implement it: HMAC-SHA-1, 6 digits, 30-second steps.
// otplib does the arithmetic; this module fixes the parameters so no caller can weaken them, and
// reports the matched time step so the store can refuse a code that was already used.
//
// otplib and qrcode are loaded at their first use (enrolment, a code to check), not at start:
// a server whose users never use an authenticator app never loads them.
import { createRequire } from 'node:module';
import { ValidationError } from '../errors.ts';

type Otplib = typeof import('otplib');
let otplibModule: Otplib | undefined;
let qrcodeModule: Promise<typeof import('qrcode')> | undefined;

/** otplib, required (synchronously: matchTotp is synchronous) at the first call; its CommonJS build. */
function otplib(): Otplib {
  otplibModule ??= createRequire(import.meta.url)('otplib') as Otplib;
  return otplibModule;
}

export const totpPeriodSeconds = 30;
export const totpDigits = 6;

/** 20 random bytes (RFC 4226's recommended 160 bits), base32 without padding: 32 characters. */
export function newTotpSecret(): string {
  return otplib().generateSecret({ length: 20 });
}

/**
 * The `otpauth://` URI an authenticator app scans (Google's Key Uri Format). The parameters are
 * spelled out, although they are the defaults, so an app that reads them cannot guess otherwise.
 */
export function otpauthUri(options: { secret: string; account: string; issuer: string }): string {
  // Apps split the label at its first colon: an issuer holding one would shift the account name.
  if (options.issuer.includes(':')) throw new ValidationError('the TOTP issuer name must not contain ":"');
  const label = `${encodeURIComponent(options.issuer)}:${encodeURIComponent(options.account)}`;
  const params = new URLSearchParams({
    secret: options.secret,
    issuer: options.issuer,
    algorithm: 'SHA1',
    digits: String(totpDigits),
    period: String(totpPeriodSeconds),
  });
  // URLSearchParams writes spaces as "+", which some apps show literally.
  return `otpauth://totp/${label}?${params.toString().replaceAll('+', '%20')}`;
}

/** A PNG QR code of `uri` as a data URL, for an <img> on the enrolment page. */
export async function qrCodeDataUrl(uri: string): Promise<string> {
  qrcodeModule ??= import('qrcode').catch((error: unknown) => {
    qrcodeModule = undefined;
    throw error;
  });
  const { toDataURL } = await qrcodeModule;
  return toDataURL(uri, { type: 'image/png', errorCorrectionLevel: 'M', margin: 2, width: 240 });
}

/** The time step (RFC 6238's T) of a moment given in milliseconds. */
export function totpStep(timeMs: number): number {
  return Math.floor(timeMs / 1000 / totpPeriodSeconds);
}

/**
 * The time step `code` belongs to, when it is the code of the step at `now` or of the one just
 * before or after (clock drift and typing time); undefined otherwise. Anything but exactly six
 * ASCII digits is refused before any HMAC is computed. otplib compares in constant time.
 */
export function matchTotp(secret: string, code: string, now: number = Date.now()): number | undefined {
  if (!/^[0-9]{6}$/.test(code)) return undefined;
  const result = otplib().verifySync({
    secret,
    token: code,
    epoch: Math.floor(now / 1000),
    // One period either side is exactly the neighbouring steps: otplib checks the steps that
    // [epoch - 30, epoch + 30] touch.
    epochTolerance: totpPeriodSeconds,
    algorithm: 'sha1',
    digits: totpDigits,
    period: totpPeriodSeconds,
  });
  // The functional API's result type also covers HOTP, whose results have no time step.
  return result.valid && 'timeStep' in result ? result.timeStep : undefined;
}

/** The code an authenticator shows at `timeMs`; for tests and tooling. */
export function totpCodeAt(secret: string, timeMs: number): string {
  return otplib().generateSync({ secret, epoch: Math.floor(timeMs / 1000), algorithm: 'sha1', digits: totpDigits, period: totpPeriodSeconds });
}
