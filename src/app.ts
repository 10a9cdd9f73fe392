// Composition root: builds every dependency from the configuration and assembles the HTTP app.
// Nothing here listens or touches `process`; src/main.ts does that.
import { randomBytes } from 'node:crypto';
import type Router from '@koa/router';
import Koa from 'koa';
import mount from 'koa-mount';
import { PasswordHasher } from './accounts/passwords.ts';
import { AccountService } from './accounts/service.ts';
import { AuditLog } from './audit/log.ts';
import { ClientService } from './clients/service.ts';
import type { Config } from './config.ts';
import { FlowEngine } from './flow/engine.ts';
import { accessLog, browserPostAsGet, errorBoundary, issuerOrigin, requestId, securityHeaders, urlLimit } from './http/middleware.ts';
import { createRegistry, metricsMiddleware, operationsRoutes } from './http/operations.ts';
import { interactionRoutes } from './interactions/routes.ts';
import { staticDir, Views } from './interactions/views.ts';
import { Keyring } from './keys/keyring.ts';
import { LocalMasterKey } from './keys/local-master-key.ts';
import { loadCookieKeys } from './keys/server-secrets.ts';
import type { Logger } from './log.ts';
import { adapterFactory } from './provider/adapter.ts';
import { createProvider, type Provider } from './provider/provider.ts';
import { AccountStore } from './store/accounts.ts';
import { AuditEventStore } from './store/audit-events.ts';
import { ClientStore } from './store/clients.ts';
import { openDatabase, type Database } from './store/database.ts';
import { DatabaseExpiringValues, RedisExpiringValues } from './store/expiring-values.ts';
import { sweepExpiredRecords } from './store/oidc-records.ts';
import { openRedis, type Redis } from './store/redis.ts';
import { ServerSecretStore } from './store/server-secrets.ts';
import { SigningKeyStore } from './store/signing-keys.ts';

export interface Idp {
  config: Config;
  log: Logger;
  db: Database;
  redis: Redis | undefined;
  audit: AuditLog;
  accounts: AccountService;
  clients: ClientService;
  keys: SigningKeyStore;
  provider: Provider;
  app: Koa;
  close(): Promise<void>;
}

const sweepIntervalMs = 60_000;

export interface IdpOptions {
  /** Extra routes mounted in front of the provider (the demo relying party). */
  routes?: Router[];
}

export async function createIdp(config: Config, log: Logger, options: IdpOptions = {}): Promise<Idp> {
  const kms = LocalMasterKey.load(config.MASTER_KEY_FILE, { create: true });
  const db = await openDatabase(config.DATABASE_URL);
  const redis = config.REDIS_URL ? openRedis(config.REDIS_URL, config.REDIS_KEY_PREFIX) : undefined;
  const cleanup: (() => Promise<unknown>)[] = [];
  try {
    const audit = new AuditLog(new AuditEventStore(db));
    const keys = new SigningKeyStore(db.prisma);
    const keyring = new Keyring(keys, kms, audit);
    await keyring.ensureActiveKey('RS256');
    const jwks = await keyring.privateJwks();
    const cookieKeys = await loadCookieKeys(new ServerSecretStore(db.prisma), kms);

    const hasher = new PasswordHasher({ memoryCost: config.ARGON2_MEMORY_KIB, timeCost: config.ARGON2_TIME_COST, parallelism: config.ARGON2_PARALLELISM });
    const accounts = new AccountService(new AccountStore(db.prisma), hasher);
    // The provider validates client metadata, and needs the client registry to load clients.
    let provider: Provider | undefined;
    const clients = new ClientService(new ClientStore(db.prisma), async (metadata) => provider!.Client.validate(metadata as never), { cacheSeconds: config.CLIENT_CACHE_SECONDS });
    const views = new Views();
    provider = createProvider({
      config, accounts, views, audit, log, jwks, cookieKeys,
      adapter: adapterFactory({ prisma: db.prisma, redis, clients }) as never,
    });

    const flows = new FlowEngine({
      store: redis ? new RedisExpiringValues(redis) : new DatabaseExpiringValues(db.prisma),
      audit,
      async checkPassword(email, password) {
        const result = await accounts.authenticate(email, password);
        return result.ok ? { ok: true, accountId: result.account.id } : { ok: false, reason: result.reason };
      },
      // Risk signals and MFA policy arrive with their issues; until then every login is allowed at one factor.
      assessRisk: async () => ({ verdict: 'allow' }),
      mfaRequired: async () => false,
      randomToken: () => randomBytes(32).toString('base64url'),
      maxAttempts: config.MAX_LOGIN_ATTEMPTS_PER_INTERACTION,
      ttlSeconds: config.INTERACTION_TTL,
    });

    const registry = config.METRICS_ENABLED ? createRegistry() : undefined;
    // proxy is always on: issuerOrigin() below sets the forwarded headers Koa then reads.
    const app = new Koa({ proxy: true, maxIpsCount: 1 });
    app.silent = true;
    app.keys = cookieKeys;
    app.use(issuerOrigin(config.ISSUER, config.TRUST_PROXY));
    app.use(requestId());
    app.use(accessLog(log));
    if (registry) app.use(metricsMiddleware(registry));
    app.use(securityHeaders({ https: config.ISSUER.startsWith('https:') }));
    app.use(urlLimit());
    app.use(errorBoundary(log));
    const checks = {
      database: async () => void (await db.prisma.$queryRawUnsafe('SELECT 1')),
      ...(redis ? { redis: async () => void (await redis.ping()) } : {}),
    };
    const operations = operationsRoutes({ registry, checks, staticDir });
    app.use(operations.routes());
    const interactions = interactionRoutes({ provider, flows, views, audit });
    app.use(interactions.routes());
    app.use(interactions.allowedMethods());
    for (const router of options.routes ?? []) app.use(router.routes());
    app.use(browserPostAsGet());
    app.use(mount(provider as unknown as Koa));

    const sweeper = setInterval(() => {
      sweepExpiredRecords(db.prisma).catch((error: unknown) => log.warn({ err: error }, 'sweeping expired records failed'));
    }, sweepIntervalMs);
    sweeper.unref();
    cleanup.push(async () => clearInterval(sweeper));

    return {
      config, log, db, redis, audit, accounts, clients, keys, provider, app,
      async close() {
        for (const step of cleanup) await step();
        await audit.flush();
        if (redis) await redis.quit().catch(() => redis.disconnect());
        await db.close();
      },
    };
  } catch (error) {
    if (redis) redis.disconnect();
    await db.close();
    throw error;
  }
}
