// Raw HTTP/1.1 on a socket, for requests fetch() will not send (malformed, pipelined, unread bodies).
import { connect } from 'node:net';

/**
 * Writes raw HTTP/1.1 to the server on one keep-alive connection and collects everything it
 * answers until it closes the connection or `quietMs` pass without a byte.
 */
export function rawExchange(url: string, request: Buffer, quietMs = 1500): Promise<{ text: string; closedByServer: boolean }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    let text = '';
    let timer: NodeJS.Timeout;
    const idle = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        socket.destroy();
        resolve({ text, closedByServer: false });
      }, quietMs);
    };
    socket.on('data', (chunk) => {
      text += chunk.toString('latin1');
      idle();
    });
    socket.on('end', () => {
      clearTimeout(timer);
      resolve({ text, closedByServer: true });
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      // A reset after the answer was sent still closes the connection.
      if (text) resolve({ text, closedByServer: true });
      else reject(error);
    });
    socket.write(request);
    idle();
  });
}
