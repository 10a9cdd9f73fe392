// A round-robin HTTP load balancer on loopback, as HAProxy would stand in front of several IdP
// nodes: each request goes to the next backend; a backend that is down answers 502. The Host
// header is kept, so every node sees the issuer's host as it would behind a real balancer.
import { createServer, request as httpRequest, type Server } from 'node:http';
import { freePort } from './server.ts';

export interface TestProxy {
  url: string;
  /** How many requests went to each backend, in the order of `backends`. */
  readonly counts: number[];
  stop(): Promise<void>;
}

export async function startProxy(backends: string[], port?: number): Promise<TestProxy> {
  const targets = backends.map((b) => new URL(b));
  const counts = targets.map(() => 0);
  let next = 0;
  const server: Server = createServer((req, res) => {
    const index = next++ % targets.length;
    counts[index]!++;
    const target = targets[index]!;
    const upstream = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end('bad gateway');
    });
    req.pipe(upstream);
  });
  const listenPort = port ?? (await freePort());
  await new Promise<void>((resolve) => server.listen(listenPort, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${listenPort}`,
    counts,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
