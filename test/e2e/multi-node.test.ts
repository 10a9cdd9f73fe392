// Two `idp serve` processes behind an imaginary load balancer: one PostgreSQL database, one Redis
// key prefix, one master key file, the same ISSUER (node A's URL; node B is reached by rewriting
// host:port, as a balancer would route). A single login hops between the nodes at every step, so
// it only succeeds if sessions, interactions, login flows, codes, tokens and signing keys are
// shared state rather than per-process memory.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import * as oidc from 'openid-client';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';
import { redisNamespace, tempDir } from '../helpers/databases.ts';
import { emptyPostgres } from '../helpers/databases.ts';
import { jsonOf, killAll, runIdp, startServer, type RunResult, type ServerProcess } from '../helpers/processes.ts';
import { freePort } from '../helpers/server.ts';
import { authorizationRequest } from '../helpers/oidc.ts';

const redirectUri = 'http://localhost:8080/callback';
const email = 'carol@example.com';
const password = 'a long and shared password';

function expectExit(result: RunResult, code: number) {
  expect(result.code, `exit code\nstdout: ${result.stdout}\nstderr: ${result.stderr}`).toBe(code);
}

/** The same URL, sent to `node` instead (what a load balancer does). */
function on(node: ServerProcess, url: string | URL): URL {
  const target = new URL(url);
  target.host = new URL(node.url).host;
  return target;
}

describe('two nodes sharing one PostgreSQL database and one Redis prefix', () => {
  const dir = tempDir('idp-multi-');
  let database: Awaited<ReturnType<typeof emptyPostgres>> | undefined;
  let redis: Awaited<ReturnType<typeof redisNamespace>> | undefined;
  let env: Record<string, string>;
  let issuer: string;
  let a: ServerProcess;
  let b: ServerProcess;
  let clientSecret: string;
  let accountId: string;
  let rp: oidc.Configuration; // talks to node A
  let rpViaB: oidc.Configuration; // the same client, its back-channel calls routed to node B
  const callsToB: string[] = [];

  const cli = (args: string[], stdin?: string) => runIdp(args, { env, ...(stdin === undefined ? {} : { stdin }) });

  beforeAll(async () => {
    database = await emptyPostgres();
    redis = await redisNamespace();
    const [portA, portB] = [await freePort(), await freePort()];
    expect(portA).not.toBe(portB);
    issuer = `http://127.0.0.1:${portA}`;
    // The operator provisions one master key for all nodes (a KMS would play this part).
    const masterKeyFile = join(dir.path, 'master.key');
    writeFileSync(masterKeyFile, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    env = {
      DATABASE_URL: database.url,
      REDIS_URL: redis.url,
      REDIS_KEY_PREFIX: redis.prefix,
      MASTER_KEY_FILE: masterKeyFile,
      ISSUER: issuer,
      LOG_LEVEL: 'warn',
      MAX_LOGIN_ATTEMPTS_PER_INTERACTION: '2',
    };

    const migrated = await cli(['migrate']);
    expectExit(migrated, 0);
    expect(jsonOf<{ applied: string[] }>(migrated).applied.length).toBeGreaterThanOrEqual(2);

    // Both nodes start at once against a database without signing key or cookie keys.
    a = startServer(['serve'], { env: { ...env, PORT: String(portA) }, url: `http://127.0.0.1:${portA}` });
    b = startServer(['serve'], { env: { ...env, PORT: String(portB) }, url: `http://127.0.0.1:${portB}` });
    await Promise.all([a.waitReady(30_000), b.waitReady(30_000)]);

    const [client, user] = await Promise.all([
      cli(['clients', 'create'], JSON.stringify({ client_id: 'webapp', client_name: 'Web App', redirect_uris: [redirectUri], grant_types: ['authorization_code', 'refresh_token'] })),
      cli(['users', 'create', '--email', email, '--password-stdin', '--name', 'Carol Example'], `${password}\n`),
    ]);
    expectExit(client, 0);
    expectExit(user, 0);
    clientSecret = jsonOf<{ client_secret: string }>(client).client_secret;
    accountId = jsonOf<{ id: string }>(user).id;

    const insecure = { execute: [oidc.allowInsecureRequests] };
    rp = await oidc.discovery(new URL(issuer), 'webapp', clientSecret, undefined, insecure);
    rpViaB = await oidc.discovery(new URL(issuer), 'webapp', clientSecret, undefined, insecure);
    rpViaB[oidc.customFetch] = (url, options) => {
      const target = on(b, url);
      callsToB.push(target.pathname);
      return fetch(target, options as RequestInit);
    };
  }, 90_000);

  afterAll(async () => {
    await killAll();
    await redis?.clear();
    await database?.drop();
    dir.remove();
  });

  const authorize = () => authorizationRequest(rp, { redirect_uri: redirectUri, scope: 'openid profile email offline_access', prompt: 'consent' });


  /** One request to `node`, expecting a redirect; returns where it points (resolved against the issuer). */
  async function redirected(browser: Browser, node: ServerProcess, url: string | URL, init: RequestInit = {}): Promise<URL> {
    const response = await browser.request(on(node, url), init);
    const body = await response.text();
    expect([302, 303], `${init.method ?? 'GET'} ${new URL(url).pathname} on ${node.url}: ${response.status} ${body.slice(0, 300)}`).toContain(response.status);
    return new URL(response.headers.get('location')!, issuer);
  }

  /** One request to `node`, expecting a page with `status`; returns its HTML. */
  async function page(browser: Browser, node: ServerProcess, url: string | URL, init: RequestInit = {}, status = 200): Promise<string> {
    const response = await browser.request(on(node, url), init);
    const html = await response.text();
    expect(response.status, `${init.method ?? 'GET'} ${new URL(url).pathname} on ${node.url}: ${html.slice(0, 300)}`).toBe(status);
    return html;
  }

  const form = (fields: Record<string, string>): RequestInit => ({
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(fields).toString(),
  });

  it('generated one signing key although both nodes started at once, and both publish it', async () => {
    const jwksOf = async (node: ServerProcess) => {
      const response = await fetch(on(node, rp.serverMetadata().jwks_uri!));
      expect(response.status).toBe(200);
      return (await response.json()) as JSONWebKeySet;
    };
    const [jwksA, jwksB] = await Promise.all([jwksOf(a), jwksOf(b)]);
    expect(jwksA).toEqual(jwksB);
    expect(jwksA.keys).toHaveLength(1);
    expect(jwksA.keys[0]).toMatchObject({ kty: 'RSA', alg: 'RS256', use: 'sig' });
    expect(jwksA.keys[0]).not.toHaveProperty('d');

    const keys = jsonOf<{ kid: string; state: string }[]>(await cli(['keys', 'list']));
    expect(keys).toEqual([expect.objectContaining({ kid: jwksA.keys[0]!.kid, state: 'active' })]);

    const client = new pg.Client({ connectionString: database!.url });
    await client.connect();
    try {
      const generated = await client.query('SELECT count(*)::int AS n FROM "AuditEvent" WHERE type = $1', ['key.generated']);
      expect(generated.rows[0].n).toBe(1);
      const signingKeys = await client.query('SELECT count(*)::int AS n FROM "SigningKey"');
      expect(signingKeys.rows[0].n).toBe(1);
      // One of each shared secret (cookie keys, backup-code pepper), though both nodes raced to make them.
      const secrets = await client.query('SELECT name FROM "ServerSecret" ORDER BY name');
      expect(secrets.rows.map((row: { name: string }) => row.name)).toEqual(['backup-code-pepper', 'cookie-keys']);
    } finally {
      await client.end();
    }
  });

  it('signs in across both nodes: each step on the other node, tokens from B valid everywhere', async () => {
    const browser = new Browser();
    const request = await authorize();

    // Node A: the authorization request starts the interaction.
    const interaction = await redirected(browser, a, request.url);
    expect(interaction.pathname).toMatch(/^\/interaction\/[\w-]+$/);
    const keys = await redisKeyCount();
    expect(keys, 'short-lived provider state lives in Redis under the prefix').toBeGreaterThan(0);

    // Node A: the identify screen, and the email.
    const identify = await page(browser, a, interaction);
    expect(identify).toContain('name="email"');
    const passwordPage = await page(browser, a, new URL(formAction(identify, 'identify'), issuer), form({ csrf: csrfOf(identify), email }));
    expect(passwordPage).toContain('name="password"');

    // Node B: the password, against the login flow node A saved.
    const resume = await redirected(browser, b, new URL(formAction(passwordPage, 'password'), issuer), form({ csrf: csrfOf(passwordPage), password }));
    expect(resume.pathname).toMatch(/^\/auth\/[\w-]+$/);

    // Node B resumes the authorization (the login is done, consent is next); node A shows and takes the consent.
    const consentInteraction = await redirected(browser, b, resume);
    expect(consentInteraction.pathname).toMatch(/^\/interaction\/[\w-]+$/);
    const consent = await page(browser, a, consentInteraction);
    expect(consent).toContain('/consent"');
    const resumeAfterConsent = await redirected(browser, a, new URL(formAction(consent, 'consent'), issuer), form({ csrf: csrfOf(consent) }));
    const callback = await redirected(browser, a, resumeAfterConsent);
    expect(callback.origin + callback.pathname).toBe(redirectUri);
    expect(callback.searchParams.get('error')).toBeNull();
    expect(callback.searchParams.get('code')).toBeTruthy();

    // Node B redeems the code node A issued.
    callsToB.length = 0;
    const tokens = await oidc.authorizationCodeGrant(rpViaB, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
    expect(callsToB).toEqual([new URL(rp.serverMetadata().token_endpoint!).pathname]);
    expect(tokens.token_type.toLowerCase()).toBe('bearer');
    expect(tokens.refresh_token).toBeTruthy();

    // The ID token verifies against node B's JWKS, and was signed with the one shared key.
    const jwksB = createRemoteJWKSet(on(b, rp.serverMetadata().jwks_uri!));
    const { payload, protectedHeader } = await jwtVerify(tokens.id_token!, jwksB, { issuer, audience: 'webapp', algorithms: ['RS256'] });
    expect(payload).toMatchObject({ sub: accountId, nonce: request.nonce, amr: ['pwd'] });
    const published = jsonOf<{ kid: string }[]>(await cli(['keys', 'list']));
    expect(protectedHeader.kid).toBe(published[0]!.kid);

    // Node A answers userinfo for the access token node B issued.
    const userinfo = await oidc.fetchUserInfo(rp, tokens.access_token, accountId);
    expect(userinfo).toMatchObject({ sub: accountId, email, name: 'Carol Example' });

    // Node B refreshes; the new ID token verifies against node A's JWKS.
    callsToB.length = 0;
    const refreshed = await oidc.refreshTokenGrant(rpViaB, tokens.refresh_token!);
    expect(callsToB).toEqual([new URL(rp.serverMetadata().token_endpoint!).pathname]);
    expect(refreshed.refresh_token).toBeTruthy();
    expect(refreshed.refresh_token).not.toBe(tokens.refresh_token);
    expect(decodeProtectedHeader(refreshed.id_token!).kid).toBe(protectedHeader.kid);
    const jwksA = createRemoteJWKSet(on(a, rp.serverMetadata().jwks_uri!));
    const again = await jwtVerify(refreshed.id_token!, jwksA, { issuer, audience: 'webapp', algorithms: ['RS256'] });
    expect(again.payload.sub).toBe(accountId);
    expect((await oidc.fetchUserInfo(rp, refreshed.access_token, accountId)).email).toBe(email);

    // Node A knows the code was used, and that the first refresh token was rotated on node B;
    // that reuse revokes the grant, which node B then enforces.
    await expect(oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce })).rejects.toMatchObject({ error: 'invalid_grant' });
    await expect(oidc.refreshTokenGrant(rp, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    await expect(oidc.refreshTokenGrant(rpViaB, refreshed.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  /** A code from a full sign-in on node A (consent given). */
  async function codeFromA() {
    const browser = new Browser();
    const request = await authorize();
    const interaction = await redirected(browser, a, request.url);
    const identify = await page(browser, a, interaction);
    const passwordPage = await page(browser, a, new URL(formAction(identify, 'identify'), issuer), form({ csrf: csrfOf(identify), email }));
    const resume = await redirected(browser, a, new URL(formAction(passwordPage, 'password'), issuer), form({ csrf: csrfOf(passwordPage), password }));
    const consent = await page(browser, a, await redirected(browser, a, resume));
    const callback = await redirected(browser, a, await redirected(browser, a, new URL(formAction(consent, 'consent'), issuer), form({ csrf: csrfOf(consent) })));
    return { request, callback };
  }

  const oauthErrors = (results: PromiseSettledResult<unknown>[]) => results.filter((r) => r.status === 'rejected').map((r) => (r.reason as { error?: string }).error);

  it('one code sent to both nodes at once, five requests each: exactly one wins, the grant is revoked', async () => {
    const { request, callback } = await codeFromA();
    const checks = { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce };
    const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => oidc.authorizationCodeGrant(i % 2 ? rpViaB : rp, callback, checks)));
    const winners = results.filter((r) => r.status === 'fulfilled') as PromiseFulfilledResult<oidc.TokenEndpointResponse>[];
    expect(winners, JSON.stringify(oauthErrors(results))).toHaveLength(1);
    expect(oauthErrors(results)).toEqual(Array(9).fill('invalid_grant'));
    expect((await oidc.tokenIntrospection(rpViaB, winners[0]!.value.access_token)).active).toBe(false);
  });

  it('one refresh token sent to both nodes at once: exactly one rotation, then the grant is gone', async () => {
    const { request, callback } = await codeFromA();
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
    const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => oidc.refreshTokenGrant(i % 2 ? rpViaB : rp, tokens.refresh_token!)));
    const winners = results.filter((r) => r.status === 'fulfilled') as PromiseFulfilledResult<oidc.TokenEndpointResponse>[];
    expect(winners, JSON.stringify(oauthErrors(results))).toHaveLength(1);
    expect(oauthErrors(results)).toEqual(Array(9).fill('invalid_grant'));
    await expect(oidc.refreshTokenGrant(rp, winners[0]!.value.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  it('counts failed passwords per login across nodes', async () => {
    // MAX_LOGIN_ATTEMPTS_PER_INTERACTION is 2: one failure on each node ends the login.
    const browser = new Browser();
    const request = await authorize();
    const interaction = await redirected(browser, a, request.url);
    const identify = await page(browser, a, interaction);
    const passwordPage = await page(browser, a, new URL(formAction(identify, 'identify'), issuer), form({ csrf: csrfOf(identify), email }));
    const retry = await page(browser, a, new URL(formAction(passwordPage, 'password'), issuer), form({ csrf: csrfOf(passwordPage), password: 'wrong password one' }), 401);
    expect(retry).toContain('The email address or password is not correct.');
    const resume = await redirected(browser, b, new URL(formAction(retry, 'password'), issuer), form({ csrf: csrfOf(retry), password: 'wrong password two' }));
    const callback = await redirected(browser, b, resume);
    expect(callback.origin + callback.pathname).toBe(redirectUri);
    expect(callback.searchParams.get('error')).toBe('access_denied');
    expect(callback.searchParams.get('error_description')).toBe('too many failed sign-in attempts');
    expect(callback.searchParams.get('code')).toBeNull();
  });

  it('refuses a form post on the other node without the interaction cookies, or with a wrong CSRF token', async () => {
    const browser = new Browser();
    const request = await authorize();
    const interaction = await redirected(browser, a, request.url);
    const identify = await page(browser, a, interaction);
    const action = new URL(formAction(identify, 'identify'), issuer);
    const stranger = await page(new Browser(), b, action, form({ csrf: csrfOf(identify), email }), 400);
    expect(stranger).toContain('This sign-in request has expired or was already used.');
    const forged = await page(browser, b, action, form({ csrf: 'x'.repeat(43), email }), 403);
    expect(forged).not.toContain('name="password"');
    // The real form still works on node B afterwards.
    expect(await page(browser, b, action, form({ csrf: csrfOf(identify), email }))).toContain('name="password"');
  });

  it('keeps one intact audit chain although both nodes wrote to it', async () => {
    const result = await cli(['audit', 'verify']);
    expectExit(result, 0);
    const verified = jsonOf<{ ok: boolean; rows: number }>(result);
    expect(verified.ok).toBe(true);
    expect(verified.rows).toBeGreaterThan(10);
  });

  it('a node that cannot bind its port exits 1 promptly instead of hanging', async () => {
    // A third node configured with node A's port, which is taken.
    const clash = startServer(['serve'], { env: { ...env, PORT: new URL(a.url).port }, url: a.url });
    const exited = await Promise.race([clash.exited, new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), 8000))]);
    if (exited === 'still running') await clash.stop('SIGKILL');
    expect(clash.stderr).toMatch(/idp: listen EADDRINUSE/);
    expect(exited, `the process printed its error but did not exit:\n${clash.describe()}`).toEqual({ code: 1, signal: null });
    // Node A is unaffected.
    expect((await fetch(`${a.url}/healthz`)).status).toBe(200);
  });

  it('stops both nodes cleanly on SIGTERM', async () => {
    const [exitA, exitB] = await Promise.all([a.stop('SIGTERM'), b.stop('SIGTERM')]);
    expect(exitA, a.describe()).toEqual({ code: 0, signal: null });
    expect(exitB, b.describe()).toEqual({ code: 0, signal: null });
  });

  /** Keys under this test's prefix on the shared Redis. */
  async function redisKeyCount(): Promise<number> {
    const client = new Redis(redis!.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await client.connect();
      let count = 0;
      let cursor = '0';
      do {
        const [next, keys] = await client.scan(cursor, 'MATCH', `${redis!.prefix}*`, 'COUNT', 500);
        cursor = next;
        count += keys.length;
      } while (cursor !== '0');
      return count;
    } finally {
      client.disconnect();
    }
  }
});
