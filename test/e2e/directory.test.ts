// LDAP sign-in against a real OpenLDAP (slapd, started by test/helpers/slapd.ts in a temp dir with
// TLS from a CA the test generates): the address of a routed domain gets the directory's
// password screen, search-then-bind over StartTLS or LDAPS, accounts keyed by entryUUID (renames
// keep them), nested groups as roles, our own lockout before the directory is asked, injection
// and empty passwords refused before any search or bind, failover and an outage. Our application
// is openid-client, receiving our tokens.
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NewDirectory } from '../../src/federation/directory-settings.ts';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { freePort } from '../helpers/ports.ts';
import { jsonOf, runIdp } from '../helpers/processes.ts';
import { backends, startIdp, type TestIdp } from '../helpers/server.ts';
import { startSlapd, type Slapd } from '../helpers/slapd.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const redirectUri = 'http://localhost:8080/callback';

describe.each(backends)('LDAP directory sign-in on %s', (backend) => {
  let t: TestIdp;
  let rp: oidc.Configuration;
  let ldap: Slapd;
  let aliceDn = '';
  let engineers = '';

  async function directory(input: Partial<NewDirectory> & Pick<NewDirectory, 'id' | 'display_name'>) {
    return t.idp.connections.createDirectory({
      kind: 'ldap', preset: 'openldap', urls: [ldap.url], ca_pem: ldap.caPem, bind_dn: ldap.serviceDn, bind_password: ldap.servicePassword,
      user_base: `ou=people,${ldap.baseDn}`, clients: ['*'], ...input,
    } as NewDirectory, 'test');
  }

  beforeAll(async () => {
    ldap = await startSlapd();
    t = await startIdp(backend, { LOCKOUT_THRESHOLD: '3' });
    const created = await t.idp.clients.create({ client_id: 'webapp', redirect_uris: [redirectUri], first_party: true });
    rp = await oidc.discovery(new URL(t.issuer), 'webapp', created.clientSecret!, undefined, insecure);

    aliceDn = await ldap.addUser({ uid: 'alice', mail: 'alice@corp.test', cn: 'Alice Liddell', password: 'alice-directory-pw', extra: { departmentNumber: '42' } });
    engineers = await ldap.addGroup('engineers', [aliceDn]);
    // Nested: staff contains engineers; slapd's memberOf shows engineers only, we walk the rest.
    await ldap.addGroup('staff', [engineers]);
    await directory({
      id: 'corp', display_name: 'Corp Directory', domains: ['corp.test'],
      group_roles: { [`cn=staff,ou=groups,${ldap.baseDn}`]: 'staff', engineers: 'engineer' },
      attributes: { custom: { department: 'departmentNumber' } },
    });
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
    await ldap?.stop();
  });

  /** The address typed, then the directory's password: where the sign-in ended up. */
  async function signInWith(email: string, password: string, browser = new Browser()) {
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri });
    const identify = await browser.follow(request.url, t.issuer);
    const html = await identify.response.text();
    const typed = await browser.postForm(new URL(formAction(html, 'identify'), t.issuer), { csrf: csrfOf(html), email }, t.issuer);
    const screen = await typed.response.text();
    expect(screen, 'the directory\'s password screen').toContain('Your company password');
    const started = Date.now();
    const posted = await browser.postForm(new URL(formAction(screen, 'directory-password'), t.issuer), { csrf: csrfOf(screen), password }, t.issuer);
    return { request, ...posted, elapsed: Date.now() - started };
  }

  const auditOf = async (type: string) => {
    await t.idp.audit.flush();
    return (await t.idp.db.prisma.auditEvent.findMany({ where: { type }, orderBy: { seq: 'asc' } })).map((r) => ({ ...r, details: JSON.parse(r.details) as Record<string, unknown> }));
  };

  it('signs in with the directory password over StartTLS: JIT account keyed by entryUUID, nested groups as roles, mapped attributes', async () => {
    const done = await signInWith('Alice@corp.test', 'alice-directory-pw');
    expect(done.url.origin + done.url.pathname).toBe(redirectUri);
    const claims = (await oidc.authorizationCodeGrant(rp, done.url, { pkceCodeVerifier: done.request.verifier, expectedState: done.request.state, expectedNonce: done.request.nonce })).claims()!;
    const account = (await t.idp.accounts.findByEmail('alice@corp.test'))!;
    expect(claims).toMatchObject({ sub: account.id, amr: ['pwd'] });
    expect(account).toMatchObject({ name: 'Alice Liddell', passwordHash: null, attributes: { department: '42' } });
    expect([...account.roles].sort()).toEqual(['engineer', 'staff']);
    expect(await t.idp.federatedAccounts.linksOf(account.id)).toEqual([expect.objectContaining({ connectionId: 'corp', subject: await ldap.entryUuid(aliceDn) })]);
    // The directory's password is never ours: nothing of it is stored.
    expect(JSON.stringify(await t.idp.db.prisma.auditEvent.findMany())).not.toContain('alice-directory-pw');
  });

  it('a rename in the directory keeps the account; name, groups and attributes are refreshed at each sign-in', async () => {
    const before = (await t.idp.accounts.findByEmail('alice@corp.test'))!;
    aliceDn = await ldap.rename(aliceDn, 'alice.l');
    await ldap.modify(aliceDn, { cn: 'Alice Pleasance Liddell', departmentNumber: '7' });
    const done = await signInWith('alice@corp.test', 'alice-directory-pw');
    expect(done.url.origin + done.url.pathname).toBe(redirectUri);
    const after = (await t.idp.accounts.findByEmail('alice@corp.test'))!;
    expect(after.id).toBe(before.id);
    expect(after).toMatchObject({ name: 'Alice Pleasance Liddell', attributes: { department: '7' } });
  });

  it('a wrong password is a failed attempt; after LOCKOUT_THRESHOLD of them we stop asking the directory', async () => {
    await ldap.addUser({ uid: 'bob', mail: 'bob@corp.test', cn: 'Bob', password: 'bob-directory-pw' });
    for (let i = 0; i < 3; i++) {
      const wrong = await signInWith('bob@corp.test', `wrong-${i}`);
      expect(wrong.response.status).toBe(401);
      expect(await wrong.response.text()).toContain('The email address or password is not correct.');
    }
    // Locked here: even the right password is not tried against the directory.
    const locked = await signInWith('bob@corp.test', 'bob-directory-pw');
    expect(locked.response.status).toBe(429);
    expect((await auditOf('federation.refused')).at(-1)!.details).toMatchObject({ connection: 'corp', reason: 'locked_here' });
    await t.clock.advance(301_000);
    const after = await signInWith('bob@corp.test', 'bob-directory-pw');
    expect(after.url.origin + after.url.pathname).toBe(redirectUri);
  });

  it('refuses injection, control characters, unknown users and empty passwords the same way as a wrong password', async () => {
    for (const [email, password] of [
      ['*)(uid=*))(|(uid=*@corp.test', 'anything'],
      ['*@corp.test', 'alice-directory-pw'],
      ['nobody@corp.test', 'whatever-pw'],
      ['alice@corp.test', ' '],
    ] as const) {
      const refused = await signInWith(email, password);
      expect(refused.response.status, email).toBe(401);
      expect(refused.url.origin, email).toBe(new URL(t.issuer).origin);
    }
  });

  it('an existing account of ours with the address must be proven first (the directory is not authoritative for it)', async () => {
    const local = await t.idp.accounts.create({ email: 'carol@corp.test', password: 'Tangerine-Orbit-Pass-1', emailVerified: true });
    await ldap.addUser({ uid: 'carol', mail: 'carol@corp.test', cn: 'Carol', password: 'carol-directory-pw' });
    const browser = new Browser();
    const first = await signInWith('carol@corp.test', 'carol-directory-pw', browser);
    const proof = await first.response.text();
    expect(proof).toContain('name="password"');
    expect(proof).toContain('Sign in to it once to link your Corp Directory sign-in');
    const proved = await browser.postForm(new URL(formAction(proof, 'password'), t.issuer), { csrf: csrfOf(proof), password: 'Tangerine-Orbit-Pass-1' }, t.issuer);
    expect(proved.url.origin + proved.url.pathname).toBe(redirectUri);
    expect(await t.idp.federatedAccounts.linksOf(local.id)).toHaveLength(1);
    // Linked: the directory password alone reaches the account from now on.
    const next = await signInWith('carol@corp.test', 'carol-directory-pw');
    expect(next.url.origin + next.url.pathname).toBe(redirectUri);
  });

  it('LDAPS with the CA works, without it the directory is unavailable; servers fail over in order', async () => {
    await directory({ id: 'corp-ldaps', display_name: 'Corp LDAPS', urls: [`ldap://127.0.0.1:${await freePort()}`, ldap.ldapsUrl], domains: ['ldaps.corp.test'] });
    await ldap.addUser({ uid: 'dave', mail: 'dave@ldaps.corp.test', cn: 'Dave', password: 'dave-directory-pw' });
    const done = await signInWith('dave@ldaps.corp.test', 'dave-directory-pw');
    expect(done.url.origin + done.url.pathname).toBe(redirectUri);
    // The same server without our CA: its certificate is not trusted, so nothing is sent to it.
    await directory({ id: 'corp-noca', display_name: 'Corp No CA', urls: [ldap.ldapsUrl], ca_pem: undefined, domains: ['noca.corp.test'] });
    await ldap.addUser({ uid: 'dave2', mail: 'dave@noca.corp.test', cn: 'Dave', password: 'dave-directory-pw' });
    const untrusted = await signInWith('dave@noca.corp.test', 'dave-directory-pw');
    expect(untrusted.response.status).toBe(401);
    expect(await untrusted.response.text()).toContain('Corp No CA cannot be reached right now');
  });

  it('a directory that is down gives a clear page within seconds, other sign-ins keep working, and it works again once back', async () => {
    await t.idp.accounts.create({ email: 'local@example.com', password: 'Violet-Harbour-Pass-9', emailVerified: true });
    await ldap.kill();
    try {
      const down = await signInWith('alice@corp.test', 'alice-directory-pw');
      expect(down.elapsed).toBeLessThan(7000);
      expect(await down.response.text()).toContain('Corp Directory cannot be reached right now');
      expect((await auditOf('federation.refused')).at(-1)!.details).toMatchObject({ connection: 'corp', reason: 'directory_unavailable' });
      // Readiness does not fail for one directory; the metrics show it.
      expect((await fetch(`${t.issuer}/readyz`)).status).toBe(200);
      expect(await (await fetch(`${t.issuer}/metrics`)).text()).toMatch(/idp_directory_up\{connection="corp"\} 0/);
      // A password of ours still works meanwhile.
      const request = await authorizationRequest(rp, { redirect_uri: redirectUri });
      const { signIn } = await import('../helpers/browser.ts');
      const local = await signIn(new Browser(), request.url, 'local@example.com', 'Violet-Harbour-Pass-9');
      expect(local.origin + local.pathname).toBe(redirectUri);
    } finally {
      await ldap.restart();
    }
    const back = await signInWith('alice@corp.test', 'alice-directory-pw');
    expect(back.url.origin + back.url.pathname).toBe(redirectUri);
    expect(await (await fetch(`${t.issuer}/metrics`)).text()).toMatch(/idp_directory_up\{connection="corp"\} 1/);
  });

  it('a user removed from the directory can no longer sign in', async () => {
    const eve = await ldap.addUser({ uid: 'eve', mail: 'eve@corp.test', cn: 'Eve', password: 'eve-directory-pw' });
    expect((await signInWith('eve@corp.test', 'eve-directory-pw')).url.origin + '/callback').toBe('http://localhost:8080/callback');
    await ldap.remove(eve);
    const gone = await signInWith('eve@corp.test', 'eve-directory-pw');
    expect(gone.response.status).toBe(401);
  });

  it('the periodic review ends the sessions of a user removed from the directory, and ends nobody\'s while the directory is down', async () => {
    // Earlier tests removed users from the directory: their links go first.
    await t.idp.directoryReview.run();
    const frank = await ldap.addUser({ uid: 'frank', mail: 'frank@corp.test', cn: 'Frank', password: 'frank-directory-pw' });
    const done = await signInWith('frank@corp.test', 'frank-directory-pw');
    expect(done.url.origin + done.url.pathname).toBe(redirectUri);
    const account = (await t.idp.accounts.findByEmail('frank@corp.test'))!;
    expect(await t.idp.sessions.list(account.id)).toHaveLength(1);
    // Down: nothing is concluded from silence.
    await ldap.kill();
    try {
      const during = (await t.idp.directoryReview.run()).find((r) => r.connection === 'corp')!;
      expect(during).toMatchObject({ removed: 0, sessionsEnded: 0, error: expect.any(String) });
      expect(await t.idp.sessions.list(account.id)).toHaveLength(1);
    } finally {
      await ldap.restart();
    }
    // Everyone still there: nothing changes.
    expect((await t.idp.directoryReview.run()).find((r) => r.connection === 'corp')).toMatchObject({ removed: 0 });
    await ldap.remove(frank);
    const after = (await t.idp.directoryReview.run()).find((r) => r.connection === 'corp')!;
    expect(after).toMatchObject({ removed: 1, sessionsEnded: 1 });
    expect(await t.idp.sessions.list(account.id)).toEqual([]);
    expect((await auditOf('federation.upstream_removed')).at(-1)).toMatchObject({ subject: account.id, details: { connection: 'corp', sessionsEnded: 1 } });
    expect(await t.idp.federatedAccounts.linksOf(account.id)).toEqual([]);
    expect((await t.idp.directoryReview.run()).find((r) => r.connection === 'corp')).toMatchObject({ removed: 0 });
    // One node per interval: a second scheduled tick right away does nothing.
    await t.idp.directoryReview.tick();
    expect(await t.idp.directoryReview.tick()).toBeUndefined();
  });

  it('relying parties get the directory\'s groups as roles; names and passwords beyond ASCII work', async () => {
    const zoe = await ldap.addUser({ uid: 'zoe', mail: 'zoe@corp.test', cn: 'Zoë Ångström', password: 'zoë-pässwörd-Ω1' });
    await ldap.addMember(engineers, zoe);
    const browser = new Browser();
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri, scope: 'openid profile account' });
    const identify = await browser.follow(request.url, t.issuer);
    const html = await identify.response.text();
    const screen = await (await browser.postForm(new URL(formAction(html, 'identify'), t.issuer), { csrf: csrfOf(html), email: 'zoe@corp.test' }, t.issuer)).response.text();
    const done = await browser.postForm(new URL(formAction(screen, 'directory-password'), t.issuer), { csrf: csrfOf(screen), password: 'zoë-pässwörd-Ω1' }, t.issuer);
    expect(done.url.origin + done.url.pathname).toBe(redirectUri);
    const tokens = await oidc.authorizationCodeGrant(rp, done.url, { pkceCodeVerifier: request.verifier, expectedState: request.state, expectedNonce: request.nonce });
    const info = await oidc.fetchUserInfo(rp, tokens.access_token, tokens.claims()!.sub);
    expect(info.name).toBe('Zoë Ångström');
    expect([...(info.roles as string[])].sort()).toEqual(['engineer', 'staff']);
  });

  it('operators: the admin API takes kind ldap, `idp connections test --login` binds and shows the mapped user, the bind password never comes out', async () => {
    const env = { DATABASE_URL: t.config.DATABASE_URL, MASTER_KEY_FILE: t.config.MASTER_KEY_FILE!, ISSUER: t.issuer, LOG_LEVEL: 'warn', ...(t.config.REDIS_URL ? { REDIS_URL: t.config.REDIS_URL, REDIS_KEY_PREFIX: t.config.REDIS_KEY_PREFIX } : {}) };
    const tested = await runIdp(['connections', 'test', 'corp', '--login', 'alice@corp.test'], { env });
    expect(tested.code, tested.stdout + tested.stderr).toBe(0);
    const report = jsonOf<{ ok: boolean; user: { email: string; roles: string[]; groups: string[] } }>(tested);
    expect(report.ok).toBe(true);
    expect(report.user.email).toBe('alice@corp.test');
    expect([...report.user.roles].sort()).toEqual(['engineer', 'staff']);
    expect(tested.stdout).not.toContain(ldap.servicePassword);
    const shown = await runIdp(['connections', 'show', 'corp'], { env });
    expect(jsonOf(shown)).toMatchObject({ kind: 'ldap', preset: 'openldap', has_bind_password: true, bind_dn: ldap.serviceDn });
    expect(shown.stdout).not.toContain(ldap.servicePassword);
    const refused = await runIdp(['connections', 'create'], { env, stdin: JSON.stringify({ kind: 'ldap', preset: 'openldap', display_name: 'Plain', urls: ['ldap://dir.example'], start_tls: false, bind_dn: 'cn=x', bind_password: 'y', user_base: 'dc=x' }) });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/plain LDAP without StartTLS/);
    const row = await t.idp.db.prisma.connection.findUniqueOrThrow({ where: { id: 'corp' } });
    expect(row.secret).not.toContain(ldap.servicePassword);
    expect(row.settings).not.toContain(ldap.servicePassword);
  });
});
