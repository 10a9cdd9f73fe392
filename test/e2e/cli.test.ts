// The `idp` command as an operator runs it: the real bin/idp.js spawned as a child process with
// its configuration in the environment, over a SQLite file in a temp dir (and one PostgreSQL
// migration run). Exit codes: 0 success, 2 bad input, usage or configuration, 1 runtime failure.
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient as createLibsqlClient } from '@libsql/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';

import { emptyPostgres, tempDir } from '../helpers/databases.ts';
import { jsonOf, killAll, runIdp, startServer, type RunResult, type ServerProcess } from '../helpers/processes.ts';
import { freePort } from '../helpers/server.ts';

const migrationsDir = fileURLToPath(new URL('../../prisma/migrations/', import.meta.url));
const migrationNames = (provider: 'sqlite' | 'postgresql') => readdirSync(join(migrationsDir, provider)).filter((f) => f.endsWith('.sql')).sort();

/** Exit code, with both streams in the failure message. */
function expectExit(result: RunResult, code: number) {
  expect(result.code, `exit code\nstdout: ${result.stdout}\nstderr: ${result.stderr}`).toBe(code);
}

/** A refused command: exit `code`, nothing on stdout, one `idp: …` line on stderr matching `message`. */
function expectRefused(result: RunResult, code: number, message: RegExp) {
  expectExit(result, code);
  expect(result.stdout).toBe('');
  expect(result.stderr).toMatch(/^idp: /);
  expect(result.stderr).toMatch(message);
}

interface UserJson {
  id: string;
  email: string;
  name: string | null;
  status: string;
  created_at: string;
  email_verified?: boolean;
}

describe('idp CLI on SQLite', () => {
  const dir = tempDir('idp-cli-');
  const env = { DATABASE_URL: `file:${join(dir.path, 'idp.db')}`, MASTER_KEY_FILE: join(dir.path, 'keys', 'master.key'), LOG_LEVEL: 'warn' };
  const idp = (args: string[], stdin?: string, extraEnv: Record<string, string> = {}) => runIdp(args, { env: { ...env, ...extraEnv }, ...(stdin === undefined ? {} : { stdin }), cwd: dir.path });
  const password = 'correct horse battery staple';

  afterAll(() => dir.remove());

  it('describes itself with --help and exits 0', async () => {
    const [help, create] = await Promise.all([idp(['--help']), idp(['clients', 'create', '--help'])]);
    expectExit(help, 0);
    expect(help.stdout).toContain('Usage: idp');
    for (const command of ['serve', 'migrate', 'clients', 'users', 'keys', 'audit']) expect(help.stdout).toMatch(new RegExp(`^\\s+${command}\\b`, 'm'));

    expectExit(create, 0);
    expect(create.stdout).toContain('Usage: idp clients create');
    expect(create.stdout).toMatch(/RFC 7591/);
    expect(create.stdout).toMatch(/standard input/);
    expect(create.stdout).toMatch(/client_secret/);
  });

  it('exits 2 for an unknown command and for a missing required option', async () => {
    const [unknown, missing] = await Promise.all([idp(['frobnicate']), idp(['users', 'create', '--password-stdin'], password)]);
    expectExit(unknown, 2);
    expect(unknown.stderr).toMatch(/unknown command 'frobnicate'/);
    expectExit(missing, 2);
    expect(missing.stderr).toMatch(/--email/);
    expect(missing.stdout).toBe('');
  });

  it('refuses to work on an unmigrated database, then migrates once', async () => {
    expectRefused(await idp(['users', 'list']), 2, /needs migrating.*run `idp migrate`/);

    const first = await idp(['migrate']);
    expectExit(first, 0);
    expect(jsonOf(first)).toEqual({ applied: migrationNames('sqlite') });
    expect(migrationNames('sqlite').length).toBeGreaterThanOrEqual(2);

    const second = await idp(['migrate']);
    expectExit(second, 0);
    expect(jsonOf(second)).toEqual({ applied: [] });
  });

  describe('users', () => {
    let created: UserJson;

    it('creates a user from a password on standard input and never prints the password or its hash', async () => {
      const result = await idp(['users', 'create', '--email', 'Alice@Example.COM', '--password-stdin', '--name', 'Alice Example'], `${password}\n`);
      expectExit(result, 0);
      created = jsonOf<UserJson>(result);
      expect(created).toEqual({
        id: expect.stringMatching(/^[0-9a-f-]{36}$/), email: 'alice@example.com', name: 'Alice Example', status: 'active', email_verified: false,
        user_type: 'internal', roles: [], approval: null, attributes: {}, has_password: true, password_changed_at: expect.any(String), created_at: expect.any(String),
      });
      expect(Number.isNaN(Date.parse(created.created_at))).toBe(false);
      for (const text of [result.stdout, result.stderr]) {
        expect(text).not.toContain(password);
        expect(text).not.toMatch(/argon2|passwordHash|password_hash/i);
      }
    });

    it('refuses a too-short password, a malformed email and a duplicate email (any case) with exit 2', async () => {
      const create = (email: string, stdin: string) => idp(['users', 'create', '--email', email, '--password-stdin'], stdin);
      const [short, elevenAndNewline, malformed, duplicate] = await Promise.all([
        create('bob@example.com', 'short\n'),
        // 11 characters plus the newline that `echo` adds: the newline is not part of the password.
        create('bob@example.com', `${'x'.repeat(11)}\n`),
        create('not-an-email', password),
        create('ALICE@example.com', 'another long password'),
      ]);
      expectRefused(short, 2, /password must be at least 12 characters/);
      expectRefused(elevenAndNewline, 2, /password must be at least 12 characters/);
      expectRefused(malformed, 2, /not a valid email address: "not-an-email"/);
      // A conflict: the address is compared normalised.
      expectRefused(duplicate, 2, /account with email alice@example\.com exists/);
    });

    it('lists every unmet password rule at once: length, common password, own email or name', async () => {
      const create = (email: string, stdin: string, name?: string) => idp(['users', 'create', '--email', email, '--password-stdin', ...(name ? ['--name', name] : [])], stdin);
      const [common, personal, both] = await Promise.all([
        create('carol@example.com', 'password1234\n'),
        create('carol@example.com', 'carol was here in 2026\n'),
        create('dave@example.com', 'dave\n', 'Dave Example'),
      ]);
      expectRefused(common, 2, /password is one of the most common passwords/);
      expectRefused(personal, 2, /password must not contain your email address or name/);
      expectRefused(both, 2, /password must be at least 12 characters; .*must not contain your email address or name/);
    });

    it('takes a session id that starts with "-" as the session id, not as an option', async () => {
      // Session ids are random base64url: one in 64 starts with "-".
      expectRefused(await idp(['sessions', 'revoke', 'alice@example.com', '-not-a-session']), 2, /has no active session -not-a-session/);
    });

    it('lists exactly the created user, without credentials', async () => {
      const result = await idp(['users', 'list']);
      expectExit(result, 0);
      const users = jsonOf<UserJson[]>(result);
      expect(users).toEqual([created]);
      expect(result.stdout).not.toContain(password);
      expect(result.stdout).not.toMatch(/argon2|passwordHash|password_hash/i);
    });
  });

  describe('clients', () => {
    let secret: string;
    let publicId: string;
    const metadata = { client_id: 'webapp', client_name: 'Web App', redirect_uris: ['https://app.example.com/callback'], grant_types: ['authorization_code', 'refresh_token'] };

    it('registers a client from RFC 7591 metadata and prints its secret once; a public client gets an id and no secret', async () => {
      const [confidential, publicClient] = await Promise.all([
        idp(['clients', 'create'], JSON.stringify(metadata)),
        idp(['clients', 'create'], JSON.stringify({ redirect_uris: ['http://localhost:8080/cb'], token_endpoint_auth_method: 'none' })),
      ]);
      expectExit(confidential, 0);
      const client = jsonOf<Record<string, unknown>>(confidential);
      expect(client).toMatchObject({ ...metadata, client_secret_expires_at: 0, client_id_issued_at: expect.any(Number) });
      secret = client.client_secret as string;
      expect(secret).toMatch(/^[A-Za-z0-9_-]{32,}$/);

      expectExit(publicClient, 0);
      const generated = jsonOf<Record<string, unknown>>(publicClient);
      publicId = generated.client_id as string;
      expect(publicId).toMatch(/^[A-Za-z0-9_-]{16,}$/);
      expect(generated).toMatchObject({ token_endpoint_auth_method: 'none' });
      expect(generated).not.toHaveProperty('client_secret');
    });

    it('lists clients without their secrets', async () => {
      const result = await idp(['clients', 'list']);
      expectExit(result, 0);
      const clients = jsonOf<Record<string, unknown>[]>(result);
      expect(clients).toHaveLength(2);
      expect(clients).toEqual(expect.arrayContaining([expect.objectContaining(metadata), expect.objectContaining({ client_id: publicId })]));
      expect(result.stdout).not.toContain(secret);
      expect(result.stdout).not.toContain('client_secret');
    });

    it('refuses input that is not a JSON object, and metadata that oidc-provider or our policy rejects, naming the problem', async () => {
      const cb = 'https://app.example.com/cb';
      const cases: [Record<string, unknown> | string, RegExp][] = [
        ['{"redirect_uris": [', /standard input is not valid JSON/],
        ['["https://app.example.com/cb"]', /client metadata must be a JSON object/],
        [{ grant_types: ['authorization_code'] }, /invalid client metadata: redirect_uris is mandatory/],
        [{ redirect_uris: ['http://evil.example/cb'] }, /redirect_uris: http:\/\/evil\.example\/cb must use https/],
        [{ redirect_uris: [cb], token_endpoint_auth_method: 'client_secret_jwt' }, /token_endpoint_auth_method client_secret_jwt is not supported/],
        [{ redirect_uris: [cb], client_secret: 'chosen-by-me' }, /client_secret is generated by the server/],
        [metadata, /client webapp exists/],
      ];
      const results = await Promise.all(cases.map(([input]) => idp(['clients', 'create'], typeof input === 'string' ? input : JSON.stringify(input))));
      results.forEach((result, i) => expectRefused(result, 2, cases[i]![1]));
      // Nothing was registered by the refused requests.
      const clients = jsonOf<Record<string, unknown>[]>(await idp(['clients', 'list']));
      expect(clients.map((c) => c.client_id).sort()).toEqual([publicId, 'webapp'].sort());
    });

    it('deletes a client, and reports a second delete as not found', async () => {
      const deleted = await idp(['clients', 'delete', 'webapp']);
      expectExit(deleted, 0);
      expect(jsonOf(deleted)).toEqual({ deleted: 'webapp' });
      expectRefused(await idp(['clients', 'delete', 'webapp']), 2, /no client webapp/);
    });
  });

  it('exits 2 with one line naming the bad setting for a bad configuration value', async () => {
    const [port, issuer, database] = await Promise.all([
      idp(['users', 'list'], undefined, { PORT: 'abc' }),
      idp(['keys', 'list'], undefined, { ISSUER: 'https://id.example.com/' }),
      idp(['users', 'list'], undefined, { DATABASE_URL: 'mysql://admin:s3cr3t-pw@db.example.com/idp' }),
    ]);
    expectRefused(port, 2, /^idp: configuration error: PORT: .*"abc"/);
    expect(port.stderr.trimEnd().split('\n')).toHaveLength(1);

    expectRefused(issuer, 2, /^idp: configuration error: ISSUER: .*trailing slash/);
    expect(issuer.stderr.trimEnd().split('\n')).toHaveLength(1);

    // A URL setting is named but never echoed: it may carry a password.
    expectRefused(database, 2, /^idp: configuration error: DATABASE_URL: /);
    expect(database.stderr).not.toContain('s3cr3t-pw');
    expect(database.stderr.trimEnd().split('\n')).toHaveLength(1);
  });

  it('lists one active RS256 signing key', async () => {
    const result = await idp(['keys', 'list']);
    expectExit(result, 0);
    const keys = jsonOf<Record<string, unknown>[]>(result);
    expect(keys).toHaveLength(1);
    expect(keys[0]).toEqual({ kid: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/), alg: 'RS256', state: 'active', created: expect.any(String), activates: null, activated: expect.any(String), retired: null, retires: null });
    expect(result.stdout).not.toMatch(/"d"|envelope|privateKey/);
  });

  it('prints the audit catalogue and lists events by type family, newest first, with the same names', async () => {
    const catalogue = jsonOf<{ type: string; description: string; fields: string[] }[]>(await idp(['audit', 'events']));
    expect(catalogue.map((e) => e.type)).toEqual(expect.arrayContaining(['login.password_verified', 'key.generated', 'client.created']));
    const keys = jsonOf<{ seq: number; type: string }[]>(await idp(['audit', 'list', '--type', 'key.', '--limit', '3']));
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.every((e) => e.type.startsWith('key.') && catalogue.some((c) => c.type === e.type))).toBe(true);
    expect(keys.map((e) => e.seq)).toEqual([...keys.map((e) => e.seq)].sort((a, b) => b - a));
    const refused = await idp(['audit', 'list', '--type', 'no.such']);
    expectExit(refused, 2);
    expect(refused.stderr).toMatch(/not an audit event type/);
  });

  it('verifies the audit chain, refuses in-place changes, and names the row changed behind the triggers', async () => {
    const clean = await idp(['audit', 'verify']);
    expectExit(clean, 0);
    const ok = jsonOf<{ ok: boolean; rows: number }>(clean);
    expect(ok.ok).toBe(true);
    expect(ok.rows).toBeGreaterThan(5);

    const db = createLibsqlClient({ url: env.DATABASE_URL });
    let middle: number;
    try {
      const types = (await db.execute('SELECT type FROM "AuditEvent"')).rows.map((r) => String(r.type));
      expect(types).toEqual(expect.arrayContaining(['key.generated', 'user.created', 'client.created', 'client.deleted']));
      const seqs = (await db.execute('SELECT seq FROM "AuditEvent" ORDER BY seq')).rows.map((r) => Number(r.seq));
      expect(seqs.length).toBe(ok.rows);
      middle = seqs[Math.floor(seqs.length / 2)]!;
      const before = (await db.execute({ sql: 'SELECT outcome FROM "AuditEvent" WHERE seq = ?', args: [middle] })).rows[0]!.outcome;
      const changed = before === 'success' ? 'failure' : 'success';

      // With the triggers in place the table is append-only.
      await expect(db.execute({ sql: 'UPDATE "AuditEvent" SET outcome = ? WHERE seq = ?', args: [changed, middle] })).rejects.toThrow(/append-only: UPDATE refused/);
      await expect(db.execute({ sql: 'DELETE FROM "AuditEvent" WHERE seq = ?', args: [middle] })).rejects.toThrow(/append-only: DELETE refused/);
      expect((await db.execute({ sql: 'SELECT outcome FROM "AuditEvent" WHERE seq = ?', args: [middle] })).rows[0]!.outcome).toBe(before);

      // Someone with write access to the file drops the trigger and edits a row.
      await db.execute('DROP TRIGGER audit_event_no_update');
      const update = await db.execute({ sql: 'UPDATE "AuditEvent" SET outcome = ? WHERE seq = ?', args: [changed, middle] });
      expect(update.rowsAffected).toBe(1);
    } finally {
      db.close();
    }

    const broken = await idp(['audit', 'verify']);
    expectExit(broken, 1);
    expect(jsonOf(broken)).toEqual({ ok: false, seq: middle, rows: expect.any(Number), reason: expect.stringMatching(/hash does not match the row/) });
  });
});

describe('idp migrate on PostgreSQL', () => {
  it('refuses an unmigrated database, migrates it exactly once even when two run at once, then works', async () => {
    const database = await emptyPostgres();
    const keys = tempDir('idp-cli-pg-');
    const env = { DATABASE_URL: database.url, MASTER_KEY_FILE: join(keys.path, 'master.key'), LOG_LEVEL: 'warn' };
    try {
      expectRefused(await runIdp(['users', 'list'], { env }), 2, /needs migrating.*run `idp migrate`/);
      // Two nodes migrating at the same time: one applies everything, the other nothing.
      const both = await Promise.all([runIdp(['migrate'], { env }), runIdp(['migrate'], { env })]);
      for (const result of both) expectExit(result, 0);
      const applied = both.map((r) => jsonOf<{ applied: string[] }>(r).applied).sort((a, b) => b.length - a.length);
      expect(applied).toEqual([migrationNames('postgresql'), []]);
      const users = await runIdp(['users', 'list'], { env });
      expectExit(users, 0);
      expect(jsonOf(users)).toEqual([]);
    } finally {
      await database.drop();
      keys.remove();
    }
  });
});

interface DemoBanner {
  url: string;
  email: string;
  password: string;
  clientId: string;
  clientSecret: string;
  redirectUri: string;
}

function parseBanner(stdout: string): DemoBanner {
  const field = (label: string) => {
    const match = new RegExp(`^\\s+${label}:\\s+(\\S+)$`, 'm').exec(stdout);
    expect(match, `banner line ${label} in:\n${stdout}`).toBeTruthy();
    return match![1]!;
  };
  return {
    url: /Identity provider running at (\S+)/.exec(stdout)?.[1] ?? '',
    email: field('user'),
    password: field('password'),
    clientId: field('client_id'),
    clientSecret: field('client_secret'),
    redirectUri: field('redirect_uri'),
  };
}

describe('idp serve', () => {
  const servers: ServerProcess[] = [];
  afterAll(async () => {
    await killAll();
  });

  it('refuses to start on an unmigrated database without --migrate', async () => {
    const dir = tempDir('idp-serve-');
    try {
      const port = await freePort();
      const result = await runIdp(['serve'], {
        env: { DATABASE_URL: `file:${join(dir.path, 'idp.db')}`, MASTER_KEY_FILE: join(dir.path, 'master.key'), LOG_LEVEL: 'warn', PORT: String(port), ISSUER: `http://127.0.0.1:${port}` },
        cwd: dir.path,
        timeoutMs: 15_000,
      });
      expectRefused(result, 2, /needs migrating.*run `idp migrate` or start with --migrate/);
      // It never listened.
      await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
    } finally {
      dir.remove();
    }
  });

  describe('--demo', () => {
    const dir = tempDir('idp-demo-');
    let port: number;
    let issuer: string;
    let env: Record<string, string>;
    let banner: DemoBanner;

    beforeAll(async () => {
      port = await freePort();
      issuer = `http://127.0.0.1:${port}`;
      // A relative DATABASE_URL: resolved against the working directory, like data/demo-credentials.json.
      env = { DATABASE_URL: 'file:./data/idp.db', MASTER_KEY_FILE: join(dir.path, 'keys', 'master.key'), LOG_LEVEL: 'info', PORT: String(port), ISSUER: issuer };
    });
    afterAll(() => dir.remove());

    async function start(): Promise<ServerProcess> {
      const server = startServer(['serve', '--demo'], { env, cwd: dir.path, url: issuer });
      servers.push(server);
      await server.waitReady();
      await server.waitForOutput(/demo credentials are kept in/);
      return server;
    }

    /**
     * Signs in to the demo client at /demo, submitting one wrong password before the right one,
     * and returns the page the demo client renders at /demo/callback.
     */
    async function demoSignIn(email: string, password: string): Promise<{ status: number; html: string }> {
      const browser = new Browser();
      let { response, url } = await browser.follow(`${issuer}/demo`, issuer);
      let triedWrongPassword = false;
      let expectedStatus = 200;
      for (let step = 0; step < 8; step++) {
        const html = await response.text();
        if (url.pathname === '/demo/callback') return { status: response.status, html };
        expect(url.origin, 'every redirect stays on the provider').toBe(issuer);
        expect(response.status, `page ${url.pathname}: ${html.slice(0, 300)}`).toBe(expectedStatus);
        expectedStatus = 200;
        const csrf = csrfOf(html);
        if (html.includes('name="email"')) {
          ({ response, url } = await browser.postForm(new URL(formAction(html, 'identify'), issuer), { csrf, email }, issuer));
        } else if (html.includes('name="password"') && !triedWrongPassword) {
          // The user stays on the password page with an error, and the sign-in goes on.
          triedWrongPassword = true;
          ({ response, url } = await browser.postForm(new URL(formAction(html, 'password'), issuer), { csrf, password: `${password}-wrong` }, issuer));
          expectedStatus = 401;
        } else if (html.includes('name="password"')) {
          expect(html).toContain('The email address or password is not correct.');
          ({ response, url } = await browser.postForm(new URL(formAction(html, 'password'), issuer), { csrf, password }, issuer));
        } else if (html.includes('/consent"')) {
          ({ response, url } = await browser.postForm(new URL(formAction(html, 'consent'), issuer), { csrf }, issuer));
        } else throw new Error(`unexpected page at ${url.pathname}: ${html.slice(0, 300)}`);
      }
      throw new Error('the demo sign-in did not reach /demo/callback');
    }

    it('migrates, seeds, prints the demo credentials and keeps them in data/demo-credentials.json', async () => {
      const server = await start();
      banner = parseBanner(server.stdout);
      expect(banner).toMatchObject({ url: issuer, email: 'demo@example.com', clientId: 'demo', redirectUri: `${issuer}/demo/callback` });
      expect(banner.password.length).toBeGreaterThanOrEqual(12);
      expect(banner.clientSecret.length).toBeGreaterThanOrEqual(32);
      expect(server.stdout).toContain(`Demo sign-in: open ${issuer}/demo`);
      // The JSON logs go to stdout beside the banner, and never carry the password or secret.
      const logs = server.stdout.split('\n').filter((line) => line.startsWith('{'));
      expect(logs.map((line) => (JSON.parse(line) as { msg: string }).msg)).toEqual(expect.arrayContaining(['migrations applied', 'listening']));
      expect(logs.join('\n')).not.toContain(banner.password);
      expect(logs.join('\n')).not.toContain(banner.clientSecret);
      expect(server.stderr).toBe('');

      const file = join(dir.path, 'data', 'demo-credentials.json');
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual({ issuer, email: banner.email, password: banner.password, clientId: banner.clientId, clientSecret: banner.clientSecret, redirectUri: banner.redirectUri });
      expect(statSync(join(dir.path, 'data', 'idp.db')).isFile()).toBe(true);
    });

    it('signs the demo user in to the demo client through its built-in relying party', async () => {
      const result = await demoSignIn(banner.email, banner.password);
      expect(result.status, result.html.slice(0, 500)).toBe(200);
      expect(result.html).toContain('Signed in to the demo client');
      expect(result.html).toContain('demo@example.com');
      expect(result.html).toContain('Refresh token issued: yes');
    });

    it('refuses a callback without the sign-in state cookie', async () => {
      const response = await new Browser().request(`${issuer}/demo/callback?code=forged&state=forged`);
      expect(response.status).toBe(400);
      const html = await response.text();
      expect(html).toContain('This sign-in has expired');
      expect(html).not.toContain('Signed in to the demo client');
    });

    it('stops with exit code 0 on SIGTERM', async () => {
      const server = servers[servers.length - 1]!;
      expect(await server.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      expect(server.stdout).toMatch(/"signal":"SIGTERM".*"msg":"shutting down"/);
      await expect(fetch(`${issuer}/healthz`)).rejects.toThrow();
    });

    it('prints the same credentials on restart (seeded on the first run only), and they still work', async () => {
      const server = await start();
      expect(parseBanner(server.stdout)).toEqual(banner);
      expect(server.stdout).not.toMatch(/migrations applied/);
      const result = await demoSignIn(banner.email, banner.password);
      expect(result.html).toContain('Signed in to the demo client');
      expect(await server.stop('SIGTERM')).toEqual({ code: 0, signal: null });

      const cli = (args: string[]) => runIdp(args, { env, cwd: dir.path });
      const [usersResult, clients] = await Promise.all([cli(['users', 'list']), cli(['clients', 'list'])]);
      const users = jsonOf<UserJson[]>(usersResult);
      expect(users.map((u) => u.email)).toEqual(['demo@example.com']);
      expect(jsonOf<Record<string, unknown>[]>(clients).map((c) => c.client_id)).toEqual(['demo']);
      expect(clients.stdout).not.toContain(banner.clientSecret);
    });

    it('follows a changed issuer: same user and password, the client re-registered for the new URLs', async () => {
      const otherPort = await freePort();
      const oldIssuer = issuer;
      issuer = `http://127.0.0.1:${otherPort}`;
      env = { ...env, PORT: String(otherPort), ISSUER: issuer };
      const server = await start();
      const moved = parseBanner(server.stdout);
      expect(moved).toMatchObject({ url: issuer, email: banner.email, password: banner.password, clientId: 'demo', redirectUri: `${issuer}/demo/callback` });
      expect(moved.clientSecret).not.toBe(banner.clientSecret);
      expect(JSON.parse(readFileSync(join(dir.path, 'data', 'demo-credentials.json'), 'utf8'))).toMatchObject({ issuer, clientSecret: moved.clientSecret });
      const result = await demoSignIn(banner.email, banner.password);
      expect(result.html).toContain('Signed in to the demo client');
      expect(await server.stop('SIGTERM')).toEqual({ code: 0, signal: null });
      expect(issuer).not.toBe(oldIssuer);
    });

    it('refuses to seed again when the demo account exists but its credentials file is gone', async () => {
      rmSync(join(dir.path, 'data', 'demo-credentials.json'));
      const result = await runIdp(['serve', '--demo'], { env, cwd: dir.path, timeoutMs: 15_000 });
      expectExit(result, 1);
      expect(result.stderr).toMatch(/^idp: a demo@example\.com account exists but data\/demo-credentials\.json is missing: restore the file/m);
      expect(result.stdout).not.toContain('Demo sign-in');
      expect(existsSync(join(dir.path, 'data', 'demo-credentials.json'))).toBe(false);
    });
  });
});
