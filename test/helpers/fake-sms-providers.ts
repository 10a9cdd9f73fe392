// The real Twilio and Vonage services cannot be reached from here (and would cost money and need
// real phones), so the tests talk to a local server that speaks their wire protocol: the Twilio
// Messages API and the Vonage SMS and Messages APIs, with their authentication, their success
// bodies and their error bodies as the providers document them. It records what it accepted and
// can be told to fail the next request in the ways the real services do.
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

export interface ReceivedMessage {
  provider: 'twilio' | 'vonage';
  api: 'twilio-messages' | 'vonage-sms' | 'vonage-messages';
  channel: 'sms' | 'whatsapp';
  /** As sent on the wire (Twilio: "+44…" or "whatsapp:+44…"; Vonage: "44…"). */
  to: string;
  from: string;
  text: string;
}

/**
 * Failures the next request meets (whichever provider it goes to), each as that provider reports it.
 * `echo` is an error whose description quotes the message text, the worst case for leaking it;
 * `hang` answers only after `hangMs`, for client timeouts.
 */
export type Failure = 'invalid-destination' | 'throttled' | 'server-error' | 'echo' | 'hang';

export interface FakeSmsProviders {
  /** The base URL for both providers' APIs. */
  url: string;
  twilio: { accountSid: string; authToken: string };
  vonage: { apiKey: string; apiSecret: string };
  received: ReceivedMessage[];
  /** How many requests arrived, accepted or not. */
  requests: number;
  failNext(failure: Failure): void;
  hangMs: number;
  close(): Promise<void>;
}

function hex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

function json(res: ServerResponse, status: number, body: unknown, contentType = 'application/json'): void {
  res.writeHead(status, { 'content-type': contentType });
  res.end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const raw = Buffer.concat(chunks).toString('utf8');
  if ((req.headers['content-type'] ?? '').startsWith('application/json')) {
    try {
      return JSON.parse(raw) as Record<string, unknown>;
    } catch {
      return {};
    }
  }
  return Object.fromEntries(new URLSearchParams(raw));
}

function basicCredentials(req: IncomingMessage): [string, string] | undefined {
  const header = req.headers.authorization ?? '';
  if (!header.startsWith('Basic ')) return undefined;
  const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? undefined : [decoded.slice(0, colon), decoded.slice(colon + 1)];
}

function str(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

export async function startFakeSmsProviders(): Promise<FakeSmsProviders> {
  const twilio = { accountSid: `AC${hex(16)}`, authToken: hex(16) };
  const vonage = { apiKey: hex(4), apiSecret: `Vs${hex(7)}` };
  const received: ReceivedMessage[] = [];
  let pending: Failure | undefined;

  const fake: FakeSmsProviders = {
    url: '',
    twilio,
    vonage,
    received,
    requests: 0,
    hangMs: 2_000,
    failNext(failure) {
      pending = failure;
    },
    close: async () => undefined,
  };

  function takeFailure(): Failure | undefined {
    const failure = pending;
    pending = undefined;
    return failure;
  }

  // POST /2010-04-01/Accounts/{AccountSid}/Messages.json, form-encoded, HTTP Basic SID:token.
  async function twilioMessages(req: IncomingMessage, res: ServerResponse, pathSid: string): Promise<void> {
    const params = await readBody(req);
    const credentials = basicCredentials(req);
    const twilioError = (status: number, code: number, message: string) =>
      json(res, status, { code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status });
    if (!credentials || credentials[0] !== twilio.accountSid || credentials[1] !== twilio.authToken || pathSid !== twilio.accountSid) {
      return twilioError(401, 20003, 'Authenticate');
    }
    const to = str(params.To);
    const from = str(params.From) || str(params.MessagingServiceSid);
    const body = str(params.Body);
    if (!to) return twilioError(400, 21604, "A 'To' phone number is required.");
    if (!from) return twilioError(400, 21603, "A 'From' phone number is required.");
    if (!body) return twilioError(400, 21602, 'Message body is required.');
    const whatsapp = to.startsWith('whatsapp:');
    if (whatsapp !== from.startsWith('whatsapp:')) return twilioError(400, 63007, 'Twilio could not find a Channel with the specified From address');
    const number = whatsapp ? to.slice('whatsapp:'.length) : to;
    if (!/^\+[1-9]\d{6,14}$/.test(number)) return twilioError(400, 21211, `The 'To' number ${number} is not a valid phone number.`);

    const failure = takeFailure();
    if (failure === 'hang') await new Promise((resolve) => setTimeout(resolve, fake.hangMs));
    if (failure === 'invalid-destination') return twilioError(400, 21614, `'To' number ${number} is not a valid mobile number`);
    if (failure === 'throttled') return twilioError(429, 20429, 'Too Many Requests');
    if (failure === 'server-error') return twilioError(500, 20500, 'Internal Server Error');
    if (failure === 'echo') return twilioError(400, 30007, `Message filtered by carrier: "${body}"`);

    received.push({ provider: 'twilio', api: 'twilio-messages', channel: whatsapp ? 'whatsapp' : 'sms', to, from, text: body });
    const sid = `SM${hex(16)}`;
    const now = new Date().toUTCString().replace('GMT', '+0000');
    json(res, 201, {
      account_sid: twilio.accountSid,
      api_version: '2010-04-01',
      body,
      date_created: now,
      date_sent: null,
      date_updated: now,
      direction: 'outbound-api',
      error_code: null,
      error_message: null,
      from,
      messaging_service_sid: params.MessagingServiceSid ?? null,
      num_media: '0',
      num_segments: '1',
      price: null,
      price_unit: 'USD',
      sid,
      status: 'queued',
      subresource_uris: { media: `/2010-04-01/Accounts/${twilio.accountSid}/Messages/${sid}/Media.json` },
      to,
      uri: `/2010-04-01/Accounts/${twilio.accountSid}/Messages/${sid}.json`,
    });
  }

  // POST /sms/json: credentials in the body; HTTP 200 whatever happened, the status per message says.
  async function vonageSms(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const params = await readBody(req);
    const refuse = (status: string, errorText: string) => json(res, 200, { 'message-count': '1', messages: [{ status, 'error-text': errorText }] });
    for (const name of ['api_key', 'api_secret', 'from', 'to', 'text']) {
      if (!str(params[name])) return refuse('2', `Missing ${name} param`);
    }
    if (params.api_key !== vonage.apiKey || params.api_secret !== vonage.apiSecret) return refuse('4', 'Bad Credentials');
    const to = str(params.to);
    if (!/^[1-9]\d{6,14}$/.test(to)) return refuse('3', 'Invalid to address');

    const failure = takeFailure();
    if (failure === 'hang') await new Promise((resolve) => setTimeout(resolve, fake.hangMs));
    if (failure === 'invalid-destination') return refuse('6', 'Unroutable message - rejected');
    if (failure === 'throttled') return refuse('1', 'Throughput Rate Exceeded - please wait [ 1000 ] and retry');
    if (failure === 'server-error') return refuse('5', 'Internal Error');
    if (failure === 'echo') return refuse('6', `Invalid Message: ${str(params.text)}`);

    received.push({ provider: 'vonage', api: 'vonage-sms', channel: 'sms', to, from: str(params.from), text: str(params.text) });
    json(res, 200, {
      'message-count': '1',
      messages: [{ to, 'message-id': hex(8).toUpperCase(), status: '0', 'remaining-balance': '15.53590000', 'message-price': '0.03330000', network: '23410' }],
    });
  }

  // POST /v1/messages: JSON, HTTP Basic key:secret; 202 with a message_uuid, errors as RFC 7807.
  async function vonageMessages(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const params = await readBody(req);
    const problem = (status: number, type: string, title: string, detail: string, extra: Record<string, unknown> = {}) =>
      json(res, status, { type: `https://developer.vonage.com/api-errors/messages#${type}`, title, detail, instance: randomUUID(), ...extra }, 'application/problem+json');
    const credentials = basicCredentials(req);
    if (!credentials || credentials[0] !== vonage.apiKey || credentials[1] !== vonage.apiSecret) {
      return json(res, 401, { type: 'https://developer.nexmo.com/api-errors#unauthorized', title: 'Unauthorized', detail: 'You did not provide correct credentials.', instance: randomUUID() });
    }
    const to = str(params.to);
    const invalid: { name: string; reason: string }[] = [];
    if (params.message_type !== 'text') invalid.push({ name: 'message_type', reason: 'Must be one of text, image, audio, video, file, template, custom' });
    if (params.channel !== 'whatsapp' && params.channel !== 'sms') invalid.push({ name: 'channel', reason: 'Unsupported channel' });
    if (!/^[1-9]\d{6,14}$/.test(to)) invalid.push({ name: 'to', reason: 'Invalid value' });
    if (!/^[1-9]\d{6,14}$/.test(str(params.from))) invalid.push({ name: 'from', reason: 'Invalid value' });
    if (!str(params.text)) invalid.push({ name: 'text', reason: 'Must not be empty' });
    if (invalid.length) return problem(422, '1150', 'Invalid params', 'The value of one or more parameters is invalid.', { invalid_parameters: invalid });

    const failure = takeFailure();
    if (failure === 'hang') await new Promise((resolve) => setTimeout(resolve, fake.hangMs));
    if (failure === 'invalid-destination') return problem(422, '1150', 'Invalid params', 'The value of one or more parameters is invalid.', { invalid_parameters: [{ name: 'to', reason: 'Invalid value' }] });
    if (failure === 'throttled') return problem(429, '1010', 'Rate Limit Hit', 'Please wait, then retry your request');
    if (failure === 'server-error') return problem(500, '1000', 'Internal Error', 'An internal error has occurred.');
    if (failure === 'echo') return problem(422, '1120', 'Invalid message', `The message "${str(params.text)}" was rejected.`);

    received.push({ provider: 'vonage', api: 'vonage-messages', channel: params.channel === 'whatsapp' ? 'whatsapp' : 'sms', to, from: str(params.from), text: str(params.text) });
    json(res, 202, { message_uuid: randomUUID() });
  }

  const server = createServer((req, res) => {
    fake.requests += 1;
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const twilioPath = /^\/2010-04-01\/Accounts\/([^/]+)\/Messages\.json$/.exec(path);
    let handled: Promise<void>;
    if (req.method === 'POST' && twilioPath) handled = twilioMessages(req, res, decodeURIComponent(twilioPath[1]!));
    else if (req.method === 'POST' && path === '/sms/json') handled = vonageSms(req, res);
    else if (req.method === 'POST' && path === '/v1/messages') handled = vonageMessages(req, res);
    else handled = Promise.resolve(json(res, 404, { code: 20404, message: 'The requested resource was not found', status: 404 }));
    handled.catch((error: unknown) => {
      if (!res.headersSent) json(res, 500, { message: (error as Error).message });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  fake.url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  fake.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return fake;
}
