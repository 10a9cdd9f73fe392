// Signing-key rotation end to end: a relying party keeps verifying tokens issued before a
// rotation, picks up the new key by kid, and stops accepting old tokens once the old key leaves
// the JWKS; staged keys are published before they sign, on every node; emergency rotation;
// crash safety; JWKS caching headers.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { emptyPostgres, emptySqlite, redisNamespace, tempDir } from '../helpers/databases.ts';
import { idpScript, jsonOf, killAll, runIdp, startServer } from '../helpers/processes.ts';
import { freePort, startIdp, testResourceServer, type TestIdp } from '../helpers/server.ts';
import { sleep } from '../helpers/time.ts';

const resource = testResourceServer.indicator;

async function machineToken(url: string, secret: string): Promise<string> {
  const response = await fetch(`${url}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`machine:${secret}`).toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'api:read', resource }).toString(),
  });
  expect(response.status).toBe(200);
  return ((await response.json()) as { access_token: string }).access_token;
}

const kidOf = (token: string) => decodeProtectedHeader(token).kid!;
async function publishedKids(url: string): Promise<string[]> {
  return ((await (await fetch(`${url}/jwks`)).json()) as { keys: { kid: string }[] }).keys.map((k) => k.kid);
}

describe('key rotation on one node', () => {
  let t: TestIdp;
  let secret: string;

  beforeAll(async () => {
    t = await startIdp('sqlite', { KEY_PREPUBLICATION_SECONDS: '2', KEY_REFRESH_SECONDS: '1', KEY_RETENTION_SECONDS: '2', KEY_ROTATION_INTERVAL_DAYS: '0' });
    secret = (await t.idp.clients.create({ client_id: 'machine', grant_types: ['client_credentials'], scope: 'api:read' })).clientSecret!;
  });
  afterAll(async () => t?.stop());

  it('serves the JWKS with Cache-Control matching the pre-publication delay and an ETag', async () => {
    const first = await fetch(`${t.url}/jwks`);
    expect(first.headers.get('cache-control')).toBe('public, max-age=2');
    const etag = first.headers.get('etag');
    expect(etag).toMatch(/^"[A-Za-z0-9_-]+"$/);
    const again = await fetch(`${t.url}/jwks`, { headers: { 'if-none-match': etag! } });
    expect(again.status).toBe(304);
    expect(await again.text()).toBe('');
  });

  it('publishes a staged key before signing with it, keeps old tokens valid, then retires the old key', async () => {
    const rp = createRemoteJWKSet(new URL(`${t.url}/jwks`), { cooldownDuration: 0 });
    const before = await machineToken(t.url, secret);
    const oldKid = kidOf(before);
    await jwtVerify(before, rp, { issuer: t.issuer, audience: resource });

    const staged = await t.idp.keyLifecycle.rotate({ actor: 'test' });
    expect(staged).toMatchObject({ state: 'staged' });
    await t.idp.refreshKeys();
    expect(await publishedKids(t.url)).toEqual(expect.arrayContaining([oldKid, staged!.kid]));
    // Staged: published, not signing.
    expect(kidOf(await machineToken(t.url, secret))).toBe(oldKid);

    // Time moves on to the activation (the key step of any node promotes the key when it is due).
    await t.idp.keyLifecycle.tick(staged!.activateAt);
    await t.idp.refreshKeys();
    const after = await machineToken(t.url, secret);
    expect(kidOf(after)).toBe(staged!.kid);
    // The relying party meets an unknown kid, refetches the JWKS and verifies; the old token still verifies.
    await jwtVerify(after, rp, { issuer: t.issuer, audience: resource });
    await jwtVerify(before, rp, { issuer: t.issuer, audience: resource });
    const oldRow = await t.idp.keys.find(oldKid);
    expect(oldRow).toMatchObject({ state: 'retired' });

    // After the retention, the old key leaves the JWKS and its tokens stop verifying.
    await t.idp.keyLifecycle.tick(new Date(oldRow!.removeAt!.getTime()));
    await t.idp.refreshKeys();
    expect(await publishedKids(t.url)).not.toContain(oldKid);
    const freshRp = createRemoteJWKSet(new URL(`${t.url}/jwks`));
    await expect(jwtVerify(before, freshRp, { issuer: t.issuer, audience: resource })).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
    const types = (await t.idp.db.prisma.auditEvent.findMany({ where: { type: { startsWith: 'key.' } } })).map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(['key.generated', 'key.staged', 'key.activated', 'key.removed', 'key.unwrapped']));
  });

  it('in an emergency signs with the new key as soon as every node publishes it and, with revoke-old, drops the old key once every node has switched', async () => {
    const before = await machineToken(t.url, secret);
    const oldKid = kidOf(before);
    const at = new Date();
    const rotated = (await t.idp.keyLifecycle.rotate({ now: true, revokeOld: true, actor: 'test' }, at))!;
    // KEY_REFRESH_SECONDS is 1: three refreshes and two seconds, not the routine pre-publication delay.
    expect(rotated.activateAt.getTime() - at.getTime()).toBe(5000);
    expect(rotated.removeOldAt!.getTime() - rotated.activateAt.getTime()).toBe(5000);
    await t.idp.refreshKeys();
    expect(await publishedKids(t.url)).toEqual(expect.arrayContaining([rotated.kid, oldKid]));
    expect(kidOf(await machineToken(t.url, secret)), 'published, not yet signing').toBe(oldKid);

    // The key step (any node's, here moved forward in time) switches the signer at activateAt...
    await t.idp.keyLifecycle.tick(rotated.activateAt);
    await t.idp.refreshKeys();
    expect(kidOf(await machineToken(t.url, secret))).toBe(rotated.kid);
    // ...while the old key stays published for the nodes that have not switched yet.
    expect(await publishedKids(t.url)).toContain(oldKid);
    await jwtVerify(before, createRemoteJWKSet(new URL(`${t.url}/jwks`)), { issuer: t.issuer });

    await t.idp.keyLifecycle.tick(rotated.removeOldAt);
    await t.idp.refreshKeys();
    expect(await publishedKids(t.url)).not.toContain(oldKid);
    await expect(jwtVerify(before, createRemoteJWKSet(new URL(`${t.url}/jwks`)), { issuer: t.issuer })).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
  });

  it('an emergency rotation replaces a key staged earlier, which never signs', async () => {
    const routine = (await t.idp.keyLifecycle.rotate({ actor: 'test' }))!;
    const emergency = (await t.idp.keyLifecycle.rotate({ now: true, actor: 'test' }))!;
    expect((await t.idp.keys.find(routine.kid))?.state ?? 'removed').not.toBe('staged');
    await t.idp.keyLifecycle.tick(new Date(Math.max(routine.activateAt.getTime(), emergency.activateAt.getTime())));
    expect((await t.idp.keys.findActive('RS256'))!.kid).toBe(emergency.kid);
  });

  it('stages a new key on the rotation schedule, once, even when several nodes tick together', async () => {
    const scheduled = await startIdp('sqlite', { KEY_ROTATION_INTERVAL_DAYS: '90', KEY_PREPUBLICATION_SECONDS: '60', KEY_REFRESH_SECONDS: '5' });
    try {
      const active = (await scheduled.idp.keys.findActive('RS256'))!;
      expect(await scheduled.idp.keyLifecycle.tick(new Date(active.activatedAt!.getTime() + 89 * 86400_000))).toBe(false);
      const due = new Date(active.activatedAt!.getTime() + 90 * 86400_000 + 1000);
      await Promise.all([scheduled.idp.keyLifecycle.tick(due), scheduled.idp.keyLifecycle.tick(due), scheduled.idp.keyLifecycle.tick(due)]);
      const staged = (await scheduled.idp.keys.listPublished()).filter((k) => k.state === 'staged');
      expect(staged).toHaveLength(1);
      expect(staged[0]!.activateAt!.getTime()).toBe(due.getTime() + 60_000);
      expect(await scheduled.idp.db.prisma.auditEvent.count({ where: { type: 'key.staged', actor: 'schedule' } })).toBe(1);
    } finally {
      await scheduled.stop();
    }
  });

  it('refuses to retire the active key or an unknown one, and --revoke-old without --now', async () => {
    const active = (await t.idp.keys.findActive('RS256'))!;
    await expect(t.idp.keyLifecycle.retire(active.kid, 'test')).rejects.toMatchObject({ code: 'ERR_ACTIVE_KEY', status: 409 });
    await expect(t.idp.keyLifecycle.retire('no-such-kid', 'test')).rejects.toMatchObject({ status: 404 });
    await expect(t.idp.keyLifecycle.rotate({ revokeOld: true, actor: 'test' })).rejects.toMatchObject({ status: 400 });
  });
});

describe('several signing algorithms', () => {
  let t: TestIdp;
  beforeAll(async () => {
    t = await startIdp('sqlite', { KEY_ALGORITHMS: 'RS256,ES256,EdDSA', KEY_ROTATION_INTERVAL_DAYS: '0' });
  });
  afterAll(async () => t?.stop());

  it('keeps one active key per algorithm, signs ID tokens with the client\'s algorithm, and rotates each on its own', async () => {
    const meta = (await (await fetch(`${t.url}/.well-known/openid-configuration`)).json()) as { id_token_signing_alg_values_supported: string[] };
    expect(meta.id_token_signing_alg_values_supported.sort()).toEqual(['ES256', 'EdDSA', 'RS256']);
    const jwks = (await (await fetch(`${t.url}/jwks`)).json()) as { keys: { kid: string; alg: string; kty: string; crv?: string; d?: string }[] };
    expect(jwks.keys.map((k) => `${k.alg}/${k.kty}${k.crv ? `/${k.crv}` : ''}`).sort()).toEqual(['ES256/EC/P-256', 'EdDSA/OKP/Ed25519', 'RS256/RSA']);
    expect(jwks.keys.some((k) => 'd' in k)).toBe(false);

    const { Browser, signIn } = await import('../helpers/browser.ts');
    const oidc = await import('openid-client');
    await t.idp.accounts.create({ email: 'alg@example.com', password: 'a password long enough' });
    const remote = createRemoteJWKSet(new URL(`${t.url}/jwks`));
    for (const alg of ['ES256', 'EdDSA'] as const) {
      const secret = (await t.idp.clients.create({ client_id: `rp-${alg}`, redirect_uris: ['http://localhost:8080/cb'], id_token_signed_response_alg: alg, first_party: true })).clientSecret!;
      const rp = await oidc.discovery(new URL(t.issuer), `rp-${alg}`, secret, undefined, { execute: [oidc.allowInsecureRequests] });
      const verifier = oidc.randomPKCECodeVerifier();
      const url = oidc.buildAuthorizationUrl(rp, { redirect_uri: 'http://localhost:8080/cb', scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
      const callback = await signIn(new Browser(), url, 'alg@example.com', 'a password long enough');
      const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: verifier });
      const { protectedHeader } = await jwtVerify(tokens.id_token!, remote, { issuer: t.issuer, audience: `rp-${alg}` });
      expect(protectedHeader.alg).toBe(alg);
    }

    const rs256 = (await t.idp.keys.findActive('RS256'))!.kid;
    const es256 = (await t.idp.keys.findActive('ES256'))!.kid;
    const rotated = await t.idp.keyLifecycle.rotate({ now: true, alg: 'ES256', actor: 'test' });
    expect(rotated).toMatchObject({ alg: 'ES256', state: 'staged' });
    await t.idp.keyLifecycle.tick(rotated!.activateAt);
    expect((await t.idp.keys.findActive('ES256'))!.kid).toBe(rotated!.kid);
    expect((await t.idp.keys.findActive('RS256'))!.kid).toBe(rs256);
    expect((await t.idp.keys.find(es256))!.state).toBe('retired');
    await expect(t.idp.keyLifecycle.rotate({ alg: 'PS256', actor: 'test' })).rejects.toMatchObject({ status: 400 });
  });
});

describe('key rotation across processes', () => {
  afterAll(killAll);

  it('leaves exactly one active key when rotations are killed part-way (crash safety)', async () => {
    const dir = tempDir('idp-crash-');
    const database = emptySqlite();
    const env = { DATABASE_URL: database.url, MASTER_KEY_FILE: join(dir.path, 'master.key'), LOG_LEVEL: 'silent', RESOURCE_SERVERS: JSON.stringify([testResourceServer]) };
    try {
      expect((await runIdp(['migrate'], { env })).code).toBe(0);
      expect((await runIdp(['keys', 'list'], { env })).code).toBe(0);
      // A rotation takes about 1.2 s here (start-up, key generation, one transaction); the kills
      // land at spread-out moments across that window, some before and some after it commits.
      const outcomes: string[] = [];
      for (const delay of [300, 600, 800, 900, 1000, 1100, 1200, 1400]) {
        const child = spawn(process.execPath, [idpScript, 'keys', 'rotate', '--now'], { env: { ...env, PATH: process.env.PATH ?? '' }, stdio: 'ignore' });
        const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
        await sleep(delay);
        child.kill('SIGKILL');
        outcomes.push((await exited) === 0 ? 'finished' : 'killed');
      }
      expect(outcomes, 'at least one rotation was killed part-way').toContain('killed');
      const list = await runIdp(['keys', 'list'], { env });
      const keys = jsonOf<{ kid: string; state: string }[]>(list);
      expect(keys.filter((k) => k.state === 'active')).toHaveLength(1);
      // A server started now publishes the active key and signs with it.
      const port = await freePort();
      const server = startServer(['serve'], { env: { ...env, ISSUER: `http://127.0.0.1:${port}`, PORT: String(port) }, url: `http://127.0.0.1:${port}` });
      await server.waitReady();
      const active = keys.find((k) => k.state === 'active')!.kid;
      expect(await publishedKids(server.url)).toContain(active);
      const created = await runIdp(['clients', 'create'], { env, stdin: JSON.stringify({ client_id: 'machine', grant_types: ['client_credentials'], scope: 'api:read' }) });
      const secret = jsonOf<{ client_secret: string }>(created).client_secret;
      expect(kidOf(await machineToken(server.url, secret))).toBe(active);
      await server.stop();
    } finally {
      await database.drop();
      dir.remove();
    }
  });

  it('two nodes both publish a key rotated through the CLI before either signs with it', async () => {
    const dir = tempDir('idp-nodes-');
    const keyFile = join(dir.path, 'master.key');
    writeFileSync(keyFile, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    const database = await emptyPostgres();
    const redis = await redisNamespace();
    const [portA, portB] = [await freePort(), await freePort()];
    const issuer = `http://127.0.0.1:${portA}`;
    const env = {
      DATABASE_URL: database.url, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix, MASTER_KEY_FILE: keyFile, LOG_LEVEL: 'warn', ISSUER: issuer,
      KEY_PREPUBLICATION_SECONDS: '4', KEY_REFRESH_SECONDS: '1', KEY_ROTATION_INTERVAL_DAYS: '0', CLIENT_CACHE_SECONDS: '0',
      RESOURCE_SERVERS: JSON.stringify([testResourceServer]),
    };
    try {
      expect((await runIdp(['migrate'], { env })).code).toBe(0);
      const a = startServer(['serve'], { env: { ...env, PORT: String(portA) }, url: `http://127.0.0.1:${portA}` });
      const b = startServer(['serve'], { env: { ...env, PORT: String(portB) }, url: `http://127.0.0.1:${portB}` });
      await Promise.all([a.waitReady(), b.waitReady()]);
      const secret = jsonOf<{ client_secret: string }>(await runIdp(['clients', 'create'], { env, stdin: JSON.stringify({ client_id: 'machine', grant_types: ['client_credentials'], scope: 'api:read' }) })).client_secret;
      const oldKid = kidOf(await machineToken(a.url, secret));

      const rotated = jsonOf<{ kid: string; state: string; activates: string }>(await runIdp(['keys', 'rotate'], { env }));
      expect(rotated.state).toBe('staged');
      const activatesAt = Date.parse(rotated.activates);
      // Watch both nodes until both sign with the new key: every token signed with it must come
      // after both nodes publish it, and both must publish it before it is due to sign.
      const publishedAt: Record<string, number> = {};
      let firstNewSignature = 0;
      for (const deadline = Date.now() + 15_000; Date.now() < deadline; await sleep(200)) {
        for (const node of [a, b]) {
          if (!publishedAt[node.url] && (await publishedKids(node.url)).includes(rotated.kid)) publishedAt[node.url] = Date.now();
          const kid = kidOf(await machineToken(node.url, secret));
          expect([oldKid, rotated.kid]).toContain(kid);
          if (kid === rotated.kid) {
            firstNewSignature ||= Date.now();
            expect(Object.keys(publishedAt), 'both nodes publish the key before any signs with it').toHaveLength(2);
          }
        }
        if (firstNewSignature && [a, b].every((n) => publishedAt[n.url])) {
          const kids = await Promise.all([a, b].map(async (n) => kidOf(await machineToken(n.url, secret))));
          if (kids.every((k) => k === rotated.kid)) break;
        }
      }
      expect(Object.values(publishedAt).every((t) => t < activatesAt)).toBe(true);
      expect(firstNewSignature).toBeGreaterThanOrEqual(activatesAt);
      expect(await Promise.all([a, b].map(async (n) => kidOf(await machineToken(n.url, secret))))).toEqual([rotated.kid, rotated.kid]);
      await Promise.all([a.stop(), b.stop()]);
    } finally {
      await killAll();
      await redis.clear();
      await database.drop();
      dir.remove();
    }
  }, 60_000);
});
