// HTTP load with autocannon, run from the bench process against a server in another process,
// with that server's CPU time read from /proc around the run.
import autocannon from 'autocannon';
import { BenchError, treeStats } from './proc.ts';

export interface LoadRequest {
  url: string;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  body?: string;
}

export interface LoadResult {
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
  /** CPU time the server's process tree spent per successful response (ms). */
  serverCpuMsPerRequest: number | null;
}

export async function runLoad(request: LoadRequest, options: { connections: number; seconds: number; serverPid: number }): Promise<LoadResult> {
  const before = treeStats(options.serverPid);
  const result = await autocannon({
    url: request.url,
    method: request.method,
    headers: request.headers,
    ...(request.body !== undefined ? { body: request.body } : {}),
    connections: options.connections,
    duration: options.seconds,
    // Far above any sane latency: a request this slow counts as a timeout, which fails the run.
    timeout: 30,
  });
  const after = treeStats(options.serverPid);
  return {
    seconds: result.duration,
    // Completed 2xx over the wall-clock duration (autocannon's per-second average drops the partial last second).
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
    serverCpuMsPerRequest: before && after && result['2xx'] ? (after.cpuMs - before.cpuMs) / result['2xx'] : null,
  };
}

/** Fails the run on anything but a clean 200 for every request. */
export function checkLoad(label: string, result: LoadResult): void {
  const problems = Object.entries({ non2xx: result.non2xx, errors: result.errors, timeouts: result.timeouts, resets: result.resets, mismatches: result.mismatches })
    .filter(([, n]) => n > 0)
    .map(([what, n]) => `${n} ${what}`);
  const codes = Object.keys(result.statusCodes).filter((code) => code !== '200');
  if (codes.length) problems.push(`status codes ${JSON.stringify(result.statusCodes)}`);
  if (result.ok === 0) problems.push('no successful response');
  if (problems.length) throw new BenchError(`${label}: ${problems.join(', ')}`);
}

/**
 * One server's rounds as one result: requests/s over the summed time; p50 the mean of the rounds'
 * p50 weighted by responses, p99 and max the worst round's (percentiles do not add up).
 */
export function combineLoads(runs: LoadResult[]) {
  const ok = runs.reduce((s, r) => s + r.ok, 0);
  const seconds = runs.reduce((s, r) => s + r.seconds, 0);
  const cpuRuns = runs.filter((r) => r.serverCpuMsPerRequest !== null);
  return {
    requestsPerSecond: seconds ? ok / seconds : 0,
    ok,
    seconds,
    latency: {
      p50: ok ? runs.reduce((s, r) => s + r.latency.p50 * r.ok, 0) / ok : 0,
      p99: Math.max(...runs.map((r) => r.latency.p99)),
      max: Math.max(...runs.map((r) => r.latency.max)),
    },
    serverCpuMsPerRequest: cpuRuns.length ? cpuRuns.reduce((s, r) => s + r.serverCpuMsPerRequest! * r.ok, 0) / cpuRuns.reduce((s, r) => s + r.ok, 0) : null,
    rounds: runs,
  };
}
