// A small JSON request body reader of our own, for APIs that take JSON only (the admin API).
// Why not a generic body parser: it accepts other content types (or ignores them, leaving the
// handler a missing body it may read as "no options"), and it hands back values of any depth:
// V8's JSON.parse copes with 10,000 levels, but whatever walks the value recursively afterwards
// (JSON.stringify, a schema, our checks) overflows the stack and answers 500. The depth is bounded
// here, by scanning the text before it is parsed, so nothing downstream ever sees a deep value.
import type { Context } from 'koa';
import { IdpError, ValidationError } from '../errors.ts';

/** Levels of objects and arrays, the outermost one counting as 1. Client metadata needs about 5. */
export const maxJsonDepth = 32;
export const maxJsonBytes = 64 * 1024;

export class UnsupportedMediaTypeError extends IdpError {
  constructor(message: string) {
    super('ERR_UNSUPPORTED_MEDIA_TYPE', message, { status: 415, expose: true });
  }
}

export class BodyTooLargeError extends IdpError {
  constructor(limit: number) {
    super('ERR_BODY_TOO_LARGE', `the request body is larger than ${limit / 1024} KiB`, { status: 413, expose: true });
  }
}

/**
 * Throws when `text` nests objects or arrays deeper than `maxDepth`. Brackets inside strings do
 * not count; on text that is not JSON the count may be off, which JSON.parse then refuses anyway.
 */
export function checkJsonDepth(text: string, maxDepth = maxJsonDepth, what = 'the request body'): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // a backslash escapes the next character (\" included)
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > maxDepth) throw new ValidationError(`${what} is nested deeper than ${maxDepth} levels`);
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    }
  }
}

/** JSON.parse with the depth bound; throws ValidationError naming `what` (e.g. "standard input"). */
export function parseBoundedJson(text: string, options: { maxDepth?: number; what?: string } = {}): unknown {
  const what = options.what ?? 'the request body';
  checkJsonDepth(text, options.maxDepth, what);
  try {
    return JSON.parse(text) as unknown;
  } catch {
    // Not the SyntaxError's text: it quotes the input back.
    throw new ValidationError(`${what} is not valid JSON`);
  }
}

/** True when the Content-Type is application/json, with no charset or a UTF-8 one. */
function isJson(contentType: string): boolean {
  const [media, ...parameters] = contentType.split(';');
  if (media!.trim().toLowerCase() !== 'application/json') return false;
  for (const parameter of parameters) {
    const [name, value = ''] = parameter.split('=');
    if (name!.trim().toLowerCase() === 'charset' && !/^"?utf-8"?$/i.test(value.trim())) return false;
  }
  return true;
}

/**
 * The request's JSON body, or undefined when it has none: neither Content-Length (or 0) nor
 * Transfer-Encoding, whatever the Content-Type says (an optional body may be left out with or
 * without one), or a chunked JSON body of no bytes. A body that is there must be application/json
 * (else 415, decided from the headers, unread), identity-encoded (else 415), at most `limit`
 * bytes (else 413), UTF-8, JSON, and nested at most `maxDepth` levels (else 400). Reads the
 * stream itself: nothing before it may have consumed it.
 */
export async function readJsonBody(ctx: Context, options: { limit?: number; maxDepth?: number } = {}): Promise<unknown> {
  const limit = options.limit ?? maxJsonBytes;
  const { headers } = ctx.req;
  const declared = headers['content-length'] === undefined ? undefined : Number(headers['content-length']);
  const chunked = headers['transfer-encoding'] !== undefined;
  if (!chunked && !declared) return undefined;
  // Decided before reading: a refused body is left unread (closeAfterUnreadBody closes the connection).
  const contentType = headers['content-type'];
  if (contentType === undefined) throw new UnsupportedMediaTypeError('a request body needs Content-Type: application/json');
  if (!isJson(contentType)) throw new UnsupportedMediaTypeError(`the request body must be application/json (UTF-8), not ${contentType.slice(0, 80)}`);
  const encoding = headers['content-encoding'];
  if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') throw new UnsupportedMediaTypeError('Content-Encoding is not supported: send the JSON uncompressed');
  if (declared !== undefined && declared > limit) throw new BodyTooLargeError(limit);

  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of ctx.req) {
      size += (chunk as Buffer).length;
      if (size > limit) throw new BodyTooLargeError(limit);
      chunks.push(chunk as Buffer);
    }
  } catch (error) {
    if (error instanceof IdpError) throw error;
    throw new ValidationError('the request body could not be read');
  }
  if (size === 0) return undefined;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
  } catch {
    throw new ValidationError('the request body is not valid UTF-8');
  }
  return parseBoundedJson(text, { ...(options.maxDepth ? { maxDepth: options.maxDepth } : {}) });
}
