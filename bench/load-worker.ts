// Runs one autocannon load in a worker thread, so the load generator has its own event loop (and,
// on a 2-core machine, its own core) instead of competing with the server under test for the
// main thread. Both servers are measured through this same arrangement.
import { parentPort, workerData } from 'node:worker_threads';
import autocannon from 'autocannon';

export interface LoadRequest {
  url: string;
  headers: Record<string, string>;
  body: string;
  connections: number;
  duration: number;
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
}

const request = workerData as LoadRequest;
const result = await autocannon({
  url: request.url,
  method: 'POST',
  headers: request.headers,
  body: request.body,
  connections: request.connections,
  duration: request.duration,
  // Well above any sane latency: a request this slow counts as a timeout, which fails the run.
  timeout: 30,
});
const out: LoadResult = {
  seconds: result.duration,
  // Completed 2xx responses over the wall-clock duration (autocannon's per-second average drops the partial last second).
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
parentPort!.postMessage(out);
