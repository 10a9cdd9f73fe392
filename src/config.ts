// Configuration: environment variables over an optional JSON file (CONFIG_FILE), validated once
// at start-up. The file uses the same UPPER_CASE names as the environment; the environment wins.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError } from './errors.ts';

const seconds = (fallback: number) => z.coerce.number().int().positive().default(fallback);
const flag = (fallback: boolean) =>
  z.preprocess((v) => (typeof v === 'string' ? !['false', '0', 'no', 'off', ''].includes(v.toLowerCase()) : v), z.boolean()).default(fallback);
const jsonValue = <T extends z.ZodType>(schema: T) =>
  z.preprocess((v) => {
    if (typeof v !== 'string') return v;
    try {
      return JSON.parse(v);
    } catch {
      return Symbol('invalid JSON');
    }
  }, schema);

const resourceServer = z.object({
  indicator: z.url().refine((u) => !u.includes('#'), 'a resource indicator has no fragment'),
  scopes: z.array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'a scope is one token without spaces')).default([]),
  accessTokenFormat: z.enum(['jwt', 'opaque']).default('jwt'),
  accessTokenTTL: z.number().int().positive().default(3600),
});

const list = () => z.preprocess((v) => (typeof v === 'string' ? v.split(',').map((t) => t.trim()).filter(Boolean) : v), z.array(z.string())).default([]);

const passwordPolicyOverride = z.strictObject({
  minLength: z.number().int().min(8).max(128).optional(),
  requireUpper: z.boolean().optional(),
  requireLower: z.boolean().optional(),
  requireDigit: z.boolean().optional(),
  requireSymbol: z.boolean().optional(),
  minStrength: z.number().int().min(0).max(4).optional(),
  historySize: z.number().int().min(0).max(100).optional(),
  maxAgeDays: z.number().min(0).optional(),
});

const schema = z.object({
  ISSUER: z.url().refine((u) => !u.endsWith('/') && !u.includes('?') && !u.includes('#'), 'an issuer has no trailing slash, query or fragment').default('http://localhost:3000'),
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  TRUST_PROXY: flag(false),
  DATABASE_URL: z
    .string()
    .regex(/^(file:|postgres(ql)?:\/\/)/, 'use file:PATH for SQLite or postgresql://… for PostgreSQL')
    .default('file:./data/idp.db'),
  REDIS_URL: z.string().regex(/^rediss?:\/\//, 'use redis://… or rediss://…').optional(),
  REDIS_KEY_PREFIX: z.string().default('idp:'),
  KMS_PROVIDER: z.enum(['local', 'aws', 'pkcs11']).default('local'),
  MASTER_KEY_FILE: z.string().min(1).default('keys/master.key'),
  // KMS_PROVIDER=aws: credentials come from the AWS SDK's default chain (environment, profile, role).
  AWS_KMS_KEY_ID: z.string().min(1).optional(),
  AWS_REGION: z.string().min(1).optional(),
  AWS_KMS_ENDPOINT: z.url().optional(),
  // KMS_PROVIDER=pkcs11: an AES-256 key on an HSM token (create it once with `idp kms init`).
  PKCS11_LIBRARY: z.string().min(1).optional(),
  PKCS11_SLOT: z.coerce.number().int().min(0).optional(),
  PKCS11_TOKEN_LABEL: z.string().min(1).optional(),
  PKCS11_PIN_FILE: z.string().min(1).optional(),
  PKCS11_KEY_LABEL: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  ACCESS_TOKEN_TTL: seconds(3600),
  CLIENT_CREDENTIALS_TTL: seconds(3600),
  ID_TOKEN_TTL: seconds(3600),
  REFRESH_TOKEN_TTL: seconds(14 * 24 * 3600),
  AUTHORIZATION_CODE_TTL: seconds(60),
  INTERACTION_TTL: seconds(3600),
  SESSION_TTL: seconds(14 * 24 * 3600),
  GRANT_TTL: seconds(365 * 24 * 3600),
  RESOURCE_SERVERS: jsonValue(z.array(resourceServer)).default([]),
  ARGON2_MEMORY_KIB: z.coerce.number().int().min(19456).default(19456),
  ARGON2_TIME_COST: z.coerce.number().int().min(2).default(2),
  ARGON2_PARALLELISM: z.coerce.number().int().min(1).max(16).default(1),
  // Password policy (src/accounts/password-policy.ts); common passwords are always refused.
  PASSWORD_MIN_LENGTH: z.coerce.number().int().min(8).max(128).default(12),
  PASSWORD_REQUIRE_UPPER: flag(false),
  PASSWORD_REQUIRE_LOWER: flag(false),
  PASSWORD_REQUIRE_DIGIT: flag(false),
  PASSWORD_REQUIRE_SYMBOL: flag(false),
  PASSWORD_MIN_STRENGTH: z.coerce.number().int().min(0).max(4).default(0),
  // Per user type (for example "external"): overrides of the settings above, as JSON:
  // {"external": {"minLength": 16, "requireDigit": true, "historySize": 24, "maxAgeDays": 90}}.
  PASSWORD_POLICY_BY_USER_TYPE: jsonValue(z.record(z.string().min(1), passwordPolicyOverride)).default({}),
  // The last N passwords of an account cannot be used again (0 turns the rule off).
  PASSWORD_HISTORY_SIZE: z.coerce.number().int().min(0).max(100).default(12),
  // Days after which a password must be changed at the next sign-in (0: never).
  PASSWORD_MAX_AGE_DAYS: z.coerce.number().min(0).default(0),
  // Per-account lockout: LOCKOUT_THRESHOLD wrong passwords within LOCKOUT_WINDOW_SECONDS lock the
  // account for LOCKOUT_DURATION_SECONDS (answered like a wrong password; `idp users unlock`).
  LOCKOUT_THRESHOLD: z.coerce.number().int().min(1).max(100).default(5),
  LOCKOUT_WINDOW_SECONDS: z.coerce.number().int().min(1).default(300),
  LOCKOUT_DURATION_SECONDS: z.coerce.number().int().min(1).default(1800),
  // Throttling by network origin: failed passwords per IP and per (IP, account) in a window.
  // Permanent lockout (status "locked", lifted only by `idp users unlock`) after this many
  // temporary lockouts within LOCKOUT_PERMANENT_WINDOW_SECONDS; 0 turns it off.
  LOCKOUT_PERMANENT_AFTER: z.coerce.number().int().min(0).max(100).default(0),
  LOCKOUT_PERMANENT_WINDOW_SECONDS: z.coerce.number().int().min(1).default(24 * 3600),
  // Self-service: registration (with email verification), invitations and password reset.
  REGISTRATION_ENABLED: flag(false),
  // The user type given to self-registered accounts; APPROVAL_USER_TYPES need an administrator's approval.
  REGISTRATION_USER_TYPE: z.string().min(1).default('external'),
  APPROVAL_USER_TYPES: list().default(['external']),
  EMAIL_VERIFICATION_TTL: seconds(24 * 3600),
  INVITATION_TTL: seconds(7 * 24 * 3600),
  PASSWORD_RESET_TTL: seconds(30 * 60),
  // Outgoing mail. Unset SMTP_URL: messages are not sent, only their recipient and subject are logged.
  SMTP_URL: z.string().regex(/^smtps?:\/\//, 'use smtp://… or smtps://…').optional(),
  SMTP_FROM: z.string().min(3).default('Identity Provider <no-reply@localhost>'),
  // Custom account attributes released as claims, per scope: {"work": {"worker_type": "workerType"}}
  // releases attributes.workerType as the claim worker_type when the scope "work" is granted.
  CLAIM_MAPPINGS: jsonValue(z.record(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/), z.record(z.string().min(1), z.string().min(1)))).default({}),
  // Session policy: a session ends after SESSION_IDLE_TIMEOUT seconds without use, and at the
  // latest SESSION_TTL seconds after sign-in. 0 concurrent sessions: unlimited; 1: a new sign-in
  // ends the user's other sessions.
  SESSION_IDLE_TIMEOUT: seconds(24 * 3600),
  MAX_CONCURRENT_SESSIONS: z.coerce.number().int().min(0).default(0),
  // Multi-factor authentication (README "MFA"): required for everyone, or for user types, roles or
  // clients (comma-separated lists). Accounts with a second factor are always asked for it.
  MFA_REQUIRED: flag(false),
  MFA_REQUIRED_USER_TYPES: list(),
  MFA_REQUIRED_ROLES: list(),
  MFA_REQUIRED_CLIENTS: list(),
  // Which second-factor methods satisfy each acr value a relying party may ask for (acr_values).
  ACR_METHODS: jsonValue(z.record(z.string().min(1), z.array(z.enum(['totp', 'webauthn', 'email', 'sms', 'backup_code'])).min(1))).default({
    'urn:idp:acr:2fa': ['totp', 'webauthn', 'email', 'sms', 'backup_code'],
    'urn:idp:acr:phr': ['webauthn'],
  }),
  // "Remember this device" skips the second factor for this many days (0: off). Never when a
  // relying party asks for a stronger acr.
  MFA_REMEMBER_DEVICE_DAYS: z.coerce.number().int().min(0).max(365).default(0),
  WEBAUTHN_USER_VERIFICATION: z.enum(['required', 'preferred', 'discouraged']).default('preferred'),
  WEBAUTHN_FAIL_ON_COUNTER_REGRESSION: flag(true),
  // Passwordless first factors: a discoverable passkey, or a code mailed to the address.
  PASSKEY_SIGNIN: flag(true),
  EMAIL_CODE_SIGNIN: flag(true),
  // Upstream identity providers (idp connections): plain-http issuers only for development and
  // tests on loopback; how long discovery, token, userinfo and JWKS requests may take.
  FEDERATION_ALLOW_HTTP: flag(false),
  FEDERATION_TIMEOUT_SECONDS: z.coerce.number().int().min(1).max(60).default(10),
  // Seconds a node may keep the list of connections the sign-in screens read (buttons, routing by
  // domain); changes made on another node or by the CLI take up to this long to show there. 0: always read.
  CONNECTION_CACHE_SECONDS: z.coerce.number().int().min(0).max(300).default(5),
  // How often one node checks that users linked to LDAP directories are still there (0: never):
  // those removed or disabled lose their sessions and refresh tokens.
  DIRECTORY_REVIEW_SECONDS: z.coerce.number().int().min(0).max(7 * 86400).default(900),
  // Codes by SMS or WhatsApp: one provider, chosen here; SMS_API_BASE_URL for regional endpoints or a gateway of the same API.
  SMS_PROVIDER: z.enum(['none', 'twilio', 'vonage']).default('none'),
  SMS_CHANNEL: z.enum(['sms', 'whatsapp']).default('sms'),
  SMS_FROM: z.string().min(1).optional(),
  TWILIO_ACCOUNT_SID: z.string().min(1).optional(),
  TWILIO_AUTH_TOKEN: z.string().min(1).optional(),
  VONAGE_API_KEY: z.string().min(1).optional(),
  VONAGE_API_SECRET: z.string().min(1).optional(),
  // The provider's credentials travel to it: https, except to a gateway on this machine.
  SMS_API_BASE_URL: z.url().refine((url) => url.startsWith('https://') || /^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(\/|$)/.test(url), 'must use https (http only for localhost)').optional(),
  // Phone number prefixes codes may be sent to (e.g. "+41,+49"), against SMS pumping; empty: any.
  SMS_ALLOWED_PREFIXES: list(),
  // All SMS of this deployment per day (across accounts and nodes); past it codes by SMS stop,
  // with an error log and an audit row, until the day's window ends.
  SMS_DAILY_LIMIT: z.coerce.number().int().min(1).default(1000),
  SIGNIN_IP_FAILURES: z.coerce.number().int().min(1).default(50),
  SIGNIN_IP_ACCOUNT_FAILURES: z.coerce.number().int().min(1).default(10),
  SIGNIN_THROTTLE_WINDOW_SECONDS: z.coerce.number().int().min(1).default(900),
  MAX_LOGIN_ATTEMPTS_PER_INTERACTION: z.coerce.number().int().min(1).max(100).default(5),
  METRICS_ENABLED: flag(true),
  // Worker processes of `idp serve` (0: one per CPU core; 1: a single process, no cluster).
  WORKERS: z.coerce.number().int().min(0).max(64).default(0),
  // On SIGTERM, /readyz fails for this long before the server stops taking connections, so a load
  // balancer routes new requests elsewhere first (SIGINT stops at once).
  SHUTDOWN_DRAIN_SECONDS: z.coerce.number().min(0).max(300).default(5),
  // Key rotation (see README "Keys"). The pre-publication delay is also the JWKS cache max-age.
  KEY_PREPUBLICATION_SECONDS: z.coerce.number().int().min(1).default(3600),
  // Signing algorithms with a key of their own (each with the same lifecycle); clients choose one
  // with id_token_signed_response_alg. RS256 is always there: it is the default.
  KEY_ALGORITHMS: z
    .preprocess((v) => (typeof v === 'string' ? v.split(',').map((a) => a.trim()).filter(Boolean) : v), z.array(z.enum(['RS256', 'PS256', 'ES256', 'EdDSA'])))
    .refine((algs) => algs.includes('RS256'), 'must include RS256')
    .default(['RS256']),
  // Unset: the longest token lifetime plus the pre-publication delay.
  KEY_RETENTION_SECONDS: z.coerce.number().int().min(0).optional(),
  KEY_ROTATION_INTERVAL_DAYS: z.coerce.number().min(0).default(90),
  // How often each node looks for key changes made by another node or the CLI.
  KEY_REFRESH_SECONDS: z.coerce.number().int().min(1).max(3600).default(10),
  // How long unwrapped private keys stay in memory before they are unwrapped again through the KMS.
  KEY_CACHE_TTL_SECONDS: z.coerce.number().int().min(10).default(3600),
  // Seconds a node may keep a client's registration in memory; changes made on another node
  // (or by the CLI) take up to this long to reach it. 0 reads the database every time.
  CLIENT_CACHE_SECONDS: z.coerce.number().int().min(0).max(300).default(5),
  // oidc-provider refuses outgoing requests (back-channel logout, client JWKS) to loopback and
  // private addresses, against SSRF. Only for deployments whose relying parties live there.
  FETCH_ALLOW_PRIVATE_ADDRESSES: flag(false),
});

export type Config = Readonly<z.infer<typeof schema>>;
export type ResourceServerConfig = z.infer<typeof resourceServer>;
export const configKeys = Object.keys(schema.shape) as (keyof Config)[];

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`CONFIG_FILE: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
    return parsed as Record<string, unknown>;
  } catch {
    throw new ConfigError(`CONFIG_FILE: ${path} is not a JSON object`);
  }
}

/** Builds the frozen configuration; throws a ConfigError whose message names the bad setting. */
export function loadConfig(env: Record<string, string | undefined>, overrides: Partial<Record<keyof Config, unknown>> = {}): Config {
  const file = env.CONFIG_FILE ? readConfigFile(env.CONFIG_FILE) : {};
  const unknownKeys = Object.keys(file).filter((k) => !(configKeys as string[]).includes(k));
  if (unknownKeys.length) throw new ConfigError(`CONFIG_FILE: unknown setting ${unknownKeys[0]}`);
  const input: Record<string, unknown> = { ...file };
  for (const key of configKeys) {
    const value = env[key];
    if (value !== undefined && value !== '') input[key] = value;
  }
  Object.assign(input, overrides);
  const result = schema.refine((c) => c.KMS_PROVIDER !== 'aws' || (c.AWS_KMS_KEY_ID && c.AWS_REGION), {
    path: ['AWS_KMS_KEY_ID'],
    message: 'KMS_PROVIDER=aws needs AWS_KMS_KEY_ID and AWS_REGION',
  }).refine((c) => c.KMS_PROVIDER !== 'pkcs11' || (c.PKCS11_LIBRARY && c.PKCS11_PIN_FILE && c.PKCS11_KEY_LABEL && (c.PKCS11_SLOT === undefined) !== (c.PKCS11_TOKEN_LABEL === undefined)), {
    path: ['PKCS11_LIBRARY'],
    message: 'KMS_PROVIDER=pkcs11 needs PKCS11_LIBRARY, PKCS11_PIN_FILE, PKCS11_KEY_LABEL and one of PKCS11_SLOT or PKCS11_TOKEN_LABEL',
  }).refine((c) => c.SMS_PROVIDER === 'none' || (c.SMS_FROM && (c.SMS_PROVIDER === 'twilio' ? c.TWILIO_ACCOUNT_SID && c.TWILIO_AUTH_TOKEN : c.VONAGE_API_KEY && c.VONAGE_API_SECRET)), {
    path: ['SMS_PROVIDER'],
    message: 'SMS_PROVIDER=twilio needs SMS_FROM, TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN; vonage needs SMS_FROM, VONAGE_API_KEY and VONAGE_API_SECRET',
  }).refine((c) => c.KEY_REFRESH_SECONDS < c.KEY_PREPUBLICATION_SECONDS, {
    path: ['KEY_REFRESH_SECONDS'],
    message: 'must be shorter than KEY_PREPUBLICATION_SECONDS, so every node publishes a staged key before it signs',
  }).safeParse(input);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const key = String(issue.path[0] ?? 'config');
    const shown = key in input && !/SECRET|PASSWORD|URL|TOKEN/.test(key) ? ` (got ${JSON.stringify(input[key])})` : '';
    throw new ConfigError(`${key}: ${issue.message}${shown}`);
  }
  return Object.freeze(result.data);
}

function maskUrl(url: string | undefined): string | undefined {
  if (url === undefined || url.startsWith('file:')) return url;
  try {
    const parsed = new URL(url);
    if (parsed.username) parsed.username = '***';
    if (parsed.password) parsed.password = '***';
    for (const key of [...parsed.searchParams.keys()]) if (/pass|secret|key|token/i.test(key)) parsed.searchParams.set(key, '***');
    return parsed.href;
  } catch {
    return '[unparseable URL]';
  }
}

/** The configuration with credentials in URLs masked, for logs. */
export function redactedConfig(config: Config): Record<string, unknown> {
  const secrets = Object.fromEntries((['TWILIO_AUTH_TOKEN', 'VONAGE_API_SECRET'] as const).filter((k) => config[k] !== undefined).map((k) => [k, '***']));
  return { ...config, DATABASE_URL: maskUrl(config.DATABASE_URL), REDIS_URL: maskUrl(config.REDIS_URL), SMTP_URL: maskUrl(config.SMTP_URL), ...secrets };
}

/** Seconds a retired signing key stays published: past the last token it can have signed. */
export function keyRetentionSeconds(config: Config): number {
  if (config.KEY_RETENTION_SECONDS !== undefined) return config.KEY_RETENTION_SECONDS;
  const longestToken = Math.max(config.ID_TOKEN_TTL, config.ACCESS_TOKEN_TTL, config.CLIENT_CREDENTIALS_TTL, ...config.RESOURCE_SERVERS.map((s) => s.accessTokenTTL));
  return longestToken + config.KEY_PREPUBLICATION_SECONDS;
}

/**
 * Seconds after which every node in service publishes a signing key written now: each node reads
 * the keys every KEY_REFRESH_SECONDS, and one that missed three refreshes fails readiness (and
 * leaves the load balancer); two more seconds for clock differences between nodes. No key signs
 * sooner than this after it was written, and no replaced key leaves the JWKS sooner after the switch.
 */
export function keyPublicationSeconds(config: Pick<Config, 'KEY_REFRESH_SECONDS'>): number {
  return 3 * config.KEY_REFRESH_SECONDS + 2;
}
