// A directory that hangs or dies during sign-ins, against a real OpenLDAP (test/helpers/slapd.ts):
// every attempt ends within its timeout as "unavailable" (never hangs, never throws), at most
// `maxConcurrent` attempts talk to the directory at once while the rest wait briefly and give
// up, and everything works again once the directory is back.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LdapDirectory } from '../../src/federation/directory.ts';
import { resolveDirectorySettings, type DirectoryConnection } from '../../src/federation/directory-settings.ts';
import { startSlapd, type Slapd } from '../helpers/slapd.ts';

const run = promisify(execFile);

describe('directory faults', () => {
  let ldap: Slapd;
  let connection: DirectoryConnection;
  const pid = async () => Number((await run('pgrep', ['-f', `ldap://127.0.0.1:${new URL(ldap.url).port}/`])).stdout.trim().split('\n')[0]);

  beforeAll(async () => {
    ldap = await startSlapd();
    await ldap.addUser({ uid: 'alice', mail: 'alice@corp.test', cn: 'Alice', password: 'alice-directory-pw' });
    const settings = resolveDirectorySettings('openldap', { urls: [ldap.url], ca_pem: ldap.caPem, bind_dn: ldap.serviceDn, user_base: `ou=people,${ldap.baseDn}`, timeout_seconds: 1 });
    connection = { id: 'faulty', kind: 'ldap', preset: 'openldap', displayName: 'Faulty', enabled: true, settings, hasSecret: true, createdAt: new Date(0), updatedAt: new Date(0) };
  }, 30_000);
  afterAll(async () => ldap?.stop());

  it('a hung directory: each attempt gives up after its timeout, and beyond the concurrency bound attempts wait, then give up too', async () => {
    const directory = new LdapDirectory({ maxConcurrent: 2 });
    expect(await directory.authenticate(connection, ldap.servicePassword, 'alice@corp.test', 'alice-directory-pw')).toMatchObject({ ok: true });
    const slapd = await pid();
    process.kill(slapd, 'SIGSTOP');
    try {
      const started = Date.now();
      const answers = await Promise.all(Array.from({ length: 5 }, () => directory.authenticate(connection, ldap.servicePassword, 'alice@corp.test', 'alice-directory-pw')));
      const elapsed = Date.now() - started;
      for (const answer of answers) expect(answer).toMatchObject({ ok: false, reason: 'unavailable' });
      expect(answers.some((a) => !a.ok && a.reason === 'unavailable' && /too many sign-ins are waiting/.test(a.detail))).toBe(true);
      // Two timeouts of one second in a row at most, not five.
      expect(elapsed).toBeLessThan(4500);
    } finally {
      process.kill(slapd, 'SIGCONT');
    }
    expect(await directory.authenticate(connection, ldap.servicePassword, 'alice@corp.test', 'alice-directory-pw')).toMatchObject({ ok: true });
  });

  it('killed in the middle of a sign-in: the attempt ends as unavailable at once; after a restart it works again', async () => {
    const directory = new LdapDirectory();
    const slow = { ...connection, settings: { ...connection.settings, timeoutSeconds: 10 } };
    process.kill(await pid(), 'SIGSTOP');
    const started = Date.now();
    const pending = directory.authenticate(slow, ldap.servicePassword, 'alice@corp.test', 'alice-directory-pw');
    await new Promise((resolve) => setTimeout(resolve, 300));
    await ldap.kill();
    const answer = await pending;
    expect(answer).toMatchObject({ ok: false, reason: 'unavailable' });
    expect(Date.now() - started).toBeLessThan(5000);
    await ldap.restart();
    expect(await directory.authenticate(slow, ldap.servicePassword, 'alice@corp.test', 'alice-directory-pw')).toMatchObject({ ok: true });
  });
});
