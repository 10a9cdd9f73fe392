// The messages the IdP sends, from interactions/emails/<name>.txt: a "Subject: …" line, a blank
// line, then the plain-text body, with {name} placeholders. Subjects are logged (see Mailer), so
// no subject may carry a link or a code.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { IdpError } from '../errors.ts';
import { renderEmail } from './mailer.ts';

const dir = fileURLToPath(new URL('../../interactions/emails/', import.meta.url));

export interface EmailVars {
  'verify-email': { name: string; link: string; minutes: string };
  invitation: { name: string; link: string; hours: string; issuer: string };
  'password-reset': { name: string; link: string; minutes: string };
  'password-changed': { name: string; time: string };
  'email-code': { code: string; minutes: string };
}

export type EmailTemplateName = keyof EmailVars;

interface Template {
  subject: string;
  body: string;
}

const cache = new Map<EmailTemplateName, Template>();

function templateError(message: string): IdpError {
  return new IdpError('ERR_EMAIL_TEMPLATE', message, { status: 500, expose: false });
}

function load(name: EmailTemplateName): Template {
  const cached = cache.get(name);
  if (cached) return cached;
  const raw = readFileSync(`${dir}${name}.txt`, 'utf8').replace(/\r\n/g, '\n');
  const match = /^Subject: ([^\n]+)\n\n([\s\S]+)$/.exec(raw);
  if (!match) throw templateError(`email template ${name}.txt must start with "Subject: …", then a blank line, then the body`);
  const template = { subject: match[1]!.trim(), body: `${match[2]!.trimEnd()}\n` };
  cache.set(name, template);
  return template;
}

export function emailMessage<N extends EmailTemplateName>(name: N, vars: EmailVars[N]): { subject: string; text: string } {
  const template = load(name);
  const values = vars as unknown as Record<string, string>;
  const subject = renderEmail(template.subject, values);
  // A line break in a subject value would end the header it is written into.
  if (/[\r\n]/.test(subject)) throw templateError(`email subject of ${name} would contain a line break`);
  return { subject, text: renderEmail(template.body, values) };
}
