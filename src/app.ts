// Composition root: builds every dependency from the configuration and assembles the HTTP app.
// Nothing here listens or touches `process`; src/main.ts does that.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type Router from '@koa/router';
import Koa from 'koa';
import mount from 'koa-mount';
import { PasswordPolicyError, passwordPolicyFromSettings, resolvePasswordPolicy, type PasswordStrength } from './accounts/password-policy.ts';
import { PasswordHasher } from './accounts/passwords.ts';
import { SignInThrottle } from './accounts/throttle.ts';
import { SelfService } from './accounts/self-service.ts';
import { AccountService, parseJson, type PasswordRules } from './accounts/service.ts';
import { AccountTokens } from './accounts/tokens.ts';
import { Mailer } from './email/mailer.ts';
import { emailMessage } from './email/templates.ts';
import { accountClient, accountRoutes } from './interactions/account-routes.ts';
import { providerSessionOps } from './provider/session-ops.ts';
import { SessionService } from './sessions/service.ts';
import { AccountTokenStore } from './store/account-tokens.ts';
import { UserSessionStore } from './store/user-sessions.ts';
import { adminFallback, adminRoutes } from './admin/routes.ts';
import { AfterResponse } from './after-response.ts';
import { AuditLog } from './audit/log.ts';
import { ClientService } from './clients/service.ts';
import { keyPublicationSeconds, keyRetentionSeconds, type Config } from './config.ts';
import { FlowEngine } from './flow/engine.ts';
import { accessLog, browserPostAsGet, closeAfterUnreadBody, errorBoundary, issuerOrigin, jwksCaching, requestId, securityHeaders, urlLimit } from './http/middleware.ts';
import { createRegistry, metricsMiddleware, operationsRoutes } from './http/operations.ts';
import { interactionRoutes } from './interactions/routes.ts';
import { vendorFiles } from './interactions/vendor.ts';
import { staticDir, Views } from './interactions/views.ts';
import { Keyring } from './keys/keyring.ts';
import { KeyLifecycle } from './keys/lifecycle.ts';
import { AwsKmsKeyEncryption } from './keys/aws-kms.ts';
import type { KeyEncryptionProvider } from './keys/key-encryption.ts';
import { LocalMasterKey } from './keys/local-master-key.ts';
import { Pkcs11KeyEncryption } from './keys/pkcs11.ts';
import { loadBackupCodePepper, loadCookieKeys } from './keys/server-secrets.ts';
import { BackupCodes } from './mfa/backup-codes.ts';
import { mfaFlowSeams } from './mfa/flow-steps.ts';
import { requiredByPolicy } from './mfa/policy.ts';
import { OneTimeCodes } from './mfa/one-time-codes.ts';
import { otpSenderFromSettings } from './mfa/otp-senders.ts';
import { MfaService } from './mfa/service.ts';
import { TotpFactors } from './mfa/totp-factors.ts';
import { WebAuthnService } from './mfa/webauthn.ts';
import { BackupCodeStore } from './store/backup-codes.ts';
import { MfaFactorStore } from './store/mfa-factors.ts';
import { TrustedDeviceStore } from './store/trusted-devices.ts';
import { WebAuthnCredentialStore } from './store/webauthn-credentials.ts';
import type { Logger } from './log.ts';
import { adapterFactory } from './provider/adapter.ts';
import { createProvider, type Provider } from './provider/provider.ts';
import { scopeBoundClaims } from './provider/configuration.ts';
import { AccountStore } from './store/accounts.ts';
import { DatabaseAttemptCounters, RedisAttemptCounters } from './store/attempt-counters.ts';
import { AuditEventStore } from './store/audit-events.ts';
import { ClientStore } from './store/clients.ts';
import { openDatabase, type Database } from './store/database.ts';
import { DatabaseExpiringValues, RedisExpiringValues } from './store/expiring-values.ts';
import { sweepExpiredRecords } from './store/oidc-records.ts';
import { rateLimiter } from './store/rate-limits.ts';
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
  selfService: SelfService;
  mfa: MfaService;
  /** Work started after a response (mails); `settled()` waits for it. */
  afterResponse: AfterResponse;
  sessions: SessionService;
  mailer: Mailer;
  clients: ClientService;
  keys: SigningKeyStore;
  keyLifecycle: KeyLifecycle;
  /** The current oidc-provider instance (rebuilt when the signing keys change). */
  readonly provider: Provider;
  /** Runs the key step now: lifecycle tick, then reload keys if they changed. */
  refreshKeys(): Promise<void>;
  app: Koa;
  close(): Promise<void>;
}

const sweepIntervalMs = 60_000;

export interface IdpOptions {
  /** Extra routes mounted in front of the provider (the demo relying party). */
  routes?: Router[];
}

type CustodyProvider = KeyEncryptionProvider & { check?(): Promise<void>; close?(): void };

export function keyEncryptionProvider(config: Config): CustodyProvider {
  if (config.KMS_PROVIDER === 'pkcs11') {
    return new Pkcs11KeyEncryption({
      library: config.PKCS11_LIBRARY!,
      ...(config.PKCS11_SLOT !== undefined ? { slot: config.PKCS11_SLOT } : { tokenLabel: config.PKCS11_TOKEN_LABEL! }),
      pin: readFileSync(config.PKCS11_PIN_FILE!, 'utf8').trim(),
      keyLabel: config.PKCS11_KEY_LABEL!,
    });
  }
  if (config.KMS_PROVIDER === 'aws') {
    return new AwsKmsKeyEncryption({ keyId: config.AWS_KMS_KEY_ID!, region: config.AWS_REGION!, ...(config.AWS_KMS_ENDPOINT ? { endpoint: config.AWS_KMS_ENDPOINT } : {}) });
  }
  return LocalMasterKey.load(config.MASTER_KEY_FILE, { create: true });
}

export async function createIdp(config: Config, log: Logger, options: IdpOptions = {}): Promise<Idp> {
  const kms = keyEncryptionProvider(config);
  const db = await openDatabase(config.DATABASE_URL);
  const redis = config.REDIS_URL ? openRedis(config.REDIS_URL, config.REDIS_KEY_PREFIX) : undefined;
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
    const backupCodePepper = await loadBackupCodePepper(secrets, kms);

    const hasher = new PasswordHasher({ memoryCost: config.ARGON2_MEMORY_KIB, timeCost: config.ARGON2_TIME_COST, parallelism: config.ARGON2_PARALLELISM });
    const shortLived = redis ? new RedisExpiringValues(redis) : new DatabaseExpiringValues(db.prisma);
    const counters = redis ? new RedisAttemptCounters(redis) : new DatabaseAttemptCounters(db);
    const accounts = new AccountService(new AccountStore(db.prisma), hasher, {
      rulesFor: passwordRulesFromSettings(config),
      lockout: {
        policy: {
          threshold: config.LOCKOUT_THRESHOLD, windowSeconds: config.LOCKOUT_WINDOW_SECONDS, durationSeconds: config.LOCKOUT_DURATION_SECONDS,
          permanentAfter: config.LOCKOUT_PERMANENT_AFTER, permanentWindowSeconds: config.LOCKOUT_PERMANENT_WINDOW_SECONDS,
        },
        counters,
      },
      approvalUserTypes: config.APPROVAL_USER_TYPES,
    });
    const afterResponse = new AfterResponse();
    const mailer = new Mailer({ transportUrl: config.SMTP_URL, from: config.SMTP_FROM, log });
    cleanup.push(() => mailer.close());
    // The provider validates client metadata, and needs the client registry to load clients.
    let provider: Provider | undefined;
    const clients = new ClientService(new ClientStore(db.prisma), async (metadata) => provider!.Client.validate(metadata as never), {
      cacheSeconds: config.CLIENT_CACHE_SECONDS,
      builtIn: [accountClient(config.ISSUER)],
    });
    const trustedDevices = new TrustedDeviceStore(db.prisma);
    const sessions = new SessionService({
      store: new UserSessionStore(db.prisma),
      audit,
      log,
      policy: { idleSeconds: config.SESSION_IDLE_TIMEOUT, absoluteSeconds: config.SESSION_TTL, maxConcurrent: config.MAX_CONCURRENT_SESSIONS },
      ops: () => providerSessionOps(provider!, db.prisma),
      // Remembered devices end with every session: after a reset or "sign out everywhere" each
      // browser proves its second factor again.
      onRevokeAll: (accountId) => trustedDevices.forgetAll(accountId),
    });
    const selfService = new SelfService({
      accounts, sessions, audit, log, afterResponse, mail: mailer, message: emailMessage,
      tokens: new AccountTokens(new AccountTokenStore(db.prisma)),
      settings: {
        issuer: config.ISSUER,
        registrationUserType: config.REGISTRATION_USER_TYPE,
        verificationTtlSeconds: config.EMAIL_VERIFICATION_TTL,
        invitationTtlSeconds: config.INVITATION_TTL,
        resetTtlSeconds: config.PASSWORD_RESET_TTL,
        mailsPerHour: 3,
      },
    });
    const issuerUrl = new URL(config.ISSUER);
    const mfa = new MfaService({
      factors: new MfaFactorStore(db.prisma),
      // The name authenticator apps show; no colon allowed (an IPv6 host has some).
      totp: new TotpFactors(new MfaFactorStore(db.prisma), kms, issuerUrl.hostname.replace(/[:[\]]/g, '')),
      backupCodes: new BackupCodes(new BackupCodeStore(db), backupCodePepper),
      webauthn: new WebAuthnService({
        rpId: issuerUrl.hostname, rpName: issuerUrl.hostname, origin: issuerUrl.origin,
        userVerification: config.WEBAUTHN_USER_VERIFICATION, failOnCounterRegression: config.WEBAUTHN_FAIL_ON_COUNTER_REGRESSION,
        challenges: shortLived, store: new WebAuthnCredentialStore(db.prisma), audit: (event) => audit.record(event),
      }),
      codes: new OneTimeCodes(shortLived, counters),
      pending: shortLived,
      mail: mailer,
      message: emailMessage,
      sms: otpSenderFromSettings(config.SMS_PROVIDER === 'none' ? { provider: 'none' } : {
        provider: config.SMS_PROVIDER, channel: config.SMS_CHANNEL, from: config.SMS_FROM!,
        ...(config.SMS_API_BASE_URL ? { baseUrl: config.SMS_API_BASE_URL } : {}),
        accountSid: config.TWILIO_ACCOUNT_SID ?? '', authToken: config.TWILIO_AUTH_TOKEN ?? '', apiKey: config.VONAGE_API_KEY ?? '', apiSecret: config.VONAGE_API_SECRET ?? '',
      } as never),
      counters,
      lockout: { threshold: config.LOCKOUT_THRESHOLD, windowSeconds: config.LOCKOUT_WINDOW_SECONDS, durationSeconds: config.LOCKOUT_DURATION_SECONDS },
      trustedDevices,
      audit,
      rememberDays: config.MFA_REMEMBER_DEVICE_DAYS,
      smsPrefixes: config.SMS_ALLOWED_PREFIXES,
      smsDailyLimit: config.SMS_DAILY_LIMIT,
      log,
      afterResponse,
    });
    const mfaPolicy = {
      requiredForAll: config.MFA_REQUIRED, userTypes: config.MFA_REQUIRED_USER_TYPES, roles: config.MFA_REQUIRED_ROLES, clients: config.MFA_REQUIRED_CLIENTS,
      acrMethods: config.ACR_METHODS,
    };
    const views = new Views();
    const adapter = adapterFactory({ prisma: db.prisma, redis, clients, sessions }) as never;
    // oidc-provider takes its keys at construction, so a key change builds a new instance; the
    // app always routes to the current one (requests in flight finish on the old one).
    let keyFingerprint = await keyring.fingerprint();
    const buildProvider = async () => createProvider({ config, accounts, sessions, registeredAt: (clientId) => clients.registeredAt(clientId), views, audit, log, jwks: await keyring.privateJwks(), cookieKeys, adapter });
    provider = await buildProvider();
    let mounted = mount(provider as unknown as Koa);
    let lastKeyRefresh = Date.now();
    let lastUnwrap = Date.now();
    let refreshing: Promise<void> | undefined;
    const refreshKeys = () => (refreshing ??= (async () => {
      // A refresh that started before a key was written has not seen it: the start time counts.
      const started = Date.now();
      try {
        // A KMS that stopped answering fails the refresh: the keys in memory keep signing, and
        // readiness fails once the refresh has failed for three intervals.
        await kms.check?.();
        await keyLifecycle.tick();
        const fingerprint = await keyring.fingerprint();
        // Keys are unwrapped again when they change and when the cache TTL ends, so that revoking
        // the KMS key (or the HSM session) takes effect on running nodes too.
        if (fingerprint !== keyFingerprint || Date.now() - lastUnwrap > config.KEY_CACHE_TTL_SECONDS * 1000) {
          provider = await buildProvider();
          mounted = mount(provider as unknown as Koa);
          keyFingerprint = fingerprint;
          lastUnwrap = Date.now();
          log.info({ keys: fingerprint }, 'signing keys loaded');
        }
        lastKeyRefresh = started;
      } finally {
        refreshing = undefined;
      }
    })());

    const flows = new FlowEngine({
      store: shortLived,
      audit,
      async checkPassword(email, password) {
        const result = await accounts.authenticate(email, password);
        if (result.ok) return { ok: true, accountId: result.account.id, passwordExpired: result.passwordExpired };
        // The right password for an address not verified yet: a fresh link goes out (rate-limited).
        if (result.reason === 'unverified' && result.accountId) await selfService.resendVerification(result.accountId, {});
        return { ok: false, reason: result.reason, ...(result.accountId ? { accountId: result.accountId } : {}) };
      },
      async changePassword(accountId, password) {
        try {
          await selfService.changeExpiredPassword(accountId, password, { actor: accountId });
          return { ok: true };
        } catch (error) {
          if (error instanceof PasswordPolicyError) return { ok: false, problems: [...error.problems] };
          throw error;
        }
      },
      // Risk signals arrive with their issue; until then the risk stage allows every sign-in.
      assessRisk: async () => ({ verdict: 'allow' }),
      ...mfaFlowSeams({ mfa, accounts, policy: mfaPolicy, emailCodeSignIn: config.EMAIL_CODE_SIGNIN, passkeySignIn: config.PASSKEY_SIGNIN }),
      randomToken: () => randomBytes(32).toString('base64url'),
      maxAttempts: config.MAX_LOGIN_ATTEMPTS_PER_INTERACTION,
      ttlSeconds: config.INTERACTION_TTL,
    });

    const registry = config.METRICS_ENABLED ? createRegistry() : undefined;
    // proxy is always on: issuerOrigin() below sets the forwarded headers Koa then reads.
    const app = new Koa({ proxy: true, maxIpsCount: 1 });
    app.silent = true;
    app.keys = cookieKeys;
    const idp: Idp = {
      config, log, db, redis, audit, accounts, selfService, mfa, afterResponse, sessions, mailer, clients, keys, keyLifecycle, app, refreshKeys,
      get provider() {
        return provider!;
      },
      async close() {
        await afterResponse.settled();
        for (const step of cleanup) await step();
        await audit.flush();
        if (redis) await redis.quit().catch(() => redis.disconnect());
        await db.close();
      },
    };
    app.use(closeAfterUnreadBody());
    app.use(issuerOrigin(config.ISSUER, config.TRUST_PROXY));
    app.use(requestId());
    app.use(accessLog(log));
    if (registry) app.use(metricsMiddleware(registry));
    app.use(securityHeaders({ https: config.ISSUER.startsWith('https:') }));
    app.use(urlLimit());
    app.use(errorBoundary(log));
    const keyStaleMs = 3 * config.KEY_REFRESH_SECONDS * 1000;
    const checks = {
      database: async () => void (await db.prisma.$queryRawUnsafe('SELECT 1')),
      // Keys in memory keep signing through a short database or KMS outage; past three missed
      // refreshes this node may be behind a rotation, so it stops taking traffic.
      keys: async () => {
        if (Date.now() - lastKeyRefresh > keyStaleMs) throw new Error(`signing keys not refreshed for ${Math.round((Date.now() - lastKeyRefresh) / 1000)} s`);
      },
      ...(redis ? { redis: async () => void (await redis.ping()) } : {}),
    };
    const operations = operationsRoutes({ registry, checks, staticDir, vendorFiles });
    app.use(operations.routes());
    const throttle = new SignInThrottle(
      rateLimiter({ db, redis, keyPrefix: 'signin-ip', points: config.SIGNIN_IP_FAILURES, durationSeconds: config.SIGNIN_THROTTLE_WINDOW_SECONDS }),
      rateLimiter({ db, redis, keyPrefix: 'signin-ip-account', points: config.SIGNIN_IP_ACCOUNT_FAILURES, durationSeconds: config.SIGNIN_THROTTLE_WINDOW_SECONDS }),
    );
    const interactions = interactionRoutes({ provider: () => provider!, flows, views, audit, throttle, accounts, mfa,
      registrationEnabled: config.REGISTRATION_ENABLED, scopeBoundClaims: scopeBoundClaims(config), passkeySignIn: config.PASSKEY_SIGNIN, emailCodeSignIn: config.EMAIL_CODE_SIGNIN,
    });
    // Each router only sees its own paths: the token endpoint, the hot path, skips their matching.
    for (const middleware of under('/interaction/', interactions.routes(), interactions.allowedMethods())) app.use(middleware);
    const accountPages = accountRoutes({
      provider: () => provider!, views, selfService, accounts, sessions, audit,
      issuer: config.ISSUER,
      registrationEnabled: config.REGISTRATION_ENABLED,
      secret: cookieKeys[0]!,
      anonymousLimiter: rateLimiter({ db, redis, keyPrefix: 'account-forms-ip', points: 20, durationSeconds: 3600 }),
      mfa: {
        mfa,
        requiredFor: (account) => requiredByPolicy(mfaPolicy, { userType: account.userType, roles: parseJson<string[]>(account.roles, []), clientId: undefined }),
        recentSeconds: 600,
        store: shortLived,
      },
    });
    for (const middleware of under('/account', accountPages.routes(), accountPages.allowedMethods())) app.use(middleware);
    const admin = adminRoutes(idp);
    for (const middleware of under('/admin/', adminFallback, admin.routes(), admin.allowedMethods())) app.use(middleware);
    for (const router of options.routes ?? []) app.use(router.routes());
    app.use(browserPostAsGet());
    app.use(jwksCaching('/jwks', config.KEY_PREPUBLICATION_SECONDS));
    app.use((ctx, next) => mounted(ctx, next));

    const sweeper = setInterval(() => {
      Promise.all([sweepExpiredRecords(db.prisma), new UserSessionStore(db.prisma).sweep()]).catch((error: unknown) => log.warn({ err: error }, 'sweeping expired records failed'));
    }, sweepIntervalMs);
    sweeper.unref();
    cleanup.push(async () => clearInterval(sweeper));
    const keyTimer = setInterval(() => {
      refreshKeys().catch((error: unknown) => log.error({ err: error }, 'signing key refresh failed'));
    }, config.KEY_REFRESH_SECONDS * 1000);
    keyTimer.unref();
    cleanup.push(async () => {
      clearInterval(keyTimer);
      await refreshing?.catch(() => undefined);
      kms.close?.();
    });

    return idp;
  } catch (error) {
    if (redis) redis.disconnect();
    await db.close();
    throw error;
  }
}

/** The middleware, each run for paths under `prefix` only. */
function under(prefix: string, ...middleware: unknown[]): Koa.Middleware[] {
  return middleware.map((run) => (ctx, next) => (ctx.path.startsWith(prefix) ? (run as Koa.Middleware)(ctx, next) : next()));
}

/** The password rules of a user type: the global settings, overridden per type where configured. */
export function passwordRulesFromSettings(config: Config): (userType: string) => PasswordRules {
  const global: PasswordRules = { policy: passwordPolicyFromSettings(config), historySize: config.PASSWORD_HISTORY_SIZE, maxAgeDays: config.PASSWORD_MAX_AGE_DAYS };
  const byType = new Map(Object.entries(config.PASSWORD_POLICY_BY_USER_TYPE).map(([type, o]) => {
    const { historySize = global.historySize, maxAgeDays = global.maxAgeDays, minStrength, ...policy } = o;
    const overrides = Object.fromEntries(Object.entries(policy).filter(([, v]) => v !== undefined));
    return [type, { policy: resolvePasswordPolicy({ ...global.policy, ...overrides, ...(minStrength !== undefined ? { minStrength: minStrength as PasswordStrength } : {}) }), historySize, maxAgeDays }];
  }));
  return (userType) => byType.get(userType) ?? global;
}
