// Cross-cutting HTTP middleware for every response, ours and oidc-provider's.
import { createHash, randomUUID } from 'node:crypto';
import type { Middleware } from 'koa';
import helmet from 'koa-helmet';
import type { Logger } from '../log.ts';

const requestIdShape = /^[A-Za-z0-9._:-]{1,128}$/;

/** Accepts a sane X-Request-Id from a proxy, else makes one; echoes it back. */
export function requestId(): Middleware {
  return async (ctx, next) => {
    const incoming = ctx.get('x-request-id');
    const id = requestIdShape.test(incoming) ? incoming : randomUUID();
    ctx.state.requestId = id;
    ctx.set('x-request-id', id);
    await next();
  };
}

/** One log line per request: method, path (no query: it may hold codes or tokens), status, time. */
export function accessLog(log: Logger): Middleware {
  return async (ctx, next) => {
    const start = performance.now();
    try {
      await next();
    } finally {
      log.info({ requestId: ctx.state.requestId, method: ctx.method, path: ctx.path, status: ctx.status, ms: Math.round(performance.now() - start) }, 'request');
    }
  };
}

/**
 * Errors from our own routes: 4xx with their message when it is safe to show, anything else a
 * plain 500 with the request id and no detail (the detail goes to the log).
 */
export function errorBoundary(log: Logger): Middleware {
  return async (ctx, next) => {
    try {
      await next();
    } catch (error) {
      const e = error as { status?: number; statusCode?: number; expose?: boolean; message?: string; code?: string };
      const status = e.status ?? e.statusCode ?? 500;
      const safe = status >= 400 && status < 500 && e.expose !== false;
      if (!safe) log.error({ err: error, requestId: ctx.state.requestId }, 'unhandled error');
      ctx.status = safe ? status : 500;
      const body = safe
        ? { error: e.code && /^[a-z_]+$/.test(e.code) ? e.code : status === 413 ? 'request_too_large' : 'invalid_request', error_description: e.message }
        : { error: 'server_error', error_description: `internal error (request id ${String(ctx.state.requestId)})` };
      ctx.set('cache-control', 'no-store');
      ctx.body = body;
    }
  };
}

/**
 * A request whose body was refused unread (413, 415, or any answer given before the body was
 * consumed) leaves the rest of that body in the connection: kept alive, the next request on it
 * would be parsed from the middle of the old body, or never. Such a connection is closed after the
 * response instead.
 */
export function closeAfterUnreadBody(): Middleware {
  return async (ctx, next) => {
    try {
      await next();
    } finally {
      const { headers } = ctx.req;
      const hasBody = (headers['content-length'] !== undefined && headers['content-length'] !== '0') || headers['transfer-encoding'] !== undefined;
      if (hasBody && !ctx.req.complete) ctx.set('connection', 'close');
    }
  };
}

/** Refuses request URLs longer than a browser would ever send, before any parsing. */
export function urlLimit(maxLength = 8192): Middleware {
  return async (ctx, next) => {
    if (ctx.url.length > maxLength) {
      ctx.status = 414;
      ctx.body = { error: 'invalid_request', error_description: `request URL longer than ${maxLength} characters` };
      return;
    }
    await next();
  };
}

export function securityHeaders(options: { https: boolean }): Middleware {
  return helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'self'"],
        // oidc-provider adds the hash of its own inline form_post script to script-src when it needs one.
        scriptSrc: ["'self'"],
        styleSrc: ["'self'"],
        // https: for the logos operators give upstream connections' buttons.
        imgSrc: ["'self'", 'data:', 'https:'],
        fontSrc: ["'self'"],
        connectSrc: ["'self'"],
        objectSrc: ["'none'"],
        baseUri: ["'none'"],
        frameAncestors: ["'none'"],
        // No form-action: browsers apply it to the redirect chain after a form post, which
        // must end at the relying party's redirect_uri.
      },
    },
    strictTransportSecurity: options.https ? { maxAge: 31536000, includeSubDomains: true } : false,
    referrerPolicy: { policy: 'no-referrer' },
    crossOriginEmbedderPolicy: false,
    xFrameOptions: { action: 'deny' },
  }) as Middleware;
}

/**
 * OpenID Connect requires the authorization and end-session endpoints to accept POST.
 * oidc-provider accepts it only with SameSite=None session cookies (a cross-site form post
 * carries no Lax cookies), which browsers allow over https only. Instead we answer the post with
 * a 303 to the same request as a GET: a top-level navigation that carries the Lax session cookie.
 */
export function browserPostAsGet(paths = ['/auth', '/session/end'], maxBytes = 8192): Middleware {
  const accepted = new Set(paths);
  return async (ctx, next) => {
    if (ctx.method !== 'POST' || !accepted.has(ctx.path)) return next();
    const path = ctx.path;
    if (!ctx.is('application/x-www-form-urlencoded')) {
      ctx.status = 415;
      ctx.body = { error: 'invalid_request', error_description: `${path} accepts application/x-www-form-urlencoded posts only` };
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of ctx.req) {
      size += (chunk as Buffer).length;
      if (size > maxBytes) {
        ctx.status = 413;
        ctx.body = { error: 'invalid_request', error_description: `request larger than ${maxBytes} bytes; send fewer or shorter parameters` };
        return;
      }
      chunks.push(chunk as Buffer);
    }
    const query = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    ctx.status = 303;
    ctx.set('cache-control', 'no-store');
    ctx.redirect(`${path}?${query.toString()}`);
  };
}

/**
 * oidc-provider builds every absolute URL it publishes (discovery, redirects, form actions) from
 * the request's host and scheme. We make those always the issuer's, so a forged Host header cannot
 * put another origin into discovery or a redirect, and an https issuer behind a TLS-terminating
 * proxy publishes https URLs. Koa then runs with `proxy` on; the client address comes from
 * X-Forwarded-For only when TRUST_PROXY says a proxy sets it (we keep only the hop it appended).
 */
export function issuerOrigin(issuer: string, trustProxy: boolean): Middleware {
  const { host, protocol } = new URL(issuer);
  return async (ctx, next) => {
    const headers = ctx.req.headers;
    headers['x-forwarded-host'] = host;
    headers['x-forwarded-proto'] = protocol.slice(0, -1);
    if (!trustProxy) headers['x-forwarded-for'] = ctx.req.socket.remoteAddress ?? '';
    await next();
  };
}

/**
 * JWKS caching for relying parties: `Cache-Control: max-age` equal to the key pre-publication
 * delay (a staged key reaches every cache before it signs), and an ETag for cheap revalidation.
 */
export function jwksCaching(path: string, maxAgeSeconds: number): Middleware {
  return async (ctx, next) => {
    await next();
    if (ctx.path !== path || ctx.method !== 'GET' || ctx.status !== 200 || ctx.body == null) return;
    const body = typeof ctx.body === 'string' ? ctx.body : JSON.stringify(ctx.body);
    ctx.set('cache-control', `public, max-age=${maxAgeSeconds}`);
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
    ctx.set('etag', etag);
    const presented = ctx.get('if-none-match').split(',').map((tag) => tag.trim().replace(/^W\//, ''));
    if (presented.includes(etag) || presented.includes('*')) {
      ctx.status = 304;
      ctx.body = null;
    }
  };
}
