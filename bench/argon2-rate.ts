// The login baseline: the raw argon2id verify rate, in its own process, with the parameters our
// server uses (ARGON2_MEMORY_KIB / ARGON2_TIME_COST / ARGON2_PARALLELISM, defaults 19456 / 2 / 1,
// as in src/config.ts) and the argon2 npm package as src/accounts/passwords.ts calls it, with
// BENCH_CONC verifications in flight for BENCH_SECONDS. Prints one JSON line.
//
// Usage: node bench/argon2-rate.ts (environment: BENCH_CONC, BENCH_SECONDS, ARGON2_*).
import argon2 from 'argon2';

const num = (name: string, fallback: number) => (process.env[name] ? Number(process.env[name]) : fallback);
const concurrency = num('BENCH_CONC', 100);
const seconds = num('BENCH_SECONDS', 3);
const params = { memoryCost: num('ARGON2_MEMORY_KIB', 19456), timeCost: num('ARGON2_TIME_COST', 2), parallelism: num('ARGON2_PARALLELISM', 1) };

const password = 'bench argon2 password, long enough';
const hash = await argon2.hash(password, { type: argon2.argon2id, ...params });
// Validity: the right password verifies, a wrong one does not (also warms the thread pool up).
if (!(await argon2.verify(hash, password)) || (await argon2.verify(hash, `${password}!`))) throw new Error('argon2 verify gave a wrong answer');
await Promise.all(Array.from({ length: 4 }, () => argon2.verify(hash, password)));

const latencies: number[] = [];
let failures = 0;
const cpu = process.cpuUsage();
const start = performance.now();
const deadline = start + seconds * 1000;
await Promise.all(Array.from({ length: concurrency }, async () => {
  while (performance.now() < deadline) {
    const t = performance.now();
    if (!(await argon2.verify(hash, password))) failures++;
    latencies.push(performance.now() - t);
  }
}));
const elapsed = (performance.now() - start) / 1000;
const used = process.cpuUsage(cpu);
latencies.sort((a, b) => a - b);
const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.max(0, Math.ceil(q * latencies.length) - 1))] ?? 0;
process.stdout.write(`${JSON.stringify({
  params,
  concurrency,
  seconds: elapsed,
  verifies: latencies.length,
  failures,
  verifiesPerSecond: latencies.length / elapsed,
  latency: { p50: at(0.5), p99: at(0.99), max: at(1) },
  cpuMsPerVerify: latencies.length ? (used.user + used.system) / 1000 / latencies.length : null,
  threadpool: Number(process.env.UV_THREADPOOL_SIZE ?? 4),
})}\n`);
