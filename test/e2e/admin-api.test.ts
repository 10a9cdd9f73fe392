// The admin REST API (/admin/v1) end to end, as an operator's machine client uses it: a client
// registered with the scope idp:admin gets an opaque access token from the real token endpoint
// (client-credentials grant, resource ISSUER/admin) and sends it as a Bearer token. Users,
// sessions (signed in through our screens), clients, keys and the audit log, on SQLite and on
// PostgreSQL + Redis. The OpenAPI document is compared with the router itself so the two cannot drift.
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT, type GenerateKeyPairResult } from 'jose';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, updateUser } from '../../src/admin/commands.ts';
import { adminRoutes } from '../../src/admin/routes.ts';
import { operations, type Operation } from '../../src/admin/schemas.ts';
import { Browser, signIn } from '../helpers/browser.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { backends, freePort, startIdp, testResourceServer, type TestIdp } from '../helpers/server.ts';
import { startSmtp, type TestSmtp } from '../helpers/smtp.ts';
import { sleep } from '../helpers/time.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const password = 'correct horse battery staple';
const redirectUri = 'http://localhost:8080/callback';

interface UserView {
  id: string;
  email: string;
  name: string | null;
  status: string;
  email_verified: boolean;
  user_type: string;
  roles: string[];
  approval: string | null;
  attributes: Record<string, unknown>;
  has_password: boolean;
  password_changed_at: string | null;
  created_at: string;
}

interface SessionView {
  sid: string;
  device: string;
  ip: string | null;
  createdAt: string;
  lastSeenAt: string;
  expiresAt: string;
  clients: string[];
}

interface Problem {
  error: string;
  error_description: string;
}

interface ApiResponse<T> {
  status: number;
  headers: Headers;
  text: string;
  body: T;
}

interface OpenApiDocument {
  openapi: string;
  servers: { url: string }[];
  security: unknown[];
  paths: Record<string, Record<string, unknown> & { parameters?: { name: string; in: string }[] }>;
  components: { securitySchemes: Record<string, { type: string; flows?: { clientCredentials?: { tokenUrl: string; scopes: Record<string, string> } } }> };
}

/** No password, hash or argon2 string anywhere in a response. */
function expectNoCredentials(text: string, secret = password) {
  expect(text).not.toContain(secret);
  expect(text).not.toMatch(/argon2|password_?hash|secret_?hash/i);
}


/**
 * A DPoP proof (RFC 9449) for one request, as oidc-provider's DPoP feature expects it: typ
 * dpop+jwt, ES256, the public key in the header; `ath` when it goes with an access token.
 */
async function dpopProof(key: GenerateKeyPairResult, htm: string, htu: string, accessToken?: string): Promise<string> {
  const claims: Record<string, string> = { htm, htu, jti: randomUUID() };
  if (accessToken) claims.ath = createHash('sha256').update(accessToken).digest('base64url');
  return new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await exportJWK(key.publicKey) }).setIssuedAt().sign(key.privateKey);
}

describe.each(backends)('admin REST API on %s', (backend) => {
  let t: TestIdp;
  let smtp: TestSmtp;
  let opsSecret: string;
  /** An admin token of `ops`, got from the token endpoint in beforeAll. */
  let token: string;

  beforeAll(async () => {
    smtp = await startSmtp();
    // The back-channel logout receiver of the sessions tests is on loopback, which the provider refuses by default.
    t = await startIdp(backend, { SMTP_URL: smtp.url, FETCH_ALLOW_PRIVATE_ADDRESSES: 'true' });
    opsSecret = (await t.idp.clients.create({ client_id: 'ops', grant_types: ['client_credentials'], scope: 'idp:admin', token_endpoint_auth_method: 'client_secret_post' })).clientSecret!;
    token = await adminToken('ops', opsSecret);
  });

  afterAll(async () => {
    await t?.stop();
    await smtp?.stop();
  });

  /** POST /token, client_secret_post (`headers`: a DPoP proof, say). */
  async function tokenRequest(clientId: string, secret: string, params: Record<string, string>, headers: Record<string, string> = {}) {
    const response = await fetch(`${t.issuer}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: clientId, client_secret: secret, ...params }),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }

  async function adminToken(clientId: string, secret: string): Promise<string> {
    const { status, body } = await tokenRequest(clientId, secret, { resource: `${t.issuer}/admin`, scope: 'idp:admin' });
    expect(status, JSON.stringify(body)).toBe(200);
    return body.access_token as string;
  }

  /**
   * One request to the admin API. `json` is sent as application/json; `raw` as is, with
   * `contentType` (null: no Content-Type header at all). `auth` replaces the whole Authorization header (null: none); default the ops token.
   * `headers` are sent besides (a DPoP proof, say).
   */
  async function api<T = unknown>(method: string, path: string, options: { json?: unknown; raw?: string; contentType?: string | null; auth?: string | null; headers?: Record<string, string> } = {}): Promise<ApiResponse<T>> {
    const headers = new Headers(options.headers);
    const auth = options.auth === undefined ? `Bearer ${token}` : options.auth;
    if (auth !== null) headers.set('authorization', auth);
    let body: string | Uint8Array | undefined;
    if (options.json !== undefined) {
      headers.set('content-type', 'application/json');
      body = JSON.stringify(options.json);
    } else if (options.raw !== undefined && options.contentType === null) {
      // Bytes: fetch adds no Content-Type to them (it would add text/plain to a string).
      body = new TextEncoder().encode(options.raw);
    } else if (options.raw !== undefined) {
      headers.set('content-type', options.contentType ?? 'application/json');
      body = options.raw;
    }
    const response = await fetch(`${t.url}/admin/v1${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    return { status: response.status, headers: response.headers, text, body: parsed as T };
  }

  /** A JSON error of the admin API: the status, `{error, error_description}`, and WWW-Authenticate on 401. */
  function expectProblem(response: ApiResponse<unknown>, status: number, error?: string | RegExp, description?: RegExp) {
    expect(response.status, `${response.status} ${response.text.slice(0, 300)}`).toBe(status);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    const body = response.body as Problem;
    expect(body).toEqual({ error: expect.any(String), error_description: expect.any(String) });
    if (error !== undefined) expect(body.error).toMatch(error);
    if (description) expect(body.error_description).toMatch(description);
    if (status === 401) expect(response.headers.get('www-authenticate')).toMatch(new RegExp(`^Bearer error="${body.error}", error_description="[^"]+"$`));
  }

  /** Audit rows of a type, oldest first, with their details parsed (after the buffer is written). */
  async function audits(type: string) {
    await t.idp.audit.flush();
    const rows = await t.idp.db.prisma.auditEvent.findMany({ where: { type }, orderBy: { seq: 'asc' } });
    return rows.map((r) => ({ ...r, data: JSON.parse(r.details) as Record<string, unknown> }));
  }

  describe('the OpenAPI document', () => {
    it('is public (no token), OpenAPI 3.1, served as JSON, with the client-credentials token URL for idp:admin', async () => {
      const response = await api<OpenApiDocument>('GET', '/openapi.json', { auth: null });
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^application\/json/);
      const doc = response.body;
      expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
      expect(doc.servers).toEqual([{ url: `${t.issuer}/admin/v1` }]);
      const schemes = Object.values(doc.components.securitySchemes);
      expect(schemes).toHaveLength(1);
      expect(schemes[0]).toMatchObject({ type: 'oauth2', flows: { clientCredentials: { tokenUrl: `${t.issuer}/token`, scopes: { 'idp:admin': expect.any(String) } } } });
      expect(doc.security).toEqual([{ [Object.keys(doc.components.securitySchemes)[0]!]: [] }]);
    });

    it('documents every route the router serves, and no route it does not', async () => {
      const doc = (await api<OpenApiDocument>('GET', '/openapi.json', { auth: null })).body;
      const prefix = '/admin/v1';
      const served = new Set<string>();
      const pathParams = new Map<string, string[]>();
      for (const layer of adminRoutes(t.idp).stack) {
        const methods = layer.methods.filter((m) => m !== 'HEAD');
        if (!methods.length) continue; // router.use middleware (the Bearer check)
        const full = String(layer.path);
        expect(full.startsWith(prefix), full).toBe(true);
        const path = full.slice(prefix.length).replace(/:([A-Za-z0-9_]+)/g, '{$1}');
        if (path === '/openapi.json') continue; // the document does not describe itself
        pathParams.set(path, [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]!));
        for (const method of methods) served.add(`${method.toLowerCase()} ${path}`);
      }
      const documented = new Set<string>();
      for (const [path, item] of Object.entries(doc.paths)) {
        for (const method of Object.keys(item)) if (method !== 'parameters') documented.add(`${method} ${path}`);
      }
      expect(served.size).toBeGreaterThan(10);
      expect([...documented].sort()).toEqual([...served].sort());
      // Each templated path declares exactly its path parameters.
      for (const [path, names] of pathParams) {
        const declared = (doc.paths[path]!.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name);
        expect(declared.sort(), path).toEqual([...names].sort());
      }
    });
  });

  describe('authentication', () => {
    it('refuses no header, a malformed header and an unknown token with 401 JSON and WWW-Authenticate', async () => {
      const unknown = `Bearer ${'A'.repeat(43)}`;
      for (const auth of [null, 'Basic b3BzOnNlY3JldA==', 'Bearer', 'Bearer short', `Bearer ${token} extra`, `bearer${token}`, unknown]) {
        expectProblem(await api('GET', '/users', { auth }), 401, 'invalid_token');
      }
      // A change is refused the same way, and does not happen.
      expectProblem(await api('DELETE', '/clients/ops', { auth: null }), 401, 'invalid_token');
      expectProblem(await api('POST', '/users', { auth: unknown, json: { email: 'mallory@example.com', password } }), 401, 'invalid_token');
      expect(await t.idp.clients.findForProvider('ops')).toBeDefined();
      expect(await t.idp.accounts.findByEmail('mallory@example.com')).toBeNull();
      // The right token works.
      const ok = await api<UserView[]>('GET', '/users');
      expect(ok.status).toBe(200);
      expect(ok.headers.get('cache-control')).toBe('no-store');
      expect(ok.body).toEqual([]);
    });

    it('issues an opaque 600-second admin token scoped idp:admin to a client registered with that scope', async () => {
      const { status, body } = await tokenRequest('ops', opsSecret, { resource: `${t.issuer}/admin`, scope: 'idp:admin' });
      expect(status).toBe(200);
      expect(body).toMatchObject({ token_type: 'Bearer', scope: 'idp:admin', expires_in: expect.any(Number) });
      expect(body.expires_in as number).toBeGreaterThan(590);
      expect(body.expires_in as number).toBeLessThanOrEqual(600);
      expect((body.access_token as string).split('.')).toHaveLength(1);
    });

    it('refuses an admin token to clients without the idp:admin scope: invalid_target', async () => {
      const machineSecret = (await t.idp.clients.create({ client_id: 'machine', grant_types: ['client_credentials'], scope: 'api:read', token_endpoint_auth_method: 'client_secret_post' })).clientSecret!;
      const bareSecret = (await t.idp.clients.create({ client_id: 'bare', grant_types: ['client_credentials'], token_endpoint_auth_method: 'client_secret_post' })).clientSecret!;
      for (const [clientId, secret] of [['machine', machineSecret], ['bare', bareSecret]] as const) {
        for (const params of [{ resource: `${t.issuer}/admin`, scope: 'idp:admin' }, { resource: `${t.issuer}/admin` }] as Record<string, string>[]) {
          const refused = await tokenRequest(clientId, secret, params);
          expect(refused.status, `${clientId} ${JSON.stringify(params)}`).toBe(400);
          expect(refused.body.error).toBe('invalid_target');
        }
      }
    });

    it('refuses tokens not meant for the admin API (401), and an admin-audience token without the scope (403)', async () => {
      const machineSecret = (await t.idp.clients.create({ client_id: 'machine2', grant_types: ['client_credentials'], scope: 'api:read', token_endpoint_auth_method: 'client_secret_post' })).clientSecret!;
      // A normal client's JWT access token for a normal resource server.
      const jwt = await tokenRequest('machine2', machineSecret, { resource: testResourceServer.indicator, scope: 'api:read' });
      expect(jwt.status).toBe(200);
      expect((jwt.body.access_token as string).split('.')).toHaveLength(3);
      expectProblem(await api('GET', '/users', { auth: `Bearer ${jwt.body.access_token as string}` }), 401, 'invalid_token');
      // An opaque token of the same client without a resource (no audience).
      const opaque = await tokenRequest('machine2', machineSecret, { scope: 'api:read' });
      expect(opaque.status).toBe(200);
      expectProblem(await api('GET', '/users', { auth: `Bearer ${opaque.body.access_token as string}` }), 401, 'invalid_token');
      // The admin client's own token without a resource: not for the admin API.
      const noResource = await tokenRequest('ops', opsSecret, { scope: 'idp:admin' });
      expect(noResource.status).toBe(200);
      expectProblem(await api('GET', '/users', { auth: `Bearer ${noResource.body.access_token as string}` }), 401, 'invalid_token');
      // For the admin API, but the scope was not asked for: the token carries none.
      const unscoped = await tokenRequest('ops', opsSecret, { resource: `${t.issuer}/admin` });
      expect(unscoped.status).toBe(200);
      expect(unscoped.body.scope).toBeUndefined();
      expectProblem(await api('GET', '/users', { auth: `Bearer ${unscoped.body.access_token as string}` }), 403, 'insufficient_scope', /idp:admin/);
    });

    it('refuses a token revoked at the revocation endpoint, and an expired one, at once', async () => {
      const revoked = await adminToken('ops', opsSecret);
      expect((await api('GET', '/users', { auth: `Bearer ${revoked}` })).status).toBe(200);
      const revocation = await fetch(`${t.issuer}/token/revocation`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: revoked, token_type_hint: 'access_token', client_id: 'ops', client_secret: opsSecret }),
      });
      expect(revocation.status).toBe(200);
      expectProblem(await api('GET', '/users', { auth: `Bearer ${revoked}` }), 401, 'invalid_token');

      // Expired: the stored token's exp moved into the past (the admin TTL is a fixed 600 s).
      const expired = await adminToken('ops', opsSecret);
      expect((await api('GET', '/users', { auth: `Bearer ${expired}` })).status).toBe(200);
      const adapter = (t.idp.provider.ClientCredentials as unknown as { adapter: { find(id: string): Promise<Record<string, unknown> | undefined>; upsert(id: string, payload: Record<string, unknown>, expiresIn: number): Promise<void> } }).adapter;
      const stored = await adapter.find(expired);
      expect(stored).toMatchObject({ clientId: 'ops', exp: expect.any(Number) });
      // Control: rewriting the record as is keeps the token working; only the past exp refuses it.
      await adapter.upsert(expired, { ...stored }, 600);
      expect((await api('GET', '/users', { auth: `Bearer ${expired}` })).status).toBe(200);
      await adapter.upsert(expired, { ...stored, iat: Math.floor(Date.now() / 1000) - 700, exp: Math.floor(Date.now() / 1000) - 100 }, 60);
      expectProblem(await api('GET', '/users', { auth: `Bearer ${expired}` }), 401, 'invalid_token');
      // The ops token from before is untouched.
      expect((await api('GET', '/users')).status).toBe(200);
    });

    it('refuses a DPoP-bound admin token with 401, sent as Bearer or as DPoP with a proof, and audits the refusal', async () => {
      const key = await generateKeyPair('ES256');
      const seen = (await audits('admin_api.rejected')).length;
      const { status, body } = await tokenRequest('ops', opsSecret, { resource: `${t.issuer}/admin`, scope: 'idp:admin' }, { dpop: await dpopProof(key, 'POST', `${t.issuer}/token`) });
      expect(status, JSON.stringify(body)).toBe(200);
      expect(body).toMatchObject({ token_type: 'DPoP', scope: 'idp:admin' });
      const bound = body.access_token as string;
      // Control: a live token of ops for the admin API, bound to the key (its thumbprint is stored with it).
      const stored = await t.idp.provider.ClientCredentials.find(bound);
      expect(stored).toMatchObject({ clientId: 'ops', scope: 'idp:admin', jkt: await calculateJwkThumbprint(await exportJWK(key.publicKey)) });
      expect([stored!.aud].flat()).toEqual([`${t.issuer}/admin`]);

      // The API verifies no DPoP proofs: the token is refused however it is sent, a change does not happen.
      expectProblem(await api('GET', '/users', { auth: `Bearer ${bound}` }), 401, 'invalid_token', /DPoP/);
      expectProblem(await api('GET', '/users', { auth: `DPoP ${bound}`, headers: { dpop: await dpopProof(key, 'GET', `${t.issuer}/admin/v1/users`, bound) } }), 401, 'invalid_token');
      expectProblem(await api('POST', '/users', { auth: `Bearer ${bound}`, json: { email: 'dpop@example.com', password } }), 401, 'invalid_token', /DPoP/);
      expect(await t.idp.accounts.findByEmail('dpop@example.com')).toBeNull();
      // Audited: as ops's token when sent as Bearer; the DPoP scheme is refused before any token is looked up.
      const refusals = (await audits('admin_api.rejected')).slice(seen);
      expect(refusals.map((r) => [r.clientId, r.data.method, r.data.path, r.data.error, r.outcome])).toEqual([
        ['ops', 'GET', '/admin/v1/users', 'invalid_token', 'failure'],
        [null, 'GET', '/admin/v1/users', 'invalid_token', 'failure'],
        ['ops', 'POST', '/admin/v1/users', 'invalid_token', 'failure'],
      ]);
      expect(JSON.stringify(refusals)).not.toContain(bound);
      // The plain Bearer token of the same client still works.
      expect((await api('GET', '/users')).status).toBe(200);
    });

    const againMetadata = (clientId: string) => ({ client_id: clientId, grant_types: ['client_credentials'], scope: 'idp:admin', token_endpoint_auth_method: 'client_secret_post' });

    it('refuses (401) the token of a client that was deleted and registered again under the same client_id; the new registration\'s token works', async () => {
      const old = await adminToken('ops-again', (await t.idp.clients.create(againMetadata('ops-again'))).clientSecret!);
      expect((await api('GET', '/keys', { auth: `Bearer ${old}` })).status).toBe(200);
      // Registered again in a later second than the token was issued.
      await sleep(1000 - (Date.now() % 1000) + 20);
      await t.idp.clients.delete('ops-again');
      const secret = (await t.idp.clients.create(againMetadata('ops-again'))).clientSecret!;
      expectProblem(await api('GET', '/keys', { auth: `Bearer ${old}` }), 401, 'invalid_token', /no longer exists/);
      expectProblem(await api('POST', '/users', { auth: `Bearer ${old}`, json: { email: 'ghost@example.com', password } }), 401, 'invalid_token');
      expect(await t.idp.accounts.findByEmail('ghost@example.com')).toBeNull();
      const fresh = await adminToken('ops-again', secret);
      expect((await api('GET', '/keys', { auth: `Bearer ${fresh}` })).status).toBe(200);
      await t.idp.clients.delete('ops-again');
    });

    // Regression: tokens were once told apart from a re-registration by whole-second times; each admin
    // token now names the registration it was issued to.
    it('refuses the old token even when the deletion and the new registration fall in the second the token was issued in', async () => {
      const first = await api<Record<string, unknown>>('POST', '/clients', { json: againMetadata('ops-rotated') });
      expect(first.status, first.text).toBe(201);
      // Early in a second, so that the token, the deletion and the new registration share it.
      if (Date.now() % 1000 > 300) await sleep(1000 - (Date.now() % 1000) + 20);
      const old = await adminToken('ops-rotated', first.body.client_secret as string);
      expect((await api('GET', '/keys', { auth: `Bearer ${old}` })).status).toBe(200);
      expect((await api('DELETE', '/clients/ops-rotated')).status).toBe(204);
      const again = await api<Record<string, unknown>>('POST', '/clients', { json: againMetadata('ops-rotated') });
      expect(again.status, again.text).toBe(201);
      const stored = await t.idp.provider.ClientCredentials.find(old);
      expect(stored?.iat, 'the token and the new registration share a second').toBe(again.body.client_id_issued_at);
      expectProblem(await api('GET', '/keys', { auth: `Bearer ${old}` }), 401, 'invalid_token');
    });
  });

  describe('users', () => {
    it('creates a user with a password: 201 and the user view, without the password or its hash', async () => {
      const created = await api<UserView>('POST', '/users', { json: { email: 'Alice@Example.COM', password, name: 'Alice Example', roles: ['auditor'], attributes: { department: 'ops' } } });
      expect(created.status, created.text).toBe(201);
      expect(created.body).toEqual({
        id: expect.stringMatching(/^[0-9a-f-]{36}$/), email: 'alice@example.com', name: 'Alice Example', status: 'active', email_verified: false,
        user_type: 'internal', roles: ['auditor'], approval: null, attributes: { department: 'ops' }, has_password: true,
        password_changed_at: expect.any(String), created_at: expect.any(String),
      });
      expect(Number.isNaN(Date.parse(created.body.created_at))).toBe(false);
      expectNoCredentials(created.text);
      // The password works: it was hashed and stored.
      expect((await t.idp.accounts.authenticate('alice@example.com', password)).ok).toBe(true);
      const list = await api<UserView[]>('GET', '/users');
      expect(list.body).toEqual([created.body]);
      expectNoCredentials(list.text);
    });

    it('refuses a weak password with 400 listing every unmet rule, and an existing address (any case) with 409', async () => {
      const weak = await api('POST', '/users', { json: { email: 'dave@example.com', password: 'dave', name: 'Dave Example' } });
      expectProblem(weak, 400, 'invalid_request', /password must be at least 12 characters; .*must not contain your email address or name/);
      const common = await api('POST', '/users', { json: { email: 'carol@example.com', password: 'password1234' } });
      expectProblem(common, 400, 'invalid_request', /one of the most common passwords/);
      expect(await t.idp.accounts.findByEmail('dave@example.com')).toBeNull();

      const duplicate = await api('POST', '/users', { json: { email: 'ALICE@example.com', password: 'another long password' } });
      expectProblem(duplicate, 409, 'conflict', /alice@example\.com exists/);
      expectNoCredentials(duplicate.text, 'another long password');
    });

    it('answers malformed bodies with 400 JSON, never 500', async () => {
      const bad: [string, string, { json?: unknown; raw?: string; contentType?: string }, RegExp][] = [
        ['POST', '/users', { json: [{ email: 'x@example.com', password }] }, /JSON object/],
        ['POST', '/users', { json: null }, /./],
        ['POST', '/users', { json: 'x@example.com' }, /./],
        ['POST', '/users', { raw: '{"email": "x@example.com", "password": ' }, /./],
        // (A form or text/plain body was once answered 400 "email is required" here; it is now 415, tested under "the contract".)
        ['POST', '/users', { json: { password } }, /email is required/],
        ['POST', '/users', { json: { email: 42, password } }, /email must be a string/],
        ['POST', '/users', { json: { email: 'x@example.com' } }, /password is required/],
        ['POST', '/users', { json: { email: 'x@example.com', password: 123456789012345 } }, /password must be a string/],
        ['POST', '/users', { json: { email: 'not-an-email', password } }, /not a valid email address/],
        ['POST', '/users', { json: { email: 'x@example.com', password, roles: 'admin' } }, /roles must be a list of strings/],
        ['POST', '/users', { json: { email: 'x@example.com', password, roles: [1, 2] } }, /roles must be a list of strings/],
        ['POST', '/users', { json: { email: 'x@example.com', password, roles: ['bad role!'] } }, /not a valid role name/],
        ['POST', '/users', { json: { email: 'x@example.com', password, attributes: 'dept=ops' } }, /attributes must be a JSON object/],
        ['POST', '/users', { json: { email: 'x@example.com', password, attributes: ['ops'] } }, /attributes must be a JSON object/],
        ['POST', '/users', { json: { email: 'x@example.com', password, attributes: null } }, /attributes must be a JSON object/],
        ['POST', '/users', { json: { email: 'x@example.com', password, name: { first: 'X' } } }, /name must be a string/],
        ['POST', '/users', { json: { email: 'x@example.com', password, user_type: 7 } }, /user_type must be a string/],
        ['POST', '/users', { json: { email: 'x@example.com', invite: true, roles: {} } }, /roles must be a list of strings/],
        ['PATCH', '/users/alice@example.com', { json: ['name'] }, /JSON object/],
        ['PATCH', '/users/alice@example.com', { raw: 'not json' }, /./],
        ['PATCH', '/users/alice@example.com', { json: { roles: 'admin' } }, /roles must be a list of strings/],
        ['PATCH', '/users/alice@example.com', { json: { attributes: 5 } }, /attributes must be a JSON object/],
        ['PATCH', '/users/alice@example.com', { json: { name: 5 } }, /name must be a string/],
        ['POST', '/clients', { json: [] }, /JSON object/],
        ['POST', '/clients', { raw: '{' }, /./],
        ['POST', '/keys/rotate', { json: [] }, /JSON object/],
        ['POST', '/keys/rotate', { raw: 'nope' }, /./],
      ];
      for (const [method, path, options, description] of bad) {
        const response = await api(method, path, options);
        expect(response.status, `${method} ${path} ${JSON.stringify(options)}: ${response.text.slice(0, 200)}`).toBe(400);
        expectProblem(response, 400, /^[a-z_]+$/, description);
      }
      expect(await t.idp.accounts.findByEmail('x@example.com')).toBeNull();
      // Alice is unchanged.
      expect((await api<UserView>('GET', '/users/alice@example.com')).body).toMatchObject({ name: 'Alice Example', roles: ['auditor'], attributes: { department: 'ops' } });
    });

    it('answers a path parameter that decodes to a lone "%" with a 4xx JSON error, never 500', async () => {
      // The router decodes path parameters once; decoding "%25" a second time throws URIError.
      const statuses: Record<string, number> = {};
      for (const [method, path] of [['GET', '/users/%25'], ['PATCH', '/users/%25'], ['POST', '/users/%25/disable'], ['GET', '/users/%25/sessions'], ['DELETE', '/users/%25/sessions'], ['DELETE', '/users/alice%40example.com/sessions/%25']] as const) {
        statuses[`${method} ${path}`] = (await api(method, path, method === 'PATCH' ? { json: { name: 'x' } } : {})).status;
      }
      expect.soft(Object.entries(statuses).filter(([, status]) => status < 400 || status >= 500), JSON.stringify(statuses)).toEqual([]);
      // Decoded once only: "%2540" is the literal text "%40", not "@" (it names no account).
      expect.soft((await api('GET', '/users/alice%2540example.com')).status).toBe(404);
    });

    it('invites a user: 201 without a password, and the invitation mail arrives with a set-password link', async () => {
      smtp.clear();
      const invited = await api<UserView>('POST', '/users', { json: { email: 'ivy@example.com', invite: true, name: 'Ivy Invited', roles: ['support'], password: 'ignored for an invitation' } });
      expect(invited.status, invited.text).toBe(201);
      expect(invited.body).toMatchObject({ email: 'ivy@example.com', name: 'Ivy Invited', status: 'pending_verification', email_verified: false, roles: ['support'], has_password: false, password_changed_at: null });
      expectNoCredentials(invited.text);
      const mail = await smtp.waitFor((m) => m.to.includes('ivy@example.com'));
      const link = smtp.linkIn(mail, '/account/invitation');
      expect(link.startsWith(`${t.issuer}/account/invitation?token=`)).toBe(true);
      expect(mail.text).not.toContain('ignored for an invitation');
      // The link opens the set-password page.
      const page = await fetch(link);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('name="password"');

      const again = await api('POST', '/users', { json: { email: 'IVY@example.com', invite: true } });
      expectProblem(again, 409, 'conflict');
    });

    it('shows and changes a user; an unknown address is 404', async () => {
      const shown = await api<UserView>('GET', `/users/${encodeURIComponent('Alice@Example.com')}`);
      expect(shown.status).toBe(200);
      expect(shown.body.email).toBe('alice@example.com');
      expectNoCredentials(shown.text);

      const patched = await api<UserView>('PATCH', '/users/alice@example.com', { json: { name: 'Alice Q. Example', roles: ['auditor', 'admin'], attributes: { department: 'security' } } });
      expect(patched.status, patched.text).toBe(200);
      expect(patched.body).toMatchObject({ email: 'alice@example.com', name: 'Alice Q. Example', roles: ['auditor', 'admin'], attributes: { department: 'security' }, has_password: true });
      expectNoCredentials(patched.text);
      expect((await api<UserView>('GET', '/users/alice@example.com')).body).toEqual(patched.body);

      expectProblem(await api('GET', '/users/nobody@example.com'), 404, 'not_found', /nobody@example\.com/);
      expectProblem(await api('PATCH', '/users/nobody@example.com', { json: { name: 'X' } }), 404, 'not_found');
      expectProblem(await api('GET', '/users/nobody@example.com/sessions'), 404, 'not_found');
    });

    it('disables, enables, unlocks, approves, rejects and resets MFA; an unknown action or user is 404', async () => {
      const disabled = await api<UserView>('POST', '/users/alice@example.com/disable');
      expect(disabled.status, disabled.text).toBe(200);
      expect(disabled.body.status).toBe('disabled');
      expect((await t.idp.accounts.authenticate('alice@example.com', password)).ok).toBe(false);
      const enabled = await api<UserView>('POST', '/users/alice@example.com/enable');
      expect(enabled.status).toBe(200);
      expect(enabled.body.status).toBe('active');
      expect((await t.idp.accounts.authenticate('alice@example.com', password)).ok).toBe(true);

      await t.idp.db.prisma.account.update({ where: { email: 'alice@example.com' }, data: { status: 'locked' } });
      const unlocked = await api('POST', '/users/alice@example.com/unlock');
      expect(unlocked.status, unlocked.text).toBe(200);
      expect(unlocked.body).toEqual({ unlocked: 'alice@example.com' });
      expect((await api<UserView>('GET', '/users/alice@example.com')).body.status).toBe('active');

      const reset = await api('POST', '/users/alice@example.com/reset-mfa');
      expect(reset.status, reset.text).toBe(200);
      expect(reset.body).toEqual({ email: 'alice@example.com', factors: 0, devices: 0 });

      // The approval workflow (user type "external"): only verified addresses wait for a decision.
      await t.idp.accounts.create({ email: 'eve@example.com', password, userType: 'external', emailVerified: true });
      await t.idp.accounts.create({ email: 'erin@example.com', password, userType: 'external', emailVerified: true });
      await t.idp.accounts.create({ email: 'ed@example.com', password, userType: 'external' });
      const pending = await api<UserView[]>('GET', '/users?pending_approval=true');
      expect(pending.status).toBe(200);
      expect(pending.body.map((u) => u.email).sort()).toEqual(['erin@example.com', 'eve@example.com']);
      expect(pending.body.every((u) => u.approval === 'pending')).toBe(true);
      expect((await api<UserView[]>('GET', '/users?pending_approval=false')).body.length).toBe(5);

      const approved = await api<UserView>('POST', '/users/eve@example.com/approve');
      expect(approved.status, approved.text).toBe(200);
      expect(approved.body.approval).toBe('verified');
      const rejected = await api<UserView>('POST', '/users/erin@example.com/reject');
      expect(rejected.status).toBe(200);
      expect(rejected.body.approval).toBe('rejected');
      expect((await api<UserView[]>('GET', '/users?pending_approval=true')).body).toEqual([]);
      expectProblem(await api('POST', '/users/ed@example.com/approve'), 400, 'invalid_request', /has not verified the email address/);
      expectProblem(await api('POST', '/users/alice@example.com/approve'), 400, 'invalid_request', /needs no approval/);

      expectProblem(await api('POST', '/users/alice@example.com/promote'), 404, 'not_found', /promote/);
      expectProblem(await api('POST', '/users/alice@example.com/sessions'), 404, 'not_found');
      for (const action of ['disable', 'enable', 'unlock', 'approve', 'reject', 'reset-mfa']) {
        expectProblem(await api('POST', `/users/nobody@example.com/${action}`), 404, 'not_found');
      }
    });

    it('answers inherited property names as actions (constructor, toString, __proto__, hasOwnProperty) with 404 JSON, never 200 or 500', async () => {
      const before = (await api<UserView>('GET', '/users/alice@example.com')).body;
      for (const email of ['x@example.com', 'alice@example.com']) {
        for (const action of ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', '__defineGetter__']) {
          expectProblem(await api('POST', `/users/${email}/${action}`), 404, 'not_found', new RegExp(`no action ${action}`));
        }
      }
      expect((await api<UserView>('GET', '/users/alice@example.com')).body).toEqual(before);
      expect(await t.idp.accounts.findByEmail('x@example.com')).toBeNull();
    });

    it('refuses NUL and other control characters in a name, the email, a sid and a client id with 400 JSON, never 500', async () => {
      const before = (await api<UserView>('GET', '/users/alice@example.com')).body;
      const problems: string[] = [];
      for (const c of ['\u0000', '\u0001', '\u0007', '\u001b', '\u007f']) {
        const e = encodeURIComponent(c);
        const cases: [string, string, { json?: unknown }, RegExp][] = [
          ['POST', '/users', { json: { email: 'ctl@example.com', password, name: `Eve${c}Example` } }, /name must not contain control characters/],
          ['POST', '/users', { json: { email: 'ctl@example.com', invite: true, name: `Eve${c}` } }, /name must not contain control characters/],
          ['POST', '/users', { json: { email: `ctl${c}@example.com`, password } }, /email must not contain control characters/],
          ['PATCH', '/users/alice@example.com', { json: { name: `Alice${c}Example` } }, /name must not contain control characters/],
          ['PATCH', '/users/alice@example.com', { json: { name: `${c}` } }, /name must not contain control characters/],
          ['GET', `/users/alice${e}@example.com`, {}, /email must not contain control characters/],
          ['PATCH', `/users/alice${e}@example.com`, { json: { name: 'Mallory' } }, /email must not contain control characters/],
          ['POST', `/users/alice${e}@example.com/disable`, {}, /email must not contain control characters/],
          ['GET', `/users/alice${e}@example.com/sessions`, {}, /email must not contain control characters/],
          ['DELETE', `/users/alice${e}@example.com/sessions`, {}, /email must not contain control characters/],
          ['DELETE', `/users/alice${e}@example.com/sessions/some-sid`, {}, /email must not contain control characters/],
          ['DELETE', `/users/alice@example.com/sessions/some${e}sid`, {}, /sid must not contain control characters/],
          ['DELETE', `/clients/ops${e}`, {}, /id must not contain control characters/],
        ];
        for (const [method, path, options, description] of cases) {
          const response = await api(method, path, options);
          if (response.status !== 400) problems.push(`${JSON.stringify(c)} ${method} ${path} ${JSON.stringify(options)}: ${response.status} ${response.text.slice(0, 120)}`);
          else expectProblem(response, 400, 'invalid_request', description);
        }
      }
      // Tab, line breaks and C1 controls in a name are refused too (by the account service).
      for (const c of ['\t', '\n', '\r', '\u0085', '\u009b']) {
        for (const [method, path, json] of [['POST', '/users', { email: 'ctl@example.com', password, name: `Eve${c}Example` }], ['PATCH', '/users/alice@example.com', { name: `Alice${c}Example` }]] as const) {
          const response = await api(method, path, { json });
          if (response.status !== 400) problems.push(`${JSON.stringify(c)} ${method} ${path} name: ${response.status} ${response.text.slice(0, 120)}`);
          else expectProblem(response, 400, 'invalid_request', /name must not contain control characters/);
        }
      }
      expect(problems).toEqual([]);
      // Straight through the service (as the CLI creates accounts): the same rule.
      await expect(t.idp.accounts.create({ email: 'ctl@example.com', password, name: 'Eve\u0000Example' })).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/control characters/) });
      await expect(t.idp.accounts.update('alice@example.com', { name: 'Alice\u0000' })).rejects.toMatchObject({ status: 400 });
      expect(await t.idp.accounts.findByEmail('ctl@example.com')).toBeNull();
      expect((await api<UserView>('GET', '/users/alice@example.com')).body).toEqual(before);
      expect(await t.idp.clients.findForProvider('ops')).toBeDefined();
    });
  });

  describe('sessions', () => {
    let rp: oidc.Configuration;
    let receiver: Server;
    const logoutTokens: string[] = [];

    beforeAll(async () => {
      const port = await freePort();
      receiver = createServer((req, res) => {
        let body = '';
        req.on('data', (chunk: Buffer) => (body += chunk.toString()));
        req.on('end', () => {
          logoutTokens.push(new URLSearchParams(body).get('logout_token') ?? '');
          res.writeHead(200).end();
        });
      });
      await new Promise<void>((resolve) => receiver.listen(port, '127.0.0.1', resolve));
      const { clientSecret } = await t.idp.clients.create({
        client_id: 'webapp', redirect_uris: [redirectUri], grant_types: ['authorization_code', 'refresh_token'],
        backchannel_logout_uri: `http://127.0.0.1:${port}/backchannel`, backchannel_logout_session_required: true,
      });
      rp = await oidc.discovery(new URL(t.issuer), 'webapp', clientSecret!, undefined, insecure);
      await t.idp.accounts.create({ email: 'sam@example.com', password, name: 'Sam Example', emailVerified: true });
    });

    afterAll(() => {
      receiver?.close();
    });

    /** Signs a new browser in as sam through the screens; returns the browser (and the authorization response). */
    async function signedIn(params: Record<string, string> = {}) {
      const browser = new Browser();
      const request = await authorizationRequest(rp, { redirect_uri: redirectUri, ...params });
      const callback = await signIn(browser, request.url, 'sam@example.com', password);
      expect(callback.searchParams.get('code')).toBeTruthy();
      return { browser, request, callback };
    }
    const signedInBrowser = async () => (await signedIn()).browser;

    /** A silent (prompt=none) authorization in this browser: a code, or the error. */
    async function silent(browser: Browser): Promise<string> {
      const request = await authorizationRequest(rp, { redirect_uri: redirectUri, prompt: 'none' });
      const { url } = await browser.follow(request.url, t.issuer);
      expect(url.origin).toBe('http://localhost:8080');
      return url.searchParams.get('code') ? 'code' : String(url.searchParams.get('error'));
    }

    it('lists the sessions signed in through the screens, ends one, then all: those browsers are signed out', async () => {
      // The first browser alone first, so its session is the only one listed.
      const first = await signedInBrowser();
      const alone = await api<SessionView[]>('GET', '/users/sam@example.com/sessions');
      expect(alone.status, alone.text).toBe(200);
      expect(alone.body).toHaveLength(1);
      const firstSid = alone.body[0]!.sid;
      const second = await signedInBrowser();
      const third = await signedInBrowser();
      expect(await silent(first)).toBe('code');

      const listed = await api<SessionView[]>('GET', '/users/sam@example.com/sessions');
      expect(listed.status, listed.text).toBe(200);
      expect(listed.body).toHaveLength(3);
      for (const session of listed.body) {
        expect(session).toMatchObject({ sid: expect.any(String), device: expect.any(String), clients: ['webapp'] });
        for (const date of [session.createdAt, session.lastSeenAt, session.expiresAt]) expect(Number.isNaN(Date.parse(date))).toBe(false);
      }
      const sids = listed.body.map((s) => s.sid);
      expect(sids).toContain(firstSid);
      expect(new Set(sids).size).toBe(3);

      const one = await api('DELETE', `/users/sam@example.com/sessions/${encodeURIComponent(firstSid)}`);
      expect(one.status, one.text).toBe(200);
      expect(one.body).toEqual({ revoked: 1 });
      expect(await silent(first)).toBe('login_required');
      expect(await silent(second)).toBe('code');
      expect((await api<SessionView[]>('GET', '/users/sam@example.com/sessions')).body.map((s) => s.sid).sort()).toEqual(sids.filter((s) => s !== firstSid).sort());

      // The same sid again: no longer an active session.
      expectProblem(await api('DELETE', `/users/sam@example.com/sessions/${encodeURIComponent(firstSid)}`), 400, 'invalid_request', /no active session/);

      const all = await api('DELETE', '/users/sam@example.com/sessions');
      expect(all.status, all.text).toBe(200);
      expect(all.body).toEqual({ revoked: 2 });
      expect(await silent(second)).toBe('login_required');
      expect(await silent(third)).toBe('login_required');
      expect((await api('GET', '/users/sam@example.com/sessions')).body).toEqual([]);
    });

    it('answers an unknown sid with 400 JSON, and sessions of an unknown user with 404 JSON', async () => {
      expectProblem(await api('DELETE', '/users/sam@example.com/sessions/no-such-session'), 400, 'invalid_request', /no active session no-such-session/);
      expectProblem(await api('DELETE', `/users/sam@example.com/sessions/${'x'.repeat(300)}`), 400, 'invalid_request');
      expectProblem(await api('DELETE', '/users/nobody@example.com/sessions/no-such-session'), 404, 'not_found');
      expectProblem(await api('DELETE', '/users/nobody@example.com/sessions'), 404, 'not_found');
    });

    it("ends a session named by the sid claim of a client's ID token", async () => {
      const { browser, request, callback } = await signedIn({ scope: 'openid offline_access', prompt: 'consent' });
      const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
      const sid = tokens.claims()!.sid as string;
      expect(sid).toEqual(expect.any(String));
      expect(tokens.refresh_token).toBeTruthy();
      logoutTokens.length = 0;
      const ended = await api('DELETE', `/users/sam@example.com/sessions/${encodeURIComponent(sid)}`);
      expect(ended.status, ended.text).toBe(200);
      expect(ended.body).toEqual({ revoked: 1 });
      expect(await silent(browser)).toBe('login_required');
      expect((await api('GET', '/users/sam@example.com/sessions')).body).toEqual([]);
      // What the API promises with it: a back-channel logout token for that sid, and the refresh token revoked.
      await expect.poll(() => logoutTokens.map((jwt) => decodeJwt(jwt).sid), { timeout: 5000 }).toContain(sid);
      await expect(oidc.refreshTokenGrant(rp, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
      // Another user's session cannot be ended through this one's address.
      const other = await signedIn();
      const otherSid = (await api<SessionView[]>('GET', '/users/sam@example.com/sessions')).body[0]!.sid;
      expectProblem(await api('DELETE', `/users/alice@example.com/sessions/${encodeURIComponent(otherSid)}`), 400, 'invalid_request', /no active session/);
      expect(await silent(other.browser)).toBe('code');
      expect((await api('DELETE', '/users/sam@example.com/sessions')).body).toEqual({ revoked: 1 });
    });

    it('disabling a user ends the sessions too', async () => {
      const browser = await signedInBrowser();
      expect((await api<SessionView[]>('GET', '/users/sam@example.com/sessions')).body).toHaveLength(1);
      expect((await api('POST', '/users/sam@example.com/disable')).status).toBe(200);
      expect(await silent(browser)).toBe('login_required');
      expect((await api('GET', '/users/sam@example.com/sessions')).body).toEqual([]);
      expect((await api('POST', '/users/sam@example.com/enable')).status).toBe(200);
    });
  });

  describe('clients', () => {
    const metadata = { client_id: 'reports', client_name: 'Reports', redirect_uris: ['https://reports.example.com/cb'], grant_types: ['authorization_code', 'refresh_token'] };

    it('registers a client: 201 with its secret, once; the list never shows a secret or its hash', async () => {
      const created = await api<Record<string, unknown>>('POST', '/clients', { json: metadata });
      expect(created.status, created.text).toBe(201);
      expect(created.body).toMatchObject({ ...metadata, client_secret: expect.stringMatching(/^.{32,}$/), client_secret_expires_at: 0, client_id_issued_at: expect.any(Number) });
      const secret = created.body.client_secret as string;
      // The secret authenticates the client (introspection answers it; a wrong secret is invalid_client).
      const introspect = (clientSecret: string) => fetch(`${t.issuer}/token/introspection`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`reports:${clientSecret}`).toString('base64')}` },
        body: new URLSearchParams({ token: 'A'.repeat(43) }),
      });
      const introspected = await introspect(secret);
      expect(introspected.status).toBe(200);
      expect(await introspected.json()).toEqual({ active: false });
      expect((await introspect(`${secret}x`)).status).toBe(401);

      const list = await api<Record<string, unknown>[]>('GET', '/clients');
      expect(list.status).toBe(200);
      const ids = list.body.map((c) => c.client_id);
      expect(ids).toEqual(expect.arrayContaining(['ops', 'reports', 'webapp', 'machine']));
      expect(list.text).not.toContain(secret);
      expect(list.text).not.toContain(opsSecret);
      expect(list.text).not.toMatch(/client_secret"|secret_?hash/i);
      for (const client of list.body) expect(client).not.toHaveProperty('client_secret');
      expect(list.body.find((c) => c.client_id === 'reports')).toMatchObject(metadata);

      // A public client gets no secret.
      const publicClient = await api<Record<string, unknown>>('POST', '/clients', { json: { client_id: 'spa', redirect_uris: ['http://localhost:8080/cb'], token_endpoint_auth_method: 'none' } });
      expect(publicClient.status, publicClient.text).toBe(201);
      expect(publicClient.body).not.toHaveProperty('client_secret');
    });

    it('refuses invalid metadata with 400 and an existing client_id with 409', async () => {
      const invalid: [Record<string, unknown>, RegExp][] = [
        [{ redirect_uris: ['http://app.example.com/cb'] }, /must use https/],
        [{ redirect_uris: 'https://app.example.com/cb' }, /redirect_uris must be a list/],
        [{ redirect_uris: ['https://app.example.com/cb#x'] }, /fragment/],
        [{ client_id: 'bad id!', redirect_uris: ['https://app.example.com/cb'] }, /client_id must be/],
        [{ redirect_uris: ['https://app.example.com/cb'], client_secret: 'mine' }, /client_secret is generated/],
        [{ redirect_uris: ['https://app.example.com/cb'], token_endpoint_auth_method: 'client_secret_jwt' }, /not supported/],
        [{ redirect_uris: ['https://app.example.com/cb'], grant_types: ['password'] }, /invalid client metadata/],
        [{ redirect_uris: ['https://app.example.com/cb'], first_party: 'yes' }, /first_party/],
        [{ redirect_uris: ['https://app.example.com/cb'], id_token_signed_response_alg: 'HS256' }, /symmetric/],
      ];
      for (const [body, description] of invalid) {
        const response = await api('POST', '/clients', { json: body });
        expectProblem(response, 400, 'invalid_request', description);
      }
      expectProblem(await api('POST', '/clients', { json: metadata }), 409, 'conflict', /reports exists/);
    });

    it('refuses a public client (token_endpoint_auth_method none) with the client_credentials grant or the idp:admin scope: 400, through the API and the service', async () => {
      const publicClients: [Record<string, unknown> & { client_id: string }, RegExp][] = [
        [{ client_id: 'public-machine', grant_types: ['client_credentials'], token_endpoint_auth_method: 'none' }, /client_credentials grant needs a client that authenticates/],
        [{ client_id: 'public-machine-mixed', redirect_uris: ['http://localhost:8080/cb'], grant_types: ['authorization_code', 'client_credentials'], token_endpoint_auth_method: 'none' }, /client_credentials grant needs a client that authenticates/],
        [{ client_id: 'public-admin', redirect_uris: ['http://localhost:8080/cb'], scope: 'openid idp:admin', token_endpoint_auth_method: 'none' }, /idp:admin scope needs a client that authenticates/],
        [{ client_id: 'public-admin-machine', grant_types: ['client_credentials'], scope: 'idp:admin', token_endpoint_auth_method: 'none' }, /needs a client that authenticates/],
      ];
      for (const [metadata, description] of publicClients) {
        expectProblem(await api('POST', '/clients', { json: metadata }), 400, 'invalid_request', description);
        await expect(t.idp.clients.create(metadata), metadata.client_id).rejects.toMatchObject({ status: 400, message: expect.stringMatching(description) });
        expect(await t.idp.clients.findForProvider(metadata.client_id), metadata.client_id).toBeUndefined();
      }
      // Control: a public client with neither is still welcome.
      const spa = await api('POST', '/clients', { json: { client_id: 'public-spa', redirect_uris: ['http://localhost:8080/cb'], scope: 'openid', token_endpoint_auth_method: 'none' } });
      expect(spa.status, spa.text).toBe(201);
      expect((await api('DELETE', '/clients/public-spa')).status).toBe(204);
    });

    it('gives no admin token to a public client with the admin scope registered before the rule (written to the database directly)', async () => {
      const legacy = { client_id: 'legacy-public', grant_types: ['client_credentials'], scope: 'idp:admin', token_endpoint_auth_method: 'none', redirect_uris: [], response_types: [], client_id_issued_at: Math.floor(Date.now() / 1000) };
      await t.idp.db.prisma.client.create({ data: { id: legacy.client_id, metadata: JSON.stringify(legacy), secretHash: null } });
      try {
        for (const params of [{ resource: `${t.issuer}/admin`, scope: 'idp:admin' }, { resource: `${t.issuer}/admin` }] as Record<string, string>[]) {
          const response = await fetch(`${t.issuer}/token`, {
            method: 'POST',
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
            body: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'legacy-public', ...params }),
          });
          const body = (await response.json()) as Record<string, unknown>;
          expect(response.status, JSON.stringify(body)).toBe(400);
          expect(body.error).toBe('invalid_target');
          expect(body).not.toHaveProperty('access_token');
        }
      } finally {
        await t.idp.clients.delete('legacy-public');
      }
    });

    it('deletes a client (204, no body); deleting it again or an unknown one is 404', async () => {
      const deleted = await api('DELETE', '/clients/spa');
      expect(deleted.status).toBe(204);
      expect(deleted.text).toBe('');
      expect(await t.idp.clients.findForProvider('spa')).toBeUndefined();
      expect((await api<Record<string, unknown>[]>('GET', '/clients')).body.map((c) => c.client_id)).not.toContain('spa');
      expectProblem(await api('DELETE', '/clients/spa'), 404, 'not_found', /spa/);
      expectProblem(await api('DELETE', '/clients/never-registered'), 404, 'not_found');
    });

    it("a removed admin client's still-valid token stops working at once", async () => {
      // Registered through the API itself, with the admin scope.
      const created = await api<Record<string, unknown>>('POST', '/clients', { json: { client_id: 'ops2', grant_types: ['client_credentials'], scope: 'idp:admin', token_endpoint_auth_method: 'client_secret_post' } });
      expect(created.status, created.text).toBe(201);
      const ops2Token = await adminToken('ops2', created.body.client_secret as string);
      expect((await api('GET', '/keys', { auth: `Bearer ${ops2Token}` })).status).toBe(200);

      expect((await api('DELETE', '/clients/ops2')).status).toBe(204);
      const refused = await api('GET', '/keys', { auth: `Bearer ${ops2Token}` });
      expect([401, 403]).toContain(refused.status);
      expectProblem(refused, refused.status, /^(invalid_token|insufficient_scope)$/);

      // Removed with the service (as `idp clients delete` does): the same.
      const thirdSecret = (await t.idp.clients.create({ client_id: 'ops3', grant_types: ['client_credentials'], scope: 'idp:admin', token_endpoint_auth_method: 'client_secret_post' })).clientSecret!;
      const ops3Token = await adminToken('ops3', thirdSecret);
      expect((await api('GET', '/users', { auth: `Bearer ${ops3Token}` })).status).toBe(200);
      await t.idp.clients.delete('ops3');
      expect([401, 403]).toContain((await api('GET', '/users', { auth: `Bearer ${ops3Token}` })).status);
    });
  });

  describe('keys', () => {
    it('lists the signing keys, stages a rotation (201), and refuses a bad alg or option with 400', async () => {
      const before = await api<{ kid: string; alg: string; state: string }[]>('GET', '/keys');
      expect(before.status).toBe(200);
      expect(before.body).toEqual([expect.objectContaining({ kid: expect.any(String), alg: 'RS256', state: 'active', created: expect.any(String) })]);
      expect(before.text).not.toMatch(/"d"|private|wrapped/i);

      // No body at all is an ordinary staged rotation.
      const rotated = await api<{ kid: string; alg: string; state: string; activates: string }>('POST', '/keys/rotate');
      expect(rotated.status, rotated.text).toBe(201);
      expect(rotated.body).toEqual({ kid: expect.any(String), alg: 'RS256', state: 'staged', activates: expect.any(String) });
      expect(Date.parse(rotated.body.activates)).toBeGreaterThan(Date.now());
      const after = await api<{ kid: string; state: string }[]>('GET', '/keys');
      expect(after.body.find((k) => k.kid === rotated.body.kid)).toMatchObject({ state: 'staged' });
      expect(after.body).toHaveLength(2);

      for (const [body, description] of [
        [{ alg: 'ES256' }, /not one of KEY_ALGORITHMS/],
        [{ alg: 'HS256' }, /not one of KEY_ALGORITHMS/],
        [{ alg: 'RS256-but-longer' }, /alg must be a string/],
        [{ alg: 256 }, /alg must be a string/],
        [{ revoke_old: true }, /needs --now|now/],
      ] as const) {
        expectProblem(await api('POST', '/keys/rotate', { json: body }), 400, /^[a-z_]+$/, description);
      }
      expect((await api<unknown[]>('GET', '/keys')).body).toHaveLength(2);
    });
  });

  // The contract (src/admin/schemas.ts) and its rules: JSON bodies only, bounded depth, strict
  // fields and types, clean strings. Each case here once answered 500, 201/200 doing nothing, or
  // stored what PostgreSQL cannot; they run on both backends, which once disagreed.
  describe('the contract: strict input', () => {
    const keyCount = async () => (await api<unknown[]>('GET', '/keys')).body.length;

    it('refuses lone UTF-16 surrogates in a name, an email or an attribute with 400 naming the field, never 500', async () => {
      await t.idp.accounts.create({ email: 'surrogate@example.com', password, name: 'Sam Surrogate', attributes: { team: 'a' } });
      const before = (await api<UserView>('GET', '/users/surrogate@example.com')).body;
      const cases: [string, string, unknown, RegExp][] = [
        ['POST', '/users', { email: 'lone@example.com', password, name: 'Lone\ud800' }, /^name must be well-formed/],
        ['POST', '/users', { email: 'lone\udfff@example.com', password }, /^email must be well-formed/],
        ['POST', '/users', { email: 'lone@example.com', invite: true, name: '\udc00' }, /^name must be well-formed/],
        ['POST', '/users', { email: 'lone@example.com', password, attributes: { team: { lead: ['x', 'y\ud800'] } } }, /^attributes\.team\.lead must be well-formed/],
        ['POST', '/users', { email: 'lone@example.com', password, attributes: { team: { '\ud800': 1 } } }, /^a field name in attributes\.team must be well-formed/],
        ['POST', '/users', { email: 'lone@example.com', password, roles: ['ok', '\ud800'] }, /^roles must be well-formed/],
        ['PATCH', '/users/surrogate@example.com', { name: 'Sam\ud800' }, /^name must be well-formed/],
        ['PATCH', '/users/surrogate@example.com', { attributes: { team: 'b\udbff' } }, /^attributes\.team must be well-formed/],
        ['PATCH', '/users/surrogate@example.com', { attributes: { team: 'tab\tin' } }, /^attributes\.team must not contain control characters/],
      ];
      for (const [method, path, json, description] of cases) {
        expectProblem(await api(method, path, { json }), 400, 'invalid_request', description);
      }
      expect(await t.idp.accounts.findByEmail('lone@example.com')).toBeNull();
      expect((await api<UserView>('GET', '/users/surrogate@example.com')).body).toEqual(before);
      // The CLI's --attributes text goes through the same rules.
      await expect(updateUser(t.idp, 'surrogate@example.com', { attributes: '{"team":"\\ud800"}' })).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/^attributes\.team must be well-formed/) });
      await expect(updateUser(t.idp, 'surrogate@example.com', { attributes: `{"team":${'['.repeat(100)}${']'.repeat(100)}}` })).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/nested deeper than 32 levels/) });
    });

    it('refuses JSON nested deeper than 32 levels with 400 while parsing, never 500', async () => {
      await t.idp.accounts.create({ email: 'deep@example.com', password });
      const deepObjects = (levels: number) => `${'{"a":'.repeat(levels)}1${'}'.repeat(levels)}`;
      const deepArrays = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`;
      const cases: [string, string, string][] = [
        // 5,000 levels of objects in attributes: about 30 KB, well under the size limit.
        ['POST', '/users', `{"email":"deeper@example.com","password":${JSON.stringify(password)},"attributes":${deepObjects(5000)}}`],
        ['PATCH', '/users/deep@example.com', `{"attributes":${deepObjects(5000)}}`],
        // 12,000 levels of arrays in a field client registration does not know.
        ['POST', '/clients', `{"client_id":"deep","redirect_uris":["https://deep.example.com/cb"],"x_extra":${deepArrays(12000)}}`],
        ['POST', '/keys/rotate', `{"now":${deepArrays(12000)}}`],
        // One level too many: the body is level 1, attributes 2, its 32nd object 33.
        ['PATCH', '/users/deep@example.com', `{"attributes":${deepObjects(32)}}`],
      ];
      const keys = await keyCount();
      for (const [method, path, raw] of cases) {
        expect(raw.length).toBeLessThan(64 * 1024);
        expectProblem(await api(method, path, { raw }), 400, 'invalid_request', /nested deeper than 32 levels/);
      }
      // Exactly 32 levels: parsed, and then judged by the contract and the account service.
      const deepest = await api<UserView>('PATCH', '/users/deep@example.com', { raw: `{"attributes":${deepObjects(31)}}` });
      expect(deepest.status, deepest.text).toBe(200);
      expect(await t.idp.accounts.findByEmail('deeper@example.com')).toBeNull();
      expect(await t.idp.clients.findForProvider('deep')).toBeUndefined();
      expect(await keyCount()).toBe(keys);
      // The CLI's standard input (idp clients create) has the same bound.
      await expect(createClient(t.idp, `{"client_id":"deep","x":${deepArrays(12000)}}`)).rejects.toMatchObject({ status: 400, message: expect.stringMatching(/standard input is nested deeper than 32 levels/) });
      expect(await t.idp.clients.findForProvider('deep')).toBeUndefined();
    });

    it('refuses NUL, other control characters and lone surrogates anywhere in client metadata: API, service and CLI, with 400 naming the field', async () => {
      const base = { redirect_uris: ['https://ctl.example.com/cb'] };
      const cases: [Record<string, unknown> & { client_id: string }, RegExp][] = [
        [{ ...base, client_id: 'ctl-redirect', redirect_uris: ['https://ctl.example.com/cb\u0000'] }, /^redirect_uris must not contain control characters/],
        [{ ...base, client_id: 'ctl-redirect2', redirect_uris: ['https://ctl.example.com/cb', 'https://ctl.example.com/\u0000x'] }, /^redirect_uris must not contain control characters/],
        [{ ...base, client_id: 'ctl-name', client_name: 'Evil\u0000Corp' }, /^client_name must not contain control characters/],
        [{ ...base, client_id: 'ctl-name2', client_name: 'Line\nbreak' }, /^client_name must not contain control characters/],
        [{ ...base, client_id: 'ctl-surrogate', client_name: 'Lone\ud800' }, /^client_name must be well-formed/],
        [{ ...base, client_id: 'ctl-logout', post_logout_redirect_uris: ['https://ctl.example.com/\u007f'] }, /^post_logout_redirect_uris must not contain control characters/],
        [{ ...base, client_id: 'ctl-nested', jwks: { keys: [{ kty: 'RSA', kid: 'k\u0000' }] } }, /^jwks\.keys\.kid must not contain control characters/],
        [{ ...base, client_id: 'ctl-key', 'x\u0000': 1 }, /^a field name must not contain control characters/],
      ];
      for (const [metadata, description] of cases) {
        expectProblem(await api('POST', '/clients', { json: metadata }), 400, 'invalid_request', description);
        // The service (what `idp clients create` calls), from an object and from standard input's text.
        await expect(t.idp.clients.create(metadata), metadata.client_id).rejects.toMatchObject({ status: 400, message: expect.stringMatching(description) });
        await expect(createClient(t.idp, JSON.stringify(metadata)), metadata.client_id).rejects.toMatchObject({ status: 400, message: expect.stringMatching(description) });
        expect(await t.idp.clients.findForProvider(metadata.client_id), metadata.client_id).toBeUndefined();
      }
      // The client_id itself: refused by the service's own pattern (a path with it names no client).
      expectProblem(await api('POST', '/clients', { json: { ...base, client_id: 'ctl\u0000id' } }), 400, 'invalid_request', /control characters/);
    });

    it('keys/rotate: wrong types are 400 naming the field, non-JSON bodies 415, and no key is staged', async () => {
      const keys = await keyCount();
      const typed: [unknown, RegExp][] = [
        [{ now: 'true', revoke_old: 'true' }, /now must be a boolean.*; revoke_old must be a boolean/],
        [{ now: 1 }, /now must be a boolean/],
        [{ revoke_old: null }, /revoke_old must be a boolean/],
        [{ alg: ['RS256'] }, /alg must be a string/],
        [{ force: true }, /unknown field force/],
      ];
      for (const [json, description] of typed) expectProblem(await api('POST', '/keys/rotate', { json }), 400, 'invalid_request', description);
      const untyped: [string, string | null][] = [
        ['{"now":true,"revoke_old":true}', 'text/plain'],
        ['{"now":true}', 'text/plain;charset=UTF-8'],
        ['now=true&revoke_old=true', 'application/x-www-form-urlencoded'],
        ['--b\r\ncontent-disposition: form-data; name="now"\r\n\r\ntrue\r\n--b--\r\n', 'multipart/form-data; boundary=b'],
        ['{"now":true}', null],
        ['{"now":true}', 'application/json; charset=iso-8859-1'],
        ['{"now":true}', 'application/merge-patch+json'],
      ];
      for (const [raw, contentType] of untyped) {
        expectProblem(await api('POST', '/keys/rotate', { raw, contentType }), 415, 'unsupported_media_type', /application\/json/);
      }
      expect(await keyCount()).toBe(keys);
      // The body is optional: none (no Content-Type), an empty one with a Content-Type, or {}.
      for (const options of [{}, { raw: '', contentType: null }, { raw: '', contentType: 'application/json' }, { raw: '', contentType: 'text/plain' }, { json: {} }]) {
        const staged = await api<{ state: string }>('POST', '/keys/rotate', options);
        expect(staged.status, `${JSON.stringify(options)}: ${staged.text}`).toBe(201);
        expect(staged.body.state).toBe('staged');
      }
      expect(await keyCount()).toBe(keys + 5);
      // A charset parameter of UTF-8 is JSON still.
      const charset = await api('POST', '/keys/rotate', { raw: '{}', contentType: 'application/json; charset=utf-8' });
      expect(charset.status, charset.text).toBe(201);
    });

    it('PATCH /users/{email} refuses a body that is not JSON (415) and unknown fields (400), and changes nothing', async () => {
      await t.idp.accounts.create({ email: 'patch@example.com', password, name: 'Pat Original' });
      const before = (await api<UserView>('GET', '/users/patch@example.com')).body;
      for (const [raw, contentType] of [['{"name":"Changed"}', 'text/plain'], ['name=Changed', 'application/x-www-form-urlencoded'], ['{"name":"Changed"}', null]] as const) {
        expectProblem(await api('PATCH', '/users/patch@example.com', { raw, contentType }), 415, 'unsupported_media_type');
      }
      expectProblem(await api('PATCH', '/users/patch@example.com', { json: { name: 'Changed', email: 'other@example.com' } }), 400, 'invalid_request', /^unknown field email$/);
      expectProblem(await api('PATCH', '/users/patch@example.com', { json: { name: 'Changed', status: 'active', has_password: false } }), 400, 'invalid_request', /unknown field status; unknown field has_password/);
      expectProblem(await api('PATCH', '/users/patch@example.com', { json: { name: null } }), 400, 'invalid_request', /name must be a string/);
      expectProblem(await api('PATCH', '/users/patch@example.com'), 400, 'invalid_request', /JSON request body is required/);
      expect((await api<UserView>('GET', '/users/patch@example.com')).body).toEqual(before);
      // Control: the same change as JSON is made.
      expect((await api<UserView>('PATCH', '/users/patch@example.com', { json: { name: 'Changed' } })).body.name).toBe('Changed');
    });

    it('POST /users refuses a non-boolean invite, unknown fields and non-JSON bodies instead of creating an active user', async () => {
      for (const invite of ['true', 1, {}, null]) {
        expectProblem(await api('POST', '/users', { json: { email: 'invitee@example.com', password, invite } }), 400, 'invalid_request', /^invite must be a boolean/);
      }
      expectProblem(await api('POST', '/users', { json: { email: 'invitee@example.com', password, status: 'active' } }), 400, 'invalid_request', /^unknown field status$/);
      expectProblem(await api('POST', '/users', { json: { email: 'invitee@example.com', password, emailVerified: true } }), 400, 'invalid_request', /^unknown field emailVerified$/);
      for (const [raw, contentType] of [['email=invitee@example.com', 'application/x-www-form-urlencoded'], ['invitee@example.com', 'text/plain'], [JSON.stringify({ email: 'invitee@example.com', password }), null]] as const) {
        expectProblem(await api('POST', '/users', { raw, contentType }), 415, 'unsupported_media_type');
      }
      expect(await t.idp.accounts.findByEmail('invitee@example.com')).toBeNull();
    });

    it('one rule elsewhere too: unknown query parameters, a body on an operation without one, a body too large or not UTF-8', async () => {
      await t.idp.accounts.create({ email: 'rules@example.com', password });
      expectProblem(await api('GET', '/users?pending_approval=yes'), 400, 'invalid_request', /pending_approval must be one of true, false/);
      expectProblem(await api('GET', '/users?limit=10'), 400, 'invalid_request', /^unknown query parameter limit$/);
      expectProblem(await api('GET', '/keys?verbose=1'), 400, 'invalid_request', /^unknown query parameter verbose$/);
      expectProblem(await api('GET', '/users?pending_approval=true&pending_approval=false'), 400, 'invalid_request', /pending_approval/);
      // An operation that takes no body refuses one rather than ignore it.
      expectProblem(await api('POST', '/users/rules@example.com/disable', { json: { reason: 'x' } }), 400, 'invalid_request', /takes no request body/);
      expectProblem(await api('POST', '/users/rules@example.com/disable', { raw: 'reason=x', contentType: 'application/x-www-form-urlencoded' }), 415, 'unsupported_media_type');
      expect((await api<UserView>('GET', '/users/rules@example.com')).body.status).toBe('active');
      expectProblem(await api('POST', '/users', { raw: JSON.stringify({ email: 'big@example.com', password, name: 'x'.repeat(70_000) }) }), 413, 'request_too_large', /64 KiB/);
      const latin1 = Buffer.concat([Buffer.from('{"email":"latin@example.com","password":"correct horse battery staple","name":"Jos'), Buffer.from([0xe9]), Buffer.from('"}')]);
      const response = await fetch(`${t.url}/admin/v1/users`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: latin1 });
      expect(response.status).toBe(400);
      expect(await response.json()).toEqual({ error: 'invalid_request', error_description: 'the request body is not valid UTF-8' });
      expect(await t.idp.accounts.findByEmail('big@example.com')).toBeNull();
      expect(await t.idp.accounts.findByEmail('latin@example.com')).toBeNull();
      // Client registration is the exception to the unknown-field rule: RFC 7591 metadata is open.
      const open = await api<Record<string, unknown>>('POST', '/clients', { json: { client_id: 'open-metadata', redirect_uris: ['https://open.example.com/cb'], software_id: 'reports-app', x_vendor_note: 'kept' } });
      expect(open.status, open.text).toBe(201);
      expect((await api('DELETE', '/clients/open-metadata')).status).toBe(204);
    });

    it('answers with what the contract documents', async () => {
      const checks: [keyof typeof operations, string][] = [
        ['listUsers', '/users'], ['showUser', '/users/rules@example.com'], ['listSessions', '/users/rules@example.com/sessions'],
        ['listClients', '/clients'], ['listKeys', '/keys'], ['verifyAudit', '/audit/verify'],
        ['listAuditEventTypes', '/audit/events'], ['searchAudit', '/audit?type=user.&limit=5'],
      ];
      for (const [id, path] of checks) {
        const response = await api('GET', path);
        expect(response.status, path).toBe(200);
        const parsed = (operations[id] as Operation).response!.safeParse(response.body);
        expect(parsed.success, `${path}: ${JSON.stringify(parsed.error?.issues.slice(0, 3))}`).toBe(true);
      }
    });
  });

  describe('audit', () => {
    it('records every change with the actor client:ops, and the hash chain verifies', async () => {
      await t.idp.audit.flush();
      const events = await t.idp.db.prisma.auditEvent.findMany({ where: { actor: 'client:ops' }, orderBy: { seq: 'asc' } });
      const types = new Set(events.map((e) => e.type));
      for (const type of [
        'user.created', 'account.invited', 'user.updated', 'user.disabled', 'user.enabled', 'user.unlocked', 'mfa.reset', 'user.approved', 'user.rejected',
        'session.revoked', 'session.revoked_all', 'client.created', 'client.deleted', 'key.staged',
      ]) expect(types, type).toContain(type);
      const alice = await t.idp.db.prisma.account.findUniqueOrThrow({ where: { email: 'alice@example.com' } });
      expect(events.find((e) => e.type === 'user.created')).toMatchObject({ subject: alice.id, outcome: 'success' });
      expect(events.filter((e) => e.type === 'client.created').map((e) => e.clientId)).toEqual(expect.arrayContaining(['reports', 'spa', 'ops2']));
      expect(events.filter((e) => e.type === 'client.deleted').map((e) => e.clientId)).toEqual(expect.arrayContaining(['spa', 'ops2']));
      // Every change made through the API names its caller: none of these without an actor.
      const anonymous = await t.idp.db.prisma.auditEvent.count({ where: { type: { in: ['user.created', 'user.updated', 'client.created', 'client.deleted', 'key.staged', 'user.disabled'] }, actor: null } });
      expect(anonymous).toBe(0);
      expectNoCredentials(JSON.stringify(events));

      const verify = await api<{ ok: boolean; rows: number }>('GET', '/audit/verify');
      expect(verify.status).toBe(200);
      const total = await t.idp.db.prisma.auditEvent.count();
      expect(verify.body).toEqual({ ok: true, rows: total });
      expect(total).toBeGreaterThanOrEqual(events.length);
    });

    it('searches the audit log by type (or family), user and page, with the catalogue\'s names', async () => {
      const catalogue = await api<{ type: string }[]>('GET', '/audit/events');
      expect(catalogue.status).toBe(200);
      expect(catalogue.body.map((e) => e.type)).toEqual(expect.arrayContaining(['login.password_verified', 'user.created', 'key.staged']));
      const created = await api<{ seq: number; type: string; subject: string | null; actor: string }[]>('GET', '/audit?type=user.created');
      expect(created.status).toBe(200);
      expect(created.body.length).toBeGreaterThan(0);
      expect(created.body.every((e) => e.type === 'user.created')).toBe(true);
      const family = await api<{ seq: number; type: string }[]>('GET', '/audit?type=user.&limit=2');
      expect(family.body).toHaveLength(2);
      expect(family.body[0]!.seq).toBeGreaterThan(family.body[1]!.seq);
      const older = await api<{ seq: number }[]>('GET', `/audit?type=user.&limit=2&before=${family.body[1]!.seq}`);
      expect(older.body.every((e) => e.seq < family.body[1]!.seq)).toBe(true);
      const alice = await api<{ subject: string | null }[]>('GET', '/audit?user=alice%40example.com');
      const aliceId = (await t.idp.accounts.findByEmail('alice@example.com'))!.id;
      expect(alice.body.length).toBeGreaterThan(0);
      expect(alice.body.every((e) => e.subject === aliceId)).toBe(true);
      expectProblem(await api('GET', '/audit?type=nonsense'), 400, 'invalid_request', /not an audit event type/);
      expectProblem(await api('GET', '/audit?limit=5000'), 400, 'invalid_request', /limit/);
      expectProblem(await api('GET', '/audit?since=yesterday'), 400, 'invalid_request', /since/);
    });

    it('records refused admin authentication as admin_api.rejected (client, method, path, error), without the token', async () => {
      const probe = '/users/rejected-probe@example.com';
      const unknown = randomUUID().replace(/-/g, '');
      expectProblem(await api('GET', probe, { auth: null }), 401, 'invalid_token');
      expectProblem(await api('DELETE', `${probe}/sessions`, { auth: `Bearer ${unknown}` }), 401, 'invalid_token');
      // A live admin-audience token of a client that is then removed: the row names the client.
      const goneSecret = (await t.idp.clients.create({ client_id: 'ops-gone', grant_types: ['client_credentials'], scope: 'idp:admin', token_endpoint_auth_method: 'client_secret_post' })).clientSecret!;
      const goneToken = await adminToken('ops-gone', goneSecret);
      await t.idp.clients.delete('ops-gone');
      expectProblem(await api('GET', probe, { auth: `Bearer ${goneToken}` }), 401, 'invalid_token');
      const rows = (await audits('admin_api.rejected')).filter((r) => String(r.data.path).startsWith(`/admin/v1${probe}`));
      expect(rows.map((r) => [r.clientId, r.data.method, r.data.path, r.data.error])).toEqual([
        [null, 'GET', `/admin/v1${probe}`, 'invalid_token'],
        [null, 'DELETE', `/admin/v1${probe}/sessions`, 'invalid_token'],
        ['ops-gone', 'GET', `/admin/v1${probe}`, 'invalid_token'],
      ]);
      for (const row of rows) expect(row).toMatchObject({ outcome: 'failure', actor: null, ip: expect.stringContaining('127.0.0.1') });
      const text = JSON.stringify(rows);
      expect(text).not.toContain(unknown);
      expect(text).not.toContain(goneToken);
      expectNoCredentials(text, goneSecret);
    });

    // Regression: this refusal was once answered without an audit row.
    it('records an admin-audience token refused for want of the idp:admin scope (403) as admin_api.rejected too', async () => {
      const unscoped = await tokenRequest('ops', opsSecret, { resource: `${t.issuer}/admin` });
      expect(unscoped.status).toBe(200);
      const probe = '/users/unscoped-probe@example.com';
      expectProblem(await api('GET', probe, { auth: `Bearer ${unscoped.body.access_token as string}` }), 403, 'insufficient_scope');
      const rows = (await audits('admin_api.rejected')).filter((r) => r.data.path === `/admin/v1${probe}`);
      expect(rows.map((r) => [r.clientId, r.data.error])).toEqual([['ops', 'insufficient_scope']]);
    });

    it('records who read users and sessions (personal data), and nothing for reads of keys', async () => {
      await t.idp.accounts.create({ email: 'read-audit@example.com', password });
      const before = (await audits('admin_api.read')).length;
      expect((await api('GET', '/users/read-audit@example.com')).status).toBe(200);
      expect((await api('GET', '/users/read-audit@example.com/sessions')).status).toBe(200);
      expect((await api('GET', '/keys')).status).toBe(200);
      // A refused read (unknown user) reveals nothing and is not a read of personal data.
      expect((await api('GET', '/users/nobody-read@example.com')).status).toBe(404);
      const rows = (await audits('admin_api.read')).slice(before);
      expect(rows.map((r) => [r.actor, r.data.path])).toEqual([
        ['client:ops', '/admin/v1/users/read-audit@example.com'],
        ['client:ops', '/admin/v1/users/read-audit@example.com/sessions'],
      ]);
    });

    it('records client.created with its scope and token_endpoint_auth_method, and user.updated with the new roles', async () => {
      const machine = await api<Record<string, unknown>>('POST', '/clients', { json: { client_id: 'audited-machine', grant_types: ['client_credentials'], scope: 'api:read', token_endpoint_auth_method: 'client_secret_post' } });
      expect(machine.status, machine.text).toBe(201);
      const web = await api<Record<string, unknown>>('POST', '/clients', { json: { client_id: 'audited-web', redirect_uris: ['https://audited.example.com/cb'] } });
      expect(web.status, web.text).toBe(201);
      const created = (await audits('client.created')).filter((r) => r.clientId?.startsWith('audited-'));
      expect(created.map((r) => [r.clientId, r.actor, r.data])).toEqual([
        ['audited-machine', 'client:ops', { grant_types: ['client_credentials'], scope: 'api:read', token_endpoint_auth_method: 'client_secret_post' }],
        ['audited-web', 'client:ops', { grant_types: ['authorization_code'], scope: null, token_endpoint_auth_method: 'client_secret_basic' }],
      ]);
      for (const secret of [machine.body.client_secret as string, web.body.client_secret as string]) expectNoCredentials(JSON.stringify(created), secret);

      const alice = await t.idp.db.prisma.account.findUniqueOrThrow({ where: { email: 'alice@example.com' } });
      const since = (await audits('user.updated')).length;
      expect((await api('PATCH', '/users/alice@example.com', { json: { roles: ['auditor', 'incident-response'] } })).status).toBe(200);
      expect((await api('PATCH', '/users/alice@example.com', { json: { name: 'Alice Example' } })).status).toBe(200);
      const updated = (await audits('user.updated')).slice(since);
      expect(updated.map((r) => [r.subject, r.actor, r.data])).toEqual([
        [alice.id, 'client:ops', { fields: ['roles'], roles: ['auditor', 'incident-response'] }],
        [alice.id, 'client:ops', { fields: ['name'] }],
      ]);
    });
  });

  // Last, so that a change made without a token (the bug this guards against) cannot disturb the audit test above.
  describe('the public OpenAPI route', () => {
    it('does not exempt other paths that merely end in /openapi.json from authentication', async () => {
      await t.idp.clients.create({ client_id: 'openapi.json', grant_types: ['client_credentials'] });
      // Without a token, none of these may act, or tell an existing account from a missing one.
      const statuses: Record<string, number> = {};
      for (const [method, path] of [
        ['DELETE', '/clients/openapi.json'],
        ['DELETE', '/users/alice@example.com/sessions/openapi.json'],
        ['DELETE', '/users/nobody@example.com/sessions/openapi.json'],
        ['GET', '/users/openapi.json'],
        ['POST', '/users/alice@example.com/openapi.json'],
      ] as const) statuses[`${method} ${path}`] = (await api(method, path, { auth: null })).status;
      expect(statuses).toEqual(Object.fromEntries(Object.keys(statuses).map((key) => [key, 401])));
      expect(await t.idp.clients.findForProvider('openapi.json')).toBeDefined();
      await t.idp.audit.flush();
      expect(await t.idp.db.prisma.auditEvent.count({ where: { type: 'client.deleted', clientId: 'openapi.json' } })).toBe(0);
    });
  });
});
