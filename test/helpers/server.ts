// Starts a real IdP on a free loopback port, in this process, over a real database (and Redis
// when asked), with its own master key in a temp dir.
import type { Server } from 'node:http';
import { join } from 'node:path';
import { createIdp, type Idp, type IdpOptions } from '../../src/app.ts';
import { loadConfig, type Config } from '../../src/config.ts';
import { createHttpServer } from '../../src/http/server.ts';
import { createLogger } from '../../src/log.ts';
import { freshDatabase, redisNamespace, tempDir, type TestDatabase } from './databases.ts';
import { freePort } from './ports.ts';
import { TestClock } from './time.ts';

export type Backend = 'sqlite' | 'postgresql+redis';
export const backends: Backend[] = ['sqlite', 'postgresql+redis'];

export { freePort };

export interface TestIdp {
  idp: Idp;
  issuer: string;
  /** Where it listens (differs from the issuer when a test sets ISSUER). */
  url: string;
  config: Config;
  database: TestDatabase;
  /** The IdP's clock: `advance` it instead of sleeping through our own windows. */
  clock: TestClock;
  stop(): Promise<void>;
}

export const testResourceServer = { indicator: 'https://api.example.test', scopes: ['api:read', 'api:write'], accessTokenFormat: 'jwt' as const, accessTokenTTL: 600 };

export async function startIdp(backend: Backend, env: Record<string, string> = {}, options: IdpOptions = {}): Promise<TestIdp> {
  const port = await freePort();
  const database = await freshDatabase(backend === 'sqlite' ? 'sqlite' : 'postgresql');
  const redis = backend === 'sqlite' ? undefined : await redisNamespace();
  const keysDir = tempDir('idp-keys-');
  const issuer = env.ISSUER ?? `http://127.0.0.1:${port}`;
  const config = loadConfig({
    ISSUER: issuer,
    PORT: String(port),
    DATABASE_URL: database.url,
    MASTER_KEY_FILE: join(keysDir.path, 'master.key'),
    LOG_LEVEL: 'silent',
    RESOURCE_SERVERS: JSON.stringify([testResourceServer]),
    ...(redis ? { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix } : {}),
    ...env,
  });
  const clock = new TestClock();
  const idp = await createIdp(config, createLogger('silent'), { clock, ...options });
  const server: Server = createHttpServer(idp.app);
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    idp,
    issuer,
    url: `http://127.0.0.1:${port}`,
    config,
    database,
    clock,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await idp.close();
      await redis?.clear();
      await database.drop();
      keysDir.remove();
    },
  };
}
