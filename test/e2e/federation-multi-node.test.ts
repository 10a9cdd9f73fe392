// Upstream OpenID Connect federation across two `idp serve` processes behind an imaginary load
// balancer (set up as in multi-node.test.ts: one PostgreSQL database, one Redis key prefix, one
// master key file, the same ISSUER — node A's URL; node B is reached by rewriting host:port). A
// federated sign-in starts on node A, the "Continue with JumpCloud" click is posted to node B,
// the upstream's answer is delivered to node B, and the rest happens on node A: it only succeeds
// if the pending upstream request (state, nonce, PKCE verifier), the flow and the interaction are
// shared state, and the state is good for one answer across nodes. The client and the connection
// are created with the CLI against the shared database. The upstream is a stand-in
// (test/helpers/upstreams.ts: a real oidc-provider on loopback in this process, the sign-in screen
// skipped): the cloud service it stands in for cannot be reached from here. The browser is a
// cookie jar that sends every cookie to every host (the nodes share the issuer's cookies, and the
// stand-in's cookie names are its own).
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as oidc from 'openid-client';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';
import { emptyPostgres, redisNamespace, tempDir } from '../helpers/databases.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { jsonOf, killAll, runIdp, startServer, type RunResult, type ServerProcess } from '../helpers/processes.ts';
import { freePort } from '../helpers/server.ts';
import { startOidcUpstream, type StandInUpstream } from '../helpers/upstreams.ts';

const redirectUri = 'http://localhost:8080/callback';
const secret = 'upstream-client-secret-0123456789';
const email = 'multi.node@jumpcloud.test';

function expectExit(result: RunResult, code: number) {
  expect(result.code, `exit code\nstdout: ${result.stdout}\nstderr: ${result.stderr}`).toBe(code);
}

/** The same URL, sent to `node` instead (what a load balancer does). */
function on(node: ServerProcess, url: string | URL): URL {
  const target = new URL(url);
  target.host = new URL(node.url).host;
  return target;
}

describe('a federated sign-in across two nodes sharing one PostgreSQL database and one Redis prefix', () => {
  const dir = tempDir('idp-fed-multi-');
  let database: Awaited<ReturnType<typeof emptyPostgres>> | undefined;
  let redis: Awaited<ReturnType<typeof redisNamespace>> | undefined;
  let env: Record<string, string>;
  let issuer: string;
  let a: ServerProcess;
  let b: ServerProcess;
  let upstream: StandInUpstream;
  let rp: oidc.Configuration; // talks to node A

  const cli = (args: string[], stdin?: string) => runIdp(args, { env, ...(stdin === undefined ? {} : { stdin }) });

  beforeAll(async () => {
    database = await emptyPostgres();
    redis = await redisNamespace();
    const [portA, portB] = [await freePort(), await freePort()];
    expect(portA).not.toBe(portB);
    issuer = `http://127.0.0.1:${portA}`;
    const masterKeyFile = join(dir.path, 'master.key');
    writeFileSync(masterKeyFile, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    env = {
      DATABASE_URL: database.url,
      REDIS_URL: redis.url,
      REDIS_KEY_PREFIX: redis.prefix,
      MASTER_KEY_FILE: masterKeyFile,
      ISSUER: issuer,
      LOG_LEVEL: 'warn',
      FEDERATION_ALLOW_HTTP: 'true',
    };

    // Registered at the upstream: our callback under the one issuer, whichever node answers it.
    upstream = await startOidcUpstream({
      flavour: 'plain',
      clients: [{ client_id: 'our-idp', client_secret: secret, redirect_uris: [`${issuer}/interaction/callback/oidc/jumpcloud`] }],
    });

    expectExit(await cli(['migrate']), 0);
    a = startServer(['serve'], { env: { ...env, PORT: String(portA) }, url: `http://127.0.0.1:${portA}` });
    b = startServer(['serve'], { env: { ...env, PORT: String(portB) }, url: `http://127.0.0.1:${portB}` });
    await Promise.all([a.waitReady(30_000), b.waitReady(30_000)]);

    // The client and the connection, created while both nodes run.
    const client = await cli(['clients', 'create'], JSON.stringify({ client_id: 'webapp', client_name: 'Web App', redirect_uris: [redirectUri], first_party: true }));
    expectExit(client, 0);
    const connection = await cli(['connections', 'create'], JSON.stringify({
      id: 'jumpcloud', preset: 'jumpcloud', display_name: 'JumpCloud', issuer: upstream.issuer, client_id: 'our-idp', client_secret: secret, clients: ['webapp'],
    }));
    expectExit(connection, 0);
    expect(jsonOf(connection)).toMatchObject({ id: 'jumpcloud', display_name: 'JumpCloud', has_client_secret: true });
    expect(connection.stdout).not.toContain(secret);

    rp = await oidc.discovery(new URL(issuer), 'webapp', jsonOf<{ client_secret: string }>(client).client_secret, undefined, { execute: [oidc.allowInsecureRequests] });
  }, 90_000);

  afterAll(async () => {
    await killAll();
    await upstream?.stop();
    await redis?.clear();
    await database?.drop();
    dir.remove();
  });

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

  async function auditRows(type: string): Promise<{ subject: string | null; details: Record<string, unknown> }[]> {
    const client = new pg.Client({ connectionString: database!.url });
    await client.connect();
    try {
      const result = await client.query('SELECT subject, details FROM "AuditEvent" WHERE type = $1 ORDER BY seq', [type]);
      return result.rows.map((row: { subject: string | null; details: string }) => ({ subject: row.subject, details: JSON.parse(row.details) as Record<string, unknown> }));
    } finally {
      await client.end();
    }
  }

  /**
   * The whole sign-in, hopping: authorization request and identify screen on A, the click on B,
   * the upstream, the callback on B, the rest on A. Returns the RP's request, the callback URL the
   * upstream sent the browser to, and where node A finally sent it.
   */
  async function federatedSignInAcrossNodes() {
    const browser = new Browser();
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri, scope: 'openid email profile' });
    const tokenRequestsBefore = upstream.tokenRequests;

    // Node A: the authorization request starts the interaction; its identify screen offers the connection.
    const interaction = await redirected(browser, a, request.url);
    expect(interaction.pathname).toMatch(/^\/interaction\/[\w-]+$/);
    const identify = await page(browser, a, interaction);
    expect(identify).toContain('Continue with JumpCloud</button>');

    // Node B: the click, against the flow node A saved; it sends the browser upstream.
    const toUpstream = await redirected(browser, b, new URL(formAction(identify, 'identify'), issuer), form({ csrf: csrfOf(identify), method: 'oidc', connection: 'jumpcloud' }));
    expect(toUpstream.origin).toBe(new URL(upstream.issuer).origin);
    expect(toUpstream.searchParams.get('redirect_uri')).toBe(`${issuer}/interaction/callback/oidc/jumpcloud`);
    expect(toUpstream.searchParams.get('code_challenge_method')).toBe('S256');

    // The upstream signs the user in and sends the browser back to our callback (under the issuer, node A's address).
    const back = await browser.follow(toUpstream, toUpstream.origin);
    expect(back.url.origin, 'the upstream sends the browser back to us').toBe(issuer);
    expect(back.url.pathname).toBe('/interaction/callback/oidc/jumpcloud');
    const callbackUrl = back.url;
    expect(callbackUrl.searchParams.get('code')).toBeTruthy();

    // Node B: the answer, for the upstream request node B started; it redeems the code and returns to the interaction.
    const resumed = await redirected(browser, b, callbackUrl);
    expect(resumed.href).toBe(interaction.href);
    expect(upstream.tokenRequests - tokenRequestsBefore, 'the upstream code was redeemed once').toBe(1);

    // Node A: the rest, until the browser leaves for the client (first party: no consent screen).
    let next = resumed;
    for (let hops = 0; hops < 6 && next.origin === issuer; hops++) next = await redirected(browser, a, next);
    expect(next.origin + next.pathname, 'the sign-in reached the application').toBe(redirectUri);
    expect(next.searchParams.get('error'), next.searchParams.get('error_description') ?? '').toBeNull();
    // One jar for every host: our cookies and the stand-in's sit side by side under their own names.
    expect(browser.cookie('_session'), 'our session cookie').toBeTruthy();
    expect(browser.cookie(`up${new URL(upstream.issuer).port}_session`), 'the upstream\'s session cookie').toBeTruthy();
    return { request, callbackUrl, landed: next };
  }

  it('starts on node A, takes the click and the upstream\'s answer on node B, finishes on node A: tokens for the JIT account, amr fed', async () => {
    upstream.signInAs({ id: 'jc-multi-1', claims: { email, email_verified: true, name: 'Multi Node' } });
    const { request, landed } = await federatedSignInAcrossNodes();
    const tokens = await oidc.authorizationCodeGrant(rp, landed, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });

    const shown = await cli(['users', 'show', email]);
    expectExit(shown, 0);
    const account = jsonOf<{ id: string; email: string; email_verified: boolean; has_password: boolean }>(shown);
    expect(account).toMatchObject({ email, email_verified: true, has_password: false });
    expect(tokens.claims()).toMatchObject({ iss: issuer, aud: 'webapp', sub: account.id, amr: ['fed'], nonce: request.nonce });
    expect(await oidc.fetchUserInfo(rp, tokens.access_token, account.id)).toMatchObject({ sub: account.id, email, name: 'Multi Node' });

    expect((await auditRows('federation.account_created')).at(-1)).toMatchObject({ subject: account.id, details: { connection: 'jumpcloud', upstreamSubject: 'jc-multi-1' } });
    expect((await auditRows('federation.signed_in')).at(-1)).toMatchObject({ subject: account.id, details: { connection: 'jumpcloud', upstreamSubject: 'jc-multi-1' } });
  });

  it('the upstream\'s answer works once across nodes: replayed to node A (and to node B) after node B took it, 400 and nothing signed in', async () => {
    upstream.signInAs({ id: 'jc-multi-1', claims: { email, email_verified: true, name: 'Multi Node' } });
    const { request, callbackUrl, landed } = await federatedSignInAcrossNodes();
    // The second sign-in found the account the first one created.
    const tokens = await oidc.authorizationCodeGrant(rp, landed, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
    const account = jsonOf<{ id: string }>(await cli(['users', 'show', email]));
    expect(tokens.claims()!.sub).toBe(account.id);
    expect(await auditRows('federation.account_created')).toHaveLength(1);

    const refusedBefore = (await auditRows('federation.refused')).length;
    const tokenRequestsBefore = upstream.tokenRequests;
    for (const node of [a, b]) {
      const replay = await fetch(on(node, callbackUrl), { redirect: 'manual' });
      const html = await replay.text();
      expect(replay.status, `replayed on ${node.url}: ${html.slice(0, 300)}`).toBe(400);
      expect(html).toContain('does not belong to a sign-in in progress');
      expect(replay.headers.get('location')).toBeNull();
    }
    expect(upstream.tokenRequests, 'a replay never reaches the upstream').toBe(tokenRequestsBefore);
    const refused = (await auditRows('federation.refused')).slice(refusedBefore);
    expect(refused).toHaveLength(2);
    for (const row of refused) expect(row.details).toMatchObject({ connection: 'jumpcloud', reason: 'unknown_state' });
  });

  it('neither node logged a warning or an error on the way', () => {
    // LOG_LEVEL is warn: pino's JSON lines of level 40 (warn) and up, and anything on stderr.
    const level = (line: string) => {
      try {
        return (JSON.parse(line) as { level?: number }).level ?? 0;
      } catch {
        return 0;
      }
    };
    for (const node of [a, b]) {
      expect(node.stdout.split('\n').filter((line) => level(line) >= 40), node.describe()).toEqual([]);
      expect(node.stderr.trim(), node.describe()).toBe('');
    }
  });
});
