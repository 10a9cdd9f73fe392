// CSRF protection for forms that belong to no sign-in flow (registration, password reset…): a
// random token in a signed, SameSite=Strict cookie, echoed in a hidden field and compared in
// constant time (double submit).
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context } from 'koa';

const cookieName = 'idp.form';

export function sameToken(expected: string, presented: string): boolean {
  const a = Buffer.from(expected);
  const b = Buffer.from(presented);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function formToken(ctx: Context): string {
  const existing = ctx.cookies.get(cookieName, { signed: true });
  if (existing && /^[A-Za-z0-9_-]{43}$/.test(existing)) return existing;
  const token = randomBytes(32).toString('base64url');
  ctx.cookies.set(cookieName, token, { signed: true, httpOnly: true, sameSite: 'strict', path: '/account', secure: ctx.secure, overwrite: true });
  return token;
}

export function formTokenMatches(ctx: Context, presented: string): boolean {
  const expected = ctx.cookies.get(cookieName, { signed: true });
  return !!expected && !!presented && sameToken(expected, presented);
}
