// `npm run bench`: the benchmark suite. Every figure of our IdP is measured against a baseline
// measured in the same run, on the same machine, in alternating rounds (ours, baseline, baseline,
// ours, ...), after a warm-up, with every server in its own process started the way operators
// start it. Prints one table (figure, ours, baseline, ratio) and writes the raw numbers, the
// settings and the machine to bench/results/suite-<timestamp>.json (and latest.json). Details:
// docs/performance.md.
//
// Figures, for each "ours" configuration (BENCH_WORKERS):
//   client credentials  POST /token, client_credentials + resource indicator -> RS256 at+jwt  vs bare oidc-provider
//   jwks, discovery     GET jwks_uri, GET /.well-known/openid-configuration                   vs bare
//   introspection       POST introspection_endpoint (an opaque access token of a sign-in)      vs bare
//   userinfo            GET userinfo_endpoint with that access token                           vs bare
//   password login      BENCH_CONC sign-ins at once through our screens (authorization request, identify,
//                       password, consent if shown, code + PKCE at /token, ID token verified): logins/s and
//                       p50/p99 per login                                          vs raw argon2id verifies/s
//   TOTP login          the same with an authenticator-app code as second factor   vs raw argon2id verifies/s
//   memory, start       RSS idle after start, RSS after the load, cold start (spawn to /readyz 200) vs bare
//
// Arrangement: ours is `node bin/idp.js serve [--workers N]` (the Node running this script, i.e.
// the project's Node 24 under `npm run bench`) over a fresh SQLite database in a temp dir, seeded
// before it starts with the real CLI (`idp migrate`, `idp clients create`, `idp users create`; see
// bench/lib/seed.ts); the bare provider is bench/bare-provider.ts (in-memory adapter, our RS256
// key); the argon2 baseline is bench/argon2-rate.ts. HTTP load is autocannon in this process; the
// logins are a cookie-jar client in this process (bench/lib/login.ts). Only one server is under
// load at a time. Server CPU time per request is read from /proc (it is less disturbed by other
// load on the machine than requests/s).
//
// Validity (any failure exits 1): every load request answered 200; client-credentials tokens of both
// servers verified against their JWKS (same kid, at+jwt, audience, scope) before and after the
// load; introspection and userinfo answers checked before the load; every login's ID token verified
// (issuer, audience, nonce, subject, amr); after our server stopped, `idp audit verify` passes and
// the audit log holds a token.issued row for every token we were given; no server crashed.
//
// Environment:
//   BENCH_SECONDS         (2)    seconds of load per measured round, per server, for the HTTP figures (and the argon2 rounds)
//   BENCH_ROUNDS          (2)    measured rounds per server for each HTTP figure, in ABBA order
//   BENCH_WARMUP_SECONDS  (1)    warm-up load per server before each HTTP figure
//   BENCH_CONNECTIONS     (50)   autocannon connections
//   BENCH_CONC            (100)  concurrent logins (each round starts this many at once, one user each)
//   BENCH_LOGIN_ROUNDS    (2)    measured login rounds per figure, alternating with argon2 rounds
//   BENCH_LOGIN_WARMUP    (20)   logins of the warm-up round before each login figure (0: none)
//                                A TOTP step is accepted once per account: the TOTP figure has BENCH_CONC users
//                                for its rounds and BENCH_LOGIN_WARMUP others for its warm-up; two rounds always
//                                find a fresh step (the current one and the next), more wait for the clock
//   BENCH_COLD_STARTS     (2)    cold starts per server, alternating (median reported)
//   BENCH_WORKERS         ("1", plus the number of cores when `idp serve --help` offers --workers)
//                                comma-separated "ours" configurations, each measured against bare
//   BENCH_FIGURES         (all)  comma-separated subset of: cc,jwks,discovery,introspection,userinfo,login,login-totp
//   BENCH_FIRST_PARTY     (0)    1: register the web client first_party (no consent screen)
//   BENCH_PROFILE         (0)    1: run our server under --cpu-prof; profiles and their summary go to
//                                bench/results/profiles-<timestamp>/ (combine with BENCH_FIGURES=login)
//   BENCH_SOAK_SECONDS    (0)    after the figures, this many seconds of constant load on ours (10 s cycles of
//                                client credentials, userinfo and 20 logins), RSS sampled each cycle; reports the
//                                slope (MB/min, least squares over the cycles after the first minute). 300 for the
//                                5-minute soak
//   ARGON2_MEMORY_KIB, ARGON2_TIME_COST, ARGON2_PARALLELISM   passed to our server and the argon2 baseline alike
import { cpus, freemem, loadavg, release, tmpdir, totalmem } from 'node:os';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { openDatabase } from '../src/store/database.ts';
import { checkLoad, combineLoads, runLoad, type LoadRequest, type LoadResult } from './lib/http-load.ts';
import { login, TotpDevice, waitForTotpSteps, type LoginTarget, type LoginUser } from './lib/login.ts';
import { BenchError, freePort, idpJson, idpScript, runNode, ServerProcess, sourceVersion, treeStats, type TreeStats } from './lib/proc.ts';
import { printSummary, summarizeProfile, type ProfileSummary } from './lib/profile.ts';
import { copyData, dataEnv, redirectUri, resource, resourceScope, seed, type Seeded } from './lib/seed.ts';
import { flagEnv, fmt, intEnv, median, quantile, sleep, sum } from './lib/stats.ts';

const httpFigures = ['cc', 'jwks', 'discovery', 'introspection', 'userinfo'] as const;
const loginFigures = ['login', 'login-totp'] as const;
type HttpFigure = (typeof httpFigures)[number];
type FigureName = HttpFigure | (typeof loginFigures)[number];
const figureTitles: Record<FigureName, string> = {
  cc: 'client credentials', jwks: 'jwks', discovery: 'discovery', introspection: 'introspection', userinfo: 'userinfo',
  login: 'password login', 'login-totp': 'TOTP login',
};

const settings = {
  seconds: intEnv('BENCH_SECONDS', 2),
  rounds: intEnv('BENCH_ROUNDS', 2),
  warmupSeconds: intEnv('BENCH_WARMUP_SECONDS', 1, 0),
  connections: intEnv('BENCH_CONNECTIONS', 50),
  conc: intEnv('BENCH_CONC', 100),
  loginRounds: intEnv('BENCH_LOGIN_ROUNDS', 2),
  loginWarmup: intEnv('BENCH_LOGIN_WARMUP', 20, 0),
  coldStarts: intEnv('BENCH_COLD_STARTS', 2, 0),
  firstParty: flagEnv('BENCH_FIRST_PARTY'),
  profile: flagEnv('BENCH_PROFILE'),
  soakSeconds: intEnv('BENCH_SOAK_SECONDS', 0, 0),
  figures: (process.env.BENCH_FIGURES || [...httpFigures, ...loginFigures].join(',')).split(',').map((f) => f.trim()).filter(Boolean) as FigureName[],
  argon2: Object.fromEntries((['ARGON2_MEMORY_KIB', 'ARGON2_TIME_COST', 'ARGON2_PARALLELISM'] as const).filter((k) => process.env[k]).map((k) => [k, process.env[k]!])),
};
for (const f of settings.figures) if (![...httpFigures, ...loginFigures].includes(f)) throw new Error(`BENCH_FIGURES: unknown figure ${f}`);

const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/-\d{3}Z$/, 'Z');
const resultsDir = fileURLToPath(new URL('./results/', import.meta.url));
const bareScript = fileURLToPath(new URL('./bare-provider.ts', import.meta.url));
const argon2Script = fileURLToPath(new URL('./argon2-rate.ts', import.meta.url));

/** Our server's settings beyond the data directory: the sign-in throttles raised so the load is not refused. */
const serverEnv: Record<string, string> = {
  SIGNIN_IP_FAILURES: '1000000',
  SIGNIN_IP_ACCOUNT_FAILURES: '1000000',
  LOCKOUT_THRESHOLD: '100',
  ...settings.argon2,
};

const running = new Set<ServerProcess>();
const log = (line: string) => console.log(line);

// ---- the servers ---------------------------------------------------------------------------------

interface Started {
  proc: ServerProcess;
  readyMs: number;
  /** Bare only: the opaque access token it minted for userinfo and introspection. */
  accessToken?: string;
}

async function startOurs(dir: string, workers: number, withWorkersFlag: boolean, profileDir?: string): Promise<Started> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const args = [idpScript, 'serve', ...(withWorkersFlag ? ['--workers', String(workers)] : [])];
  const proc = new ServerProcess(`ours (workers ${workers})`, args, {
    env: { ...dataEnv(dir, serverEnv), ISSUER: url, HOST: '127.0.0.1', PORT: String(port) },
    url,
    logFile: join(dir, 'ours.log'),
    ...(profileDir ? { nodeOptions: ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] } : {}),
  });
  running.add(proc);
  return { proc, readyMs: await proc.waitReady() };
}

async function startBare(dir: string, seeded: Seeded): Promise<Started> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const settingsFile = join(dir, 'bare.json');
  writeFileSync(settingsFile, JSON.stringify({
    port, issuer: url, jwk: seeded.jwk, resource, resourceScope,
    ccClient: seeded.ccClient, webClient: { id: seeded.webClient.id, secret: seeded.webClient.secret, redirectUri },
    account: { id: seeded.passwordUsers[0]?.id ?? 'bench-account', email: seeded.passwordUsers[0]?.email ?? 'bench@example.test' },
  }), { mode: 0o600 });
  const proc = new ServerProcess('bare', [bareScript, settingsFile], { env: {}, url, logFile: join(dir, 'bare.log') });
  running.add(proc);
  const readyMs = await proc.waitReady();
  // oidc-provider writes its development notices to stdout too: the bench's line is the JSON one.
  let line = await proc.nextLine();
  while (!line.startsWith('{"ready"')) line = await proc.nextLine();
  return { proc, readyMs, accessToken: (JSON.parse(line) as { accessToken: string }).accessToken };
}

async function stop(proc: ServerProcess): Promise<void> {
  const crashed = proc.crashed;
  const exit = await proc.stop();
  running.delete(proc);
  if (crashed) throw new BenchError(`${proc.name} exited during the run (${exit.code ?? exit.signal}):\n${proc.tail}`);
  if (exit.code !== 0) throw new BenchError(`${proc.name} did not stop cleanly (${exit.code ?? exit.signal}):\n${proc.tail}`);
}

// ---- targets and validity ----------------------------------------------------------------------------

interface Target {
  name: 'ours' | 'bare';
  proc: ServerProcess;
  issuer: string;
  discovery: { issuer: string; token_endpoint: string; jwks_uri: string; introspection_endpoint: string; userinfo_endpoint: string; authorization_endpoint: string };
  jwks: JWTVerifyGetKey;
  kids: string[];
  ccClient: { id: string; secret: string };
  webClient: { id: string; secret: string };
  /** An opaque access token (scope "openid email") of a sign-in, for userinfo and introspection. */
  accessToken: string;
  subject: string;
}

const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

async function describeTarget(name: Target['name'], proc: ServerProcess, seeded: Seeded): Promise<Omit<Target, 'accessToken' | 'subject'>> {
  const response = await fetch(`${proc.url}/.well-known/openid-configuration`);
  const discovery = (await response.json()) as Target['discovery'];
  if (response.status !== 200 || discovery.issuer !== proc.url) throw new BenchError(`${name}: discovery answered ${response.status} with issuer ${discovery.issuer}`);
  const jwksResponse = await fetch(discovery.jwks_uri);
  const jwkSet = (await jwksResponse.json()) as JSONWebKeySet;
  if (jwksResponse.status !== 200 || !jwkSet.keys?.length) throw new BenchError(`${name}: JWKS answered ${jwksResponse.status}`);
  if (jwkSet.keys.some((k) => 'd' in k)) throw new BenchError(`${name}: the JWKS publishes private key material`);
  return {
    name, proc, issuer: proc.url, discovery, jwks: createLocalJWKSet(jwkSet), kids: jwkSet.keys.map((k) => k.kid!),
    ccClient: seeded.ccClient, webClient: seeded.webClient,
  };
}

function httpRequest(t: Target, figure: HttpFigure): LoadRequest {
  const form = { 'content-type': 'application/x-www-form-urlencoded' };
  switch (figure) {
    case 'cc':
      return { url: t.discovery.token_endpoint, method: 'POST', headers: { ...form, authorization: basic(t.ccClient.id, t.ccClient.secret) }, body: new URLSearchParams({ grant_type: 'client_credentials', scope: resourceScope, resource }).toString() };
    case 'jwks':
      return { url: t.discovery.jwks_uri, method: 'GET', headers: {} };
    case 'discovery':
      return { url: `${t.issuer}/.well-known/openid-configuration`, method: 'GET', headers: {} };
    case 'introspection':
      return { url: t.discovery.introspection_endpoint, method: 'POST', headers: { ...form, authorization: basic(t.webClient.id, t.webClient.secret) }, body: new URLSearchParams({ token: t.accessToken }).toString() };
    case 'userinfo':
      return { url: t.discovery.userinfo_endpoint, method: 'GET', headers: { authorization: `Bearer ${t.accessToken}` } };
  }
}

async function send(request: LoadRequest): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(request.url, { method: request.method, headers: request.headers, ...(request.body !== undefined ? { body: request.body } : {}) });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** One real client-credentials token, verified against the server's JWKS; returns its kid. */
async function validateClientCredentials(t: Target): Promise<string> {
  const { status, body } = await send(httpRequest(t, 'cc'));
  if (status !== 200 || typeof body.access_token !== 'string') throw new BenchError(`${t.name}: token request answered ${status} ${JSON.stringify(body)}`);
  const { payload, protectedHeader } = await jwtVerify(body.access_token, t.jwks, { issuer: t.issuer, audience: resource, typ: 'at+jwt', algorithms: ['RS256'] })
    .catch((error: Error) => { throw new BenchError(`${t.name}: client-credentials token did not verify: ${error.message}`); });
  if (payload.client_id !== t.ccClient.id || payload.scope !== resourceScope) throw new BenchError(`${t.name}: unexpected token claims ${JSON.stringify(payload)}`);
  return protectedHeader.kid!;
}

async function validateIntrospectionAndUserinfo(t: Target): Promise<void> {
  const introspection = await send(httpRequest(t, 'introspection'));
  if (introspection.status !== 200 || introspection.body.active !== true || introspection.body.sub !== t.subject) throw new BenchError(`${t.name}: introspection answered ${introspection.status} ${JSON.stringify(introspection.body)}`);
  const userinfo = await send(httpRequest(t, 'userinfo'));
  if (userinfo.status !== 200 || userinfo.body.sub !== t.subject || typeof userinfo.body.email !== 'string') throw new BenchError(`${t.name}: userinfo answered ${userinfo.status} ${JSON.stringify(userinfo.body)}`);
}

// ---- measurements ------------------------------------------------------------------------------------

async function measureHttp(t: Target, figure: HttpFigure, seconds: number): Promise<LoadResult> {
  const result = await runLoad(httpRequest(t, figure), { connections: settings.connections, seconds, serverPid: t.proc.pid });
  checkLoad(`${t.name} ${figureTitles[figure]} (${seconds} s)`, result);
  return result;
}

async function httpFigure(ours: Target, bare: Target, figure: HttpFigure) {
  const runs: Record<'ours' | 'bare', LoadResult[]> = { ours: [], bare: [] };
  const warmup: Record<'ours' | 'bare', LoadResult | null> = { ours: null, bare: null };
  if (settings.warmupSeconds > 0) for (const t of [ours, bare]) warmup[t.name] = await measureHttp(t, figure, settings.warmupSeconds);
  for (let round = 0; round < settings.rounds; round++) {
    for (const t of round % 2 === 0 ? [ours, bare] : [bare, ours]) runs[t.name].push(await measureHttp(t, figure, settings.seconds));
  }
  const result = { ours: combineLoads(runs.ours), bare: combineLoads(runs.bare), ratio: 0, warmup };
  result.ratio = result.ours.requestsPerSecond / result.bare.requestsPerSecond;
  log(`  ${figureTitles[figure].padEnd(20)} ours ${fmt(result.ours.requestsPerSecond).padStart(7)} req/s (${runs.ours.map((r) => fmt(r.requestsPerSecond)).join(' / ')}), bare ${fmt(result.bare.requestsPerSecond).padStart(7)} req/s (${runs.bare.map((r) => fmt(r.requestsPerSecond)).join(' / ')}), ratio ${fmt(result.ratio, 2)}`);
  return result;
}

interface LoginRound {
  logins: number;
  wallSeconds: number;
  loginsPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  stepMsP50: Record<string, number>;
  consentShown: number;
  requestsPerLogin: number;
  serverCpuMsPerLogin: number | null;
  benchCpuMsPerLogin: number;
  totpWaitMs: number;
  latenciesMs: number[];
}

async function loginRound(target: LoginTarget, users: LoginUser[], serverPid: number, totpWaitMs: number): Promise<LoginRound> {
  const before = treeStats(serverPid);
  const cpu = process.cpuUsage();
  const started = performance.now();
  const settled = await Promise.allSettled(users.map((user) => login(target, user)));
  const wallSeconds = (performance.now() - started) / 1000;
  const after = treeStats(serverPid);
  const benchCpu = process.cpuUsage(cpu);
  const failures = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected').map((s) => (s.reason instanceof Error ? s.reason.message : String(s.reason)));
  if (failures.length) throw new BenchError(`${failures.length} of ${users.length} logins failed; first: ${[...new Set(failures)].slice(0, 3).join(' | ')}`);
  const outcomes = settled.map((s) => (s as PromiseFulfilledResult<Awaited<ReturnType<typeof login>>>).value);
  const latencies = outcomes.map((o) => o.ms);
  const stepNames = [...new Set(outcomes.flatMap((o) => Object.keys(o.steps)))];
  return {
    logins: outcomes.length,
    wallSeconds,
    loginsPerSecond: outcomes.length / wallSeconds,
    latencyMs: { p50: quantile(latencies, 0.5), p90: quantile(latencies, 0.9), p99: quantile(latencies, 0.99), max: Math.max(...latencies) },
    stepMsP50: Object.fromEntries(stepNames.map((s) => [s, Math.round(median(outcomes.map((o) => o.steps[s] ?? 0)) * 10) / 10])),
    consentShown: outcomes.filter((o) => o.consentShown).length,
    requestsPerLogin: sum(outcomes.map((o) => o.requests)) / outcomes.length,
    serverCpuMsPerLogin: before && after ? (after.cpuMs - before.cpuMs) / outcomes.length : null,
    benchCpuMsPerLogin: (benchCpu.user + benchCpu.system) / 1000 / outcomes.length,
    totpWaitMs,
    latenciesMs: latencies.map((l) => Math.round(l * 10) / 10),
  };
}

interface Argon2Round {
  verifiesPerSecond: number;
  verifies: number;
  seconds: number;
  failures: number;
  latency: { p50: number; p99: number; max: number };
  cpuMsPerVerify: number | null;
  params: Record<string, number>;
}

async function argon2Round(): Promise<Argon2Round> {
  const result = await runNode(argon2Script, [], { env: { BENCH_CONC: String(settings.conc), BENCH_SECONDS: String(settings.seconds), ...settings.argon2 } });
  if (result.code !== 0) throw new BenchError(`argon2 baseline exited ${result.code}: ${result.stderr.slice(-1000)}`);
  const round = JSON.parse(result.stdout) as Argon2Round;
  if (round.failures > 0 || round.verifies === 0) throw new BenchError(`argon2 baseline: ${round.failures} failed verifications of ${round.verifies}`);
  return round;
}

async function loginFigure(kind: 'login' | 'login-totp', target: LoginTarget, users: { rounds: LoginUser[]; warmup: LoginUser[] }, serverPid: number) {
  const runs: { ours: LoginRound[]; argon2: Argon2Round[] } = { ours: [], argon2: [] };
  const oursRound = async (users: LoginUser[]) => {
    const devices = users.map((u) => u.totp).filter((d): d is TotpDevice => d !== undefined);
    const waited = devices.length ? await waitForTotpSteps(devices) : 0;
    if (waited > 0) log(`    (waited ${fmt(waited / 1000, 1)} s for fresh TOTP steps)`);
    return loginRound(target, users, serverPid, waited);
  };
  if (users.warmup.length) await oursRound(users.warmup);
  for (let round = 0; round < settings.loginRounds; round++) {
    for (const side of round % 2 === 0 ? (['ours', 'argon2'] as const) : (['argon2', 'ours'] as const)) {
      if (side === 'ours') runs.ours.push(await oursRound(users.rounds));
      else runs.argon2.push(await argon2Round());
    }
  }
  const all = runs.ours.flatMap((r) => r.latenciesMs);
  const logins = sum(runs.ours.map((r) => r.logins));
  const cpuRounds = runs.ours.filter((r) => r.serverCpuMsPerLogin !== null);
  const ours = {
    loginsPerSecond: logins / sum(runs.ours.map((r) => r.wallSeconds)),
    logins,
    latencyMs: { p50: quantile(all, 0.5), p90: quantile(all, 0.9), p99: quantile(all, 0.99), max: Math.max(...all) },
    stepMsP50: Object.fromEntries(Object.keys(runs.ours[0]?.stepMsP50 ?? {}).map((s) => [s, median(runs.ours.map((r) => r.stepMsP50[s] ?? 0))])),
    consentShown: sum(runs.ours.map((r) => r.consentShown)),
    requestsPerLogin: runs.ours[0]?.requestsPerLogin ?? 0,
    serverCpuMsPerLogin: cpuRounds.length ? sum(cpuRounds.map((r) => r.serverCpuMsPerLogin! * r.logins)) / sum(cpuRounds.map((r) => r.logins)) : null,
    benchCpuMsPerLogin: sum(runs.ours.map((r) => r.benchCpuMsPerLogin * r.logins)) / logins,
    rounds: runs.ours,
  };
  const verifies = sum(runs.argon2.map((r) => r.verifies));
  const argon2 = {
    verifiesPerSecond: verifies / sum(runs.argon2.map((r) => r.seconds)),
    verifies,
    latencyMs: { p50: sum(runs.argon2.map((r) => r.latency.p50 * r.verifies)) / verifies, p99: Math.max(...runs.argon2.map((r) => r.latency.p99)) },
    cpuMsPerVerify: sum(runs.argon2.map((r) => (r.cpuMsPerVerify ?? 0) * r.verifies)) / verifies,
    params: runs.argon2[0]?.params,
    rounds: runs.argon2,
  };
  const ratio = ours.loginsPerSecond / argon2.verifiesPerSecond;
  log(`  ${figureTitles[kind].padEnd(20)} ours ${fmt(ours.loginsPerSecond, 1).padStart(7)} logins/s (${runs.ours.map((r) => fmt(r.loginsPerSecond, 1)).join(' / ')}), p50 ${fmt(ours.latencyMs.p50)} ms, p99 ${fmt(ours.latencyMs.p99)} ms; argon2 ${fmt(argon2.verifiesPerSecond, 1)} verifies/s (${runs.argon2.map((r) => fmt(r.verifiesPerSecond, 1)).join(' / ')}); ratio ${fmt(ratio, 2)}`);
  log(`  ${''.padEnd(20)} steps p50 (ms): ${Object.entries(ours.stepMsP50).map(([s, ms]) => `${s} ${fmt(ms)}`).join(', ')}; consent shown ${ours.consentShown}/${logins}; server CPU ${fmt(ours.serverCpuMsPerLogin, 1)} ms/login (argon2 ${fmt(argon2.cpuMsPerVerify, 1)} ms/verify), login client ${fmt(ours.benchCpuMsPerLogin, 1)} ms/login`);
  return { ours, argon2, ratio };
}

// ---- one "ours" configuration against bare -------------------------------------------------------------

interface MemoryFigures {
  idle: TreeStats | null;
  afterLoad: TreeStats | null;
}

interface SoakFigure {
  seconds: number;
  cycles: number;
  requests: number;
  /** Of the requests, the client-credentials tokens issued (each has its audit row). */
  ccTokens: number;
  logins: number;
  samples: { atSeconds: number; rssMB: number }[];
  /** Least-squares slope of RSS over the cycles after the first minute (all of them when shorter). */
  slopeMBPerMinute: number | null;
}

/** Constant load on one server, RSS sampled at the end of each 10 s cycle. */
async function soak(t: Target, target: LoginTarget, users: LoginUser[]): Promise<SoakFigure> {
  const samples: SoakFigure['samples'] = [];
  let requests = 0;
  let ccTokens = 0;
  let logins = 0;
  const started = performance.now();
  const elapsed = () => (performance.now() - started) / 1000;
  for (let cycle = 0; elapsed() < settings.soakSeconds; cycle++) {
    for (const figure of ['cc', 'userinfo'] as const) {
      const ok = (await measureHttp(t, figure, 4)).ok;
      requests += ok;
      if (figure === 'cc') ccTokens += ok;
    }
    logins += (await loginRound(target, users.slice((cycle * 20) % users.length).slice(0, 20), t.proc.pid, 0)).logins;
    const rss = treeStats(t.proc.pid)?.rssMB;
    if (rss === undefined) throw new BenchError('the server is gone during the soak');
    samples.push({ atSeconds: Math.round(elapsed()), rssMB: rss });
  }
  const settledSamples = samples.filter((sample) => sample.atSeconds > 60);
  const fit = settledSamples.length >= 2 ? settledSamples : samples;
  let slope: number | null = null;
  if (fit.length >= 2) {
    const meanT = sum(fit.map((f) => f.atSeconds)) / fit.length;
    const meanR = sum(fit.map((f) => f.rssMB)) / fit.length;
    const num = sum(fit.map((f) => (f.atSeconds - meanT) * (f.rssMB - meanR)));
    const den = sum(fit.map((f) => (f.atSeconds - meanT) ** 2));
    slope = den ? (num / den) * 60 : null;
  }
  const result = { seconds: Math.round(elapsed()), cycles: samples.length, requests, ccTokens, logins, samples, slopeMBPerMinute: slope };
  log(`  soak                 ${result.seconds} s, ${fmt(requests)} requests + ${fmt(logins)} logins; RSS ${samples.map((x) => fmt(x.rssMB)).join(' ')} MB; slope ${fmt(slope, 2)} MB/min`);
  return result;
}

async function runConfiguration(seeded: Seeded, workers: number, withWorkersFlag: boolean) {
  const label = `workers ${workers}`;
  log(`\n[${label}]`);
  const dir = mkdtempSync(join(tmpdir(), `idp-bench-w${workers}-`));
  try {
    copyData(seeded.dir, dir);
    const profileDir = settings.profile ? join(resultsDir, `profiles-${stamp}`, `workers-${workers}`) : undefined;
    if (profileDir) mkdirSync(profileDir, { recursive: true });

    // Cold starts: spawn to /readyz 200, alternating ours, bare, bare, ours, ...
    const coldStarts: { ours: number[]; bare: number[] } = { ours: [], bare: [] };
    for (let i = 0; i < settings.coldStarts; i++) {
      for (const side of i % 2 === 0 ? (['ours', 'bare'] as const) : (['bare', 'ours'] as const)) {
        const started = side === 'ours' ? await startOurs(dir, workers, withWorkersFlag) : await startBare(dir, seeded);
        coldStarts[side].push(started.readyMs);
        await stop(started.proc);
      }
    }
    if (settings.coldStarts) log(`  cold start           ours ${coldStarts.ours.map((ms) => fmt(ms)).join(' / ')} ms, bare ${coldStarts.bare.map((ms) => fmt(ms)).join(' / ')} ms`);

    const oursStarted = await startOurs(dir, workers, withWorkersFlag, profileDir);
    const bareStarted = await startBare(dir, seeded);
    await sleep(1000);
    const memory: Record<'ours' | 'bare', MemoryFigures> = {
      ours: { idle: treeStats(oursStarted.proc.pid), afterLoad: null },
      bare: { idle: treeStats(bareStarted.proc.pid), afterLoad: null },
    };

    const oursBase = await describeTarget('ours', oursStarted.proc, seeded);
    const bareBase = await describeTarget('bare', bareStarted.proc, seeded);
    const loginTarget: LoginTarget = {
      issuer: oursBase.issuer, authorizationEndpoint: oursBase.discovery.authorization_endpoint, tokenEndpoint: oursBase.discovery.token_endpoint,
      clientId: seeded.webClient.id, clientSecret: seeded.webClient.secret, redirectUri, jwks: oursBase.jwks,
    };
    // A real sign-in gives ours the access token for userinfo and introspection.
    const firstUser = seeded.passwordUsers[0]!;
    const first = await login(loginTarget, firstUser);
    const ours: Target = { ...oursBase, accessToken: first.accessToken, subject: firstUser.id };
    const bare: Target = { ...bareBase, accessToken: bareStarted.accessToken!, subject: firstUser.id };
    const kids = [await validateClientCredentials(ours), await validateClientCredentials(bare)];
    if (kids[0] !== kids[1] || kids[0] !== seeded.jwk.kid) throw new BenchError(`the servers sign with different keys: ${kids.join(', ')}`);
    await validateIntrospectionAndUserinfo(ours);
    await validateIntrospectionAndUserinfo(bare);
    log(`  validity             both sign at+jwt RS256 with kid ${kids[0]}; introspection and userinfo answer for ${firstUser.email}`);

    const figures: Record<string, unknown> = {};
    // Tokens our server gave (checked against its audit log at the end): the validation token,
    // then every 200 of the client-credentials load and the token validated after it; and the
    // validation sign-in, then every login of the login figures.
    let ccResponses = 1;
    let logins = 1;
    for (const figure of httpFigures) {
      if (!settings.figures.includes(figure)) continue;
      const result = await httpFigure(ours, bare, figure);
      figures[figure] = result;
      if (figure === 'cc') {
        ccResponses += result.ours.ok + (result.warmup.ours?.ok ?? 0) + 1;
        await validateClientCredentials(ours);
        await validateClientCredentials(bare);
      }
    }

    const loginsPerFigure = settings.conc * settings.loginRounds + settings.loginWarmup;
    if (settings.figures.includes('login')) {
      const users = { rounds: seeded.passwordUsers.slice(0, settings.conc), warmup: seeded.passwordUsers.slice(0, settings.loginWarmup) };
      figures.login = await loginFigure('login', loginTarget, users, ours.proc.pid);
      logins += loginsPerFigure;
    }
    if (settings.figures.includes('login-totp')) {
      // Each configuration copies the template database: the factors' last used steps start from the seeded ones.
      const totpUsers: LoginUser[] = seeded.totpUsers.map((u) => ({ id: u.id, email: u.email, password: u.password, totp: new TotpDevice(u.secret, u.lastStep) }));
      const users = { rounds: totpUsers.slice(0, settings.conc), warmup: totpUsers.slice(settings.conc, settings.conc + settings.loginWarmup) };
      figures['login-totp'] = await loginFigure('login-totp', loginTarget, users, ours.proc.pid);
      logins += loginsPerFigure;
    }

    await sleep(500);
    memory.ours.afterLoad = treeStats(ours.proc.pid);
    memory.bare.afterLoad = treeStats(bare.proc.pid);
    log(`  memory               ours RSS ${fmt(memory.ours.idle?.rssMB)} MB idle -> ${fmt(memory.ours.afterLoad?.rssMB)} MB after load (${memory.ours.afterLoad?.processes ?? '?'} process(es)), bare ${fmt(memory.bare.idle?.rssMB)} -> ${fmt(memory.bare.afterLoad?.rssMB)} MB`);
    if (settings.soakSeconds > 0) {
      const result = await soak(ours, loginTarget, seeded.passwordUsers);
      figures.soak = result;
      // Every cycle's client-credentials tokens and logins are in the audit log too.
      ccResponses += result.ccTokens;
      logins += result.logins;
    }
    await stop(ours.proc);
    await stop(bare.proc);

    // The audit log, after our server flushed it on SIGTERM: the chain verifies, and every token we got is in it.
    const env = dataEnv(dir, serverEnv);
    const chain = await idpJson<{ ok: boolean; rows: number; seq?: number; reason?: string }>(['audit', 'verify'], env);
    if (!chain.ok) throw new BenchError(`audit chain broken at seq ${chain.seq}: ${chain.reason}`);
    const db = await openDatabase(env.DATABASE_URL!);
    let audit;
    try {
      const count = (grantType: string) => db.prisma.auditEvent.count({ where: { type: 'token.issued', details: { contains: `"${grantType}"` } } });
      audit = { chain, tokenIssuedClientCredentials: await count('client_credentials'), tokenIssuedAuthorizationCode: await count('authorization_code'), ccResponses, logins };
    } finally {
      await db.close();
    }
    if (audit.tokenIssuedClientCredentials < ccResponses) throw new BenchError(`audit: ${audit.tokenIssuedClientCredentials} token.issued rows for ${ccResponses} client-credentials tokens`);
    if (audit.tokenIssuedAuthorizationCode < logins) throw new BenchError(`audit: ${audit.tokenIssuedAuthorizationCode} token.issued rows for ${logins} code redemptions`);
    log(`  audit                chain ok (${fmt(chain.rows)} rows); token.issued: ${fmt(audit.tokenIssuedClientCredentials)} client_credentials for ${fmt(ccResponses)} tokens, ${fmt(audit.tokenIssuedAuthorizationCode)} authorization_code for ${fmt(logins)} logins`);

    let profiles: ProfileSummary[] = [];
    if (profileDir) {
      profiles = readdirSync(profileDir).filter((f) => f.endsWith('.cpuprofile')).map((f) => summarizeProfile(join(profileDir, f), 30));
      for (const p of profiles) printSummary(p);
      writeFileSync(join(profileDir, 'summary.json'), `${JSON.stringify(profiles, null, 2)}\n`);
    }
    return { workers, label, coldStartMs: coldStarts, readyMs: { ours: oursStarted.readyMs, bare: bareStarted.readyMs }, memory, figures, audit, profiles };
  } catch (error) {
    // Keep the servers' logs: the cause of a 500 is in ours.log.
    for (const proc of running) await proc.stop(2000).catch(() => undefined);
    running.clear();
    mkdirSync(resultsDir, { recursive: true });
    const kept = ['ours.log', 'bare.log'].filter((f) => existsSync(join(dir, f))).map((f) => {
      const to = join(resultsDir, `failed-${stamp}-workers-${workers}-${f}`);
      copyFileSync(join(dir, f), to);
      return to;
    });
    if (kept.length && error instanceof Error) error.message += `\n(server logs kept: ${kept.join(', ')})`;
    throw error;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- report --------------------------------------------------------------------------------------------

type Configuration = Awaited<ReturnType<typeof runConfiguration>>;
type Row = { figure: string; config: string; ours: number | null; baseline: number | null; baselineName: string; ratio: number | null; unit: string; better: 'higher' | 'lower'; digits: number };

function rowsOf(c: Configuration): Row[] {
  const rows: Row[] = [];
  const add = (figure: string, ours: number | null | undefined, baseline: number | null | undefined, baselineName: string, unit: string, better: Row['better'], digits = 0) =>
    rows.push({ figure, config: c.label, ours: ours ?? null, baseline: baseline ?? null, baselineName, ratio: ours != null && baseline ? ours / baseline : null, unit, better, digits });
  for (const figure of httpFigures) {
    const f = c.figures[figure] as Awaited<ReturnType<typeof httpFigure>> | undefined;
    if (!f) continue;
    add(`${figureTitles[figure]}`, f.ours.requestsPerSecond, f.bare.requestsPerSecond, 'bare', 'req/s', 'higher');
    add(`${figureTitles[figure]} p99`, f.ours.latency.p99, f.bare.latency.p99, 'bare', 'ms', 'lower');
    add(`${figureTitles[figure]} server CPU`, f.ours.serverCpuMsPerRequest, f.bare.serverCpuMsPerRequest, 'bare', 'ms/req', 'lower', 2);
  }
  for (const figure of loginFigures) {
    const f = c.figures[figure] as Awaited<ReturnType<typeof loginFigure>> | undefined;
    if (!f) continue;
    add(`${figureTitles[figure]} (vs argon2 verify)`, f.ours.loginsPerSecond, f.argon2.verifiesPerSecond, 'argon2', '/s', 'higher', 1);
    add(`${figureTitles[figure]} p50`, f.ours.latencyMs.p50, f.argon2.latencyMs.p50, 'argon2', 'ms', 'lower');
    add(`${figureTitles[figure]} p99`, f.ours.latencyMs.p99, f.argon2.latencyMs.p99, 'argon2', 'ms', 'lower');
    add(`${figureTitles[figure]} server CPU`, f.ours.serverCpuMsPerLogin, f.argon2.cpuMsPerVerify, 'argon2', 'ms/op', 'lower', 1);
  }
  add('RSS idle after start', c.memory.ours.idle?.rssMB, c.memory.bare.idle?.rssMB, 'bare', 'MB', 'lower');
  add('RSS after the load', c.memory.ours.afterLoad?.rssMB, c.memory.bare.afterLoad?.rssMB, 'bare', 'MB', 'lower');
  if (c.coldStartMs.ours.length) add('cold start to ready', median(c.coldStartMs.ours), median(c.coldStartMs.bare), 'bare', 'ms', 'lower');
  const soaked = c.figures.soak as SoakFigure | undefined;
  if (soaked) add(`RSS slope over a ${soaked.seconds} s soak`, soaked.slopeMBPerMinute, null, '', 'MB/min', 'lower', 2);
  return rows;
}

function printTable(rows: Row[]): void {
  const header = ['figure', 'ours', '', 'baseline', 'ratio'];
  const cells = rows.map((r) => [`${r.figure} (${r.unit})`, r.config, fmt(r.ours, r.digits), `${fmt(r.baseline, r.digits)} ${r.baselineName}`, r.ratio === null ? '-' : `${fmt(r.ratio, 2)}${r.better === 'higher' ? ' ↑' : ' ↓'}`]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((cell, i) => (i === 0 || i === 1 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  console.log();
  console.log(line(['figure', 'config', 'ours', 'baseline', 'ratio']));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const c of cells) console.log(line(c));
  console.log('ratio = ours / baseline; ↑ higher is better for ours, ↓ lower is better');
}

function machine() {
  const list = cpus();
  return { cpus: list.length, model: list[0]?.model ?? 'unknown', totalMemMB: Math.round(totalmem() / 2 ** 20), freeMemMB: Math.round(freemem() / 2 ** 20), os: `${process.platform} ${release()}`, node: process.version, loadavgAtStart: loadavg() };
}

async function main(): Promise<number> {
  const templateDir = mkdtempSync(join(tmpdir(), 'idp-bench-seed-'));
  try {
    return await run(templateDir);
  } catch (error) {
    console.error(`\nbench FAILED: ${error instanceof BenchError ? error.message : error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    return 1;
  } finally {
    for (const proc of running) await proc.stop(2000).catch(() => undefined);
    rmSync(templateDir, { recursive: true, force: true });
  }
}

async function run(templateDir: string): Promise<number> {
  const started = performance.now();
  const host = machine();
  log(`idp bench suite: ${host.cpus} × ${host.model}, ${host.node}, load average ${host.loadavgAtStart.map((l) => l.toFixed(2)).join(' ')}`);
  const help = await runNode(idpScript, ['serve', '--help'], { env: {} });
  const workersSupported = help.stdout.includes('--workers');
  const workersList = (process.env.BENCH_WORKERS || (workersSupported ? `1,${host.cpus}` : '1')).split(',').map((w) => Number(w.trim()));
  if (workersList.some((w) => !Number.isInteger(w) || w < 1)) throw new Error(`BENCH_WORKERS must list positive integers (got ${process.env.BENCH_WORKERS})`);
  const uniqueWorkers = [...new Set(workersList)];
  if (!workersSupported && uniqueWorkers.some((w) => w !== 1)) throw new BenchError(`BENCH_WORKERS=${process.env.BENCH_WORKERS}: this \`idp serve\` has no --workers option`);
  log(`configurations: ${uniqueWorkers.map((w) => `workers ${w}`).join(', ')}${workersSupported ? '' : ' (`idp serve` has no --workers yet)'}; figures: ${settings.figures.join(', ')}`);

  {
    const needsTotp = settings.figures.includes('login-totp');
    const seeded = await seed(templateDir, dataEnv(templateDir, serverEnv), {
      passwordUsers: Math.max(settings.conc, settings.loginWarmup),
      totpUsers: needsTotp ? settings.conc + settings.loginWarmup : 0,
      firstParty: settings.firstParty,
    });
    log(`seeded in ${fmt(seeded.seconds, 1)} s: 2 clients and ${seeded.usersByCli} users with the CLI (${fmt(seeded.phases.cli, 1)} s), ${seeded.usersInProcess} more users through createUser() in-process (${fmt(seeded.phases.users, 1)} s), ${seeded.totpUsers.length} TOTP enrolments (${fmt(seeded.phases.totp, 1)} s)`);

    const configurations: Configuration[] = [];
    for (const workers of uniqueWorkers) configurations.push(await runConfiguration(seeded, workers, workersSupported));

    const rows = configurations.flatMap(rowsOf);
    printTable(rows);
    const results = {
      date: new Date().toISOString(),
      durationSeconds: (performance.now() - started) / 1000,
      machine: { ...host, loadavgAtEnd: loadavg() },
      source: sourceVersion(),
      settings: { ...settings, workers: uniqueWorkers, workersSupported, seed: { usersByCli: seeded.usersByCli, usersInProcess: seeded.usersInProcess, totpUsers: seeded.totpUsers.length, seconds: seeded.seconds, phases: seeded.phases } },
      table: rows,
      configurations,
    };
    mkdirSync(resultsDir, { recursive: true });
    const file = join(resultsDir, `suite-${stamp}.json`);
    writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
    writeFileSync(join(resultsDir, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
    log(`\nresults ${file} (${fmt(results.durationSeconds)} s in all; load average now ${loadavg().map((l) => l.toFixed(2)).join(' ')})`);
    return 0;
  }
}

process.once('SIGINT', () => {
  for (const proc of running) proc.child.kill('SIGTERM');
  process.exit(130);
});
process.exit(await main());
