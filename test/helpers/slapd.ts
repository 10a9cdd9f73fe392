// A REAL OpenLDAP server (slapd from Debian) for the tests of LDAP sign-in: no mocks. Each
// `startSlapd()` builds a fresh cn=config (slapadd -n 0) and an mdb database in a temp dir,
// generates a CA and a server certificate with openssl, and runs slapd in the foreground as a
// child of the test process on free loopback ports: plain LDAP (StartTLS available) and LDAPS.
//
// The directory: suffix dc=example,dc=test with ou=people, ou=groups and ou=services, and one
// service account (cn=idp-service,ou=services) that may search. Nothing else: tests add their
// users and groups. The `memberof` overlay keeps `memberOf` on members of groupOfNames groups
// (not transitive: a user in group A, itself a member of group B, has memberOf A only), and
// with olcMemberOfRefInt it rewrites/drops `member` values when a member is renamed/removed.
//
// Access control: anonymous may bind (auth) but reads nothing; the service account reads
// everything except userPassword; a user may bind, read itself and change its own password;
// the rootdn (cn=admin, used by this helper's own changes) may do everything. Passwords are
// stored as {SSHA} hashes (hashed here before they are sent).
//
// The server is a child process (slapd -d keeps it attached, `setpriv --pdeathsig KILL` kills
// it if the test process dies), registered in a module-level set that is killed on 'exit' (the
// temp dirs are removed then too). slapd's log (-d stats) goes to slapd.log in the temp dir.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Attribute, Change, Client, AlreadyExistsError } from 'ldapts';
import { freePort } from './ports.ts';
import { tempDir } from './databases.ts';

const execFileAsync = promisify(execFile);

const SLAPD = '/usr/sbin/slapd';
const SLAPADD = '/usr/sbin/slapadd';
const SETPRIV = '/usr/bin/setpriv';
const MODULE_PATH = '/usr/lib/ldap';
const SCHEMA_DIR = '/etc/ldap/schema';

const BASE_DN = 'dc=example,dc=test';
const ROOT_DN = `cn=admin,${BASE_DN}`;
const SERVICE_DN = `cn=idp-service,ou=services,${BASE_DN}`;

export interface SlapdUser {
  uid: string;
  mail: string;
  cn: string;
  password: string;
  /** the organizational unit under the base DN; default 'people' (created when missing) */
  ou?: string;
  /** more attributes of the inetOrgPerson entry (e.g. sn, givenName, telephoneNumber); they win over the defaults */
  extra?: Record<string, string | string[]>;
}

export interface Slapd {
  /** ldap://127.0.0.1:PORT (plain, StartTLS available) */
  url: string;
  /**
   * ldaps://localhost:PORT — the certificate is for DNS name localhost and IP 127.0.0.1 (and ::1).
   * slapd listens on 127.0.0.1 only; Node resolves localhost to 127.0.0.1 on this machine (and its
   * happy-eyeballs connect falls back to 127.0.0.1 where localhost resolves to ::1 first).
   */
  ldapsUrl: string;
  /** PEM of the CA that signed the server certificate */
  caPem: string;
  /** 'dc=example,dc=test' */
  baseDn: string;
  /** a service account that may search: 'cn=idp-service,ou=services,dc=example,dc=test' */
  serviceDn: string;
  servicePassword: string;
  /** adds an inetOrgPerson uid=UID,ou=OU,BASE (sn defaults to the last word of cn); resolves to its DN */
  addUser(user: SlapdUser): Promise<string>;
  /** groupOfNames cn=CN,ou=groups,BASE; members are DNs (users or other groups), at least one (the schema requires it) */
  addGroup(cn: string, members: string[]): Promise<string>;
  addMember(groupDn: string, memberDn: string): Promise<void>;
  setPassword(dn: string, password: string): Promise<void>;
  /** replaces attributes (an empty array deletes the attribute); a `userPassword` value is hashed */
  modify(dn: string, changes: Record<string, string | string[]>): Promise<void>;
  /** modrdn: a new uid (rename), keeping the entry (and its entryUUID) */
  rename(dn: string, newUid: string): Promise<string>;
  remove(dn: string): Promise<void>;
  entryUuid(dn: string): Promise<string>;
  /** kill -9 the server (an outage); restart() brings it back on the same ports with the same data */
  kill(): Promise<void>;
  restart(): Promise<void>;
  /** kills the server and removes the temp dir; safe to call twice */
  stop(): Promise<void>;
}

// Every slapd started here, so that nothing survives the test process: on 'exit' (a crashed or
// unfinished test file included) each is killed and its temp dir removed.
const running = new Set<ChildProcess>();
const leftoverDirs = new Set<() => void>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of running) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const remove of leftoverDirs) {
      try {
        remove();
      } catch {
        // best effort
      }
    }
  });
}

/** {SSHA}: base64(sha1(password + salt) + salt), with an 8-byte salt. */
export function sshaHash(password: string): string {
  const salt = randomBytes(8);
  const digest = createHash('sha1').update(Buffer.from(password, 'utf8')).update(salt).digest();
  return `{SSHA}${Buffer.concat([digest, salt]).toString('base64')}`;
}

/** Escapes an attribute value for use in a DN (RFC 4514). */
function escapeDnValue(value: string): string {
  return value
    .replace(/[\\,+"<>;=]/g, (c) => `\\${c}`)
    .replace(/^[ #]/, (c) => `\\${c}`)
    .replace(/ $/, '\\ ');
}

function configLdif(dir: string, rootPasswordHash: string): string {
  const path = (name: string) => join(dir, name);
  return `dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: ${path('slapd.pid')}
olcArgsFile: ${path('slapd.args')}
olcLogLevel: stats
olcTLSCACertificateFile: ${path('ca.pem')}
olcTLSCertificateFile: ${path('server.pem')}
olcTLSCertificateKeyFile: ${path('server.key')}

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: ${MODULE_PATH}
olcModuleLoad: {0}back_mdb
olcModuleLoad: {1}memberof

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file://${SCHEMA_DIR}/core.ldif

include: file://${SCHEMA_DIR}/cosine.ldif

include: file://${SCHEMA_DIR}/nis.ldif

include: file://${SCHEMA_DIR}/inetorgperson.ldif

dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcPasswordHash: {SSHA}

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcAccess: {0}to * by * none

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcSuffix: ${BASE_DN}
olcRootDN: ${ROOT_DN}
olcRootPW: ${rootPasswordHash}
olcDbDirectory: ${path('data')}
olcDbMaxSize: 67108864
olcDbIndex: objectClass eq
olcDbIndex: uid,mail,cn eq
olcDbIndex: entryUUID eq
olcDbIndex: member,memberOf eq
olcAccess: {0}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {1}to * by dn.exact="${SERVICE_DN}" read by self read by * none

dn: olcOverlay={0}memberof,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {0}memberof
olcMemberOfRefInt: TRUE
olcMemberOfDangling: ignore
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf
`;
}

function seedLdif(servicePasswordHash: string): string {
  return `dn: ${BASE_DN}
objectClass: top
objectClass: dcObject
objectClass: organization
dc: example
o: Example Test

dn: ou=people,${BASE_DN}
objectClass: organizationalUnit
ou: people

dn: ou=groups,${BASE_DN}
objectClass: organizationalUnit
ou: groups

dn: ou=services,${BASE_DN}
objectClass: organizationalUnit
ou: services

dn: ${SERVICE_DN}
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: idp-service
description: the identity provider's search account
userPassword: ${servicePasswordHash}
`;
}

async function run(command: string, args: string[], cwd: string): Promise<void> {
  try {
    await execFileAsync(command, args, { cwd, timeout: 20_000 });
  } catch (error) {
    const e = error as Error & { stdout?: string; stderr?: string };
    throw new Error(`${command} ${args.join(' ')} failed: ${e.message}\nstdout: ${e.stdout ?? ''}\nstderr: ${e.stderr ?? ''}`);
  }
}

/** A throwaway CA and a server certificate for localhost / 127.0.0.1 / ::1. */
async function makeCertificates(dir: string): Promise<void> {
  writeFileSync(
    join(dir, 'server-ext.cnf'),
    'basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1\n',
  );
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '3', '-subj', '/CN=idp test LDAP CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  await run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost'], dir);
  await run('openssl', ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', `0x${randomBytes(8).toString('hex')}`,
    '-out', 'server.pem', '-days', '3', '-extfile', 'server-ext.cnf'], dir);
  chmodSync(join(dir, 'server.key'), 0o644); // slapd runs as whoever runs the tests; keep it readable
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function startSlapd(): Promise<Slapd> {
  installExitHook();
  const temp = tempDir('idp-slapd-');
  leftoverDirs.add(temp.remove);
  const dir = temp.path;
  chmodSync(dir, 0o755);
  const rootPassword = randomBytes(12).toString('hex');
  const servicePassword = randomBytes(12).toString('hex');
  const logPath = join(dir, 'slapd.log');
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stopped = false;

  try {
    await makeCertificates(dir);
    mkdirSync(join(dir, 'slapd.d'));
    mkdirSync(join(dir, 'data'));
    writeFileSync(join(dir, 'config.ldif'), configLdif(dir, sshaHash(rootPassword)));
    writeFileSync(join(dir, 'seed.ldif'), seedLdif(sshaHash(servicePassword)));
    await run(SLAPADD, ['-n', '0', '-F', join(dir, 'slapd.d'), '-l', join(dir, 'config.ldif')], dir);
    await run(SLAPADD, ['-n', '1', '-F', join(dir, 'slapd.d'), '-l', join(dir, 'seed.ldif')], dir);
  } catch (error) {
    temp.remove();
    leftoverDirs.delete(temp.remove);
    throw error;
  }

  const plainPort = await freePort();
  let tlsPort = await freePort();
  while (tlsPort === plainPort) tlsPort = await freePort();
  const url = `ldap://127.0.0.1:${plainPort}`;
  const ldapsUrl = `ldaps://localhost:${tlsPort}`;
  const caPem = readFileSync(join(dir, 'ca.pem'), 'utf8');

  const logTail = () => (existsSync(logPath) ? readFileSync(logPath, 'utf8').split('\n').slice(-30).join('\n') : '(no log)');

  async function launch(): Promise<void> {
    const log = openSync(logPath, 'a');
    const args = ['--pdeathsig', 'KILL', SLAPD, '-h', `ldap://127.0.0.1:${plainPort}/ ldaps://127.0.0.1:${tlsPort}/`, '-F', join(dir, 'slapd.d'), '-d', 'stats'];
    const proc = spawn(SETPRIV, args, { cwd: dir, stdio: ['ignore', log, log] });
    closeSync(log);
    child = proc;
    running.add(proc);
    let exitedEarly: string | undefined;
    exited = new Promise<void>((resolve) => {
      proc.once('error', (error) => {
        exitedEarly = `spawn error: ${error.message}`;
        running.delete(proc);
        resolve();
      });
      proc.once('exit', (code, signal) => {
        exitedEarly = `exited with ${code ?? signal}`;
        running.delete(proc);
        resolve();
      });
    });
    // Ready when the service account can bind.
    const deadline = Date.now() + 10_000;
    let lastError: unknown;
    while (Date.now() < deadline) {
      if (exitedEarly) throw new Error(`slapd ${exitedEarly}\n${logTail()}`);
      const client = new Client({ url, connectTimeout: 1000, timeout: 2000 });
      try {
        await client.bind(SERVICE_DN, servicePassword);
        return;
      } catch (error) {
        lastError = error;
      } finally {
        await client.unbind().catch(() => undefined);
      }
      await sleep(50);
    }
    proc.kill('SIGKILL');
    throw new Error(`slapd did not accept a bind within 10 s (${(lastError as Error | undefined)?.message})\n${logTail()}`);
  }

  async function killChild(): Promise<void> {
    const proc = child;
    child = undefined;
    if (!proc) return;
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
  }

  /** A fresh connection as the rootdn for each change: it works across kill()/restart(). */
  async function asAdmin<T>(action: (client: Client) => Promise<T>): Promise<T> {
    const client = new Client({ url, connectTimeout: 2000, timeout: 5000 });
    try {
      await client.bind(ROOT_DN, rootPassword);
      return await action(client);
    } finally {
      await client.unbind().catch(() => undefined);
    }
  }

  const prepare = (name: string, value: string | string[]): string[] => {
    const values = Array.isArray(value) ? value : [value];
    return name.toLowerCase() === 'userpassword' ? values.map((v) => (v.startsWith('{') ? v : sshaHash(v))) : values;
  };

  try {
    await launch();
  } catch (error) {
    await killChild();
    temp.remove();
    leftoverDirs.delete(temp.remove);
    throw error;
  }

  return {
    url,
    ldapsUrl,
    caPem,
    baseDn: BASE_DN,
    serviceDn: SERVICE_DN,
    servicePassword,

    async addUser(user) {
      const ou = user.ou ?? 'people';
      const ouDn = `ou=${escapeDnValue(ou)},${BASE_DN}`;
      const dn = `uid=${escapeDnValue(user.uid)},${ouDn}`;
      const attributes: Record<string, string | string[]> = {
        objectClass: ['top', 'person', 'organizationalPerson', 'inetOrgPerson'],
        uid: user.uid,
        cn: user.cn,
        sn: user.cn.trim().split(/\s+/).pop() || user.cn,
        mail: user.mail,
        userPassword: sshaHash(user.password),
      };
      for (const [name, value] of Object.entries(user.extra ?? {})) attributes[name] = prepare(name, value);
      await asAdmin(async (client) => {
        if (ou !== 'people') {
          await client.add(ouDn, { objectClass: ['top', 'organizationalUnit'], ou }).catch((error: unknown) => {
            if (!(error instanceof AlreadyExistsError)) throw error;
          });
        }
        await client.add(dn, attributes);
      });
      return dn;
    },

    async addGroup(cn, members) {
      if (members.length === 0) throw new Error('addGroup: groupOfNames needs at least one member (the schema requires `member`)');
      const dn = `cn=${escapeDnValue(cn)},ou=groups,${BASE_DN}`;
      await asAdmin((client) => client.add(dn, { objectClass: ['top', 'groupOfNames'], cn, member: members }));
      return dn;
    },

    async addMember(groupDn, memberDn) {
      await asAdmin((client) => client.modify(groupDn, new Change({ operation: 'add', modification: new Attribute({ type: 'member', values: [memberDn] }) })));
    },

    async setPassword(dn, password) {
      await asAdmin((client) =>
        client.modify(dn, new Change({ operation: 'replace', modification: new Attribute({ type: 'userPassword', values: [sshaHash(password)] }) })),
      );
    },

    async modify(dn, changes) {
      const list = Object.entries(changes).map(
        ([type, value]) => new Change({ operation: 'replace', modification: new Attribute({ type, values: prepare(type, value) }) }),
      );
      if (list.length) await asAdmin((client) => client.modify(dn, list));
    },

    async rename(dn, newUid) {
      const comma = dn.search(/[^\\],/);
      if (comma < 0) throw new Error(`rename: ${dn} has no parent`);
      const parent = dn.slice(comma + 2);
      const newRdn = `uid=${escapeDnValue(newUid)}`;
      await asAdmin((client) => client.modifyDN(dn, newRdn));
      return `${newRdn},${parent}`;
    },

    async remove(dn) {
      await asAdmin((client) => client.del(dn));
    },

    async entryUuid(dn) {
      const { searchEntries } = await asAdmin((client) => client.search(dn, { scope: 'base', attributes: ['entryUUID'] }));
      const value = searchEntries[0]?.entryUUID;
      if (typeof value !== 'string') throw new Error(`no entryUUID for ${dn}`);
      return value;
    },

    async kill() {
      await killChild();
    },

    async restart() {
      if (stopped) throw new Error('restart: the server was stopped');
      await killChild();
      await launch();
    },

    async stop() {
      if (stopped) return;
      stopped = true;
      await killChild();
      temp.remove();
      leftoverDirs.delete(temp.remove);
    },
  };
}
