// Active Directory behaviour for real: Debian's Samba 4.17 AD DC, provisioned by the test in a temp
// dir (test/helpers/samba-ad.ts), answers binds with AD's own diagnostics (data 52e, 533, 701,
// 773, 532, 775), keys users by objectGUID, walks nested groups with LDAP_MATCHING_RULE_IN_CHAIN and
// takes unicodePwd changes. Our application is openid-client, receiving our tokens.
import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, csrfOf, formAction } from '../helpers/browser.ts';
import { authorizationRequest } from '../helpers/oidc.ts';
import { startSambaDc, type SambaDc } from '../helpers/samba-ad.ts';
import { backends, startIdp, type TestIdp } from '../helpers/server.ts';

const insecure = { execute: [oidc.allowInsecureRequests] };
const redirectUri = 'http://localhost:8080/callback';

let dc: SambaDc;
beforeAll(async () => {
  dc = await startSambaDc();
}, 90_000);
afterAll(async () => dc?.stop());

describe.each(backends)('Active Directory sign-in on %s', (backend) => {
  let t: TestIdp;
  let rp: oidc.Configuration;
  // Each backend's run gets its own users: the directory is shared.
  const name = (base: string) => `${base}${backend === 'sqlite' ? 'a' : 'b'}`;
  const upn = (base: string) => `${name(base)}@${dc.realm}`;

  beforeAll(async () => {
    t = await startIdp(backend, {});
    const created = await t.idp.clients.create({ client_id: 'webapp', redirect_uris: [redirectUri], first_party: true });
    rp = await oidc.discovery(new URL(t.issuer), 'webapp', created.clientSecret!, undefined, insecure);
    await t.idp.connections.createDirectory({
      kind: 'ldap', id: 'corp-ad', preset: 'active_directory', display_name: 'Corp AD', urls: [dc.ldapsUrl], ca_pem: dc.caPem,
      bind_dn: dc.serviceDn, bind_password: dc.servicePassword, user_base: `CN=Users,${dc.baseDn}`, domains: [dc.realm], clients: ['*'],
      group_roles: { [`CN=${name('All-Staff')},CN=Users,${dc.baseDn}`]: 'staff', [name('Engineers').toLowerCase()]: 'engineer' },
    }, 'test');
  }, 60_000);
  afterAll(async () => t?.stop());

  async function screenFor(email: string, browser: Browser) {
    const request = await authorizationRequest(rp, { redirect_uri: redirectUri });
    const identify = await browser.follow(request.url, t.issuer);
    const html = await identify.response.text();
    const typed = await browser.postForm(new URL(formAction(html, 'identify'), t.issuer), { csrf: csrfOf(html), email }, t.issuer);
    return { request, html: await typed.response.text() };
  }

  async function signInWith(email: string, password: string, browser = new Browser()) {
    const { request, html } = await screenFor(email, browser);
    expect(html).toContain('Your company password');
    const posted = await browser.postForm(new URL(formAction(html, 'directory-password'), t.issuer), { csrf: csrfOf(html), password }, t.issuer);
    return { request, ...posted, text: posted.url.origin === new URL(t.issuer).origin ? await posted.response.text() : '' };
  }

  const reached = (url: URL) => url.origin + url.pathname === redirectUri;

  it('signs in over LDAPS: keyed by objectGUID, nested groups (in chain) as roles, the rename of the user keeps the account', async () => {
    const dn = await dc.addUser(name('alice'), 'Alice-Directory-Pw-1', { mail: `${name('alice')}@corp.test`, displayName: 'Alice Liddell' });
    const engineers = await dc.addGroup(name('Engineers'), [dn]);
    await dc.addGroup(name('All-Staff'), [engineers]);
    const done = await signInWith(upn('alice'), 'Alice-Directory-Pw-1');
    expect(reached(done.url), done.text.slice(0, 300)).toBe(true);
    const claims = (await oidc.authorizationCodeGrant(rp, done.url, { pkceCodeVerifier: done.request.verifier, expectedState: done.request.state, expectedNonce: done.request.nonce })).claims()!;
    const account = (await t.idp.accounts.findByEmail(`${name('alice')}@corp.test`))!;
    expect(claims.sub).toBe(account.id);
    expect(account.name).toBe('Alice Liddell');
    expect([...account.roles].sort()).toEqual(['engineer', 'staff']);
    expect(await t.idp.federatedAccounts.linksOf(account.id)).toEqual([expect.objectContaining({ subject: await dc.objectGuid(dn) })]);
    await dc.rename(dn, `${name('alice')} renamed`);
    const again = await signInWith(upn('alice'), 'Alice-Directory-Pw-1');
    expect(reached(again.url)).toBe(true);
    expect((await t.idp.accounts.findByEmail(`${name('alice')}@corp.test`))!.id).toBe(account.id);
  });

  it('maps AD\'s answers: 52e and 775 read as a wrong password; 533 and 701 are told after the right password', async () => {
    await dc.addUser(name('bob'), 'Bob-Directory-Pw-1', { mail: `${name('bob')}@corp.test` });
    const wrong = await signInWith(upn('bob'), 'not-his-password');
    expect(wrong.response.status).toBe(401);
    expect(wrong.text).toContain('The email address or password is not correct.');

    await dc.addUser(name('dora'), 'Dora-Directory-Pw-1');
    await dc.disable(name('dora'));
    const disabled = await signInWith(upn('dora'), 'Dora-Directory-Pw-1');
    expect(disabled.text).toContain('This account cannot sign in. Contact your administrator.');
    // The wrong password for a disabled account tells nothing.
    expect((await signInWith(upn('dora'), 'a-guess')).text).toContain('The email address or password is not correct.');

    await dc.addUser(name('emil'), 'Emil-Directory-Pw-1');
    await dc.expireAccount(name('emil'));
    expect((await signInWith(upn('emil'), 'Emil-Directory-Pw-1')).text).toContain('This account cannot sign in.');

    await dc.addUser(name('finn'), 'Finn-Directory-Pw-1');
    await dc.lock(name('finn'));
    const locked = await signInWith(upn('finn'), 'Finn-Directory-Pw-1');
    expect(locked.text).toContain('The email address or password is not correct.');

    await t.idp.audit.flush();
    const reasons = (await t.idp.db.prisma.auditEvent.findMany({ where: { type: 'federation.refused' } })).map((r) => (JSON.parse(r.details) as { reason: string }).reason);
    expect(reasons).toEqual(expect.arrayContaining(['invalid_credentials', 'account_disabled', 'account_expired', 'account_locked']));
  });

  it('an expired (532) or must-change (773) password is changed in AD from our screen, and the sign-in goes on', async () => {
    for (const [user, expire] of [['gina', (n: string) => dc.mustChangePassword(n)], ['hugo', (n: string) => dc.expirePassword(n)]] as const) {
      await dc.addUser(name(user), 'Old-Directory-Pw-1', { mail: `${name(user)}@corp.test` });
      await expire(name(user));
      const browser = new Browser();
      const first = await signInWith(upn(user), 'Old-Directory-Pw-1', browser);
      expect(first.text, user).toContain('has expired or must be changed');
      expect(first.text).toContain('name="new_password"');
      // A wrong current password changes nothing.
      const wrongCurrent = await browser.postForm(new URL(formAction(first.text, 'directory-password'), t.issuer), { csrf: csrfOf(first.text), password: 'not-it', new_password: 'New-Directory-Pw-22', confirm: 'New-Directory-Pw-22' }, t.issuer);
      const retry = await wrongCurrent.response.text();
      expect(retry).toContain('name="new_password"');
      // The domain's rules refuse a weak one, and say so.
      const weak = await browser.postForm(new URL(formAction(retry, 'directory-password'), t.issuer), { csrf: csrfOf(retry), password: 'Old-Directory-Pw-1', new_password: 'abc', confirm: 'abc' }, t.issuer);
      const weakText = await weak.response.text();
      expect(weakText).toContain('did not accept the new password');
      const changed = await browser.postForm(new URL(formAction(weakText, 'directory-password'), t.issuer), { csrf: csrfOf(weakText), password: 'Old-Directory-Pw-1', new_password: 'New-Directory-Pw-22', confirm: 'New-Directory-Pw-22' }, t.issuer);
      expect(reached(changed.url), user).toBe(true);
      // The new password is the one AD knows now.
      expect(reached((await signInWith(upn(user), 'New-Directory-Pw-22')).url)).toBe(true);
    }
    await t.idp.audit.flush();
    expect(await t.idp.db.prisma.auditEvent.count({ where: { type: 'login.directory_password_changed' } })).toBe(2);
  });

  it('the periodic review ends the sessions of a user disabled in AD', async () => {
    await dc.addUser(name('ivan'), 'Ivan-Directory-Pw-1', { mail: `${name('ivan')}@corp.test` });
    expect(reached((await signInWith(upn('ivan'), 'Ivan-Directory-Pw-1')).url)).toBe(true);
    const account = (await t.idp.accounts.findByEmail(`${name('ivan')}@corp.test`))!;
    expect(await t.idp.sessions.list(account.id)).toHaveLength(1);
    await dc.disable(name('ivan'));
    const result = (await t.idp.directoryReview.run()).find((r) => r.connection === 'corp-ad')!;
    expect(result.removed).toBeGreaterThanOrEqual(1);
    expect(await t.idp.sessions.list(account.id)).toEqual([]);
  });
});
