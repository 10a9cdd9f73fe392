// Codes by SMS and WhatsApp through Twilio and Vonage, against a local server speaking their wire
// protocols (test/helpers/fake-sms-providers.ts): what goes on the wire for each provider and
// channel, how their refusals surface, and that no error ever carries the text that was sent.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, ValidationError } from '../../src/errors.ts';
import { isE164, otpSenderFromSettings, OtpSendError, TwilioSender, VonageSender, type OtpChannel, type OtpSender } from '../../src/mfa/otp-senders.ts';
import { rejection } from '../helpers/assertions.ts';
import { startFakeSmsProviders, type FakeSmsProviders } from '../helpers/fake-sms-providers.ts';

let fake: FakeSmsProviders;
const destination = '+447700900123';
const sender = '+14155550100';
const code = '493817';
const text = `Your sign-in code is ${code}. It expires in 10 minutes.`;

beforeAll(async () => {
  fake = await startFakeSmsProviders();
});
afterAll(() => fake?.close());
beforeEach(() => {
  fake.received.length = 0;
  fake.requests = 0;
});

function twilio(channel: OtpChannel, overrides: Partial<{ accountSid: string; authToken: string; from: string; timeoutMs: number }> = {}): OtpSender {
  return otpSenderFromSettings({ provider: 'twilio', channel, ...fake.twilio, from: sender, baseUrl: fake.url, ...overrides })!;
}

function vonage(channel: OtpChannel, overrides: Partial<{ apiKey: string; apiSecret: string; from: string; timeoutMs: number }> = {}): OtpSender {
  return otpSenderFromSettings({ provider: 'vonage', channel, ...fake.vonage, from: sender, baseUrl: fake.url, ...overrides })!;
}

/** The error a send rejects with, checked to be an OtpSendError that does not leak the text. */
async function sendFailure(s: OtpSender, to = destination): Promise<OtpSendError> {
  const error = await rejection(s.send(to, text));
  expect(error).toBeInstanceOf(OtpSendError);
  const e = error as OtpSendError;
  expect(e.code).toBe('ERR_OTP_SEND');
  expect(e.status).toBe(502);
  expect(e.expose).toBe(false);
  const everything = `${e.message}\n${e.stack ?? ''}\n${JSON.stringify(e)}\n${String(e.cause ?? '')}`;
  expect(everything).not.toContain(code);
  expect(everything).not.toContain('Your sign-in code');
  return e;
}

const providers = [
  ['twilio', twilio],
  ['vonage', vonage],
] as const;

describe('the factory', () => {
  it('builds the configured sender for each provider and channel; none means no sender', () => {
    expect(otpSenderFromSettings({ provider: 'none' })).toBeUndefined();
    expect(twilio('sms')).toBeInstanceOf(TwilioSender);
    expect(twilio('whatsapp').channel).toBe('whatsapp');
    expect(vonage('sms')).toBeInstanceOf(VonageSender);
    expect(vonage('whatsapp').channel).toBe('whatsapp');
  });

  it('refuses missing credentials and a WhatsApp sender that is not a number', () => {
    expect(() => twilio('sms', { authToken: '' })).toThrow(ConfigError);
    expect(() => vonage('sms', { apiSecret: '' })).toThrow(ConfigError);
    expect(() => twilio('whatsapp', { from: 'ACME' })).toThrow(ConfigError);
    expect(() => vonage('whatsapp', { from: 'ACME' })).toThrow(ConfigError);
    expect(() => otpSenderFromSettings({ provider: 'twilio', channel: 'fax' as OtpChannel, ...fake.twilio, from: sender })).toThrow(ConfigError);
  });
});

describe('Twilio', () => {
  it('SMS: a Message resource with To, From and Body, accepted with 201', async () => {
    await twilio('sms').send(destination, text);
    expect(fake.received).toEqual([{ provider: 'twilio', api: 'twilio-messages', channel: 'sms', to: destination, from: sender, text }]);
  });

  it('SMS from an alphanumeric sender id', async () => {
    await twilio('sms', { from: 'ACME' }).send(destination, text);
    expect(fake.received[0]).toMatchObject({ from: 'ACME', to: destination });
  });

  it('WhatsApp: the same API with whatsapp: on both numbers', async () => {
    await twilio('whatsapp').send(destination, text);
    expect(fake.received).toEqual([{ provider: 'twilio', api: 'twilio-messages', channel: 'whatsapp', to: `whatsapp:${destination}`, from: `whatsapp:${sender}`, text }]);
  });

  it('a wrong auth token or Account SID is 401 / 20003 Authenticate', async () => {
    const wrongToken = await sendFailure(twilio('sms', { authToken: 'not-the-token' }));
    expect(wrongToken.message).toBe('Twilio refused the sms message (HTTP 401, error 20003: Authenticate)');
    const wrongSid = await sendFailure(twilio('whatsapp', { accountSid: `AC${'0'.repeat(32)}` }));
    expect(wrongSid.message).toContain('error 20003');
    expect(fake.received).toEqual([]);
  });

  it('refusals carry the provider code and description', async () => {
    fake.failNext('invalid-destination');
    expect((await sendFailure(twilio('sms'))).message).toMatch(/HTTP 400, error 21614: 'To' number \+447700900123 is not a valid mobile number/);
    fake.failNext('throttled');
    expect((await sendFailure(twilio('sms'))).message).toContain('HTTP 429, error 20429: Too Many Requests');
    fake.failNext('server-error');
    expect((await sendFailure(twilio('whatsapp'))).message).toContain('HTTP 500, error 20500');
  });

  it('an error that quotes the message body has it removed', async () => {
    fake.failNext('echo');
    const error = await sendFailure(twilio('sms'));
    expect(error.message).toContain('error 30007: Message filtered by carrier: "[redacted]"');
  });
});

describe('Vonage', () => {
  it('SMS: the SMS API with credentials in the form, numbers without "+", every part status "0"', async () => {
    await vonage('sms').send(destination, text);
    expect(fake.received).toEqual([{ provider: 'vonage', api: 'vonage-sms', channel: 'sms', to: '447700900123', from: '14155550100', text }]);
  });

  it('SMS from an alphanumeric sender id, kept as it is', async () => {
    await vonage('sms', { from: 'ACME' }).send(destination, text);
    expect(fake.received[0]).toMatchObject({ from: 'ACME', to: '447700900123' });
  });

  it('WhatsApp: the Messages API, JSON with message_type text and channel whatsapp, 202', async () => {
    await vonage('whatsapp').send(destination, text);
    expect(fake.received).toEqual([{ provider: 'vonage', api: 'vonage-messages', channel: 'whatsapp', to: '447700900123', from: '14155550100', text }]);
  });

  it('SMS with a wrong key or secret: status "4" Bad Credentials (inside an HTTP 200)', async () => {
    const error = await sendFailure(vonage('sms', { apiSecret: 'wrong' }));
    expect(error.message).toBe('Vonage refused the sms message (HTTP 200, status 4: Bad Credentials)');
  });

  it('WhatsApp with a wrong key or secret: 401 Unauthorized problem document', async () => {
    const error = await sendFailure(vonage('whatsapp', { apiKey: 'wrong' }));
    expect(error.message).toBe('Vonage refused the whatsapp message (HTTP 401, unauthorized: Unauthorized: You did not provide correct credentials.)');
  });

  it('refusals carry the provider status and description', async () => {
    fake.failNext('throttled');
    expect((await sendFailure(vonage('sms'))).message).toContain('status 1: Throughput Rate Exceeded');
    fake.failNext('invalid-destination');
    expect((await sendFailure(vonage('sms'))).message).toContain('status 6: Unroutable message - rejected');
    fake.failNext('throttled');
    expect((await sendFailure(vonage('whatsapp'))).message).toContain('HTTP 429, 1010: Rate Limit Hit');
    fake.failNext('invalid-destination');
    expect((await sendFailure(vonage('whatsapp'))).message).toContain('HTTP 422, 1150: Invalid params');
  });

  it('an error that quotes the message text has it removed', async () => {
    fake.failNext('echo');
    expect((await sendFailure(vonage('sms'))).message).toContain('status 6: Invalid Message: [redacted]');
    fake.failNext('echo');
    expect((await sendFailure(vonage('whatsapp'))).message).toContain('The message "[redacted]" was rejected.');
  });
});

describe.each(providers)('%s, both channels', (_name, make) => {
  it.each(['sms', 'whatsapp'] as const)('%s: refuses a destination that is not E.164 before sending anything', async (channel) => {
    for (const bad of ['447700900123', '+0447700900123', '+44 7700 900123', '+44-7700-900123', '+12345', '+1234567890123456', '', 'whatsapp:+447700900123', '+4477009001a3']) {
      const error = await rejection(make(channel).send(bad, text));
      expect(error).toBeInstanceOf(ValidationError);
      expect(error.message).not.toContain(code);
    }
    expect(fake.requests).toBe(0);
  });

  it.each(['sms', 'whatsapp'] as const)('%s: a provider that does not answer in time is an error, not a hang', async (channel) => {
    fake.hangMs = 1_000;
    fake.failNext('hang');
    const started = Date.now();
    const error = await sendFailure(make(channel, { timeoutMs: 200 }));
    expect(error.message).toMatch(/did not answer within 200 ms/);
    expect(Date.now() - started).toBeLessThan(900);
  });
});

describe('E.164', () => {
  it('is + then 7 to 15 digits, not starting with 0', () => {
    expect(isE164('+447700900123')).toBe(true);
    expect(isE164('+1234567')).toBe(true);
    expect(isE164('+123456789012345')).toBe(true);
    expect(isE164('+123456')).toBe(false);
    expect(isE164('+1234567890123456')).toBe(false);
    expect(isE164('+0123456789')).toBe(false);
    expect(isE164('447700900123')).toBe(false);
    expect(isE164('+447700900123\n')).toBe(false);
  });
});

describe('an unreachable provider', () => {
  it('is an OtpSendError without the text', async () => {
    const closed = await startFakeSmsProviders();
    await closed.close();
    const error = await sendFailure(otpSenderFromSettings({ provider: 'twilio', channel: 'sms', ...closed.twilio, from: sender, baseUrl: closed.url, timeoutMs: 2_000 })!);
    expect(error.message).toMatch(/^Twilio could not be reached/);
  });
});
