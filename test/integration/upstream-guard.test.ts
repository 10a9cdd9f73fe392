// A hostile upstream's metadata cannot make us call our own network: the discovery document (a
// real HTTP server here) names endpoints on another host that resolves to loopback, and the code
// exchange is refused before any request leaves, with the reason in the refusal.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OidcUpstream, UpstreamRefusal } from '../../src/federation/oidc-upstream.ts';
import { resolveSettings, type Connection } from '../../src/federation/settings.ts';

describe('upstream endpoints on internal addresses', () => {
  let server: Server;
  let internalHits = 0;
  let issuer = '';
  beforeAll(async () => {
    const internal = createServer((_req, res) => {
      internalHits++;
      res.end('{}');
    });
    await new Promise<void>((resolve) => internal.listen(0, '127.0.0.1', resolve));
    const internalPort = (internal.address() as AddressInfo).port;
    server = createServer((req, res) => {
      if (req.url !== '/.well-known/openid-configuration') return void res.writeHead(404).end();
      res.setHeader('content-type', 'application/json');
      // Everything but the authorization endpoint on "localhost": another host than the issuer's.
      res.end(JSON.stringify({
        issuer, authorization_endpoint: `${issuer}/auth`, token_endpoint: `http://localhost:${internalPort}/token`,
        jwks_uri: `http://localhost:${internalPort}/jwks`, userinfo_endpoint: `http://localhost:${internalPort}/me`, response_types_supported: ['code'],
      }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    server.on('close', () => internal.close());
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const connection = (): Connection => ({
    id: 'hostile', kind: 'oidc', preset: 'generic', displayName: 'Hostile', enabled: true, hasSecret: true, createdAt: new Date(0), updatedAt: new Date(0),
    settings: resolveSettings('generic', { client_id: 'us', issuer }),
  });

  it('refuses the code exchange (and the connection test\'s JWKS fetch) without calling the internal host', async () => {
    const upstream = new OidcUpstream({ allowHttp: true, allowPrivate: false });
    const checks = { state: 's'.repeat(43), nonce: 'n'.repeat(43), codeVerifier: 'v'.repeat(43) };
    const error = await upstream.exchange(connection(), 'secret', 'http://127.0.0.1/cb', { code: 'c', state: checks.state }, checks).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UpstreamRefusal);
    expect((error as UpstreamRefusal).detail).toMatch(/localhost:\d+ resolves to (127\.0\.0\.1|::1), a loopback, private or reserved address/);
    const tested = await upstream.test(connection());
    expect(tested.find((c) => c.check === 'jwks')).toMatchObject({ ok: false, detail: expect.stringMatching(/loopback, private or reserved/) });
    expect(internalHits).toBe(0);
    // An operator who runs upstreams on the internal network says so.
    const allowed = new OidcUpstream({ allowHttp: true, allowPrivate: true });
    await allowed.exchange(connection(), 'secret', 'http://127.0.0.1/cb', { code: 'c', state: checks.state }, checks).catch(() => undefined);
    expect(internalHits).toBeGreaterThan(0);
  });
});
