// A real SMTP server on a free loopback port (plaintext, any credentials or none) that keeps every message it
// receives, parsed, so tests can wait for an email and pull the link or code out of it.
import type { AddressInfo } from 'node:net';
import { simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';

export interface ReceivedMessage {
  /** Envelope recipients (RCPT TO), which is where the message really went. */
  to: string[];
  from: string;
  subject: string;
  text: string;
  html: string | undefined;
}

export interface TestSmtp {
  url: string;
  readonly messages: ReceivedMessage[];
  /** How long the server takes to accept each message, in ms (a slow mail server); 0 by default. */
  delayMs: number;
  /** The first message, already received or still to come, that matches. */
  waitFor(predicate: (message: ReceivedMessage) => boolean, timeoutMs?: number): Promise<ReceivedMessage>;
  /** The first URL in the text that contains pathPrefix. */
  linkIn(message: ReceivedMessage, pathPrefix: string): string;
  /** The first run of 6 to 8 digits in the text. */
  codeIn(message: ReceivedMessage): string;
  clear(): void;
  stop(): Promise<void>;
}

interface Waiter {
  predicate: (message: ReceivedMessage) => boolean;
  resolve: (message: ReceivedMessage) => void;
  reject: (error: Error) => void;
}

export async function startSmtp(): Promise<TestSmtp> {
  const messages: ReceivedMessage[] = [];
  const waiters = new Set<Waiter>();
  const state = { delayMs: 0 };

  function settle(waiter: Waiter, message: ReceivedMessage): boolean {
    try {
      if (!waiter.predicate(message)) return false;
      waiter.resolve(message);
    } catch (error) {
      waiter.reject(error as Error);
    }
    return true;
  }

  const server = new SMTPServer({
    disabledCommands: ['STARTTLS'],
    authOptional: true,
    // Any credentials are accepted, so a transport URL with user:pass works here as in production.
    allowInsecureAuth: true,
    onAuth(auth, _session, callback) {
      callback(null, { user: auth.username ?? 'anonymous' });
    },
    logger: false,
    onData(stream, session, callback) {
      simpleParser(stream).then(
        async (parsed) => {
          if (state.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, state.delayMs));
          const message: ReceivedMessage = {
            to: session.envelope.rcptTo.map((r) => r.address),
            from: parsed.from?.text ?? (session.envelope.mailFrom ? session.envelope.mailFrom.address : ''),
            subject: parsed.subject ?? '',
            text: parsed.text ?? '',
            html: parsed.html === false ? undefined : parsed.html,
          };
          messages.push(message);
          for (const waiter of waiters) if (settle(waiter, message)) waiters.delete(waiter);
          // Only now does the client's send resolve, so a test that awaited it sees the message.
          callback();
        },
        (error: unknown) => callback(error as Error),
      );
    },
  });

  // The server re-emits listen errors and every client socket error (a client resetting its
  // connection, say); an 'error' event without a listener would crash the test process.
  let onStartError: ((error: Error) => void) | undefined;
  server.on('error', (error: Error) => onStartError?.(error));
  await new Promise<void>((resolve, reject) => {
    onStartError = reject;
    // Port 0: the kernel picks a free port, with no window for another process to take it.
    server.listen(0, '127.0.0.1', () => resolve());
  });
  onStartError = undefined;
  const { port } = server.server.address() as AddressInfo;

  return {
    url: `smtp://127.0.0.1:${port}`,
    messages,
    get delayMs() {
      return state.delayMs;
    },
    set delayMs(ms: number) {
      state.delayMs = ms;
    },

    waitFor(predicate, timeoutMs = 5000) {
      const found = messages.find(predicate);
      if (found) return Promise.resolve(found);
      return new Promise<ReceivedMessage>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          const subjects = messages.map((m) => `"${m.subject}" to ${m.to.join(', ')}`);
          reject(new Error(`no matching email within ${timeoutMs} ms; received ${subjects.length ? subjects.join('; ') : 'none'}`));
        }, timeoutMs);
        const waiter: Waiter = {
          predicate,
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        };
        waiters.add(waiter);
      });
    },

    linkIn(message, pathPrefix) {
      // Trailing punctuation belongs to the sentence around the link, not to the link.
      const urls = (message.text.match(/https?:\/\/[^\s<>"]+/g) ?? []).map((u) => u.replace(/[.,;:!?)\]'"]+$/, ''));
      const link = urls.find((u) => u.includes(pathPrefix));
      if (!link) throw new Error(`no link containing "${pathPrefix}" in email "${message.subject}"; links: ${urls.join(', ') || 'none'}`);
      return link;
    },

    codeIn(message) {
      const code = /(?<!\d)\d{6,8}(?!\d)/.exec(message.text)?.[0];
      if (!code) throw new Error(`no 6-8 digit code in email "${message.subject}"`);
      return code;
    },

    clear() {
      messages.length = 0;
    },

    async stop() {
      for (const waiter of waiters) waiter.reject(new Error('test SMTP server stopped'));
      waiters.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
