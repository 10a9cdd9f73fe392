// Answers that are the same for every request (the JWKS, the discovery document) served from
// memory before any other middleware: they are the most requested URLs of an IdP, and the rest of
// the stack (logging, metrics, helmet, routing, oidc-provider) costs more than producing them. The
// first request of each provider generation goes through the whole stack; its status, headers
// (security headers, Cache-Control, ETag included) and body are kept until the provider is
// rebuilt (a key change). Served from memory: no access-log line and no metrics sample.
import { randomUUID } from 'node:crypto';
import type { Middleware } from 'koa';

interface Cached {
  headers: [string, string][];
  body: Buffer;
  etag: string | undefined;
}

// Per-request headers are made afresh; the body's length comes with the body.
const perRequest = new Set(['x-request-id', 'set-cookie', 'date', 'content-length', 'connection', 'keep-alive']);

export function cachedResponses(paths: readonly string[], generation: () => object): Middleware {
  const cacheable = new Set(paths);
  const cache = new WeakMap<object, Map<string, Cached>>();
  return async (ctx, next) => {
    if ((ctx.method !== 'GET' && ctx.method !== 'HEAD') || !cacheable.has(ctx.path) || ctx.querystring) return next();
    const current = generation();
    const hit = cache.get(current)?.get(ctx.path);
    if (!hit) {
      await next();
      if (ctx.status !== 200 || ctx.body == null || generation() !== current) return;
      const body = Buffer.isBuffer(ctx.body) ? ctx.body : Buffer.from(typeof ctx.body === 'string' ? ctx.body : JSON.stringify(ctx.body));
      const headers = Object.entries(ctx.response.headers).filter(([name]) => !perRequest.has(name)).map(([name, value]) => [name, String(value)] as [string, string]);
      const byPath = cache.get(current) ?? new Map<string, Cached>();
      byPath.set(ctx.path, { headers, body, etag: headers.find(([name]) => name === 'etag')?.[1] });
      cache.set(current, byPath);
      return;
    }
    for (const [name, value] of hit.headers) ctx.set(name, value);
    ctx.set('x-request-id', randomUUID());
    const presented = hit.etag ? ctx.get('if-none-match').split(',').map((tag) => tag.trim().replace(/^W\//, '')) : [];
    if (hit.etag && (presented.includes(hit.etag) || presented.includes('*'))) {
      ctx.status = 304;
      return;
    }
    ctx.status = 200;
    ctx.body = hit.body;
  };
}
