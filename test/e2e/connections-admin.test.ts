// Operators manage upstream identity provider connections through the admin API (with the
// contract's validation) and the `idp connections` CLI; the client secret goes in once and never
// comes out. `test` checks a real upstream (a stand-in OpenID provider on loopback for the cloud
// services, test/helpers/upstreams.ts) and one that is down.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonOf, runIdp } from '../helpers/processes.ts';
import { backends, startIdp, type TestIdp } from '../helpers/server.ts';
import { startOidcUpstream, type StandInUpstream } from '../helpers/upstreams.ts';

const secret = 'a-client-secret-at-the-upstream-42';

describe.each(backends)('connections through the admin API and the CLI on %s', (backend) => {
  let t: TestIdp;
  let token: string;
  let upstream: StandInUpstream;

  beforeAll(async () => {
    t = await startIdp(backend, { FEDERATION_ALLOW_HTTP: 'true' });
    upstream = await startOidcUpstream({ flavour: 'plain', clients: [{ client_id: 'our-idp', client_secret: secret, redirect_uris: [`${t.issuer}/interaction/callback/oidc/acme`] }] });
    const ops = await t.idp.clients.create({ client_id: 'ops', grant_types: ['client_credentials'], scope: 'idp:admin', token_endpoint_auth_method: 'client_secret_post' });
    const response = await fetch(`${t.issuer}/token`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'ops', client_secret: ops.clientSecret!, resource: `${t.issuer}/admin`, scope: 'idp:admin' }),
    });
    token = ((await response.json()) as { access_token: string }).access_token;
  });
  afterAll(async () => {
    await t?.stop();
    await upstream?.stop();
  });

  async function api(method: string, path: string, json?: unknown) {
    const response = await fetch(`${t.issuer}/admin/v1${path}`, {
      method, headers: { authorization: `Bearer ${token}`, ...(json === undefined ? {} : { 'content-type': 'application/json' }) }, ...(json === undefined ? {} : { body: JSON.stringify(json) }),
    });
    const text = await response.text();
    return { status: response.status, text, body: text ? (JSON.parse(text) as Record<string, unknown>) : undefined };
  }

  it('creates, lists, shows, changes, tests and deletes a connection; the secret is never in an answer or the audit log', async () => {
    const created = await api('POST', '/connections', { preset: 'generic', display_name: 'Acme SSO', issuer: upstream.issuer, client_id: 'our-idp', client_secret: secret, clients: ['*'], domains: ['Acme.test'] });
    expect(created.status, created.text).toBe(201);
    expect(created.body).toMatchObject({ id: 'acme-sso', preset: 'generic', issuer: upstream.issuer, domains: ['acme.test'], has_client_secret: true, jit: { enabled: true, status: 'active' } });
    expect(created.text).not.toContain(secret);
    // The id the operator picks.
    expect((await api('POST', '/connections', { id: 'acme', preset: 'okta', display_name: 'Acme', issuer: upstream.issuer, client_id: 'our-idp', client_secret: secret })).status).toBe(201);
    expect((await api('POST', '/connections', { id: 'acme', preset: 'okta', display_name: 'Acme', issuer: upstream.issuer, client_id: 'our-idp', client_secret: secret })).status).toBe(409);

    const list = await api('GET', '/connections');
    expect((list.body as unknown as { id: string }[]).map((c) => c.id)).toEqual(['acme', 'acme-sso']);
    expect(list.text).not.toContain(secret);
    expect((await api('GET', '/connections/acme')).body).toMatchObject({ id: 'acme', preset: 'okta' });
    expect((await api('GET', '/connections/nope')).status).toBe(404);

    const changed = await api('PATCH', '/connections/acme', { display_name: 'Acme Okta', client_secret: 'a-new-secret-9876543210', mfa: { trust: 'asserted', amr: ['mfa', 'hwk'] } });
    expect(changed.status, changed.text).toBe(200);
    expect(changed.body).toMatchObject({ display_name: 'Acme Okta', mfa: { trust: 'asserted', amr: ['mfa', 'hwk'] }, issuer: upstream.issuer });
    expect(await t.idp.connections.secretOf((await t.idp.connections.find('acme'))!)).toBe('a-new-secret-9876543210');

    const tested = await api('POST', '/connections/acme/test');
    expect(tested.status).toBe(200);
    expect(tested.body).toMatchObject({ connection: 'acme', ok: true });
    expect((tested.body!.checks as { check: string; ok: boolean }[]).map((c) => c.check)).toEqual(['discovery', 'jwks', 'client authentication', 'pkce', 'scopes', 'client secret']);

    expect((await api('DELETE', '/connections/acme-sso')).status).toBe(204);
    expect((await api('GET', '/connections/acme-sso')).status).toBe(404);
    const rows = await t.idp.db.prisma.auditEvent.findMany({ where: { type: { startsWith: 'connection.' } }, orderBy: { seq: 'asc' } });
    expect(rows.map((r) => r.type)).toEqual(['connection.created', 'connection.created', 'connection.updated', 'connection.deleted']);
    expect(JSON.parse(rows[2]!.details)).toMatchObject({ connection: 'acme', secretChanged: true, fields: ['display_name', 'mfa'] });
    const audit = JSON.stringify(rows);
    expect(audit).not.toContain(secret);
    expect(audit).not.toContain('a-new-secret');
  });

  it('refuses bad connections with 400 naming the problem, and writes nothing', async () => {
    const bad: [unknown, RegExp][] = [
      [{ preset: 'generic', display_name: 'X', client_id: 'c', client_secret: 's' }, /issuer is required/],
      [{ preset: 'nope', display_name: 'X', issuer: 'https://x.example', client_id: 'c', client_secret: 's' }, /preset must be one of entra, okta, google, jumpcloud, generic/],
      [{ preset: 'generic', display_name: 'X', issuer: 'https://x.example', client_id: 'c' }, /client_secret is required/],
      [{ preset: 'generic', display_name: 'X', issuer: 'https://x.example', client_id: 'c', client_secret: 's', colour: 'red' }, /unknown field colour/],
      [{ preset: 'generic', display_name: 'X', issuer: 'ftp://x.example', client_id: 'c', client_secret: 's' }, /issuer must be an https URL/],
      [{ preset: 'generic', display_name: 'X', issuer: 'https://x.example?a=b', client_id: 'c', client_secret: 's' }, /issuer must not carry/],
      [{ preset: 'entra', display_name: 'X', issuer: 'https://login.microsoftonline.com/organizations/v2.0', client_id: 'c', client_secret: 's' }, /tenants is required for the multi-tenant issuer organizations/],
      [{ preset: 'entra', display_name: 'X', issuer: 'https://login.microsoftonline.com/common/v2.0', client_id: 'c', client_secret: 's', tenants: ['not-a-guid'] }, /tenants must be a tenant id/],
      [{ preset: 'entra', display_name: 'X', issuer: 'https://login.microsoftonline.com/0b3c1f5e-8a3e-4c4e-9d3f-3f8f0c3a1e2d/v2.0', client_id: 'c', client_secret: 's', authoritative_domains: ['contoso.com'] }, /authoritative_domains cannot be used with Entra ID/],
      [{ preset: 'entra', display_name: 'X', issuer: 'https://login.microsoftonline.com/0b3c1f5e-8a3e-4c4e-9d3f-3f8f0c3a1e2d/v2.0', client_id: 'c', client_secret: 's', mfa: { trust: 'asserted' } }, /mfa.auth_context is required/],
      [{ preset: 'okta', display_name: 'X', issuer: 'https://x.okta.com', client_id: 'c', client_secret: 's', mfa: { trust: 'conditional_access' } }, /conditional_access is for Entra ID connections only/],
      [{ preset: 'generic', display_name: 'X', issuer: 'https://x.example', client_id: 'c', client_secret: 's', domains: ['bad domain'] }, /domains must be a domain name/],
      [{ preset: 'generic', display_name: 'X', issuer: 'https://x.example', client_id: 'c', client_secret: 's\u0000' }, /control/],
    ];
    const before = await t.idp.connections.list();
    for (const [body, message] of bad) {
      const response = await api('POST', '/connections', body);
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(response.body, JSON.stringify(body)).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(message) });
    }
    expect(await t.idp.connections.list()).toEqual(before);
    expect((await api('PATCH', '/connections/acme', { issuer: 'not a url' })).body).toMatchObject({ error_description: expect.stringMatching(/issuer must be an absolute URL/) });
  });

  it('test reports an upstream that is down, without a 500', async () => {
    expect((await api('POST', '/connections', { id: 'gone', preset: 'generic', display_name: 'Gone', issuer: 'http://127.0.0.1:9', client_id: 'c', client_secret: 's' })).status).toBe(201);
    const tested = await api('POST', '/connections/gone/test');
    expect(tested.status).toBe(200);
    expect(tested.body).toMatchObject({ ok: false, checks: expect.arrayContaining([{ check: 'discovery', ok: false, detail: expect.stringMatching(/cannot be reached/) }]) });
  });

  it('the CLI: create from standard input (the secret never printed), list, show, test (exit 1 when a check fails), delete', async () => {
    const env = { DATABASE_URL: t.config.DATABASE_URL, MASTER_KEY_FILE: t.config.MASTER_KEY_FILE!, ISSUER: t.issuer, FEDERATION_ALLOW_HTTP: 'true', LOG_LEVEL: 'warn', ...(t.config.REDIS_URL ? { REDIS_URL: t.config.REDIS_URL, REDIS_KEY_PREFIX: t.config.REDIS_KEY_PREFIX } : {}) };
    const input = JSON.stringify({ id: 'cli-okta', preset: 'okta', display_name: 'Okta (CLI)', issuer: upstream.issuer, client_id: 'our-idp', client_secret: secret });
    const created = await runIdp(['connections', 'create'], { env, stdin: input });
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).not.toContain(secret);
    expect(jsonOf<{ id: string; has_client_secret: boolean }>(created)).toMatchObject({ id: 'cli-okta', has_client_secret: true });
    const listed = await runIdp(['connections', 'list'], { env });
    expect(jsonOf<{ id: string }[]>(listed).map((c) => c.id)).toContain('cli-okta');
    expect(jsonOf(await runIdp(['connections', 'show', 'cli-okta'], { env }))).toMatchObject({ display_name: 'Okta (CLI)' });
    const ok = await runIdp(['connections', 'test', 'cli-okta'], { env });
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(jsonOf(ok)).toMatchObject({ ok: true });
    const failing = await runIdp(['connections', 'test', 'gone'], { env });
    expect(failing.code).toBe(1);
    expect(jsonOf(failing)).toMatchObject({ ok: false });
    const refused = await runIdp(['connections', 'create'], { env, stdin: '{"preset":"generic"}' });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/display_name is required/);
    const updated = await runIdp(['connections', 'update', 'cli-okta'], { env, stdin: '{"enabled":false}' });
    expect(jsonOf(updated)).toMatchObject({ enabled: false });
    expect((await runIdp(['connections', 'delete', 'cli-okta'], { env })).code).toBe(0);
    expect((await runIdp(['connections', 'show', 'cli-okta'], { env })).code).not.toBe(0);
  });
});
