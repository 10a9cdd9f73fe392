// Operator endpoints: liveness, readiness and Prometheus metrics, plus the static files of the
// interaction screens.
import { readFileSync } from 'node:fs';
import Router from '@koa/router';
import type { Middleware } from 'koa';
import { AggregatorRegistry, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export type ReadinessCheck = () => Promise<void>;

export function metricsMiddleware(registry: Registry): Middleware {
  // One histogram: its _count series is the request counter, so each request updates one series.
  const duration = new Histogram({ name: 'idp_http_request_duration_seconds', help: 'HTTP requests by route and status, with their duration', labelNames: ['route', 'status'], registers: [registry], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5] });
  return async (ctx, next) => {
    const start = performance.now();
    try {
      await next();
    } finally {
      // Route names, never raw paths: keeps label cardinality bounded.
      const route = (ctx.oidc?.route as string | undefined) ?? (ctx._matchedRouteName as string | undefined) ?? (ctx._matchedRoute as string | undefined) ?? 'other';
      duration.observe({ route, status: String(ctx.status) }, (performance.now() - start) / 1000);
    }
  };
}

export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'idp_' });
  // In a worker of `idp serve --workers`, the primary gathers this registry with the others'
  // (constructing an AggregatorRegistry is what makes prom-client answer the primary's requests).
  AggregatorRegistry.setRegistries([registry]);
  new AggregatorRegistry();
  return registry;
}

/** `idp_directory_up{connection}`: whether each LDAP directory answered the last time it was asked. */
export function directoryHealth(registry: Registry): (connection: string, up: boolean) => void {
  const gauge = new Gauge({ name: 'idp_directory_up', help: 'whether the LDAP directory answered the last time it was asked (1) or not (0)', labelNames: ['connection'], registers: [registry] });
  return (connection, up) => gauge.set({ connection }, up ? 1 : 0);
}

async function withTimeout(check: ReadinessCheck, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([check(), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

export function operationsRoutes(options: {
  registry: Registry | undefined;
  /** Metrics of every worker, when this process is one of several (else the registry's own). */
  metrics?: (() => Promise<string>) | undefined;
  checks: Record<string, ReadinessCheck>;
  /** True once the node is stopping: readiness fails whatever the checks say. */
  draining?: () => boolean;
  staticDir: string;
  vendorFiles?: Record<string, string>;
}): Router {
  const router = new Router();
  router.get('/healthz', (ctx) => {
    ctx.set('cache-control', 'no-store');
    ctx.body = { status: 'ok' };
  });
  router.get('/readyz', async (ctx) => {
    const results: Record<string, string> = {};
    await Promise.all(Object.entries(options.checks).map(async ([name, check]) => {
      try {
        await withTimeout(check, 2000);
        results[name] = 'ok';
      } catch (error) {
        results[name] = `failing: ${(error as Error).message}`;
      }
    }));
    const draining = options.draining?.() ?? false;
    const ready = !draining && Object.values(results).every((r) => r === 'ok');
    ctx.status = ready ? 200 : 503;
    ctx.set('cache-control', 'no-store');
    ctx.body = { status: ready ? 'ready' : draining ? 'shutting_down' : 'not_ready', checks: results };
  });
  if (options.registry) {
    const registry = options.registry;
    router.get('/metrics', async (ctx) => {
      ctx.type = registry.contentType;
      ctx.body = await (options.metrics ?? (() => registry.metrics()))();
    });
  }
  // A fixed list of files, read once: nothing in a URL ever becomes a path.
  const files: [string, string, string][] = [
    ['/static/styles.css', `${options.staticDir}styles.css`, 'text/css'],
    ['/static/passkey.js', `${options.staticDir}passkey.js`, 'text/javascript'],
    ...Object.entries(options.vendorFiles ?? {}).map(([name, path]): [string, string, string] => [`/static/vendor/${name}`, path, 'text/javascript']),
  ];
  for (const [route, path, type] of files) {
    const body = readFileSync(path);
    router.get(route, (ctx) => {
      ctx.type = type;
      ctx.set('cache-control', 'public, max-age=3600');
      ctx.body = body;
    });
  }
  return router;
}
