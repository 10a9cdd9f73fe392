// `idp serve --workers 2` as operators start it: a login whose requests land on both workers
// (every request on a new connection, as a load balancer spreads them), metrics of both workers
// at /metrics, a rolling restart on SIGHUP without a refused request, and SIGTERM under load
// behind a load balancer that watches /readyz: no request is lost, then the cluster exits 0.
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, freshConnections, signIn } from '../helpers/browser.ts';
import { tempDir } from '../helpers/databases.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { jsonOf, killAll, runIdp, startServer, type ServerProcess } from '../helpers/processes.ts';
import { freePort, testResourceServer } from '../helpers/server.ts';
import { sleep } from '../helpers/time.ts';

const redirectUri = 'http://localhost:8080/callback';
const email = 'wanda@example.com';
const password = 'a password for two workers';

/** One client-credentials request on a new connection: its status, or the network error's code. */
function tokenRequest(url: string, secret: string): Promise<number | string> {
  return new Promise((resolve) => {
    const body = new URLSearchParams({ grant_type: 'client_credentials', scope: 'api:read', resource: testResourceServer.indicator }).toString();
    const req = httpRequest(`${url}/token`, {
      method: 'POST', agent: false,
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(body.length), authorization: `Basic ${Buffer.from(`machine:${secret}`).toString('base64')}`, connection: 'close' },
    }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'response error'));
    });
    req.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    req.end(body);
  });
}

describe('idp serve --workers 2 (SQLite)', () => {
  const dir = tempDir('idp-workers-');
  let server: ServerProcess;
  let env: Record<string, string>;
  let url: string;
  let secret: string;

  beforeAll(async () => {
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    env = {
      DATABASE_URL: `file:${join(dir.path, 'idp.db')}`, MASTER_KEY_FILE: join(dir.path, 'master.key'), ISSUER: url, PORT: String(port),
      LOG_LEVEL: 'info', RESOURCE_SERVERS: JSON.stringify([testResourceServer]), SHUTDOWN_DRAIN_SECONDS: '2',
    };
    expect((await runIdp(['migrate'], { env })).code).toBe(0);
    secret = jsonOf<{ client_secret: string }>(await runIdp(['clients', 'create'], { env, stdin: JSON.stringify({ client_id: 'machine', grant_types: ['client_credentials'], scope: 'api:read' }) })).client_secret;
    expect((await runIdp(['users', 'create', '--email', email, '--password-stdin'], { env, stdin: `${password}\n` })).code).toBe(0);
    server = startServer(['serve', '--workers', '2'], { env, url });
    await server.waitReady(60_000);
  }, 120_000);

  afterAll(async () => {
    await killAll();
    dir.remove();
  });

  /** The workers that logged a request for a path matching `pattern`. */
  const workersServing = (pattern: RegExp) => new Set(server.stdout.split('\n').filter((line) => line.includes('"msg":"request"')).map((line) => JSON.parse(line) as { worker?: number; path?: string })
    .filter((entry) => entry.path && pattern.test(entry.path)).map((entry) => entry.worker));

  it('a sign-in whose requests land on both workers finishes, and the code is redeemed', async () => {
    const secretWeb = jsonOf<{ client_secret: string }>(await runIdp(['clients', 'create'], { env, stdin: JSON.stringify({ client_id: 'webapp', redirect_uris: [redirectUri], first_party: true }) })).client_secret;
    const rp = await oidc.discovery(new URL(url), 'webapp', secretWeb, undefined, { execute: [oidc.allowInsecureRequests] });
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri });
    const callback = await signIn(new Browser(freshConnections), request.url, email, password);
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
    expect(tokens.claims()?.sub).toBeTruthy();
    const served = workersServing(/^\/interaction\//);
    expect(served.size, 'the interaction steps were served by both workers').toBe(2);
    expect([...served].every((id) => typeof id === 'number')).toBe(true);
  });

  it('/metrics counts the requests of both workers', async () => {
    const before = Number(/idp_http_request_duration_seconds_count\{route="token",status="200"\} (\d+)/.exec(await (await fetch(`${url}/metrics`)).text())?.[1] ?? 0);
    const statuses = await Promise.all(Array.from({ length: 10 }, () => tokenRequest(url, secret)));
    expect(statuses).toEqual(Array(10).fill(200));
    const text = await (await fetch(`${url}/metrics`)).text();
    const after = Number(/idp_http_request_duration_seconds_count\{route="token",status="200"\} (\d+)/.exec(text)?.[1]);
    expect(after - before).toBe(10);
    expect(workersServing(/^\/token$/).size).toBe(2);
  });

  it('SIGHUP restarts the workers one by one; no request is refused meanwhile', async () => {
    const workersBefore = new Set([...workersServing(/./)]);
    server.child.kill('SIGHUP');
    const statuses: (number | string)[] = [];
    for (const deadline = Date.now() + 20_000; Date.now() < deadline && !server.stdout.includes('"msg":"workers restarted"'); await sleep(20)) statuses.push(await tokenRequest(url, secret));
    expect(server.stdout).toContain('"msg":"workers restarted"');
    expect(statuses.length).toBeGreaterThan(5);
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    for (let i = 0; i < 6; i++) expect(await tokenRequest(url, secret)).toBe(200);
    const fresh = [...workersServing(/^\/token$/)].filter((id) => !workersBefore.has(id));
    expect(fresh.length, 'new workers serve now').toBeGreaterThan(0);
  }, 60_000);

  it('SIGTERM under load: readiness fails first, every request sent is answered, then the cluster exits 0', async () => {
    // The load balancer: it stops routing to the node once /readyz fails.
    let routing = true;
    const healthCheck = (async () => {
      while (routing) {
        const response = await fetch(`${url}/readyz`).catch(() => undefined);
        if (response?.status !== 200) routing = false;
        await response?.arrayBuffer();
        await sleep(50);
      }
    })();
    const outcomes: (number | string)[] = [];
    const loop = async () => {
      while (routing) outcomes.push(await tokenRequest(url, secret));
    };
    const loops = Array.from({ length: 8 }, loop);
    await sleep(700);
    const stopping = Date.now();
    const exited = server.stop('SIGTERM', 30_000);
    await Promise.all([healthCheck, ...loops]);
    expect(await exited, server.describe()).toEqual({ code: 0, signal: null });
    // Readiness failed at once; the node kept answering through the drain period, then stopped.
    expect(Date.now() - stopping).toBeGreaterThanOrEqual(2000);
    expect(outcomes.filter((o) => o === 200).length).toBeGreaterThan(20);
    expect(outcomes.filter((o) => o !== 200)).toEqual([]);
  }, 60_000);

  it('SIGTERM while the workers still start: every worker ends and the cluster exits 0', async () => {
    // An orchestrator may stop a node at any moment, also before it is ready.
    const starting = startServer(['serve', '--workers', '2'], { env, url });
    await starting.waitForOutput(/"msg":"starting workers"/, 30_000);
    const stopped = Date.now();
    expect(await starting.stop('SIGTERM', 30_000), starting.describe()).toEqual({ code: 0, signal: null });
    // The exit is seen once every process holding the output has ended: the workers too.
    expect(Date.now() - stopped).toBeLessThan(15_000);
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
  }, 60_000);
});
