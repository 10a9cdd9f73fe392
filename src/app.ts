// Composition root: builds every dependency from the configuration and assembles the HTTP app.
// Wiring only; nothing here listens or touches `process` (src/main.ts does that).
import type Router from '@koa/router';
import Koa from 'koa';
import type { AccountService } from './accounts/service.ts';
import type { SelfService } from './accounts/self-service.ts';
import { adminFallback, adminRoutes } from './admin/routes.ts';
import { buildServices } from './app/services.ts';
import { signInEngine } from './app/sign-in.ts';
import type { AfterResponse } from './after-response.ts';
import { AuditLog } from './audit/log.ts';
import type { ClientService } from './clients/service.ts';
import type { FederatedAccounts } from './federation/accounts.ts';
import type { ConnectionService } from './federation/connections.ts';
import type { DirectoryReview } from './federation/directory-review.ts';
import { systemClock, type Clock } from './clock.ts';
import { scopeBoundClaims } from './consent/claims.ts';
import { ConsentService } from './consent/service.ts';
import { keyPublicationSeconds, keyRetentionSeconds, type Config } from './config.ts';
import type { Mailer } from './email/mailer.ts';
import type { SignInMethod } from './flow/methods/types.ts';
import { accessLog, browserPostAsGet, closeAfterUnreadBody, errorBoundary, issuerOrigin, jwksCaching, requestId, securityHeaders, urlLimit } from './http/middleware.ts';
import { cachedResponses } from './http/cached-responses.ts';
import { createRegistry, directoryHealth, metricsMiddleware, operationsRoutes } from './http/operations.ts';
import { accountClient, accountRoutes } from './interactions/account-routes.ts';
import { callbackRoutes, interactionRoutes } from './interactions/routes.ts';
import { continueLogoutUpstream, upstreamLogoutRoutes } from './interactions/upstream-logout-routes.ts';
import { vendorFiles } from './interactions/vendor.ts';
import { staticDir, Views } from './http/views.ts';
import { keyEncryptionProvider } from './keys/custody.ts';
import { Keyring } from './keys/keyring.ts';
import { KeyLifecycle } from './keys/lifecycle.ts';
import { loadBackupCodePepper, loadCookieKeys } from './keys/server-secrets.ts';
import type { Logger } from './log.ts';
import { requiredByPolicy } from './mfa/policy.ts';
import type { MfaService } from './mfa/service.ts';
import { adapterFactory } from './provider/adapter.ts';
import { ProviderHost } from './provider/host.ts';
import { createProvider, type Provider } from './provider/provider.ts';
import { providerSessionOps } from './provider/session-ops.ts';
import type { SessionService } from './sessions/service.ts';
import { AuditEventStore } from './store/audit-events.ts';
import { ConsentStore } from './store/consents.ts';
import { openDatabase, type Database } from './store/database.ts';
import { sweepExpiredRecords } from './store/oidc-records.ts';
import { rateLimiter } from './store/rate-limits.ts';
import type { Redis } from './store/redis.ts';
import { ServerSecretStore } from './store/server-secrets.ts';
import { SigningKeyStore } from './store/signing-keys.ts';
import { UserSessionStore } from './store/user-sessions.ts';

export { keyEncryptionProvider };

export interface Idp {
  config: Config;
  log: Logger;
  db: Database;
  redis: Redis | undefined;
  audit: AuditLog;
  accounts: AccountService;
  selfService: SelfService;
  mfa: MfaService;
  /** Work started after a response (mails); `settled()` waits for it. */
  afterResponse: AfterResponse;
  sessions: SessionService;
  mailer: Mailer;
  clients: ClientService;
  /** Upstream identity provider connections. */
  connections: ConnectionService;
  /** Accounts' linked upstream identities. */
  federatedAccounts: FederatedAccounts;
  /** Ends the sessions of users gone from their LDAP directory (runs every DIRECTORY_REVIEW_SECONDS). */
  directoryReview: DirectoryReview;
  keys: SigningKeyStore;
  keyLifecycle: KeyLifecycle;
  /** The current oidc-provider instance (rebuilt when the signing keys change). */
  readonly provider: Provider;
  /** Runs the key step now: lifecycle tick, then reload keys if they changed. */
  refreshKeys(): Promise<void>;
  app: Koa;
  /** From now on /readyz fails: the node is about to stop (load balancers route elsewhere). */
  drain(): void;
  close(): Promise<void>;
}

const sweepIntervalMs = 60_000;

export interface IdpOptions {
  /** Extra routes mounted in front of the provider (the demo relying party). */
  routes?: Router[];
  /** Sign-in methods beyond the built-in ones (upstream providers). */
  methods?: SignInMethod[];
  /** Metrics of all workers (`idp serve --workers`), gathered by the primary process. */
  metrics?: () => Promise<string>;
  /** The time our own rules read (sign-in flows, lockouts, counters, TOTP, consent); tests move it. */
  clock?: Clock;
}

export async function createIdp(config: Config, log: Logger, options: IdpOptions = {}): Promise<Idp> {
  const clock = options.clock ?? systemClock;
  const kms = keyEncryptionProvider(config);
  const db = await openDatabase(config.DATABASE_URL);
  // ioredis only when Redis is configured (it is a large package to hold for nothing).
  const redis = config.REDIS_URL ? (await import('./store/redis.ts')).openRedis(config.REDIS_URL, config.REDIS_KEY_PREFIX) : undefined;
  const cleanup: (() => Promise<unknown>)[] = [];
  try {
    const audit = new AuditLog(new AuditEventStore(db));
    const keys = new SigningKeyStore(db);
    const keyring = new Keyring(keys, kms, audit);
    const keyLifecycle = new KeyLifecycle(keys, keyring, audit, {
      algs: config.KEY_ALGORITHMS,
      prepublicationSeconds: config.KEY_PREPUBLICATION_SECONDS,
      nodePublicationSeconds: keyPublicationSeconds(config),
      retentionSeconds: keyRetentionSeconds(config),
      intervalSeconds: Math.round(config.KEY_ROTATION_INTERVAL_DAYS * 86400),
    });
    for (const alg of config.KEY_ALGORITHMS) await keyring.ensureActiveKey(alg);
    await keyLifecycle.tick();
    const secrets = new ServerSecretStore(db.prisma);
    const cookieKeys = await loadCookieKeys(secrets, kms);

    // The provider validates client metadata and ends sessions; it is built after the services.
    let host: ProviderHost | undefined;
    const provider = () => host!.provider;
    const services = buildServices({
      config, log, db, redis, kms, audit, clock,
      backupCodePepper: await loadBackupCodePepper(secrets, kms),
      builtInClients: [accountClient(config.ISSUER)],
      validateClient: async (metadata) => provider().Client.validate(metadata as never),
      sessionOps: () => providerSessionOps(provider(), db.prisma),
    });
    const { accounts, selfService, sessions, clients, mfa, mailer, afterResponse } = services;
    for (const connection of await services.connections.listAll()) {
      if (connection.kind === 'ldap' && connection.settings.insecurePlain) log.warn({ connection: connection.id }, 'directory connection allows plain LDAP without StartTLS: its passwords cross the network in clear');
    }
    cleanup.push(() => mailer.close());

    const consents = new ConsentService({ store: new ConsentStore(db.prisma), audit, clock, ttlSeconds: config.GRANT_TTL });
    const views = new Views();
    const adapter = adapterFactory({ prisma: db.prisma, redis, clients, sessions }) as never;
    host = await ProviderHost.start({
      build: (jwks) => createProvider({ config, accounts, sessions, consents, registeredAt: (clientId) => clients.registeredAt(clientId), views, audit, log, jwks, cookieKeys, adapter }),
      keyring, lifecycle: keyLifecycle, kms, log,
      refreshSeconds: config.KEY_REFRESH_SECONDS,
      keyCacheTtlSeconds: config.KEY_CACHE_TTL_SECONDS,
    });
    cleanup.push(async () => {
      await host!.close();
      kms.close?.();
    });

    const flows = signInEngine({
      accounts, selfService, mfa, throttle: services.throttle, audit, store: services.shortLived, clock, policy: services.mfaPolicy,
      emailCodeSignIn: config.EMAIL_CODE_SIGNIN, passkeySignIn: config.PASSKEY_SIGNIN, federation: services.federation, directories: services.directorySignIn,
      maxAttempts: config.MAX_LOGIN_ATTEMPTS_PER_INTERACTION, ttlSeconds: config.INTERACTION_TTL,
      ...(options.methods ? { extraMethods: options.methods } : {}),
    });

    // proxy is always on: issuerOrigin() below sets the forwarded headers Koa then reads.
    const app = new Koa({ proxy: true, maxIpsCount: 1 });
    app.silent = true;
    app.keys = cookieKeys;
    let draining = false;
    const idp: Idp = {
      config, log, db, redis, audit, accounts, selfService, mfa, afterResponse, sessions, mailer, clients, keys, keyLifecycle, app,
      connections: services.connections, federatedAccounts: services.federatedAccounts, directoryReview: services.directoryReview,
      refreshKeys: () => host!.refresh(),
      drain: () => void (draining = true),
      get provider() {
        return provider();
      },
      async close() {
        await afterResponse.settled();
        for (const step of cleanup) await step();
        await audit.flush();
        if (redis) await redis.quit().catch(() => redis.disconnect());
        await db.close();
      },
    };

    const registry = config.METRICS_ENABLED ? createRegistry() : undefined;
    // A directory that is down fails no readiness check (other sign-ins work): it shows here.
    if (registry) services.directory.observe(directoryHealth(registry));
    app.use(cachedResponses(['/jwks', '/.well-known/openid-configuration'], () => host!.provider));
    app.use(closeAfterUnreadBody());
    app.use(issuerOrigin(config.ISSUER, config.TRUST_PROXY));
    app.use(requestId());
    app.use(accessLog(log));
    if (registry) app.use(metricsMiddleware(registry));
    app.use(securityHeaders({ https: config.ISSUER.startsWith('https:') }));
    app.use(urlLimit());
    app.use(errorBoundary(log));
    const checks = {
      database: async () => void (await db.prisma.$queryRawUnsafe('SELECT 1')),
      keys: () => host!.checkFresh(),
      ...(redis ? { redis: async () => void (await redis.ping()) } : {}),
    };
    app.use(operationsRoutes({ registry, metrics: options.metrics, checks, draining: () => draining, staticDir, vendorFiles }).routes());
    const methods = flows.methods;
    const callbacks = callbackRoutes({ flows, views, audit, refusals: rateLimiter({ db, redis, keyPrefix: 'callback-refusals-ip', points: 30, durationSeconds: 600 }) });
    const interactions = interactionRoutes({ provider, flows, methods, views, audit, accounts, mfa, consents, registrationEnabled: config.REGISTRATION_ENABLED, scopeBoundClaims: scopeBoundClaims(config) });
    // Each router only sees its own paths: the token endpoint, the hot path, skips their matching.
    const logoutDeps = { provider, views, logout: services.upstreamLogout };
    for (const middleware of under('/interaction/', upstreamLogoutRoutes(logoutDeps).routes(), callbacks.routes(), interactions.routes(), interactions.allowedMethods())) app.use(middleware);
    const accountPages = accountRoutes({
      provider, views, selfService, accounts, sessions, audit, consents,
      issuer: config.ISSUER,
      registrationEnabled: config.REGISTRATION_ENABLED,
      secret: cookieKeys[0]!,
      anonymousLimiter: rateLimiter({ db, redis, keyPrefix: 'account-forms-ip', points: 20, durationSeconds: 3600 }),
      links: {
        async list(accountId) {
          const [links, connections] = await Promise.all([services.federatedAccounts.linksOf(accountId), services.connections.list()]);
          return links.map((link) => ({ id: link.id, connection: connections.find((c) => c.id === link.connectionId)?.displayName ?? link.connectionId, email: link.email, createdAt: link.createdAt }));
        },
        otherWays: (accountId, id) => services.federatedAccounts.otherWays(accountId, id),
        unlink: (accountId, id, context) => services.federatedAccounts.unlink(accountId, id, context),
      },
      mfa: {
        mfa,
        requiredFor: (account) => requiredByPolicy(services.mfaPolicy, { userType: account.userType, roles: account.roles, clientId: undefined }),
        recentSeconds: 600,
        store: services.shortLived,
      },
    });
    for (const middleware of under('/account', accountPages.routes(), accountPages.allowedMethods())) app.use(middleware);
    const admin = adminRoutes(idp);
    for (const middleware of under('/admin/', adminFallback, admin.routes(), admin.allowedMethods())) app.use(middleware);
    for (const router of options.routes ?? []) app.use(router.routes());
    app.use(browserPostAsGet());
    app.use(continueLogoutUpstream(logoutDeps));
    app.use(jwksCaching('/jwks', config.KEY_PREPUBLICATION_SECONDS));
    app.use(host.middleware);

    const sweeper = setInterval(() => {
      Promise.all([sweepExpiredRecords(db.prisma), new UserSessionStore(db.prisma).sweep()]).catch((error: unknown) => log.warn({ err: error }, 'sweeping expired records failed'));
    }, sweepIntervalMs);
    sweeper.unref();
    cleanup.push(async () => clearInterval(sweeper));
    if (config.DIRECTORY_REVIEW_SECONDS > 0) {
      const review = setInterval(() => {
        services.directoryReview.tick().catch((error: unknown) => log.warn({ err: error }, 'the directory review failed'));
      }, config.DIRECTORY_REVIEW_SECONDS * 1000);
      review.unref();
      cleanup.push(async () => clearInterval(review));
    }
    return idp;
  } catch (error) {
    for (const step of cleanup) await step().catch(() => undefined);
    if (redis) redis.disconnect();
    await db.close();
    throw error;
  }
}

/** The middleware, each run for paths under `prefix` only. */
function under(prefix: string, ...middleware: unknown[]): Koa.Middleware[] {
  return middleware.map((run) => (ctx, next) => (ctx.path.startsWith(prefix) ? (run as Koa.Middleware)(ctx, next) : next()));
}
