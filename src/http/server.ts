// The HTTP server the app runs in, the same for `idp serve` and the tests.
import { randomUUID } from 'node:crypto';
import { createServer, STATUS_CODES, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type Koa from 'koa';

/**
 * Requests Node refuses before any middleware sees them (a request line or headers over the
 * limit, a malformed request, a request that took too long) get Node's bare answer, without the
 * security headers every other response carries. This answers them with those headers, and
 * closes the connection as Node would.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Socket): void {
  // A response already begun on this connection (keep-alive, pipelining) cannot be followed by
  // another status line: it would land inside that response's body. Node's own handler does the same.
  const inProgress = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (error.code === 'ECONNRESET' || !socket.writable || inProgress?.headersSent) {
    socket.destroy();
    return;
  }
  const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  const body = `${STATUS_CODES[status]}\n`;
  // Ended, then destroyed: the server allows half-open connections, and a client that never closes
  // its side must not keep the socket (and a server's close()) waiting.
  socket.end([
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}`,
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Cache-Control: no-store',
    'X-Content-Type-Options: nosniff',
    'Referrer-Policy: no-referrer',
    'X-Frame-Options: DENY',
    "Content-Security-Policy: default-src 'none'; frame-ancestors 'none'",
    // Like every other answer: an id to quote when reporting it.
    `X-Request-Id: ${randomUUID()}`,
    'Connection: close',
    '',
    body,
  ].join('\r\n'), () => socket.destroy());
}

export function createHttpServer(app: Koa): Server {
  const server = createServer(app.callback());
  // Above the idle timeouts of the usual load balancers (60 s), so they close first.
  server.keepAliveTimeout = 65_000;
  server.requestTimeout = 30_000;
  server.on('clientError', answerClientError);
  return server;
}
