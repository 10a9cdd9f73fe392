// loadConfig: defaults, one error per bad setting (named first in the message), the JSON file
// under the environment, and redactedConfig for logs.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configKeys, loadConfig, redactedConfig } from '../../src/config.ts';
import { ConfigError } from '../../src/errors.ts';
import { tempDir } from '../helpers/databases.ts';

let dir: ReturnType<typeof tempDir>;
beforeAll(() => {
  dir = tempDir('idp-config-');
});
afterAll(() => dir.remove());

function writeJson(name: string, content: unknown): string {
  const path = join(dir.path, name);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

describe('defaults', () => {
  it('an empty environment gives the documented defaults', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      ISSUER: 'http://localhost:3000',
      HOST: '127.0.0.1',
      PORT: 3000,
      TRUST_PROXY: false,
      DATABASE_URL: 'file:./data/idp.db',
      REDIS_KEY_PREFIX: 'idp:',
      KMS_PROVIDER: 'local',
      MASTER_KEY_FILE: 'keys/master.key',
      LOG_LEVEL: 'info',
      ACCESS_TOKEN_TTL: 3600,
      CLIENT_CREDENTIALS_TTL: 3600,
      ID_TOKEN_TTL: 3600,
      REFRESH_TOKEN_TTL: 14 * 24 * 3600,
      AUTHORIZATION_CODE_TTL: 60,
      INTERACTION_TTL: 3600,
      SESSION_TTL: 14 * 24 * 3600,
      GRANT_TTL: 365 * 24 * 3600,
      RESOURCE_SERVERS: [],
      ARGON2_MEMORY_KIB: 19456,
      ARGON2_TIME_COST: 2,
      ARGON2_PARALLELISM: 1,
      MAX_LOGIN_ATTEMPTS_PER_INTERACTION: 5,
      METRICS_ENABLED: true,
      FETCH_ALLOW_PRIVATE_ADDRESSES: false,
    });
    expect(config.REDIS_URL).toBeUndefined();
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('ignores unrelated and empty environment variables', () => {
    const config = loadConfig({ PATH: '/usr/bin', HOME: '/root', PORT: '', LOG_LEVEL: '' });
    expect(config.PORT).toBe(3000);
    expect(config.LOG_LEVEL).toBe('info');
    expect(config).not.toHaveProperty('PATH');
  });

  it('reads and coerces values from the environment', () => {
    const config = loadConfig({
      ISSUER: 'https://id.example.com',
      PORT: '8443',
      TRUST_PROXY: 'yes',
      METRICS_ENABLED: 'off',
      DATABASE_URL: 'postgresql://idp@db.internal:5432/idp',
      REDIS_URL: 'rediss://cache.internal:6380',
      ARGON2_MEMORY_KIB: '65536',
      RESOURCE_SERVERS: JSON.stringify([{ indicator: 'https://api.example.com', scopes: ['api:read'] }]),
      LOG_LEVEL: 'debug',
    });
    expect(config).toMatchObject({
      ISSUER: 'https://id.example.com',
      PORT: 8443,
      TRUST_PROXY: true,
      METRICS_ENABLED: false,
      DATABASE_URL: 'postgresql://idp@db.internal:5432/idp',
      REDIS_URL: 'rediss://cache.internal:6380',
      ARGON2_MEMORY_KIB: 65536,
      LOG_LEVEL: 'debug',
    });
    expect(config.RESOURCE_SERVERS).toEqual([{ indicator: 'https://api.example.com', scopes: ['api:read'], accessTokenFormat: 'jwt', accessTokenTTL: 3600 }]);
  });

  it.each([
    ['false', false],
    ['0', false],
    ['no', false],
    ['OFF', false],
    ['true', true],
    ['1', true],
    ['on', true],
  ] as const)('flag value %s reads as %s', (value, expected) => {
    expect(loadConfig({ TRUST_PROXY: value }).TRUST_PROXY).toBe(expected);
  });

  it('overrides win over the environment', () => {
    expect(loadConfig({ PORT: '4000' }, { PORT: 5000 }).PORT).toBe(5000);
  });
});

describe('bad values', () => {
  it.each([
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['PORT', '-1'],
    ['PORT', '80.5'],
    ['ISSUER', 'http://localhost:3000/'],
    ['ISSUER', 'https://id.example.com?tenant=a'],
    ['ISSUER', 'https://id.example.com#frag'],
    ['ISSUER', 'not a url'],
    ['DATABASE_URL', 'mysql://x'],
    ['REDIS_URL', 'http://x'],
    ['SMS_API_BASE_URL', 'http://sms.example.com'],
    ['SMS_API_BASE_URL', 'http://localhost.evil.example'],
    ['ARGON2_MEMORY_KIB', '1024'],
    ['ARGON2_TIME_COST', '1'],
    ['ARGON2_PARALLELISM', '17'],
    ['RESOURCE_SERVERS', 'not json'],
    ['RESOURCE_SERVERS', '{"indicator":"https://api.example.com"}'],
    ['RESOURCE_SERVERS', '[{"indicator":"https://api.example.com#x"}]'],
    ['RESOURCE_SERVERS', '[{"indicator":"https://api.example.com","scopes":["two words"]}]'],
    ['LOG_LEVEL', 'loud'],
    ['KMS_PROVIDER', 'vault'],
    ['ACCESS_TOKEN_TTL', '0'],
    ['MAX_LOGIN_ATTEMPTS_PER_INTERACTION', '0'],
  ])('%s=%s is refused with a ConfigError naming the setting', (key, value) => {
    const error = configError(() => loadConfig({ [key]: value }));
    expect(error.message.startsWith(`${key}: `)).toBe(true);
    expect(error.code).toBe('ERR_CONFIG');
    expect(error.expose).toBe(false);
  });

  it('shows the bad value for plain settings', () => {
    expect(configError(() => loadConfig({ LOG_LEVEL: 'loud' })).message).toContain('"loud"');
  });

  it('never echoes a URL setting, which may carry credentials', () => {
    const dbError = configError(() => loadConfig({ DATABASE_URL: 'mysql://admin:hunter2@db.internal/idp' }));
    expect(dbError.message).not.toContain('hunter2');
    const redisError = configError(() => loadConfig({ REDIS_URL: 'http://:s3cret-pass@cache.internal' }));
    expect(redisError.message).not.toContain('s3cret-pass');
  });

  it('accepts the boundaries', () => {
    expect(loadConfig({ PORT: '65535' }).PORT).toBe(65535);
    expect(loadConfig({ PORT: '0' }).PORT).toBe(0);
    expect(loadConfig({ ARGON2_MEMORY_KIB: '19456' }).ARGON2_MEMORY_KIB).toBe(19456);
    expect(loadConfig({ DATABASE_URL: 'postgres://h/db' }).DATABASE_URL).toBe('postgres://h/db');
    expect(loadConfig({ REDIS_URL: 'redis://h:6379' }).REDIS_URL).toBe('redis://h:6379');
  });
});

describe('CONFIG_FILE', () => {
  it('reads settings from the file, with the environment winning over it', () => {
    const file = writeJson('idp.json', {
      PORT: 4100,
      LOG_LEVEL: 'warn',
      ISSUER: 'https://file.example.com',
      RESOURCE_SERVERS: [{ indicator: 'https://api.example.com', accessTokenFormat: 'opaque' }],
    });
    const config = loadConfig({ CONFIG_FILE: file, LOG_LEVEL: 'error', ISSUER: '' });
    expect(config.PORT).toBe(4100);
    expect(config.LOG_LEVEL).toBe('error');
    // An empty environment value does not hide the file's.
    expect(config.ISSUER).toBe('https://file.example.com');
    expect(config.RESOURCE_SERVERS).toEqual([{ indicator: 'https://api.example.com', scopes: [], accessTokenFormat: 'opaque', accessTokenTTL: 3600 }]);
  });

  it('validates values from the file like environment values', () => {
    const file = writeJson('bad-port.json', { PORT: 70000 });
    expect(configError(() => loadConfig({ CONFIG_FILE: file })).message).toMatch(/^PORT: /);
  });

  it('rejects an unknown key in the file', () => {
    const file = writeJson('unknown.json', { PORT: 4000, PROT: 4001 });
    expect(configError(() => loadConfig({ CONFIG_FILE: file })).message).toBe('CONFIG_FILE: unknown setting PROT');
  });

  it('rejects a missing file', () => {
    const path = join(dir.path, 'does-not-exist.json');
    const error = configError(() => loadConfig({ CONFIG_FILE: path }));
    expect(error.message).toMatch(/^CONFIG_FILE: cannot read /);
    expect(error.message).toContain('ENOENT');
  });

  it('rejects an unreadable file', () => {
    // A directory cannot be read as a file, whoever runs the test (root ignores chmod 000).
    const error = configError(() => loadConfig({ CONFIG_FILE: dir.path }));
    expect(error.message).toMatch(/^CONFIG_FILE: cannot read /);
    expect(error.message).toContain('EISDIR');
  });

  it.each([
    ['invalid JSON', '{ PORT: 4000 '],
    ['an array', '[1, 2]'],
    ['null', 'null'],
    ['a string', '"PORT=4000"'],
  ])('rejects a file holding %s', (_name, content) => {
    const file = writeJson(`bad-${Math.random().toString(36).slice(2)}.json`, content);
    expect(configError(() => loadConfig({ CONFIG_FILE: file })).message).toBe(`CONFIG_FILE: ${file} is not a JSON object`);
  });

  it('every key the schema knows is accepted in the file', () => {
    const file = writeJson('all-keys.json', { PORT: 4200, HOST: '0.0.0.0' });
    expect(configKeys).toContain('PORT');
    expect(configKeys).not.toContain('CONFIG_FILE');
    expect(loadConfig({ CONFIG_FILE: file })).toMatchObject({ PORT: 4200, HOST: '0.0.0.0' });
  });
});

describe('redactedConfig', () => {
  it('masks user and password in DATABASE_URL and REDIS_URL', () => {
    const config = loadConfig({
      DATABASE_URL: 'postgresql://idp:db-pass-123@db.internal:5432/idp',
      REDIS_URL: 'rediss://default:redis-pass-456@cache.internal:6380/0',
    });
    const shown = redactedConfig(config);
    expect(shown.DATABASE_URL).toBe('postgresql://***:***@db.internal:5432/idp');
    expect(shown.REDIS_URL).toBe('rediss://***:***@cache.internal:6380/0');
    const text = JSON.stringify(shown);
    expect(text).not.toContain('db-pass-123');
    expect(text).not.toContain('redis-pass-456');
    // The rest is unchanged, and the original config is untouched.
    expect(shown.PORT).toBe(config.PORT);
    expect(config.DATABASE_URL).toBe('postgresql://idp:db-pass-123@db.internal:5432/idp');
  });

  it('masks a password-only Redis URL', () => {
    const shown = redactedConfig(loadConfig({ REDIS_URL: 'redis://:only-pass@cache.internal:6379' }));
    expect(shown.REDIS_URL).toBe('redis://:***@cache.internal:6379');
  });

  it('leaves URLs without credentials as they are', () => {
    const shown = redactedConfig(loadConfig({ DATABASE_URL: 'file:./data/idp.db' }));
    expect(shown.DATABASE_URL).toBe('file:./data/idp.db');
    expect(shown.REDIS_URL).toBeUndefined();
    const pg = redactedConfig(loadConfig({ DATABASE_URL: 'postgresql://db.internal/idp', REDIS_URL: 'redis://cache.internal:6379' }));
    expect(pg.DATABASE_URL).toBe('postgresql://db.internal/idp');
    expect(pg.REDIS_URL).toBe('redis://cache.internal:6379');
  });

  it('masks the whole password when it contains an unencoded @ (the pg driver accepts such URLs)', () => {
    // pg-connection-string parses this with WHATWG URL: user "idp", password "p@ss-secret-789".
    const url = 'postgresql://idp:p@ss-secret-789@db.internal:5432/idp';
    expect(new URL(url).hostname).toBe('db.internal');
    const shown = redactedConfig(loadConfig({ DATABASE_URL: url }));
    expect(String(shown.DATABASE_URL)).not.toContain('secret-789');
  });

  it('masks a password given as a query parameter (pg reads ?password=)', () => {
    const shown = redactedConfig(loadConfig({ DATABASE_URL: 'postgresql://idp@db.internal:5432/idp?password=query-pass-321&sslmode=require' }));
    expect(String(shown.DATABASE_URL)).not.toContain('query-pass-321');
  });
});

describe('key custody settings', () => {
  it('KMS_PROVIDER=aws needs a key id and a region, named in the error', () => {
    expect(() => loadConfig({ KMS_PROVIDER: 'aws' })).toThrow(/^AWS_KMS_KEY_ID: KMS_PROVIDER=aws needs AWS_KMS_KEY_ID and AWS_REGION/);
    expect(loadConfig({ KMS_PROVIDER: 'aws', AWS_KMS_KEY_ID: 'alias/idp', AWS_REGION: 'eu-west-1' }).KMS_PROVIDER).toBe('aws');
  });

  it('KMS_PROVIDER=pkcs11 needs a library, a PIN file, a key label and one of slot or token label', () => {
    expect(() => loadConfig({ KMS_PROVIDER: 'pkcs11' })).toThrow(/^PKCS11_LIBRARY: /);
    const base = { KMS_PROVIDER: 'pkcs11', PKCS11_LIBRARY: '/usr/lib/softhsm/libsofthsm2.so', PKCS11_PIN_FILE: '/run/secrets/pin', PKCS11_KEY_LABEL: 'idp' };
    expect(() => loadConfig(base)).toThrow(/^PKCS11_LIBRARY: /);
    expect(loadConfig({ ...base, PKCS11_TOKEN_LABEL: 'idp-token' }).KMS_PROVIDER).toBe('pkcs11');
  });

  it('KEY_REFRESH_SECONDS must be shorter than the pre-publication delay', () => {
    expect(() => loadConfig({ KEY_PREPUBLICATION_SECONDS: '5', KEY_REFRESH_SECONDS: '5' })).toThrow(/^KEY_REFRESH_SECONDS: /);
  });
});

describe('SMS_API_BASE_URL', () => {
  it('takes a regional https endpoint or a gateway on this machine', () => {
    expect(loadConfig({ SMS_API_BASE_URL: 'https://api.eu1.twilio.com' }).SMS_API_BASE_URL).toBe('https://api.eu1.twilio.com');
    expect(loadConfig({ SMS_API_BASE_URL: 'http://127.0.0.1:8081' }).SMS_API_BASE_URL).toBe('http://127.0.0.1:8081');
  });
});
