// Builds the domain services from the configuration over the stores: accounts and self-service,
// sessions, clients, MFA, mail. No HTTP here; the provider is reached through a late-bound
// reference (clients are validated by its schema, sessions end through it).
import type { Clock } from '../clock.ts';
import { passwordPolicyFromSettings, resolvePasswordPolicy, type PasswordStrength } from '../accounts/password-policy.ts';
import { PasswordHasher } from '../accounts/passwords.ts';
import { SelfService } from '../accounts/self-service.ts';
import { AccountService, type PasswordRules } from '../accounts/service.ts';
import { SignInThrottle } from '../accounts/throttle.ts';
import { AccountTokens } from '../accounts/tokens.ts';
import { AfterResponse } from '../after-response.ts';
import type { AuditLog } from '../audit/log.ts';
import type { ClientMetadata } from '../clients/service.ts';
import { ClientService } from '../clients/service.ts';
import type { Config } from '../config.ts';
import { Mailer } from '../email/mailer.ts';
import { emailMessage } from '../email/templates.ts';
import type { CustodyProvider } from '../keys/custody.ts';
import type { Logger } from '../log.ts';
import { BackupCodes } from '../mfa/backup-codes.ts';
import { OneTimeCodes } from '../mfa/one-time-codes.ts';
import { otpSenderFromSettings } from '../mfa/otp-senders.ts';
import type { MfaPolicySettings } from '../mfa/policy.ts';
import { MfaService } from '../mfa/service.ts';
import { TotpFactors } from '../mfa/totp-factors.ts';
import { WebAuthnService } from '../mfa/webauthn.ts';
import { FederatedAccounts } from '../federation/accounts.ts';
import { ConnectionService } from '../federation/connections.ts';
import { OidcUpstream } from '../federation/oidc-upstream.ts';
import { FederatedSignIn } from '../federation/sign-in.ts';
import { UpstreamLogout } from '../federation/logout.ts';
import { LdapDirectory } from '../federation/directory.ts';
import { DirectorySignIn } from '../federation/directory-sign-in.ts';
import { DirectoryReview } from '../federation/directory-review.ts';
import { ConnectionStore } from '../store/connections.ts';
import { UpstreamIdentityStore } from '../store/upstream-identities.ts';
import { SessionService, type ProviderSessionOps } from '../sessions/service.ts';
import { AccountTokenStore } from '../store/account-tokens.ts';
import { AccountStore } from '../store/accounts.ts';
import { DatabaseAttemptCounters, RedisAttemptCounters } from '../store/attempt-counters.ts';
import { BackupCodeStore } from '../store/backup-codes.ts';
import { ClientStore } from '../store/clients.ts';
import type { Database } from '../store/database.ts';
import { DatabaseExpiringValues, RedisExpiringValues, type ExpiringValues } from '../store/expiring-values.ts';
import { MfaFactorStore } from '../store/mfa-factors.ts';
import { rateLimiter } from '../store/rate-limits.ts';
import type { Redis } from '../store/redis.ts';
import { TrustedDeviceStore } from '../store/trusted-devices.ts';
import { UserSessionStore } from '../store/user-sessions.ts';
import { WebAuthnCredentialStore } from '../store/webauthn-credentials.ts';

export interface Services {
  accounts: AccountService;
  selfService: SelfService;
  sessions: SessionService;
  clients: ClientService;
  mfa: MfaService;
  mfaPolicy: MfaPolicySettings;
  mailer: Mailer;
  throttle: SignInThrottle;
  /** Short-lived values (flows, challenges, codes): Redis when configured, else the database. */
  shortLived: ExpiringValues;
  afterResponse: AfterResponse;
  /** Upstream identity provider connections (operators) and federated sign-in (the sign-in chain). */
  connections: ConnectionService;
  federatedAccounts: FederatedAccounts;
  federation: FederatedSignIn;
  upstreamLogout: UpstreamLogout;
  directorySignIn: DirectorySignIn;
  directoryReview: DirectoryReview;
  directory: LdapDirectory;
}

export interface ServiceInputs {
  config: Config;
  log: Logger;
  /** Time for lockout windows, counters, TOTP steps and password ages (tests move it). */
  clock: Clock;
  db: Database;
  redis: Redis | undefined;
  kms: CustodyProvider;
  audit: AuditLog;
  backupCodePepper: Buffer;
  /** Clients the IdP itself uses (the account page). */
  builtInClients: ClientMetadata[];
  /** oidc-provider's client metadata schema. */
  validateClient(metadata: Record<string, unknown>): Promise<void>;
  /** What ending a session means to oidc-provider. */
  sessionOps(): ProviderSessionOps;
}

export function buildServices(inputs: ServiceInputs): Services {
  const { config, log, db, redis, kms, audit } = inputs;
  const hasher = new PasswordHasher({ memoryCost: config.ARGON2_MEMORY_KIB, timeCost: config.ARGON2_TIME_COST, parallelism: config.ARGON2_PARALLELISM });
  const shortLived = redis ? new RedisExpiringValues(redis) : new DatabaseExpiringValues(db.prisma);
  const counters = redis ? new RedisAttemptCounters(redis, inputs.clock) : new DatabaseAttemptCounters(db, inputs.clock);
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
    clock: inputs.clock,
  });
  const afterResponse = new AfterResponse();
  const mailer = new Mailer({ transportUrl: config.SMTP_URL, from: config.SMTP_FROM, log });
  const clients = new ClientService(new ClientStore(db.prisma), inputs.validateClient, { cacheSeconds: config.CLIENT_CACHE_SECONDS, builtIn: inputs.builtInClients });
  const trustedDevices = new TrustedDeviceStore(db.prisma);
  const sessions = new SessionService({
    store: new UserSessionStore(db.prisma),
    audit,
    log,
    policy: { idleSeconds: config.SESSION_IDLE_TIMEOUT, absoluteSeconds: config.SESSION_TTL, maxConcurrent: config.MAX_CONCURRENT_SESSIONS },
    ops: inputs.sessionOps,
    // Remembered devices end with every session: after a reset or "sign out everywhere" each
    // browser proves its second factor again.
    onRevokeAll: (accountId) => trustedDevices.forgetAll(accountId),
  });
  const selfService = new SelfService({
    accounts, sessions, audit, log, afterResponse, counters, mail: mailer, message: emailMessage,
    // Bound late: the federation services are built below, and only called at run time.
    mailboxProven: (accountId) => federatedAccounts.mailboxProven(accountId),
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
    totp: new TotpFactors(new MfaFactorStore(db.prisma), kms, issuerUrl.hostname.replace(/[:[\]]/g, ''), inputs.clock),
    backupCodes: new BackupCodes(new BackupCodeStore(db), inputs.backupCodePepper),
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
    // Email codes go to the account's own address: enrolling them proves it.
    async addressProven(accountId, address) {
      const account = await accounts.findById(accountId);
      if (account && !account.emailVerified && account.email === address) await accounts.markEmailVerified(accountId);
    },
  });
  const throttle = new SignInThrottle(
    rateLimiter({ db, redis, keyPrefix: 'signin-ip', points: config.SIGNIN_IP_FAILURES, durationSeconds: config.SIGNIN_THROTTLE_WINDOW_SECONDS }),
    rateLimiter({ db, redis, keyPrefix: 'signin-ip-account', points: config.SIGNIN_IP_ACCOUNT_FAILURES, durationSeconds: config.SIGNIN_THROTTLE_WINDOW_SECONDS }),
  );
  const mfaPolicy: MfaPolicySettings = {
    requiredForAll: config.MFA_REQUIRED, userTypes: config.MFA_REQUIRED_USER_TYPES, roles: config.MFA_REQUIRED_ROLES, clients: config.MFA_REQUIRED_CLIENTS,
    acrMethods: config.ACR_METHODS,
  };
  const upstream = new OidcUpstream({ allowHttp: config.FEDERATION_ALLOW_HTTP, timeoutMs: config.FEDERATION_TIMEOUT_SECONDS * 1000, allowPrivate: config.FETCH_ALLOW_PRIVATE_ADDRESSES });
  const identities = new UpstreamIdentityStore(db);
  const directory = new LdapDirectory();
  const connections = new ConnectionService({ store: new ConnectionStore(db), identities, kms, audit, upstream, directory, allowHttp: config.FEDERATION_ALLOW_HTTP,
    // Users who only sign in upstream manage their account (sessions, links, factors) too.
    offeredToAll: inputs.builtInClients.map((c) => c.client_id), cacheSeconds: config.CONNECTION_CACHE_SECONDS });
  const federatedAccounts = new FederatedAccounts({
    accounts, identities, audit, clock: inputs.clock,
    async otherFirstFactors(accountId) {
      if (config.PASSKEY_SIGNIN && (await mfa.webauthn.listCredentials(accountId)).length > 0) return true;
      return config.EMAIL_CODE_SIGNIN && (await accounts.findById(accountId))?.emailVerified === true;
    },
  });
  const federation = new FederatedSignIn({ connections, upstream, accounts: federatedAccounts, audit, store: shortLived, issuer: config.ISSUER, ttlSeconds: config.INTERACTION_TTL });
  const upstreamLogout = new UpstreamLogout({ connections, accounts: federatedAccounts, upstream, store: shortLived, issuer: config.ISSUER });
  const directorySignIn = new DirectorySignIn({
    connections, directory, accounts: federatedAccounts, accountService: accounts, counters, audit, store: shortLived,
    lockout: { threshold: config.LOCKOUT_THRESHOLD, windowSeconds: config.LOCKOUT_WINDOW_SECONDS }, ttlSeconds: config.INTERACTION_TTL,
  });
  const directoryReview = new DirectoryReview({
    connections, directory, identities, audit, lock: shortLived, intervalSeconds: config.DIRECTORY_REVIEW_SECONDS,
    endSessions: (accountId) => sessions.revokeAll(accountId, 'directory_removed', 'directory-review'),
  });
  return { accounts, selfService, sessions, clients, mfa, mfaPolicy, mailer, throttle, shortLived, afterResponse, connections, federatedAccounts, federation, upstreamLogout, directorySignIn, directoryReview, directory };
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
