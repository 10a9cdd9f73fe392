// The baseline of the suite: a bare oidc-provider in its own process, with what the protocol
// figures need and nothing else: its default in-memory adapter, one RS256 key (the private JWK
// given in the settings file, the same key our server signs with), two static clients (client
// credentials; a confidential web client), client credentials with a resource indicator giving
// RS256 JWT access tokens (at+jwt), introspection and userinfo. It has no sign-in screens: for
// userinfo and introspection it mints one opaque access token (a grant for one account, scope
// "openid email") at start and prints it on stdout.
//
// Usage: node bench/bare-provider.ts SETTINGS.json (see BareSettings). GET /readyz answers 200
// once it listens; stdout gets one JSON line {"ready":true,"accessToken":"..."}; SIGTERM stops it.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import Provider, { type Configuration } from 'oidc-provider';

export interface BareSettings {
  port: number;
  issuer: string;
  /** The private RS256 JWK (with kid). */
  jwk: Record<string, unknown>;
  resource: string;
  resourceScope: string;
  ccClient: { id: string; secret: string };
  webClient: { id: string; secret: string; redirectUri: string };
  account: { id: string; email: string };
}

const settings = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as BareSettings;

const configuration: Configuration = {
  jwks: { keys: [settings.jwk as never] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  clients: [
    { client_id: settings.ccClient.id, client_secret: settings.ccClient.secret, grant_types: ['client_credentials'], redirect_uris: [], response_types: [], scope: settings.resourceScope },
    { client_id: settings.webClient.id, client_secret: settings.webClient.secret, grant_types: ['authorization_code'], response_types: ['code'], redirect_uris: [settings.webClient.redirectUri] },
  ],
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  scopes: ['openid', 'email', settings.resourceScope],
  findAccount: (_ctx, sub) => (sub === settings.account.id
    ? { accountId: sub, claims: () => ({ sub, email: settings.account.email, email_verified: true }) }
    : undefined),
  // Like ours: client-credentials tokens live as long as the resource server says (our default, 3600 s).
  ttl: { ClientCredentials: (_ctx, token) => (token.resourceServer?.accessTokenTTL as number | undefined) ?? 3600 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    userinfo: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, _client, oneOf) => oneOf ?? undefined!,
      getResourceServerInfo: () => ({ scope: settings.resourceScope, audience: settings.resource, accessTokenTTL: 3600, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }),
      useGrantedResource: () => true,
    },
  },
};

const provider = new Provider(settings.issuer, configuration);

// The token userinfo and introspection are measured with: what a relying party holds after a
// sign-in with scope "openid email" (opaque, no resource, bound to a grant).
const client = await provider.Client.find(settings.webClient.id);
if (!client) throw new Error('the web client is missing');
const grant = new provider.Grant({ accountId: settings.account.id, clientId: settings.webClient.id });
grant.addOIDCScope('openid email');
const grantId = await grant.save();
const accessToken = await new provider.AccessToken({ accountId: settings.account.id, client, grantId, scope: 'openid email', gty: 'authorization_code' }).save();

const callback = provider.callback();
const server = createServer((req, res) => {
  if (req.url === '/readyz') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end('{"status":"ready"}');
    return;
  }
  callback(req, res);
});
server.keepAliveTimeout = 65_000;
await new Promise<void>((resolve) => server.listen(settings.port, '127.0.0.1', resolve));
process.stdout.write(`${JSON.stringify({ ready: true, accessToken })}\n`);

process.once('SIGTERM', () => {
  server.closeIdleConnections();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
