// One-time codes by SMS or WhatsApp through Twilio or Vonage, over their plain HTTP APIs (no SDK).
// Errors carry the provider's own code and description for the operator, never the text that was
// sent: it holds the code, and errors end up in logs.
import { ConfigError, IdpError, ValidationError } from '../errors.ts';

export type OtpChannel = 'sms' | 'whatsapp';

export interface OtpSender {
  readonly channel: OtpChannel;
  /** Sends `text` to `to` (E.164, e.g. +447700900000); resolves once the provider accepted it. */
  send(to: string, text: string): Promise<void>;
}

export class OtpSendError extends IdpError {
  constructor(message: string, cause?: unknown) {
    super('ERR_OTP_SEND', message, { status: 502, expose: false, cause });
    this.name = 'OtpSendError';
  }
}

const e164 = /^\+[1-9]\d{6,14}$/;

export function isE164(value: string): boolean {
  return e164.test(value);
}

function requireE164(value: string, what: string): void {
  if (!isE164(value)) throw new ValidationError(`${what} must be a phone number in E.164 form (+ and 7 to 15 digits)`);
}

const defaultTimeoutMs = 10_000;

interface Common {
  channel: OtpChannel;
  /** A number in E.164 form; for Twilio SMS also an alphanumeric sender id or a Messaging Service SID. */
  from: string;
  /** Where the provider's API is (tests point it at a local server). */
  baseUrl?: string;
  timeoutMs?: number;
}

export interface TwilioSettings extends Common {
  accountSid: string;
  authToken: string;
}

export interface VonageSettings extends Common {
  apiKey: string;
  apiSecret: string;
}

export type OtpSenderSettings = { provider: 'none' } | ({ provider: 'twilio' } & TwilioSettings) | ({ provider: 'vonage' } & VonageSettings);

/** The configured sender, or undefined when codes by phone are switched off. */
export function otpSenderFromSettings(settings: OtpSenderSettings): OtpSender | undefined {
  switch (settings.provider) {
    case 'none':
      return undefined;
    case 'twilio':
      return new TwilioSender(settings);
    case 'vonage':
      return new VonageSender(settings);
  }
}

function requireSetting(value: string | undefined, name: string): string {
  if (!value) throw new ConfigError(`${name} is required for sending one-time codes`);
  return value;
}

function requireChannel(channel: string): OtpChannel {
  if (channel !== 'sms' && channel !== 'whatsapp') throw new ConfigError(`unknown one-time code channel "${channel}" (sms or whatsapp)`);
  return channel;
}

/**
 * Provider text with anything of the sent message removed: some error descriptions quote the
 * request. The whole text goes, and each run of four or more digits in it (the code itself).
 */
function scrub(providerText: string, sent: string): string {
  let result = providerText;
  const secrets = [sent, ...(sent.match(/\d{4,}/g) ?? [])].filter((s) => s.trim() !== '').sort((a, b) => b.length - a.length);
  for (const secret of secrets) result = result.split(secret).join('[redacted]');
  return result.length > 300 ? `${result.slice(0, 300)}…` : result;
}

interface Reply {
  status: number;
  body: unknown;
}

async function post(provider: string, url: string, init: { headers: Record<string, string>; body: string }, timeoutMs: number): Promise<Reply> {
  let response: Response;
  try {
    response = await fetch(url, { method: 'POST', headers: { accept: 'application/json', ...init.headers }, body: init.body, signal: AbortSignal.timeout(timeoutMs), redirect: 'error' });
  } catch (error) {
    const name = (error as Error).name;
    if (name === 'TimeoutError' || name === 'AbortError') throw new OtpSendError(`${provider} did not answer within ${timeoutMs} ms`, error);
    throw new OtpSendError(`${provider} could not be reached: ${(error as Error).message}`, error);
  }
  const raw = await response.text().catch(() => '');
  let body: unknown;
  try {
    body = raw === '' ? undefined : JSON.parse(raw);
  } catch {
    body = undefined;
  }
  return { status: response.status, body };
}

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`;
}

function field(body: unknown, name: string): string | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const value = (body as Record<string, unknown>)[name];
  return typeof value === 'string' || typeof value === 'number' ? String(value) : undefined;
}

/** Twilio Programmable Messaging: one Message resource per code, SMS or WhatsApp. */
export class TwilioSender implements OtpSender {
  readonly channel: OtpChannel;
  readonly #accountSid: string;
  readonly #authToken: string;
  readonly #from: string;
  readonly #url: string;
  readonly #timeoutMs: number;

  constructor(settings: TwilioSettings) {
    this.channel = requireChannel(settings.channel);
    this.#accountSid = requireSetting(settings.accountSid, 'the Twilio Account SID');
    this.#authToken = requireSetting(settings.authToken, 'the Twilio auth token');
    this.#from = requireSetting(settings.from, 'the Twilio sender');
    if (this.channel === 'whatsapp' && !isE164(this.#from)) throw new ConfigError('the Twilio WhatsApp sender must be a number in E.164 form');
    const base = (settings.baseUrl ?? 'https://api.twilio.com').replace(/\/+$/, '');
    this.#url = `${base}/2010-04-01/Accounts/${encodeURIComponent(this.#accountSid)}/Messages.json`;
    this.#timeoutMs = settings.timeoutMs ?? defaultTimeoutMs;
  }

  async send(to: string, text: string): Promise<void> {
    requireE164(to, 'the destination');
    const form = new URLSearchParams();
    if (this.channel === 'whatsapp') {
      form.set('To', `whatsapp:${to}`);
      form.set('From', `whatsapp:${this.#from}`);
    } else {
      form.set('To', to);
      form.set(/^MG[0-9a-f]{32}$/i.test(this.#from) ? 'MessagingServiceSid' : 'From', this.#from);
    }
    form.set('Body', text);
    const reply = await post(
      'Twilio',
      this.#url,
      { headers: { authorization: basic(this.#accountSid, this.#authToken), 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() },
      this.#timeoutMs,
    );
    if (reply.status >= 200 && reply.status < 300) return;
    const code = field(reply.body, 'code') ?? 'unknown';
    const message = scrub(field(reply.body, 'message') ?? 'no error description', text);
    throw new OtpSendError(`Twilio refused the ${this.channel} message (HTTP ${reply.status}, error ${code}: ${message})`);
  }
}

/** Vonage: the SMS API for SMS, the Messages API for WhatsApp. Both want numbers without the "+". */
export class VonageSender implements OtpSender {
  readonly channel: OtpChannel;
  readonly #apiKey: string;
  readonly #apiSecret: string;
  readonly #from: string;
  readonly #base: string;
  readonly #timeoutMs: number;

  constructor(settings: VonageSettings) {
    this.channel = requireChannel(settings.channel);
    this.#apiKey = requireSetting(settings.apiKey, 'the Vonage API key');
    this.#apiSecret = requireSetting(settings.apiSecret, 'the Vonage API secret');
    const from = requireSetting(settings.from, 'the Vonage sender');
    if (this.channel === 'whatsapp' && !isE164(from)) throw new ConfigError('the Vonage WhatsApp sender must be a number in E.164 form');
    this.#from = isE164(from) ? from.slice(1) : from;
    this.#base = (settings.baseUrl ?? (this.channel === 'sms' ? 'https://rest.nexmo.com' : 'https://api.nexmo.com')).replace(/\/+$/, '');
    this.#timeoutMs = settings.timeoutMs ?? defaultTimeoutMs;
  }

  async send(to: string, text: string): Promise<void> {
    requireE164(to, 'the destination');
    if (this.channel === 'sms') await this.#sms(to.slice(1), text);
    else await this.#whatsapp(to.slice(1), text);
  }

  async #sms(to: string, text: string): Promise<void> {
    const form = new URLSearchParams({ api_key: this.#apiKey, api_secret: this.#apiSecret, from: this.#from, to, text });
    // Without it, characters outside the GSM alphabet arrive as question marks.
    if (/[^\x20-\x7e\n\r]/.test(text)) form.set('type', 'unicode');
    const reply = await post('Vonage', `${this.#base}/sms/json`, { headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() }, this.#timeoutMs);
    const messages = (reply.body as { messages?: unknown } | undefined)?.messages;
    // A long text is split into parts, each with its own status: every part must be accepted.
    if (reply.status >= 200 && reply.status < 300 && Array.isArray(messages) && messages.length > 0 && messages.every((m) => field(m, 'status') === '0')) return;
    const failed = Array.isArray(messages) ? messages.find((m) => field(m, 'status') !== '0') : undefined;
    const status = field(failed, 'status') ?? 'unknown';
    const description = scrub(field(failed, 'error-text') ?? field(reply.body, 'title') ?? 'no error description', text);
    throw new OtpSendError(`Vonage refused the sms message (HTTP ${reply.status}, status ${status}: ${description})`);
  }

  async #whatsapp(to: string, text: string): Promise<void> {
    const reply = await post(
      'Vonage',
      `${this.#base}/v1/messages`,
      {
        headers: { authorization: basic(this.#apiKey, this.#apiSecret), 'content-type': 'application/json' },
        body: JSON.stringify({ message_type: 'text', channel: 'whatsapp', to, from: this.#from, text }),
      },
      this.#timeoutMs,
    );
    if (reply.status === 202) return;
    // Errors are RFC 7807 problem documents: the type URL names the error, title and detail explain it.
    const type = field(reply.body, 'type')?.split('#').pop() ?? 'unknown';
    const description = scrub([field(reply.body, 'title'), field(reply.body, 'detail')].filter(Boolean).join(': ') || 'no error description', text);
    throw new OtpSendError(`Vonage refused the whatsapp message (HTTP ${reply.status}, ${type}: ${description})`);
  }
}
