// Mailer through a real SMTP server, log-only mode without leaking bodies, delivery failures as
// MailError without the body, and the email templates.
import { createServer } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Mailer, MailError, renderEmail } from '../../../src/email/mailer.ts';
import { emailMessage, type EmailTemplateName, type EmailVars } from '../../../src/email/templates.ts';
import { ConfigError, IdpError } from '../../../src/errors.ts';
import { createLogger } from '../../../src/log.ts';
import { startSmtp, type TestSmtp } from '../../helpers/smtp.ts';

const from = 'IdP <no-reply@idp.example.test>';
const secretLink = 'https://idp.example.test/reset/SECRET-TOKEN-d41d8cd98f00b204';

function capturedLogger(): { log: ReturnType<typeof createLogger>; lines: string[] } {
  const lines: string[] = [];
  return { log: createLogger('info', { write: (line: string) => void lines.push(line) }), lines };
}

// Not freePort from helpers/server.ts: that module imports the whole app, which this test has no
// use for.
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return typeof address === 'object' && address ? address.port : 0;
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection, the promise resolved');
}

describe('sending through SMTP', () => {
  let smtp: TestSmtp;
  let mailer: Mailer;
  let lines: string[];

  beforeAll(async () => {
    smtp = await startSmtp();
    const captured = capturedLogger();
    lines = captured.lines;
    mailer = new Mailer({ transportUrl: smtp.url, from, log: captured.log });
  });
  afterEach(() => {
    smtp.clear();
    lines.length = 0;
  });
  afterAll(async () => {
    await mailer.close();
    await smtp.stop();
  });

  it('delivers recipient, sender, subject and body; the log has recipient and subject only', async () => {
    const message = emailMessage('password-reset', { name: 'Ada', link: secretLink, minutes: '30' });
    await mailer.send({ to: 'ada@example.test', ...message });

    expect(smtp.messages).toHaveLength(1);
    const received = smtp.messages[0]!;
    expect(received.to).toEqual(['ada@example.test']);
    expect(received.from).toContain('no-reply@idp.example.test');
    expect(received.subject).toBe('Reset your password');
    expect(received.text).toContain('Hello Ada,');
    expect(received.html).toBeUndefined();
    expect(smtp.linkIn(received, '/reset/')).toBe(secretLink);

    const log = lines.join('');
    expect(log).toContain('ada@example.test');
    expect(log).toContain('Reset your password');
    expect(log).not.toContain('SECRET-TOKEN');
  });

  it('authenticates when the transport URL has credentials', async () => {
    const withAuth = new Mailer({ transportUrl: smtp.url.replace('smtp://', 'smtp://user:pa55word@'), from, log: createLogger('silent') });
    await withAuth.send({ to: 'ada@example.test', subject: 'With auth', text: 'x' });
    await withAuth.close();
    expect(smtp.messages.map((m) => m.subject)).toEqual(['With auth']);
  });

  it('sends an HTML alternative when given one', async () => {
    await mailer.send({ to: 'bob@example.test', subject: 'HTML', text: 'plain', html: '<p>rich</p>' });
    const received = await smtp.waitFor((m) => m.subject === 'HTML');
    expect(received.text.trim()).toBe('plain');
    expect(received.html).toContain('<p>rich</p>');
  });

  it('waitFor resolves with a message that arrives later, and the code can be read from it', async () => {
    const waiting = smtp.waitFor((m) => m.to.includes('carol@example.test'));
    await mailer.send({ to: 'carol@example.test', ...emailMessage('email-code', { code: '04213377', minutes: '10' }) });
    expect(smtp.codeIn(await waiting)).toBe('04213377');
  });

  it('waitFor times out listing what was received', async () => {
    await mailer.send({ to: 'dave@example.test', subject: 'Something else', text: 'x' });
    const error = await rejection(smtp.waitFor((m) => m.subject === 'never', 100));
    expect(error.message).toMatch(/no matching email within 100 ms/);
    expect(error.message).toContain('"Something else" to dave@example.test');
  });

  it('refuses a recipient that is not a single plain address, sending nothing', async () => {
    for (const to of ['a@example.test, evil@example.test', 'Evil <evil@example.test>', 'a@example.test\r\nBcc: evil@example.test', 'not-an-address']) {
      const error = await rejection(mailer.send({ to, subject: 'x', text: secretLink }));
      expect(error).toBeInstanceOf(MailError);
    }
    expect(smtp.messages).toHaveLength(0);
  });

  it('a plaintext relay that is not on loopback must offer STARTTLS, unless the URL opts out', async () => {
    // ::ffff:127.0.0.1 reaches the test server but is not one of the loopback names the Mailer
    // exempts, so it stands in for a remote relay without STARTTLS.
    const port = new URL(smtp.url).port;
    const strict = new Mailer({ transportUrl: `smtp://[::ffff:127.0.0.1]:${port}`, from, log: createLogger('silent') });
    const error = await rejection(strict.send({ to: 'erin@example.test', subject: 'strict', text: secretLink }));
    await strict.close();
    expect(error).toBeInstanceOf(MailError);
    expect(error.message).not.toContain('SECRET-TOKEN');
    expect(smtp.messages).toHaveLength(0);

    const relaxed = new Mailer({ transportUrl: `smtp://[::ffff:127.0.0.1]:${port}?requireTLS=false`, from, log: createLogger('silent') });
    await relaxed.send({ to: 'erin@example.test', subject: 'relaxed', text: 'x' });
    await relaxed.close();
    expect(smtp.messages.map((m) => m.subject)).toEqual(['relaxed']);
  });

  it('refuses to send once closed', async () => {
    const mailer2 = new Mailer({ transportUrl: smtp.url, from, log: createLogger('silent') });
    await mailer2.close();
    expect(await rejection(mailer2.send({ to: 'a@example.test', subject: 'x', text: 'x' }))).toBeInstanceOf(MailError);
  });
});

describe('log-only mode', () => {
  it('logs recipient and subject at info, never the body', async () => {
    const { log, lines } = capturedLogger();
    const mailer = new Mailer({ transportUrl: undefined, from, log });
    expect(mailer.logOnly).toBe(true);
    await mailer.send({ to: 'ada@example.test', subject: 'Confirm your email address', text: `open ${secretLink}`, html: `<a href="${secretLink}">x</a>` });
    await mailer.close();

    expect(lines).toHaveLength(1);
    const entry = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(entry).toMatchObject({ level: 30, to: 'ada@example.test', subject: 'Confirm your email address' });
    expect(lines[0]).not.toContain('SECRET-TOKEN');
  });
});

describe('delivery failures', () => {
  it('a closed port rejects with a MailError that names neither the body nor the SMTP password', async () => {
    const port = await closedPort();
    const mailer = new Mailer({ transportUrl: `smtp://user:pa55word-XYZ@127.0.0.1:${port}`, from, log: createLogger('silent') });
    const error = await rejection(mailer.send({ to: 'ada@example.test', subject: 'Reset your password', text: `open ${secretLink}`, html: secretLink }));
    await mailer.close();

    expect(error).toBeInstanceOf(MailError);
    expect(error).toBeInstanceOf(IdpError);
    const mailError = error as MailError;
    expect(mailError.code).toBe('ERR_MAIL');
    expect(mailError.expose).toBe(false);
    expect(mailError.transportCode).toBeTruthy();
    expect(mailError.message).toContain('ada@example.test');
    expect(mailError.message).toContain('ECONNREFUSED');
    expect(mailError.cause).toBeUndefined();
    for (const text of [mailError.message, mailError.stack ?? '', JSON.stringify(mailError)]) {
      expect(text).not.toContain('SECRET-TOKEN');
      expect(text).not.toContain('pa55word');
    }
  });

  it.each([
    ['http://mail.example.test', /smtp:\/\/ or smtps:\/\//],
    ['not a url :pa55word', /not a valid URL/],
    ['smtp://user:pa55word@mail.example.test?debug=true', /"debug" is not allowed/],
    ['smtp://mail.example.test?logger=true', /"logger" is not allowed/],
  ])('the transport URL %s is a ConfigError that does not echo the URL', (transportUrl, message) => {
    let error: unknown;
    try {
      new Mailer({ transportUrl, from, log: createLogger('silent') });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toContain('pa55word');
  });
});

describe('templates', () => {
  const examples: { [N in EmailTemplateName]: EmailVars[N] } = {
    'verify-email': { name: 'Ada', link: 'https://idp.example.test/verify/t1', minutes: '60' },
    invitation: { name: 'Ada', link: 'https://idp.example.test/invite/t2', hours: '72', issuer: 'https://idp.example.test' },
    'password-reset': { name: 'Ada', link: 'https://idp.example.test/reset/t3', minutes: '30' },
    'password-changed': { name: 'Ada', time: '2026-11-20 10:15 UTC' },
    'email-code': { code: '123456', minutes: '10' },
  };

  it.each(Object.keys(examples) as EmailTemplateName[])('%s fills every placeholder; the subject carries no secret', (name) => {
    const vars = examples[name] as Record<string, string>;
    const { subject, text } = emailMessage(name, vars as never);
    expect(subject.length).toBeGreaterThan(0);
    expect(subject).not.toMatch(/[{}\n]/);
    expect(text).not.toMatch(/[{}]/);
    for (const value of Object.values(vars)) expect(`${subject}\n${text}`).toContain(value);
    for (const secret of [vars.link, vars.code]) if (secret) expect(subject).not.toContain(secret);
  });

  it('the invitation subject names the issuer', () => {
    expect(emailMessage('invitation', examples.invitation).subject).toBe('You have been invited to https://idp.example.test');
  });

  it('a missing variable throws, naming it', () => {
    const error = (() => {
      try {
        emailMessage('verify-email', { name: 'Ada', minutes: '60' } as never);
      } catch (e) {
        return e as IdpError;
      }
      throw new Error('expected a throw');
    })();
    expect(error).toBeInstanceOf(IdpError);
    expect(error.code).toBe('ERR_EMAIL_TEMPLATE');
    expect(error.message).toContain('{link}');
  });

  it('a line break in a subject value throws', () => {
    expect(() => emailMessage('invitation', { ...examples.invitation, issuer: 'x\nBcc: evil@example.test' })).toThrow(/line break/);
  });

  it('renderEmail fills in one pass: a value that looks like a placeholder stays as it is', () => {
    expect(renderEmail('{a} and {b}', { a: '{b}', b: 'B' })).toBe('{b} and B');
    expect(() => renderEmail('{toString}', {})).toThrow(/\{toString\} is missing/);
  });
});
