// `npm run bench`: client-credentials grants per second (JWT access tokens, RS256) from our IdP,
// against a bare oidc-provider (in-memory adapter, same signing key) measured the same way in the
// same run; prints ours/bare (target >= 0.8), the audit rows our run wrote and whether the audit
// chain still verifies, and a raw RS256 signing rate as a reference. Writes
// bench/results/client-credentials.json. Exits non-zero when any request failed, a token did not
// validate, or the audit log lost events or broke its chain; the ratio target is only reported.
//
// Arrangement: both servers live in this process on their own loopback ports; each load run is
// autocannon with `workers: 1` (autocannon's own worker thread), so the load generator has its own
// event loop and does not take turns with the server under test on the main thread. Only one server
// is under load at a time. After a warm-up run for each, each server's measured time is split into
// rounds run in ABBA order (ours, bare, bare, ours, ...), so drift in what else the machine is doing
// falls on both alike.
//
// "main CPU ms/req" is the CPU time the main thread spent per successful request: with both servers
// on that thread it is the cost to compare, and it is less disturbed than requests/s by whatever
// else runs on the machine.
//
// Environment: BENCH_SECONDS (10) of measured load per server, BENCH_ROUNDS (2) it is split into,
// BENCH_CONNECTIONS (10), BENCH_WARMUP_SECONDS (3), BENCH_BACKEND (sqlite, or postgresql /
// postgresql+redis on the test servers of test/helpers/databases.ts). BENCH_PROFILE=1 also writes
// a CPU profile of the main thread for each measured round to
// bench/results/{ours,bare}-<round>.cpuprofile (open in Chrome DevTools; profiling slows both).
import { execFileSync } from 'node:child_process';
import { createPrivateKey, randomBytes, sign as nodeSign, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Session } from 'node:inspector/promises';

import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { CompactSign, createRemoteJWKSet, jwtVerify, type JWK } from 'jose';
import Provider, { type Configuration } from 'oidc-provider';
import { createIdp, type Idp } from '../src/app.ts';
import type { AuditInput } from '../src/audit/types.ts';
import { loadConfig } from '../src/config.ts';
import { Keyring } from '../src/keys/keyring.ts';
import { LocalMasterKey } from '../src/keys/local-master-key.ts';
import { createLogger } from '../src/log.ts';
import { SigningKeyStore } from '../src/store/signing-keys.ts';
import { freshDatabase, redisNamespace } from '../test/helpers/databases.ts';
import { freePort } from '../test/helpers/server.ts';

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer (got ${JSON.stringify(raw)})`);
  return value;
}

const seconds = intEnv('BENCH_SECONDS', 10);
const connections = intEnv('BENCH_CONNECTIONS', 10);
const rounds = intEnv('BENCH_ROUNDS', 2);
const warmupSeconds = intEnv('BENCH_WARMUP_SECONDS', 3);
const backends = ['sqlite', 'postgresql', 'postgresql+redis'] as const;
const backend = (process.env.BENCH_BACKEND || 'sqlite') as (typeof backends)[number];
if (!backends.includes(backend)) throw new Error(`BENCH_BACKEND must be one of ${backends.join(', ')} (got ${JSON.stringify(backend)})`);
const profile = ['1', 'true', 'yes'].includes((process.env.BENCH_PROFILE ?? '').toLowerCase());
const signSeconds = 2;
const target = 0.8;
const resource = 'https://api.example.test';
const scope = 'api:read';
const resultsFile = new URL('./results/client-credentials.json', import.meta.url);

class BenchError extends Error {}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => unknown, port: number): Promise<Server> {
  const server = createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return server;
}

async function stopServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

interface LoadRequest {
  url: string;
  headers: Record<string, string>;
  body: string;
  connections: number;
  duration: number;
}

interface LoadResult {
  seconds: number;
  requestsPerSecond: number;
  ok: number;
  sent: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  resets: number;
  mismatches: number;
  statusCodes: Record<string, number>;
  latency: { p50: number; p90: number; p99: number; max: number; mean: number };
}

async function runLoad(request: LoadRequest): Promise<LoadResult> {
  const result = await autocannon({
    url: request.url,
    method: 'POST',
    headers: request.headers,
    body: request.body,
    connections: request.connections,
    duration: request.duration,
    workers: 1,
    // Far above any sane latency: a request this slow counts as a timeout, which fails the run.
    timeout: 30,
  });
  return {
    seconds: result.duration,
    // Completed 200s over the wall-clock duration (autocannon's per-second average drops the partial last second).
    requestsPerSecond: result['2xx'] / result.duration,
    ok: result['2xx'],
    sent: result.requests.sent,
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    resets: result.resets,
    mismatches: result.mismatches,
    statusCodes: Object.fromEntries(Object.entries(result.statusCodeStats).map(([code, s]) => [code, s.count])),
    latency: { p50: result.latency.p50, p90: result.latency.p90, p99: result.latency.p99, max: result.latency.max, mean: result.latency.mean },
  };
}

/** Fails the run on anything but a clean 200 for every request. */
function checkLoad(label: string, result: LoadResult): void {
  const problems = Object.entries({ non2xx: result.non2xx, errors: result.errors, timeouts: result.timeouts, resets: result.resets, mismatches: result.mismatches })
    .filter(([, n]) => n > 0)
    .map(([what, n]) => `${n} ${what}`);
  const codes = Object.keys(result.statusCodes).filter((code) => code !== '200');
  if (codes.length) problems.push(`status codes ${JSON.stringify(result.statusCodes)}`);
  if (result.ok === 0) problems.push('no successful response');
  if (problems.length) throw new BenchError(`${label}: ${problems.join(', ')}`);
}

interface Target {
  name: string;
  issuer: string;
  clientId: string;
  clientSecret: string;
}

function tokenRequest(t: Target, duration: number): LoadRequest {
  return {
    url: `${t.issuer}/token`,
    headers: {
      authorization: `Basic ${Buffer.from(`${encodeURIComponent(t.clientId)}:${encodeURIComponent(t.clientSecret)}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope, resource }).toString(),
    connections,
    duration,
  };
}

/** One real token from the server, verified against the JWKS the server publishes. */
async function validateToken(t: Target, kid: string): Promise<void> {
  const request = tokenRequest(t, 0);
  const response = await fetch(request.url, { method: 'POST', headers: request.headers, body: request.body });
  const body = (await response.json()) as { access_token?: string; token_type?: string; scope?: string };
  if (response.status !== 200 || !body.access_token) throw new BenchError(`${t.name}: token request answered ${response.status} ${JSON.stringify(body)}`);
  const discovery = (await (await fetch(`${t.issuer}/.well-known/openid-configuration`)).json()) as { jwks_uri: string };
  const jwks = createRemoteJWKSet(new URL(discovery.jwks_uri));
  const { payload, protectedHeader } = await jwtVerify(body.access_token, jwks, {
    issuer: t.issuer, audience: resource, typ: 'at+jwt', algorithms: ['RS256'],
  });
  if (protectedHeader.kid !== kid) throw new BenchError(`${t.name}: token signed with kid ${protectedHeader.kid}, expected the shared key ${kid}`);
  if (payload.client_id !== t.clientId || payload.scope !== scope) throw new BenchError(`${t.name}: unexpected token claims ${JSON.stringify(payload)}`);
}

/** Raw RS256 signing rate: node:crypto on this thread, and jose (what oidc-provider calls, WebCrypto) with `connections` in flight. */
async function rawSigning(jwk: JWK): Promise<{ nodeCryptoSync: number; joseConcurrent: number }> {
  const key: KeyObject = createPrivateKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
  const header = Buffer.from(JSON.stringify({ alg: 'RS256', typ: 'at+jwt', kid: jwk.kid })).toString('base64url');
  const payloadFor = (i: number) => ({ jti: `bench-${i}`, sub: 'bench', iat: 1, exp: 2, scope, client_id: 'bench', iss: 'http://127.0.0.1', aud: resource });

  let n = 0;
  let start = performance.now();
  while (performance.now() - start < signSeconds * 1000) {
    const input = `${header}.${Buffer.from(JSON.stringify(payloadFor(n))).toString('base64url')}`;
    nodeSign('sha256', Buffer.from(input), key).toString('base64url');
    n++;
  }
  const nodeCryptoSync = n / ((performance.now() - start) / 1000);

  n = 0;
  start = performance.now();
  const deadline = start + signSeconds * 1000;
  await Promise.all(Array.from({ length: connections }, async () => {
    while (performance.now() < deadline) {
      await new CompactSign(Buffer.from(JSON.stringify(payloadFor(n)))).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: jwk.kid }).sign(key);
      n++;
    }
  }));
  const joseConcurrent = n / ((performance.now() - start) / 1000);
  return { nodeCryptoSync, joseConcurrent };
}

/** Watches the audit writes of our run: how long `record` takes to commit, and how many events each commit carries. */
function instrumentAudit(idp: Idp) {
  const audit = idp.audit;
  const original = audit.record.bind(audit);
  const latencies: number[] = [];
  let batches = 0;
  let batchOpen = false;
  let maxPending = 0;
  let pending = 0;
  audit.record = (event: AuditInput) => {
    const start = performance.now();
    pending++;
    maxPending = Math.max(maxPending, pending);
    const promise = original(event);
    // AuditLog resolves a whole batch synchronously after its commit; the callbacks below then run
    // back to back, and the microtask queued by the first runs after the last: one batch.
    void promise.then(() => {
      pending--;
      latencies.push(performance.now() - start);
      if (!batchOpen) {
        batchOpen = true;
        batches++;
        queueMicrotask(() => (batchOpen = false));
      }
    }, () => pending--);
    return promise;
  };
  return {
    reset() {
      latencies.length = 0;
      batches = 0;
      maxPending = pending;
    },
    stats() {
      const sorted = [...latencies].sort((a, b) => a - b);
      const at = (q: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : 0);
      return { events: sorted.length, commits: batches, eventsPerCommit: batches ? sorted.length / batches : 0, commitLatencyMs: { p50: at(0.5), p99: at(0.99), max: at(1) }, maxQueued: maxPending };
    },
  };
}

interface Measured {
  load: LoadResult;
  /** Share of the run the main thread (where both servers run) was busy, blocked in synchronous I/O included. */
  mainThreadBusy: number;
  /** CPU time the main thread used per successful request. */
  mainThreadCpuMsPerRequest: number;
}

async function measure(t: Target, duration: number, profileTo?: URL): Promise<Measured> {
  const session = profileTo ? new Session() : undefined;
  if (session) {
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.start');
  }
  const elu = performance.eventLoopUtilization();
  const cpu = process.threadCpuUsage();
  const load = await runLoad(tokenRequest(t, duration));
  const mainThreadBusy = performance.eventLoopUtilization(elu).utilization;
  const { user, system } = process.threadCpuUsage(cpu);
  const mainThreadCpuMsPerRequest = load.ok ? (user + system) / 1000 / load.ok : 0;
  if (session && profileTo) {
    const { profile: cpuProfile } = await session.post('Profiler.stop');
    session.disconnect();
    mkdirSync(new URL('./', profileTo), { recursive: true });
    writeFileSync(profileTo, JSON.stringify(cpuProfile));
  }
  checkLoad(`${t.name} (${duration} s)`, load);
  return { load, mainThreadBusy, mainThreadCpuMsPerRequest };
}

/**
 * One server's rounds as one result: requests/s over the summed time; latency p50 the mean of the
 * rounds' p50 weighted by responses, p99 and max the worst round's (percentiles do not add up).
 */
function combine(runs: Measured[]) {
  const total = (f: (r: LoadResult) => number) => runs.reduce((sum, r) => sum + f(r.load), 0);
  const seconds = total((r) => r.seconds);
  const ok = total((r) => r.ok);
  return {
    requestsPerSecond: ok / seconds,
    ok,
    seconds,
    latency: {
      p50: ok ? total((r) => r.latency.p50 * r.ok) / ok : 0,
      p99: Math.max(...runs.map((r) => r.load.latency.p99)),
      max: Math.max(...runs.map((r) => r.load.latency.max)),
    },
    mainThreadBusy: runs.reduce((sum, r) => sum + r.mainThreadBusy * r.load.seconds, 0) / seconds,
    mainThreadCpuMsPerRequest: ok ? runs.reduce((sum, r) => sum + r.mainThreadCpuMsPerRequest * r.load.ok, 0) / ok : 0,
    rounds: runs.map((r) => ({ ...r.load, mainThreadBusy: r.mainThreadBusy, mainThreadCpuMsPerRequest: r.mainThreadCpuMsPerRequest })),
  };
}

/** Open file descriptors and resident memory of this process (fds only where /proc exists). */
function processStats(): { openFds: number | null; rssMB: number } {
  return { openFds: existsSync('/proc/self/fd') ? readdirSync('/proc/self/fd').length : null, rssMB: Math.round(process.memoryUsage().rss / 2 ** 20) };
}

/** The commit measured, and whether src/ differed from it. */
function sourceVersion(): { commit: string | null; srcModified: boolean | null } {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: new URL('..', import.meta.url), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    return { commit: git('rev-parse', 'HEAD'), srcModified: git('status', '--porcelain', '--', 'src', 'prisma', 'package-lock.json') !== '' };
  } catch {
    return { commit: null, srcModified: null };
  }
}

const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

async function main(): Promise<number> {
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'idp-bench-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  try {
    // Our IdP, as in test/helpers/server.ts: a fresh migrated database (by default SQLite in a temp
    // dir), its own master key in a temp dir, silent logs.
    const ourPort = await freePort();
    const ourIssuer = `http://127.0.0.1:${ourPort}`;
    const database = await freshDatabase(backend === 'sqlite' ? 'sqlite' : 'postgresql');
    cleanup.unshift(() => database.drop());
    const redis = backend === 'postgresql+redis' ? await redisNamespace() : undefined;
    if (redis) cleanup.unshift(() => redis.clear());
    const config = loadConfig({
      ISSUER: ourIssuer,
      PORT: String(ourPort),
      DATABASE_URL: database.url,
      ...(redis ? { REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix } : {}),
      MASTER_KEY_FILE: join(dir, 'master.key'),
      LOG_LEVEL: 'silent',
      RESOURCE_SERVERS: JSON.stringify([{ indicator: resource, scopes: [scope], accessTokenFormat: 'jwt' }]),
    });
    const idp = await createIdp(config, createLogger('silent'));
    cleanup.unshift(() => idp.close());
    const ourServer = await listen(idp.app.callback(), ourPort);
    cleanup.unshift(() => stopServer(ourServer));

    // The shared key. Our IdP generates its signing key into the database on first start and signs
    // with it; rather than teaching it to take an outside key, we unwrap that key the way the IdP
    // itself does (a Keyring over the same store and master key) and hand the same private JWK to
    // the bare provider. Both then sign with one RSA 2048 key, same kid.
    const keyring = new Keyring(new SigningKeyStore(idp.db), LocalMasterKey.load(config.MASTER_KEY_FILE, { create: false }), idp.audit);
    const jwk = (await keyring.privateJwks()).keys.find((k) => k.alg === 'RS256');
    if (!jwk?.kid || jwk.kty !== 'RSA' || Buffer.from(jwk.n!, 'base64url').length !== 256) throw new BenchError('our IdP has no RSA 2048 RS256 signing key');

    const created = await idp.clients.create({ client_name: 'bench', grant_types: ['client_credentials'], scope, token_endpoint_auth_method: 'client_secret_basic' });
    if (!created.clientSecret) throw new BenchError('client registration returned no secret');
    const ours: Target = { name: 'ours', issuer: ourIssuer, clientId: created.metadata.client_id, clientSecret: created.clientSecret };

    // The bare provider: default in-memory adapter, one static client, the same key and resource
    // server. Like ours it has devInteractions off and gives client-credentials tokens the resource
    // server's lifetime (our default, 3600 s), so both issue the same token.
    const barePort = await freePort();
    const bare: Target = { name: 'bare', issuer: `http://127.0.0.1:${barePort}`, clientId: 'bench-bare', clientSecret: randomBytes(32).toString('base64url') };
    const bareConfig: Configuration = {
      jwks: { keys: [jwk as never] },
      clients: [{ client_id: bare.clientId, client_secret: bare.clientSecret, grant_types: ['client_credentials'], redirect_uris: [], response_types: [] }],
      ttl: { ClientCredentials: (_ctx, token) => (token.resourceServer?.accessTokenTTL as number | undefined) ?? 3600 },
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => resource,
          getResourceServerInfo: () => ({ scope, audience: resource, accessTokenTTL: 3600, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }),
          useGrantedResource: () => true,
        },
      },
    };
    const provider = new Provider(bare.issuer, bareConfig);
    const bareServer = await listen(provider.callback(), barePort);
    cleanup.unshift(() => stopServer(bareServer));

    // Both hand out real, verifiable at+jwt RS256 tokens under the shared key.
    await validateToken(ours, jwk.kid);
    await validateToken(bare, jwk.kid);
    console.log(`backend ${backend}; tokens verified: both servers sign at+jwt RS256 with kid ${jwk.kid}`);

    const signing = await rawSigning(jwk);

    const auditWatch = instrumentAudit(idp);
    const roundSeconds = seconds / rounds;
    console.log(`warm-up ${warmupSeconds} s each, then ${seconds} s each in ${rounds} round(s) of ${fmt(roundSeconds, 1)} s, ${connections} connections ...`);
    for (const t of [ours, bare]) await measure(t, warmupSeconds);

    await idp.audit.flush();
    const seqBefore = (await idp.db.prisma.auditEvent.findFirst({ orderBy: { seq: 'desc' }, select: { seq: true } }))?.seq ?? 0;
    auditWatch.reset();
    const processBefore = processStats();
    const runs: Record<'ours' | 'bare', Measured[]> = { ours: [], bare: [] };
    for (let round = 0; round < rounds; round++) {
      for (const t of round % 2 === 0 ? [ours, bare] : [bare, ours]) {
        const name = t.name as 'ours' | 'bare';
        runs[name].push(await measure(t, roundSeconds, profile ? new URL(`./results/${name}-${round + 1}.cpuprofile`, import.meta.url) : undefined));
      }
    }
    const processAfter = processStats();
    // Only our server writes to this database, and it was idle during the bare rounds.
    await idp.audit.flush();
    const auditRows = await idp.db.prisma.auditEvent.count({ where: { seq: { gt: seqBefore } } });
    const tokenRows = await idp.db.prisma.auditEvent.count({ where: { seq: { gt: seqBefore }, type: 'token.issued' } });
    const auditStats = auditWatch.stats();
    const chain = await idp.audit.verify();

    const ourRun = combine(runs.ours);
    const bareRun = combine(runs.bare);
    const ratio = ourRun.requestsPerSecond / bareRun.requestsPerSecond;
    const verdict = ratio >= target ? 'PASS' : 'BELOW TARGET';

    const results = {
      date: new Date().toISOString(),
      node: process.version,
      source: sourceVersion(),
      settings: { backend, seconds, rounds, warmupSeconds, connections, resource, scope, arrangement: 'both servers on the main thread, autocannon in its own worker thread (workers: 1), rounds in ABBA order' },
      kid: jwk.kid,
      ours: ourRun,
      bare: bareRun,
      ratio,
      target,
      verdict,
      rawRs256SignsPerSecond: signing,
      audit: {
        rowsWrittenDuringOurRuns: auditRows,
        tokenIssuedRows: tokenRows,
        successfulResponses: ourRun.ok,
        ...auditStats,
        chain,
      },
      process: { before: processBefore, after: processAfter },
    };
    mkdirSync(new URL('./', resultsFile), { recursive: true });
    writeFileSync(resultsFile, `${JSON.stringify(results, null, 2)}\n`);

    const rows: [string, string, string][] = [
      ['', 'ours', 'bare'],
      ['requests/s', fmt(ourRun.requestsPerSecond), fmt(bareRun.requestsPerSecond)],
      ['latency p50 (ms)', fmt(ourRun.latency.p50, 1), fmt(bareRun.latency.p50, 1)],
      ['latency p99 (ms)', fmt(ourRun.latency.p99, 1), fmt(bareRun.latency.p99, 1)],
      ['responses 200', fmt(ourRun.ok), fmt(bareRun.ok)],
      ['main thread busy', `${fmt(ourRun.mainThreadBusy * 100)} %`, `${fmt(bareRun.mainThreadBusy * 100)} %`],
      ['main CPU ms/req', fmt(ourRun.mainThreadCpuMsPerRequest, 2), fmt(bareRun.mainThreadCpuMsPerRequest, 2)],
    ];
    const width = [18, 12, 12];
    console.log();
    for (const row of rows) console.log(row.map((cell, i) => (i ? cell.padStart(width[i]!) : cell.padEnd(width[i]!))).join(''));
    console.log();
    console.log(`ratio ours/bare          ${fmt(ratio, 2)}  (target >= ${target}: ${verdict})`);
    console.log(`raw RS256 signs/s        ${fmt(signing.nodeCryptoSync)} (node:crypto, one thread), ${fmt(signing.joseConcurrent)} (jose/WebCrypto, ${connections} in flight)`);
    if (rounds > 1) console.log(`requests/s per round     ours ${runs.ours.map((r) => fmt(r.load.requestsPerSecond)).join(' / ')}, bare ${runs.bare.map((r) => fmt(r.load.requestsPerSecond)).join(' / ')}`);
    console.log(`audit rows written       ${fmt(auditRows)} (token.issued ${fmt(tokenRows)} for ${fmt(ourRun.ok)} responses 200), ${fmt(auditStats.commits)} commits, ${fmt(auditStats.eventsPerCommit, 1)} events/commit`);
    console.log(`audit commit latency     p50 ${fmt(auditStats.commitLatencyMs.p50, 1)} ms, p99 ${fmt(auditStats.commitLatencyMs.p99, 1)} ms, max ${fmt(auditStats.commitLatencyMs.max, 1)} ms; at most ${fmt(auditStats.maxQueued)} events waiting`);
    console.log(`audit chain              ${chain.ok ? `ok (${fmt(chain.rows)} rows)` : `BROKEN at seq ${chain.seq}: ${chain.reason}`}`);
    if (processBefore.openFds !== null) console.log(`process                  open fds ${fmt(processBefore.openFds)} -> ${fmt(processAfter.openFds!)}, rss ${fmt(processBefore.rssMB)} -> ${fmt(processAfter.rssMB)} MB over the measured rounds`);
    console.log(`results                  ${resultsFile.pathname}`);

    // Every 200 was a grant, and every grant must leave a token.issued row; in-flight requests cut
    // off when autocannon stops may add a few rows without a counted response.
    if (tokenRows < ourRun.ok) throw new BenchError(`audit: ${tokenRows} token.issued rows for ${ourRun.ok} successful grants`);
    if (!chain.ok) throw new BenchError(`audit chain broken at seq ${chain.seq}: ${chain.reason}`);
    return 0;
  } catch (error) {
    console.error(`\nbench FAILED: ${error instanceof BenchError ? error.message : error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    return 1;
  } finally {
    for (const step of cleanup) {
      try {
        await step();
      } catch (error) {
        console.error('cleanup:', error);
      }
    }
  }
}

process.exit(await main());
