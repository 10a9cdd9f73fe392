// LDAP pieces that need no server: filter and DN escaping, Active Directory's bind sub-codes (as
// Samba's AD DC and Windows write them), and what is refused before any network round trip.
import { describe, expect, it } from 'vitest';
import { bindRefusalOf, tellsAccountState } from '../../../src/federation/directory-errors.ts';
import { escapeFilterValue, LdapDirectory, normaliseDn } from '../../../src/federation/directory.ts';
import { directoryProblems, resolveDirectorySettings, type DirectoryConnection } from '../../../src/federation/directory-settings.ts';

const ad = (code: string) => `80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data ${code}, v1db1`;

function connection(preset: DirectoryConnection['preset'] = 'openldap', urls = ['ldaps://127.0.0.1:1']): DirectoryConnection {
  const settings = resolveDirectorySettings(preset, { urls, bind_dn: 'cn=svc,dc=x', user_base: 'ou=people,dc=x', group_roles: { 'CN=Sales\\, EMEA,ou=groups,dc=x': 'sales', admins: 'admin' }, timeout_seconds: 1 });
  return { id: 'd', kind: 'ldap', preset, displayName: 'D', enabled: true, settings, hasSecret: true, createdAt: new Date(0), updatedAt: new Date(0) };
}

describe('directory sign-in without a server', () => {
  it('escapes filter values (RFC 4515)', () => {
    expect(escapeFilterValue('*)(uid=*))(|(uid=*')).toBe('\\2a\\29\\28uid=\\2a\\29\\29\\28|\\28uid=\\2a');
    expect(escapeFilterValue('a\\b\0')).toBe('a\\5cb\\00');
  });

  it('compares DNs by value (slapd writes "\\," as "\\2C")', () => {
    expect(normaliseDn('cn=Sales\\2C EMEA,ou=Groups,dc=x')).toBe(normaliseDn('CN=Sales\\, EMEA, OU=groups,DC=X'));
    expect(LdapDirectory.rolesOf(connection(), [normaliseDn('cn=Sales\\2C EMEA,ou=groups,dc=x'), normaliseDn('cn=Admins,ou=groups,dc=x')]).sort()).toEqual(['admin', 'sales']);
  });

  it('maps Active Directory\'s bind sub-codes; only a wrong password hides the account\'s state', () => {
    expect(['52e', '525', '530', '531', '532', '533', '701', '773', '775'].map((c) => bindRefusalOf(ad(c)))).toEqual([
      'invalid_credentials', 'invalid_credentials', 'not_allowed_now', 'not_allowed_now', 'password_expired', 'account_disabled', 'account_expired', 'must_change_password', 'account_locked',
    ]);
    expect(bindRefusalOf('Invalid Credentials')).toBe('invalid_credentials');
    expect(tellsAccountState('invalid_credentials')).toBe(false);
    expect(tellsAccountState('account_disabled')).toBe(true);
    // AD answers 775 whatever the password: a locked account must read like a wrong password.
    expect(tellsAccountState('account_locked')).toBe(false);
  });

  it('refuses empty and whitespace passwords and logins with NUL or control characters before connecting (the server here does not exist)', async () => {
    const directory = new LdapDirectory();
    const unreachable = connection('active_directory', ['ldaps://127.0.0.1:1']);
    expect(await directory.authenticate(unreachable, 'svc', 'alice@x.test', '')).toEqual({ ok: false, reason: 'invalid_credentials' });
    expect(await directory.authenticate(unreachable, 'svc', 'alice@x.test', ' \t ')).toEqual({ ok: false, reason: 'invalid_credentials' });
    // On AD an escaped NUL ends the value: (sAMAccountName=alice\00junk) finds alice.
    expect(await directory.authenticate(unreachable, 'svc', 'alice\u0000junk', 'pw')).toEqual({ ok: false, reason: 'invalid_login' });
    expect(await directory.authenticate(unreachable, 'svc', 'alice\u200bx', 'pw')).toEqual({ ok: false, reason: 'invalid_login' });
    expect(await directory.authenticate(unreachable, 'svc', 'a'.repeat(257), 'pw')).toEqual({ ok: false, reason: 'invalid_login' });
    // A real attempt does reach the network: the unreachable server is reported as such.
    expect(await directory.authenticate(unreachable, 'svc', 'alice@x.test', 'pw')).toMatchObject({ ok: false, reason: 'unavailable' });
  });

  it('settings: presets fill in filters and keys; plain LDAP needs StartTLS or an explicit flag', () => {
    expect(connection('active_directory').settings).toMatchObject({ attributes: { id: 'objectGUID', email: 'mail' }, groupBase: 'dc=x' });
    expect(connection('active_directory').settings.userFilter).toContain('sAMAccountName={login}');
    const plain = resolveDirectorySettings('openldap', { urls: ['ldap://dir.example'], start_tls: false, bind_dn: 'cn=x', user_base: 'dc=x' });
    expect(directoryProblems(plain)).toEqual([expect.stringMatching(/plain LDAP without StartTLS/)]);
    expect(directoryProblems({ ...plain, insecurePlain: true })).toEqual([]);
    expect(directoryProblems({ ...plain, startTls: true, userFilter: '(uid=x)' })).toEqual(['user_filter must contain {login}']);
  });
});
