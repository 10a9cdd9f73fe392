// Two `idp serve` nodes on one PostgreSQL database and one Redis prefix behind a round-robin
// load balancer (test/helpers/proxy.ts), the production shape: what a relying party sees while a
// signing key is rotated, and what a user sees when the node handling their password dies.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';
import { emptyPostgres, redisNamespace, tempDir } from '../helpers/databases.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { jsonOf, killAll, runIdp, startServer, type ServerProcess } from '../helpers/processes.ts';
import { startProxy, type TestProxy } from '../helpers/proxy.ts';
import { freePort, testResourceServer } from '../helpers/server.ts';
import { sleep } from '../helpers/time.ts';

const redirectUri = 'http://localhost:8080/callback';
const email = 'dana@example.com';
const password = 'a slow and careful password';

describe('two nodes behind a load balancer, PostgreSQL + Redis', () => {
  const dir = tempDir('idp-proxy-');
  let database: Awaited<ReturnType<typeof emptyPostgres>> | undefined;
  let redis: Awaited<ReturnType<typeof redisNamespace>> | undefined;
  let proxy: TestProxy;
  let env: Record<string, string>;
  let issuer: string;
  let a: ServerProcess;
  let b: ServerProcess;
  let machineSecret: string;
  let rp: oidc.Configuration;

  const cli = (args: string[], stdin?: string, extra: Record<string, string> = {}) => runIdp(args, { env: { ...env, ...extra }, timeoutMs: 30_000, ...(stdin === undefined ? {} : { stdin }) });

  beforeAll(async () => {
    database = await emptyPostgres();
    redis = await redisNamespace();
    const [proxyPort, portA, portB] = [await freePort(), await freePort(), await freePort()];
    issuer = `http://127.0.0.1:${proxyPort}`;
    const masterKeyFile = join(dir.path, 'master.key');
    writeFileSync(masterKeyFile, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    env = {
      DATABASE_URL: database.url, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix, MASTER_KEY_FILE: masterKeyFile, ISSUER: issuer, LOG_LEVEL: 'warn',
      KEY_REFRESH_SECONDS: '1', KEY_PREPUBLICATION_SECONDS: '2', KEY_ROTATION_INTERVAL_DAYS: '0', CLIENT_CACHE_SECONDS: '0',
      RESOURCE_SERVERS: JSON.stringify([testResourceServer]),
    };
    expect((await cli(['migrate'])).code).toBe(0);
    a = startServer(['serve'], { env: { ...env, PORT: String(portA) }, url: `http://127.0.0.1:${portA}` });
    b = startServer(['serve'], { env: { ...env, PORT: String(portB) }, url: `http://127.0.0.1:${portB}` });
    await Promise.all([a.waitReady(30_000), b.waitReady(30_000)]);
    proxy = await startProxy([a.url, b.url], proxyPort);
    machineSecret = jsonOf<{ client_secret: string }>(await cli(['clients', 'create'], JSON.stringify({ client_id: 'machine', grant_types: ['client_credentials'], scope: 'api:read' }))).client_secret;
    const web = jsonOf<{ client_secret: string }>(await cli(['clients', 'create'], JSON.stringify({ client_id: 'webapp', redirect_uris: [redirectUri], first_party: true })));
    // A password hash that takes about a second to verify, so a node can be killed while it works.
    const user = await cli(['users', 'create', '--email', email, '--password-stdin'], `${password}\n`, { ARGON2_TIME_COST: '100' });
    expect(user.code, user.stderr).toBe(0);
    rp = await oidc.discovery(new URL(issuer), 'webapp', web.client_secret, undefined, { execute: [oidc.allowInsecureRequests] });
  }, 120_000);

  afterAll(async () => {
    await proxy?.stop();
    await killAll();
    await redis?.clear();
    await database?.drop();
    dir.remove();
  });

  async function machineToken(): Promise<string> {
    const response = await fetch(`${proxy.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`machine:${machineSecret}`).toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'api:read', resource: testResourceServer.indicator }).toString(),
    });
    expect(response.status).toBe(200);
    return ((await response.json()) as { access_token: string }).access_token;
  }

  const jwksOf = async (node: ServerProcess) => (await (await fetch(`${node.url}/jwks`, { headers: { 'cache-control': 'no-cache' } })).json()) as JSONWebKeySet;

  it('an emergency rotation with revoke-old: every token issued throughout verifies against every node\'s JWKS', async () => {
    const oldKid = decodeProtectedHeader(await machineToken()).kid!;
    const failures: string[] = [];
    const signedBy = new Set<string>();
    let rotated: { kid: string } | undefined;
    let stop = false;
    const pump = (async () => {
      while (!stop) {
        const token = await machineToken();
        const kid = decodeProtectedHeader(token).kid!;
        signedBy.add(kid);
        // A relying party that fetches the JWKS from either node after getting the token must verify it.
        for (const node of [a, b]) {
          try {
            await jwtVerify(token, createLocalJWKSet(await jwksOf(node)), { issuer, audience: testResourceServer.indicator });
          } catch (error) {
            failures.push(`token signed by ${kid} does not verify against ${node.url}: ${(error as Error).message}`);
          }
        }
        await sleep(20);
      }
    })();
    try {
      await sleep(500);
      const result = await cli(['keys', 'rotate', '--now', '--revoke-old']);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toMatch(/signs from .* \(in \d+ s\)/);
      rotated = jsonOf<{ kid: string; state: string }>(result);
      expect(rotated).toMatchObject({ state: 'staged' });
      // Wait until both nodes sign with the new key and neither publishes the old one.
      for (const deadline = Date.now() + 25_000; Date.now() < deadline; await sleep(250)) {
        const [jwksA, jwksB] = await Promise.all([jwksOf(a), jwksOf(b)]);
        const oldGone = ![...jwksA.keys, ...jwksB.keys].some((k) => k.kid === oldKid);
        if (oldGone && signedBy.has(rotated.kid)) break;
      }
    } finally {
      stop = true;
      await pump;
    }
    expect(failures).toEqual([]);
    expect([...signedBy]).toEqual(expect.arrayContaining([oldKid, rotated!.kid]));
    const [jwksA, jwksB] = await Promise.all([jwksOf(a), jwksOf(b)]);
    for (const jwks of [jwksA, jwksB]) {
      expect(jwks.keys.map((k) => k.kid)).toContain(rotated!.kid);
      expect(jwks.keys.map((k) => k.kid)).not.toContain(oldKid);
    }
    expect(decodeProtectedHeader(await machineToken()).kid).toBe(rotated!.kid);
  }, 60_000);

  it('a node killed while it checks a password: the retry on the other node goes through within seconds', async () => {
    const browser = new Browser();
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri });
    const start = await browser.follow(request.url, issuer);
    const identify = await start.response.text();
    const passwordPage = await browser.postForm(new URL(formAction(identify, 'identify'), issuer), { csrf: csrfOf(identify), email }, issuer);
    const html = await passwordPage.response.text();
    expect(html).toContain('name="password"');
    const action = formAction(html, 'password');
    const post = (node: ServerProcess) => browser.request(`${node.url}${action}`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ csrf: csrfOf(html), password }).toString(),
    });

    // Node A takes the password and starts the (slow) hash check, holding the flow's lock...
    const onA = post(a).then(() => 'answered', () => 'connection lost');
    await sleep(400);
    // ...and dies.
    await a.stop('SIGKILL');
    expect(await onA).toBe('connection lost');

    // The browser sends the form again; the balancer routes it to node B.
    const started = Date.now();
    const retry = await post(b);
    const body = await retry.text();
    expect(retry.status, body.slice(0, 300)).toBe(303);
    expect(new URL(retry.headers.get('location')!, issuer).pathname).toMatch(/^\/auth\//);
    // The lock lives 3 s after its last renewal; then one password check. The margin is for a
    // 2-core machine that runs the other test files beside this one (6.3 s seen once there).
    expect(Date.now() - started, 'the dead node\'s lock expired within a few seconds').toBeLessThan(9000);
  }, 60_000);
});
