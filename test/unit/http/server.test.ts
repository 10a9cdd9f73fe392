// The HTTP server's answer to requests Node refuses before the app (src/http/server.ts), on a real
// socket: it must not corrupt a response already under way, nor keep a half-open connection.
import type { Server } from 'node:http';
import { connect } from 'node:net';
import Koa from 'koa';
import { afterEach, describe, expect, it } from 'vitest';
import { createHttpServer } from '../../../src/http/server.ts';
import { sleep } from '../../helpers/time.ts';

let server: Server | undefined;

async function listen(app: Koa): Promise<number> {
  server = createHttpServer(app);
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return typeof address === 'object' && address ? address.port : 0;
}

const connections = () => new Promise<number>((resolve, reject) => server!.getConnections((error, count) => (error ? reject(error) : resolve(count))));

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

describe('createHttpServer', () => {
  it('closes the connection of a malformed request even when the client never closes its side', async () => {
    const port = await listen(new Koa());
    const clients = Array.from({ length: 5 }, () => connect({ port, host: '127.0.0.1', allowHalfOpen: true }));
    const answers = await Promise.all(clients.map((socket) => new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (chunk) => (text += chunk.toString('latin1')));
      socket.on('end', () => resolve(text));
      socket.write('NOT HTTP AT ALL\r\n\r\n');
    })));
    for (const answer of answers) expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    // The clients keep their sides open; the server must not.
    for (let i = 0; i < 50 && (await connections()) > 0; i++) await sleep(20);
    expect(await connections()).toBe(0);
    for (const socket of clients) socket.destroy();
  });

  it('does not write its answer into a response already under way on a pipelined connection', async () => {
    const app = new Koa();
    app.use(async (ctx) => {
      ctx.res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '10' });
      ctx.res.write('hello');
      await sleep(1000);
      ctx.res.end('world');
      ctx.respond = false;
    });
    const port = await listen(app);
    const received = await new Promise<string>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      let text = '';
      let sentBroken = false;
      socket.on('data', (chunk) => {
        text += chunk.toString('latin1');
        // The broken request goes once the first response has begun, and long before it ends.
        if (!sentBroken && text.includes('hello')) {
          sentBroken = true;
          socket.write('BROKEN\r\n\r\n');
        }
      });
      socket.on('close', () => resolve(text));
      socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    expect(received).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(received).not.toContain('400 Bad Request');
  });
});
