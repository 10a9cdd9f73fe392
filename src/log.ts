// pino JSON logs. Secrets never reach a log line: request bodies are not logged, and any field
// that could carry a credential is censored wherever it appears.
import { pino, type Logger } from 'pino';

export type { Logger };

const censored = [
  'password', 'client_secret', 'clientSecret', 'code', 'code_verifier', 'refresh_token', 'access_token',
  'id_token', 'token', 'id_token_hint', 'authorization', 'cookie', 'set-cookie', 'secret', 'envelope',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'idp' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: [...censored, ...censored.map((k) => `*.${k}`), ...censored.map((k) => `*.*.${k}`), 'req.headers.authorization', 'req.headers.cookie'],
        censor: '[redacted]',
      },
    },
    destination,
  );
}
