// Self-test of the real Active Directory DC (Samba 4.17) the AD sign-in tests run against
// (test/helpers/samba-ad.ts): what a client (ldapts) sees over LDAPS and StartTLS — AD's bind
// diagnostics (data 52e/533/701/773/532/775), objectGUID, memberOf, nested groups through
// LDAP_MATCHING_RULE_IN_CHAIN — and how an expired or must-change password is changed in AD.
import { connect } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import {
  Attribute,
  Change,
  Client,
  ConstraintViolationError,
  InvalidCredentialsError,
  StrongAuthRequiredError,
  type Entry,
} from 'ldapts';
import { startSambaDc, type SambaDc } from '../helpers/samba-ad.ts';

let dc: SambaDc;

beforeAll(async () => {
  dc = await startSambaDc();
}, 90_000);

afterAll(async () => {
  await dc?.stop();
});

const tls = (): ConnectionOptions => ({ ca: dc.caPem });

/** Runs `action` on a fresh connection, always closed afterwards. */
async function withClient<T>(url: string, action: (client: Client) => Promise<T>, tlsOptions?: ConnectionOptions): Promise<T> {
  const client = new Client({ url, connectTimeout: 2000, timeout: 5000, ...(tlsOptions ? { tlsOptions } : {}) });
  try {
    return await action(client);
  } finally {
    await client.unbind().catch(() => undefined);
  }
}

const asService = <T>(action: (client: Client) => Promise<T>): Promise<T> =>
  withClient(dc.ldapsUrl, async (client) => {
    await client.bind(dc.serviceDn, dc.servicePassword);
    return action(client);
  }, tls());

/** The error of a simple bind over LDAPS (undefined when it succeeds). */
async function bindError(name: string, password: string): Promise<Error | undefined> {
  return withClient(dc.ldapsUrl, async (client) => {
    try {
      await client.bind(name, password);
      return undefined;
    } catch (error) {
      return error as Error;
    }
  }, tls());
}

/** Asserts the bind fails with InvalidCredentialsError carrying AD's diagnostic `data CODE`. */
async function expectBindData(name: string, password: string, code: string): Promise<void> {
  const error = await bindError(name, password);
  expect(error).toBeInstanceOf(InvalidCredentialsError);
  expect(error?.message).toContain('80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error');
  expect(error?.message).toContain(`data ${code},`);
}

const unicodePwd = (password: string) => Buffer.from(`"${password}"`, 'utf16le');

/** AD's password CHANGE (not a reset): delete the old quoted UTF-16LE value and add the new one, in one modify. */
const passwordChange = (oldPassword: string, newPassword: string) => [
  new Change({ operation: 'delete', modification: new Attribute({ type: 'unicodePwd', values: [unicodePwd(oldPassword)] }) }),
  new Change({ operation: 'add', modification: new Attribute({ type: 'unicodePwd', values: [unicodePwd(newPassword)] }) }),
];

const values = (value: Entry[string] | undefined): string[] => (value === undefined ? [] : (Array.isArray(value) ? value : [value]).map(String));

async function findServiceAccount(client: Client): Promise<string[]> {
  const { searchEntries } = await client.search(dc.baseDn, { scope: 'sub', filter: '(sAMAccountName=idp-service)', attributes: ['1.1'] });
  return searchEntries.map((entry) => entry.dn);
}

function portRefuses(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'));
  });
}

describe('Samba AD DC helper', () => {
  it('the service account binds over LDAPS with the CA, and not without it', async () => {
    expect(dc.ldapsUrl).toBe('ldaps://127.0.0.1:636');
    expect(dc.url).toBe('ldap://127.0.0.1:389');
    expect(dc.baseDn).toBe('DC=corp,DC=test');
    expect(dc.realm).toBe('corp.test');
    expect(dc.caPem).toContain('BEGIN CERTIFICATE');
    // Samba has no Who-am-I extended operation; a search (anonymous may read the root DSE only) shows the bind.
    expect(await asService(findServiceAccount)).toEqual([dc.serviceDn]);
    const untrusted = await withClient(dc.ldapsUrl, (client) => client.bind(dc.serviceDn, dc.servicePassword).then(() => undefined, (error: Error) => error));
    expect(untrusted?.message).toMatch(/self[- ]signed certificate|unable to verify/i);
  });

  it('finds a user by userPrincipalName: mail, displayName, objectGUID (binary) and memberOf', async () => {
    const dn = await dc.addUser('alice', 'Alice-Pass-12345', { mail: 'alice@corp.test', displayName: 'Alice Liddell' });
    expect(dn).toBe('CN=alice,CN=Users,DC=corp,DC=test');
    const group = await dc.addGroup('wonderland', [dn]);
    expect(group).toBe('CN=wonderland,CN=Users,DC=corp,DC=test');
    const [entry, ...rest] = await asService(async (client) =>
      (await client.search(dc.baseDn, {
        scope: 'sub',
        filter: '(userPrincipalName=alice@corp.test)',
        attributes: ['mail', 'displayName', 'sAMAccountName', 'objectGUID', 'memberOf', 'userAccountControl'],
        explicitBufferAttributes: ['objectGUID'],
      })).searchEntries,
    );
    expect(rest).toHaveLength(0);
    expect(entry?.dn).toBe(dn);
    expect(entry?.mail).toBe('alice@corp.test');
    expect(entry?.displayName).toBe('Alice Liddell');
    expect(entry?.sAMAccountName).toBe('alice');
    expect(entry?.userAccountControl).toBe('512');
    expect(values(entry?.memberOf)).toEqual([group]);
    const raw = entry?.objectGUID;
    expect(Buffer.isBuffer(raw) && raw.length).toBe(16);
    const guid = await dc.objectGuid(dn);
    expect(guid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const bytes = raw as Buffer;
    // Windows' (mixed-endian) form: Data1, Data2, Data3 little-endian, the last eight bytes in order.
    const hex = bytes.toString('hex');
    const swap = (h: string) => h.match(/../g)!.reverse().join('');
    expect(guid).toBe(`${swap(hex.slice(0, 8))}-${swap(hex.slice(8, 12))}-${swap(hex.slice(12, 16))}-${hex.slice(16, 20)}-${hex.slice(20)}`);
    // The GUID survives a rename (the DN does not).
    const renamed = await dc.rename(dn, 'Alice L');
    expect(renamed).toBe('CN=Alice L,CN=Users,DC=corp,DC=test');
    expect(await dc.objectGuid(renamed)).toBe(guid);
    await expect(bindError('alice@corp.test', 'Alice-Pass-12345')).resolves.toBeUndefined();
  });

  it('binds carry AD diagnostics: 52e wrong password, 533 disabled, 701 account expired', async () => {
    await dc.addUser('bob', 'Bob-Pass-12345');
    await dc.addUser('carol', 'Carol-Pass-12345');
    await dc.addUser('dan', 'Dan-Pass-12345', { ou: 'Staff' });
    await expect(bindError('bob@corp.test', 'Bob-Pass-12345')).resolves.toBeUndefined();
    await expectBindData('bob@corp.test', 'wrong-password', '52e');
    await expectBindData('nobody@corp.test', 'whatever', '52e'); // unknown user: the same answer
    // Other bind names: DOMAIN\user and the DN work; a bare sAMAccountName does not.
    await expect(bindError('CORP\\bob', 'Bob-Pass-12345')).resolves.toBeUndefined();
    await expect(bindError('CN=dan,OU=Staff,DC=corp,DC=test', 'Dan-Pass-12345')).resolves.toBeUndefined();
    await expectBindData('bob', 'Bob-Pass-12345', '52e');

    await dc.disable('bob');
    await expectBindData('bob@corp.test', 'Bob-Pass-12345', '533');
    await dc.expireAccount('carol');
    await expectBindData('carol@corp.test', 'Carol-Pass-12345', '701');
    await expectBindData('carol@corp.test', 'wrong-password', '52e');
  });

  it('773 must change password, 532 password expired, 775 locked out', async () => {
    await dc.addUser('erin', 'Erin-Pass-12345');
    await dc.addUser('frank', 'Frank-Pass-12345');
    await dc.addUser('gina', 'Gina-Pass-12345');
    await dc.mustChangePassword('erin');
    await expectBindData('erin@corp.test', 'Erin-Pass-12345', '773');
    await expectBindData('erin@corp.test', 'wrong-password', '52e'); // only the right password learns it must change
    await dc.expirePassword('frank');
    await expectBindData('frank@corp.test', 'Frank-Pass-12345', '532');
    await expectBindData('frank@corp.test', 'wrong-password', '52e');
    await dc.lock('gina');
    await expectBindData('gina@corp.test', 'Gina-Pass-12345', '775');
    await expectBindData('gina@corp.test', 'wrong-password', '775');
  });

  it('nested groups: (member:1.2.840.113556.1.4.1941:=DN) finds every group, memberOf only the direct one', async () => {
    const user = await dc.addUser('hank', 'Hank-Pass-12345');
    const inner = await dc.addGroup('g1-inner', [user]);
    const outer = await dc.addGroup('g2-outer', []);
    await dc.addMember(outer, inner);
    const [chain, direct] = await asService(async (client) => [
      (await client.search(dc.baseDn, { scope: 'sub', filter: `(member:1.2.840.113556.1.4.1941:=${user})`, attributes: ['cn'] })).searchEntries,
      (await client.search(user, { scope: 'base', attributes: ['memberOf'] })).searchEntries,
    ]);
    expect(chain?.map((entry) => entry.dn).sort()).toEqual([inner, outer].sort());
    expect(values(direct?.[0]?.memberOf)).toEqual([inner]);
  });

  it('plain LDAP on url: a simple bind needs StartTLS first', async () => {
    const plain = await withClient(dc.url, (client) => client.bind(dc.serviceDn, dc.servicePassword).then(() => undefined, (error: Error) => error));
    expect(plain).toBeInstanceOf(StrongAuthRequiredError);
    expect(plain?.message).toContain('Transport encryption required');
    const who = await withClient(dc.url, async (client) => {
      await client.startTLS(tls());
      await client.bind(dc.serviceDn, dc.servicePassword);
      return findServiceAccount(client);
    });
    expect(who).toEqual([dc.serviceDn]);
  });

  it('an expired (532) or must-change (773) password is changed by the service account: delete old + add new unicodePwd', async () => {
    await dc.addUser('ivan', 'Ivan-Pass-12345');
    await dc.addUser('judy', 'Judy-Pass-12345');
    await dc.mustChangePassword('ivan');
    await dc.expirePassword('judy');
    for (const [name, oldPassword, code] of [['ivan', 'Ivan-Pass-12345', '773'], ['judy', 'Judy-Pass-12345', '532']] as const) {
      const dn = `CN=${name},CN=Users,DC=corp,DC=test`;
      // Bound as the user is impossible: its bind fails (773/532), and an anonymous change is refused.
      await expectBindData(`${name}@corp.test`, oldPassword, code);
      const anonymous = await withClient(dc.ldapsUrl, (client) => client.modify(dn, passwordChange(oldPassword, `${name}-New-Pass-678`)).then(() => undefined, (error: Error) => error), tls());
      expect(anonymous?.message).toContain('Operation unavailable without authentication');
      // A wrong old password is a constraint violation.
      const wrongOld = await asService((client) => client.modify(dn, passwordChange('not-the-password', `${name}-New-Pass-678`)).then(() => undefined, (error: Error) => error));
      expect(wrongOld).toBeInstanceOf(ConstraintViolationError);
      expect(wrongOld?.message).toContain("The old password specified doesn't match");
      // A new password against the policy is one too.
      const weak = await asService((client) => client.modify(dn, passwordChange(oldPassword, 'short')).then(() => undefined, (error: Error) => error));
      expect(weak).toBeInstanceOf(ConstraintViolationError);
      // The service account (any authenticated user: Everyone holds the Change-Password right) changes it.
      await asService((client) => client.modify(dn, passwordChange(oldPassword, `${name}-New-Pass-678`)));
      await expect(bindError(`${name}@corp.test`, `${name}-New-Pass-678`)).resolves.toBeUndefined();
      // Samba keeps accepting the old password for an hour (`old password allowed period`).
      await expect(bindError(`${name}@corp.test`, oldPassword)).resolves.toBeUndefined();
    }
    // A fresh password of a healthy account cannot be changed by anybody for a day (minPwdAge).
    const young = await asService((client) =>
      client.modify('CN=ivan,CN=Users,DC=corp,DC=test', passwordChange('ivan-New-Pass-678', 'ivan-Newer-Pass-9')).then(() => undefined, (error: Error) => error),
    );
    expect(young).toBeInstanceOf(ConstraintViolationError);
    expect(young?.message).toContain('password is too young to change');
  });

  it('stop() frees the ports: a new connection to 636 is refused', async () => {
    await dc.stop();
    expect(await portRefuses(636)).toBe(true);
    expect(await portRefuses(389)).toBe(true);
    await dc.stop(); // twice is fine
  });
});
