// Outgoing email over SMTP (nodemailer), or log-only "outbox" mode for the demo when no transport
// is configured. Bodies carry single-use links and codes, so a body never reaches a log line, an
// error message or memory beyond the send itself.
//
// nodemailer (with mime-db and its transports, about 2 MB of a server's memory) is imported at the
// first message sent, and its transport made then: log-only mode never loads it. The transport URL
// is still checked when the Mailer is made, so a bad SMTP_URL stops the server at start.
import type { SMTPTransportOptions, Transporter } from 'nodemailer';
import { ConfigError, IdpError } from '../errors.ts';
import type { Logger } from '../log.ts';

export interface MailerOptions {
  /** smtp://user:pass@host:587 or smtps://…; undefined logs recipient and subject instead of sending. */
  transportUrl: string | undefined;
  from: string;
  log: Logger;
}

export interface EmailMessage {
  to: string;
  subject: string;
  text: string;
  html?: string;
}

export class MailError extends IdpError {
  /** nodemailer's error code (ECONNECTION, EAUTH, EENVELOPE…), when nodemailer gave one. */
  readonly transportCode: string | undefined;
  readonly responseCode: number | undefined;

  constructor(message: string, details: { transportCode?: string; responseCode?: number } = {}) {
    super('ERR_MAIL', message, { status: 500, expose: false });
    this.name = 'MailError';
    this.transportCode = details.transportCode;
    this.responseCode = details.responseCode;
  }
}

// One address, nothing else: a comma, angle brackets or a line break in `to` would otherwise let
// a user-supplied address add recipients to a message carrying a single-use link.
const singleAddress = /^[^\s@,;:<>()[\]"\\]+@[^\s@,;:<>()[\]"\\]+$/;

// These make nodemailer log the SMTP transaction, which includes the message.
const loggingOptions = new Set(['logger', 'debug', 'transactionLog']);

const loopbackHosts = new Set(['localhost', '127.0.0.1', '[::1]']);

function transportOptions(transportUrl: string): SMTPTransportOptions {
  let url: URL;
  try {
    url = new URL(transportUrl);
  } catch {
    // The URL may hold the SMTP password: never echo it.
    throw new ConfigError('mail transport URL is not a valid URL');
  }
  if (url.protocol !== 'smtp:' && url.protocol !== 'smtps:') throw new ConfigError('mail transport URL must start with smtp:// or smtps://');
  if (!url.hostname) throw new ConfigError('mail transport URL has no host');
  for (const key of url.searchParams.keys()) {
    if (loggingOptions.has(key.split('.')[0] ?? key)) throw new ConfigError(`mail transport URL option "${key}" is not allowed: it would log message bodies`);
  }
  return {
    url: transportUrl,
    // A sign-in or reset request waits on the send; nodemailer's defaults (2 min to connect,
    // 10 min idle) would hold it far longer than any browser waits.
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 30_000,
    // Without this a network attacker can strip STARTTLS and read reset links and the SMTP
    // password. Loopback relays are exempt; ?requireTLS=false in the URL (which overrides these
    // defaults) opts out for a trusted plaintext relay.
    requireTLS: url.protocol === 'smtp:' && !loopbackHosts.has(url.hostname) && !url.hostname.startsWith('127.'),
    disableFileAccess: true,
    disableUrlAccess: true,
  };
}

let nodemailerModule: Promise<typeof import('nodemailer')> | undefined;

/** nodemailer, imported once per process, at the first message sent. */
function loadNodemailer(): Promise<typeof import('nodemailer')> {
  nodemailerModule ??= import('nodemailer').catch((error: unknown) => {
    nodemailerModule = undefined;
    throw error;
  });
  return nodemailerModule;
}

export class Mailer {
  /** The checked transport options; undefined in log-only mode. */
  readonly #transportOptions: SMTPTransportOptions | undefined;
  /** Made at the first send. */
  #transport: Promise<Transporter> | undefined;
  readonly #from: string;
  readonly #log: Logger;
  #closed = false;

  constructor(options: MailerOptions) {
    this.#from = options.from;
    this.#log = options.log;
    this.#transportOptions = options.transportUrl === undefined ? undefined : transportOptions(options.transportUrl);
  }

  /** True when messages are only logged (recipient and subject), not sent. */
  get logOnly(): boolean {
    return this.#transportOptions === undefined;
  }

  #transporter(options: SMTPTransportOptions): Promise<Transporter> {
    this.#transport ??= loadNodemailer().then(
      (nodemailer) => nodemailer.default.createTransport(options),
      (error: unknown) => {
        this.#transport = undefined;
        throw error;
      },
    );
    return this.#transport;
  }

  async send(message: EmailMessage): Promise<void> {
    if (this.#closed) throw new MailError('mailer is closed');
    if (!singleAddress.test(message.to)) throw new MailError('email recipient must be a single plain address');
    const { to, subject } = message;
    if (!this.#transportOptions) {
      this.#log.info({ to, subject }, 'email not sent: no mail transport configured (log-only mode)');
      return;
    }
    let transport: Transporter;
    try {
      transport = await this.#transporter(this.#transportOptions);
    } catch {
      // Not the error itself: it could quote the transport URL, which may hold the SMTP password.
      throw new MailError(`could not send email "${subject}" to ${to}: the mail transport could not be set up`);
    }
    // Closed while nodemailer was loading: the transport was closed with it.
    if (this.#closed) throw new MailError('mailer is closed');
    try {
      await transport.sendMail({ from: this.#from, to, subject, text: message.text, ...(message.html === undefined ? {} : { html: message.html }) });
    } catch (error) {
      // Only chosen fields are kept, not the nodemailer error as `cause`: the error serializer
      // logs every property of a cause, and ours should stay predictable.
      const e = error as { code?: unknown; responseCode?: unknown; message?: unknown };
      const transportCode = typeof e.code === 'string' ? e.code : undefined;
      const responseCode = typeof e.responseCode === 'number' ? e.responseCode : undefined;
      const detail = typeof e.message === 'string' ? e.message : String(error);
      throw new MailError(`could not send email "${subject}" to ${to}: ${detail}${transportCode ? ` (${transportCode})` : ''}`, {
        ...(transportCode === undefined ? {} : { transportCode }),
        ...(responseCode === undefined ? {} : { responseCode }),
      });
    }
    this.#log.info({ to, subject }, 'email sent');
  }

  async close(): Promise<void> {
    this.#closed = true;
    const transport = this.#transport;
    if (transport) (await transport.catch(() => undefined))?.close();
  }
}

/**
 * Fills {name} placeholders in a single pass (a value containing braces is not expanded again).
 * Plain text only: HTML built from this would need every value escaped first.
 */
export function renderEmail(templateText: string, vars: Record<string, string>): string {
  return templateText.replace(/\{(\w+)\}/g, (_, key: string) => {
    const value = Object.hasOwn(vars, key) ? vars[key] : undefined;
    if (typeof value !== 'string') throw new IdpError('ERR_EMAIL_TEMPLATE', `email template variable {${key}} is missing`, { status: 500, expose: false });
    return value;
  });
}
