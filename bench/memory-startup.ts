// Resident memory of `idp serve` right after start, and where it comes from.
//
//   node bench/memory-startup.ts            (the project's Node: npx node bench/memory-startup.ts)
//
// 1. Startup RSS: makes a fresh data directory (SQLite DATABASE_URL, MASTER_KEY_FILE), runs
//    `idp migrate`, then starts `idp serve` MEMORY_STARTS times (default 3) with process.execPath,
//    waits for GET /readyz 200, waits MEMORY_SETTLE_MS (default 1000, as bench/suite.ts's "RSS idle"),
//    reads VmRSS / VmHWM from /proc/<pid>/status, and stops it with SIGTERM. Prints the median.
// 2. What the server loaded: one more start with bench/memory-hooks.ts preloaded, which lists every
//    module loaded by the time it is ready (grouped by package, with source size) and the heap.
// 3. Attribution (MEMORY_ATTRIBUTE=0 skips it), each in fresh processes (bench/memory-imports.ts):
//    - incremental: the static imports of src/app.ts (then src/main.ts's), imported one after the
//      other; each row is what that import added on top of the ones before (shared dependencies
//      are charged to the first importer);
//    - alone: each heavy package imported on its own into an empty process.
//
// Knobs: MEMORY_STARTS, MEMORY_SETTLE_MS, MEMORY_ATTRIBUTE, MEMORY_SERVER_ENV (a JSON object of
// extra server settings, e.g. '{"PASSWORD_MIN_STRENGTH":"3"}'), MEMORY_NODE_OPTIONS (flags for the
// server's node, e.g. '--max-semi-space-size=2'). Writes bench/results/memory-startup-<ts>.json.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { childEnv, freePort, idpJson, idpScript, repoRoot, ServerProcess } from './lib/proc.ts';

const starts = Number(process.env.MEMORY_STARTS ?? 3);
const settleMs = Number(process.env.MEMORY_SETTLE_MS ?? 1000);
const attribute = process.env.MEMORY_ATTRIBUTE !== '0';
const extraEnv = JSON.parse(process.env.MEMORY_SERVER_ENV ?? '{}') as Record<string, string>;
const nodeOptions = (process.env.MEMORY_NODE_OPTIONS ?? '').split(' ').filter(Boolean);
const hooksScript = fileURLToPath(new URL('./memory-hooks.ts', import.meta.url));
const importsScript = fileURLToPath(new URL('./memory-imports.ts', import.meta.url));
const MB = 1024 * 1024;
const mb = (bytes: number) => (bytes / MB).toFixed(1);

/** Packages worth measuring alone (each must resolve from the repository). */
const heavyPackages = [
  'oidc-provider', 'koa', '@koa/router', '@prisma/client/runtime/client', '@libsql/client', '@prisma/adapter-libsql', '@prisma/adapter-pg', 'pg',
  '@aws-sdk/client-kms', 'pkcs11js', '@zxcvbn-ts/core', '@zxcvbn-ts/language-common', '@simplewebauthn/server', 'qrcode', 'nodemailer', 'otplib',
  'ioredis', 'argon2', 'pino', 'prom-client', 'zod', 'jose', 'koa-helmet', 'ua-parser-js', 'unhomoglyph', 'rate-limiter-flexible', 'commander',
  './src/store/generated/sqlite/client.ts', './src/store/generated/postgresql/client.ts',
];

/** What a server on the embedded defaults needs whatever the configuration (for the marginal run). */
const basePackages = [
  'oidc-provider', 'koa', '@koa/router', '@koa/bodyparser', 'koa-helmet', 'koa-mount', './src/store/generated/sqlite/client.ts', '@prisma/adapter-libsql', '@libsql/client',
  'ioredis', 'zod', 'pino', 'prom-client', 'jose', 'argon2', 'commander', 'rate-limiter-flexible', 'ua-parser-js', 'unhomoglyph',
];
/** What only some configurations, or only some requests, need. */
const candidates = [
  './src/store/generated/postgresql/client.ts', '@prisma/adapter-pg', 'pg', '@aws-sdk/client-kms', 'pkcs11js', '@zxcvbn-ts/core', '@zxcvbn-ts/language-common',
  '@simplewebauthn/server', 'otplib', 'qrcode', 'nodemailer',
];

function procStatus(pid: number): { rssKB: number; hwmKB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { rssKB: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0), hwmKB: Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

interface StartResult { readyMs: number; rssMB: number; peakMB: number }

async function startOnce(dir: string, env: Record<string, string>, nodeOptions: string[] = []): Promise<{ result: StartResult; proc: ServerProcess }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = new ServerProcess('idp serve', [idpScript, 'serve'], {
    env: { ...env, ISSUER: url, HOST: '127.0.0.1', PORT: String(port) }, url, logFile: join(dir, 'serve.log'), nodeOptions,
  });
  try {
    const readyMs = await proc.waitReady();
    await new Promise((resolve) => setTimeout(resolve, settleMs));
    const { rssKB, hwmKB } = procStatus(proc.pid);
    return { result: { readyMs: Math.round(readyMs), rssMB: rssKB / 1024, peakMB: hwmKB / 1024 }, proc };
  } catch (error) {
    await proc.stop();
    throw error;
  }
}

function packageOf(url: string): string {
  if (url.startsWith('node:') || !url.startsWith('file:')) return '(node built-in)';
  const path = fileURLToPath(url);
  const nm = path.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const parts = path.slice(nm + '/node_modules/'.length).split('/');
    return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  const rel = path.startsWith(repoRoot) ? path.slice(repoRoot.length) : path;
  const parts = rel.split('/');
  return parts[0] === 'src' && parts.length > 2 ? (parts[1] === 'store' && parts[2] === 'generated' ? `src/store/generated/${parts[3]}` : `src/${parts[1]}`) : parts.slice(0, 2).join('/');
}

/** A module's path from the repository (or from node_modules), for the report. */
function shortName(url: string): string {
  if (!url.startsWith('file:')) return url;
  const path = fileURLToPath(url);
  const nm = path.lastIndexOf('/node_modules/');
  return nm >= 0 ? path.slice(nm + '/node_modules/'.length) : path.startsWith(repoRoot) ? path.slice(repoRoot.length) : path;
}

function runImports(specs: string[]): Promise<{ spec: string; ms: number; rss: number; heapUsed: number; external: number; error?: string }[]> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--expose-gc', importsScript, ...specs], { cwd: repoRoot, env: childEnv({}), maxBuffer: 16 * MB }, (error, stdout, stderr) => {
      if (error) reject(new Error(`memory-imports ${specs.join(' ')}: ${error.message}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim().split('\n').pop()!));
    });
  });
}

/** The value imports (not `import type`) of a source file, in order, as specifiers runnable from the repository. */
function staticImports(file: string): string[] {
  const source = readFileSync(join(repoRoot, file), 'utf8');
  const specs: string[] = [];
  for (const match of source.matchAll(/^import\s+(?!type\s)[^'"]*?from\s+'([^']+)';/gms)) {
    const spec = match[1]!;
    specs.push(spec.startsWith('.') ? `./${join(file, '..', spec)}` : spec);
  }
  return specs;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

const dir = mkdtempSync(join(tmpdir(), 'idp-memory-'));
const env = { DATABASE_URL: `file:${join(dir, 'idp.db')}`, MASTER_KEY_FILE: join(dir, 'master.key'), LOG_LEVEL: 'warn', ...extraEnv };
const report: Record<string, unknown> = { at: new Date().toISOString(), node: process.version, settleMs, extraEnv, nodeOptions };
try {
  await idpJson(['migrate'], env);

  // 1. Startup RSS.
  const results: StartResult[] = [];
  for (let i = 0; i < starts; i++) {
    const { result, proc } = await startOnce(dir, env, nodeOptions);
    await proc.stop();
    results.push(result);
    console.log(`start ${i + 1}: ready in ${result.readyMs} ms, VmRSS ${result.rssMB.toFixed(1)} MB (peak ${result.peakMB.toFixed(1)} MB)`);
  }
  const rss = median(results.map((r) => r.rssMB));
  console.log(`\nidp serve, idle ${settleMs} ms after ready: VmRSS median ${rss.toFixed(1)} MB over ${starts} starts (peak ${median(results.map((r) => r.peakMB)).toFixed(1)} MB, ready ${median(results.map((r) => r.readyMs))} ms)\n`);
  report.starts = results;
  report.rssMB = rss;

  // 2. What was loaded by the time the server was ready.
  const traceFile = join(dir, 'trace.json');
  const { proc } = await startOnce(dir, { ...env, MEMORY_TRACE_FILE: traceFile }, [...nodeOptions, '--import', hooksScript]);
  proc.child.kill('SIGUSR2');
  await new Promise((resolve) => setTimeout(resolve, 300));
  const trace = JSON.parse(readFileSync(traceFile, 'utf8')) as { memory: NodeJS.MemoryUsage; spaces: { space: string; size: number; used: number; physical: number }[]; modules: { url: string; bytes: number; from: string }[] };
  await proc.stop();
  const byPackage = new Map<string, { modules: number; bytes: number; from: string }>();
  for (const m of trace.modules) {
    const name = packageOf(m.url);
    // Who first brought the package in: the first module outside it that imported one of its modules.
    const entry = byPackage.get(name) ?? { modules: 0, bytes: 0, from: m.from && packageOf(m.from) !== name ? shortName(m.from) : '' };
    entry.modules += 1;
    entry.bytes += m.bytes;
    byPackage.set(name, entry);
  }
  const loaded = [...byPackage].sort((a, b) => b[1].bytes - a[1].bytes);
  console.log(`loaded by the time it was ready: ${trace.modules.length} modules; heapUsed ${mb(trace.memory.heapUsed)} MB, external ${mb(trace.memory.external)} MB (traced run)`);
  console.log(table([['package', 'modules', 'source KB', 'first imported by'], ...loaded.filter(([, v]) => v.bytes > 20_000 || v.modules > 20).map(([name, v]) => [name, String(v.modules), (v.bytes / 1024).toFixed(0), v.from])]));
  console.log(`\nV8 heap spaces (traced run): ${trace.spaces.filter((x) => x.physical > 0.1 * MB).map((x) => `${x.space} ${mb(x.physical)} MB (${mb(x.used)} used)`).join(', ')}; total physical ${mb(trace.spaces.reduce((n, x) => n + x.physical, 0))} MB`);
  report.loaded = Object.fromEntries(loaded);
  report.heapSpaces = trace.spaces;
  report.tracedMemory = trace.memory;

  if (attribute) {
    // 3a. Incremental: src/main.ts's imports, src/app.ts's before it.
    const specs = [...new Set([...staticImports('src/app.ts'), ...staticImports('src/main.ts')])];
    const samples = await runImports(specs);
    const rows: string[][] = [['import (in src/app.ts order, then src/main.ts)', 'RSS +MB', 'heap +MB', 'ms']];
    const incremental: unknown[] = [];
    for (let i = 1; i < samples.length; i++) {
      const [prev, cur] = [samples[i - 1]!, samples[i]!];
      incremental.push({ spec: cur.spec, rssMB: (cur.rss - prev.rss) / MB, heapMB: (cur.heapUsed - prev.heapUsed) / MB, ms: cur.ms, error: cur.error });
      if (cur.rss - prev.rss > 0.5 * MB || cur.heapUsed - prev.heapUsed > 0.5 * MB || cur.error) rows.push([cur.spec + (cur.error ? ` (${cur.error})` : ''), mb(cur.rss - prev.rss), mb(cur.heapUsed - prev.heapUsed), String(cur.ms)]);
    }
    const last = samples.at(-1)!;
    rows.push(['(all imports, over an empty process)', mb(last.rss - samples[0]!.rss), mb(last.heapUsed - samples[0]!.heapUsed), '']);
    console.log(`\n${table(rows)}`);
    report.incremental = incremental;
    report.emptyProcessRssMB = samples[0]!.rss / MB;

    // 3b. Alone.
    const alone: unknown[] = [];
    const aloneRows: string[][] = [['package alone (fresh process)', 'RSS +MB', 'heap +MB', 'ms']];
    for (const spec of heavyPackages) {
      const [base, after] = await runImports([spec]);
      alone.push({ spec, rssMB: (after!.rss - base!.rss) / MB, heapMB: (after!.heapUsed - base!.heapUsed) / MB, ms: after!.ms, error: after!.error });
      aloneRows.push([spec + (after!.error ? ` (${after!.error})` : ''), mb(after!.rss - base!.rss), mb(after!.heapUsed - base!.heapUsed), String(after!.ms)]);
    }
    console.log(`\n${table(aloneRows)}`);
    report.alone = alone;

    // 3c. Marginal: what the common configuration needs first, then each candidate in turn; a
    // candidate's row is what loading it costs on top of a server's base (what deferring it saves).
    const marginalSpecs = [...basePackages, ...candidates];
    const marginal = await runImports(marginalSpecs);
    const marginalRows: string[][] = [[`candidate, after the ${basePackages.length} base modules`, 'RSS +MB', 'heap +MB', 'ms']];
    const marginalReport: unknown[] = [];
    for (let i = basePackages.length + 1; i < marginal.length; i++) {
      const [prev, cur] = [marginal[i - 1]!, marginal[i]!];
      marginalReport.push({ spec: cur.spec, rssMB: (cur.rss - prev.rss) / MB, heapMB: (cur.heapUsed - prev.heapUsed) / MB, ms: cur.ms, error: cur.error });
      marginalRows.push([cur.spec + (cur.error ? ` (${cur.error})` : ''), mb(cur.rss - prev.rss), mb(cur.heapUsed - prev.heapUsed), String(cur.ms)]);
    }
    const baseEnd = marginal[basePackages.length]!;
    marginalRows.push(['(all candidates)', mb(marginal.at(-1)!.rss - baseEnd.rss), mb(marginal.at(-1)!.heapUsed - baseEnd.heapUsed), '']);
    console.log(`\nbase: ${mb(baseEnd.rss)} MB RSS, ${mb(baseEnd.heapUsed)} MB heap\n${table(marginalRows)}`);
    report.marginal = marginalReport;
  }

  mkdirSync(join(repoRoot, 'bench/results'), { recursive: true });
  const out = join(repoRoot, `bench/results/memory-startup-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}Z.json`);
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`\nwrote ${out}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
