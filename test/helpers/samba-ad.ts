// A REAL Active Directory domain controller for the tests of LDAP sign-in against AD: Debian's
// Samba 4.17 AD DC (package `samba`), provisioned by the test in a temp dir. No mocks: Samba's
// AD DC reproduces what matters of AD, the bind diagnostics included —
//   80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1
// with data 52e (wrong password), 530, 531, 532 (password expired), 533 (disabled),
// 701 (account expired), 773 (must change password), 775 (locked out) — nested groups through
// LDAP_MATCHING_RULE_IN_CHAIN (member:1.2.840.113556.1.4.1941:=DN), binary objectGUID, passwords
// written as unicodePwd (UTF-16LE of the quoted password), userAccountControl, memberOf.
//
// Each `startSambaDc()` runs `samba-tool domain provision` (realm CORP.TEST, NetBIOS domain CORP,
// ~4 s) into a fresh temp dir, generates a CA and a server certificate with openssl (SAN
// DNS:localhost, IP:127.0.0.1, IP:::1; Samba's own certificate is CN=<host> without a SAN), and
// rewrites the generated smb.conf: only the `ldap` and `cldap` services (the default list wants
// winbindd, which is not installed: samba would exit "winbindd daemon died"), TLS from those
// files, the log in the temp dir. Then `samba -i -M single` runs in the foreground as a child of
// the test process. Samba cannot be told other ports: it listens on 127.0.0.1 and ::1 ports 389
// (LDAP, StartTLS), 636 (LDAPS), 3268/3269 (global catalog). So ONE Samba DC per machine at a
// time: a lock file in the temp dir root (os.tmpdir()/idp-samba-dc.lock, holding the pid) makes a
// second test process wait for the first one's stop() (up to 60 s), and a port 389/636 that is
// taken by anything else makes startSambaDc() fail at once with a clear message. It needs root
// (ports below 1024, and samba insists on it).
//
// What the directory holds: the domain's defaults, as on a fresh Windows domain (password
// complexity on, minimum length 7, history 24, minimum age 1 day — so a user cannot change its own
// fresh password: "password is too young to change" —, maximum age 42 days, no lockout threshold)
// and one service account, a plain domain user CN=idp-service,CN=Users (password never expires)
// that binds and searches. The Administrator (random password, this helper's own changes) is not
// exported. Notes on Samba's behaviour that tests may trip over:
// - Simple binds need an encrypted connection: LDAPS, or StartTLS on 389 (a plain-LDAP simple bind
//   is refused: strongerAuthRequired, "BindSimple: Transport encryption required.").
// - A bind name is a UPN (alice@corp.test), CORP\alice or the DN; a bare sAMAccountName fails (52e).
// - 773, 532, 701 come only with the right password (a wrong one is 52e); 775 comes with either.
// - After a password change the OLD password still binds for 60 minutes (Samba's
//   `old password allowed period`, its version of AD's NTLM old-password lifetime).
// - expirePassword(): over LDAP pwdLastSet accepts only 0 or -1, so the helper writes an old
//   pwdLastSet (100 days ago, past the domain's 42-day maxPwdAge) straight into sam.ldb with
//   Samba's Python bindings and the DSDB_CONTROL_PASSWORD_BYPASS_LAST_SET control (a local ldb
//   write while samba runs is how samba-tool -H works too). A password change afterwards sets
//   pwdLastSet to now: the new password is valid for 42 days, no race.
// - lock(): sets lockoutTime (now) as Administrator; the account stays locked for the domain's
//   lockoutDuration (30 min). No threshold is set, so failed binds never lock anybody by accident.
//
// The server is a child process in a process group of its own (`setpriv --pdeathsig KILL` kills it
// if the test process dies), registered in a module-level set whose groups are killed on 'exit'
// (temp dirs removed and the lock released then too). stop() kills the group, waits for the child
// to be reaped and for port 636 to refuse connections. Samba's log is samba.log in the temp dir.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, openSync, readFileSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Attribute, Change, Client, AlreadyExistsError } from 'ldapts';
import { tempDir } from './databases.ts';

const execFileAsync = promisify(execFile);

const SAMBA = '/usr/sbin/samba';
const SAMBA_TOOL = '/usr/bin/samba-tool';
/** samba-tool's own interpreter (its shebang): the one with Samba's Python bindings, whatever python3 PATH finds. */
const SAMBA_PYTHON = '/usr/bin/python3';
const SETPRIV = '/usr/bin/setpriv';

const REALM = 'corp.test';
const DOMAIN = 'CORP';
const BASE_DN = 'DC=corp,DC=test';
const USERS_DN = `CN=Users,${BASE_DN}`;
const HOST = '127.0.0.1';
const LDAP_PORT = 389;
const LDAPS_PORT = 636;
const LOCK_PATH = join(tmpdir(), 'idp-samba-dc.lock');
const LOCK_WAIT_MS = 60_000;

/** userAccountControl flags */
const UF_ACCOUNTDISABLE = 0x2;
const UF_NORMAL_ACCOUNT = 0x200;
const UF_DONT_EXPIRE_PASSWD = 0x10000;

export interface SambaDc {
  /** 'ldaps://127.0.0.1:636' — the certificate is for DNS name localhost and IPs 127.0.0.1, ::1 */
  ldapsUrl: string;
  /** 'ldap://127.0.0.1:389' — plain LDAP: StartTLS before a simple bind (Samba refuses it otherwise) */
  url: string;
  /** PEM of the CA that signed the server certificate */
  caPem: string;
  /** 'DC=corp,DC=test' */
  baseDn: string;
  /** 'corp.test' (userPrincipalName suffix) */
  realm: string;
  /** a service account (a plain domain user) that can search: its DN and password */
  serviceDn: string;
  servicePassword: string;
  /**
   * creates an enabled user CN=NAME,CN=Users,BASE (or CN=NAME,OU=OU,BASE, the OU created when
   * missing) with sAMAccountName = name, userPrincipalName = name@realm, mail and displayName when
   * given, and the password (unicodePwd, so the domain's password policy applies); returns its DN
   */
  addUser(name: string, password: string, options?: { mail?: string; displayName?: string; ou?: string }): Promise<string>;
  /** a global security group CN=NAME,CN=Users,BASE; members are DNs (users or groups), may be empty; returns its DN */
  addGroup(name: string, members: string[]): Promise<string>;
  addMember(groupDn: string, memberDn: string): Promise<void>;
  /** sets ACCOUNTDISABLE in userAccountControl → bind data 533 */
  disable(name: string): Promise<void>;
  /** the account expires (accountExpires a day in the past) → bind data 701 */
  expireAccount(name: string): Promise<void>;
  /** pwdLastSet=0 → bind data 773 (must change password) */
  mustChangePassword(name: string): Promise<void>;
  /** pwdLastSet 100 days ago (domain maxPwdAge is 42 days), written locally into sam.ldb → bind data 532 */
  expirePassword(name: string): Promise<void>;
  /** lockoutTime = now → bind data 775 for 30 minutes (the domain's lockoutDuration) */
  lock(name: string): Promise<void>;
  /** objectGUID the way Windows prints it: lowercase, mixed-endian (the first three groups byte-swapped), no braces */
  objectGuid(dn: string): Promise<string>;
  /** modrdn to CN=newCn under the same parent (sAMAccountName, UPN and objectGUID unchanged); returns the new DN */
  rename(dn: string, newCn: string): Promise<string>;
  /** kills samba, waits until port 636 refuses connections, removes the temp dir, releases the lock; safe to call twice */
  stop(): Promise<void>;
}

// Every samba started here, so that nothing survives the test process: on 'exit' (a crashed or
// unfinished test file included) each process group is killed, its temp dir removed, the lock released.
const running = new Set<ChildProcess>();
const leftovers = new Set<() => void>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of running) killGroup(child);
    for (const cleanup of leftovers) {
      try {
        cleanup();
      } catch {
        // best effort
      }
    }
  });
}

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Escapes an attribute value for use in a DN (RFC 4514). */
function escapeDnValue(value: string): string {
  return value
    .replace(/[\\,+"<>;=]/g, (c) => `\\${c}`)
    .replace(/^[ #]/, (c) => `\\${c}`)
    .replace(/ $/, '\\ ');
}

/** Escapes a value for use in a search filter (RFC 4515). */
function escapeFilterValue(value: string): string {
  return value.replace(/[\\*()\0]/g, (c) => `\\${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** unicodePwd's value: the password in double quotes, UTF-16LE. */
export function unicodePwd(password: string): Buffer {
  return Buffer.from(`"${password}"`, 'utf16le');
}

/** A Windows FILETIME (100 ns intervals since 1601-01-01 UTC) for a JavaScript time, as AD's decimal string. */
export function fileTime(ms: number): string {
  return String((BigInt(Math.floor(ms)) + 11_644_473_600_000n) * 10_000n);
}

/** objectGUID bytes → the string Windows prints: Data1, Data2, Data3 little-endian, the rest as is. */
export function guidToString(bytes: Buffer): string {
  if (bytes.length !== 16) throw new Error(`an objectGUID has 16 bytes, not ${bytes.length}`);
  const hex = (from: number, to: number, swap: boolean) => {
    const part = Buffer.from(bytes.subarray(from, to));
    return (swap ? part.reverse() : part).toString('hex');
  };
  return [hex(0, 4, true), hex(4, 6, true), hex(6, 8, true), hex(8, 10, false), hex(10, 16, false)].join('-');
}

/** A password that satisfies the domain's complexity rule (upper, lower, digits, a symbol). */
function randomPassword(prefix: string): string {
  return `${prefix}-${randomBytes(9).toString('hex')}-9`;
}

async function run(command: string, args: string[], cwd: string, timeout = 60_000): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, args, { cwd, timeout, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const e = error as Error & { stdout?: string; stderr?: string };
    throw new Error(`${command} ${args.join(' ')} failed: ${e.message}\nstdout: ${e.stdout ?? ''}\nstderr: ${e.stderr ?? ''}`);
  }
}

/** A throwaway CA and a server certificate for localhost / 127.0.0.1 / ::1; the key mode 0600 (samba insists). */
async function makeCertificates(dir: string): Promise<void> {
  writeFileSync(
    join(dir, 'server-ext.cnf'),
    'basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1\n',
  );
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '3', '-subj', '/CN=idp test AD CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  await run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost'], dir);
  await run('openssl', ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', `0x${randomBytes(8).toString('hex')}`,
    '-out', 'server.pem', '-days', '3', '-extfile', 'server-ext.cnf'], dir);
  chmodSync(join(dir, 'server.key'), 0o600);
}

/** The provisioned smb.conf, with the services that run here, our TLS files and the log in the temp dir. */
function rewriteSmbConf(path: string, dir: string): void {
  const original = readFileSync(path, 'utf8');
  const lines = original.split('\n').filter((line) => !/^\s*(server services|log file|logging|tls [a-z]+)\s*=/.test(line));
  const global = lines.findIndex((line) => line.trim() === '[global]');
  if (global < 0) throw new Error(`no [global] section in ${path}:\n${original}`);
  lines.splice(
    global + 1,
    0,
    '\tserver services = ldap, cldap',
    `\tlog file = ${join(dir, 'samba.log')}`,
    '\tlogging = file',
    '\ttls enabled = yes',
    `\ttls keyfile = ${join(dir, 'server.key')}`,
    `\ttls certfile = ${join(dir, 'server.pem')}`,
    `\ttls cafile = ${join(dir, 'ca.pem')}`,
  );
  writeFileSync(path, lines.join('\n'));
}

/** Whether something accepts TCP connections on 127.0.0.1:PORT. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: HOST, port });
    socket.setTimeout(1000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(true); // something is there, just not answering
    });
    socket.once('error', () => resolve(false));
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The machine-wide lock (one Samba DC at a time): waits for another live holder; returns its release. */
async function acquireLock(): Promise<() => void> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const fd = openSync(LOCK_PATH, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        try {
          if (readFileSync(LOCK_PATH, 'utf8').trim() === String(process.pid)) unlinkSync(LOCK_PATH);
        } catch {
          // gone already
        }
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    let holder = NaN;
    try {
      holder = Number.parseInt(readFileSync(LOCK_PATH, 'utf8').trim(), 10);
    } catch {
      continue; // released between our open and read
    }
    if (!Number.isInteger(holder) || !alive(holder)) {
      try {
        unlinkSync(LOCK_PATH); // stale: its process is gone
      } catch {
        // someone else removed it
      }
      continue;
    }
    if (holder === process.pid) {
      throw new Error('startSambaDc: a Samba DC of this test process is running (ports 389/636 are fixed): stop() it before starting another');
    }
    if (Date.now() > deadline) {
      throw new Error(`startSambaDc: another test process (pid ${holder}) has run a Samba DC for over ${LOCK_WAIT_MS / 1000} s (${LOCK_PATH}); only one can run at a time (fixed ports 389/636)`);
    }
    await sleep(250);
  }
}

// Writes pwdLastSet verbatim: over LDAP only 0 and -1 are accepted, so this is a local write with
// DSDB_CONTROL_PASSWORD_BYPASS_LAST_SET_OID (1.3.6.1.4.1.7165.4.3.20), as Samba's upgrade code does.
const SET_PWD_LAST_SET_PY = `
import sys, ldb
from samba.samdb import SamDB
from samba.auth import system_session
from samba.param import LoadParm
lp = LoadParm()
lp.load(sys.argv[1])
db = SamDB(url=lp.private_path('sam.ldb'), session_info=system_session(), lp=lp)
m = ldb.Message(ldb.Dn(db, sys.argv[2]))
m['pwdLastSet'] = ldb.MessageElement(sys.argv[3], ldb.FLAG_MOD_REPLACE, 'pwdLastSet')
db.modify(m, controls=['local_oid:1.3.6.1.4.1.7165.4.3.20:0'])
`;

export async function startSambaDc(): Promise<SambaDc> {
  installExitHook();
  const releaseLock = await acquireLock();
  leftovers.add(releaseLock);
  const temp = tempDir('idp-samba-');
  const dir = temp.path;
  leftovers.add(temp.remove);
  const cleanup = () => {
    temp.remove();
    leftovers.delete(temp.remove);
    releaseLock();
    leftovers.delete(releaseLock);
  };

  const adminPassword = randomPassword('Adm1n');
  const servicePassword = randomPassword('Svc1');
  const confPath = join(dir, 'etc', 'smb.conf');
  const logPath = join(dir, 'samba.log');
  const caPem = () => readFileSync(join(dir, 'ca.pem'), 'utf8');
  const logTail = () => (existsSync(logPath) ? readFileSync(logPath, 'utf8').split('\n').slice(-40).join('\n') : '(no log)');

  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stopped = false;

  async function killChild(): Promise<void> {
    const proc = child;
    child = undefined;
    if (!proc) return;
    if (proc.exitCode === null && proc.signalCode === null) killGroup(proc);
    await exited; // 'exit' means reaped: no <defunct> root process left holding anything
    // The sockets close with the process; make sure before anyone starts the next DC.
    const deadline = Date.now() + 10_000;
    while ((await listening(LDAPS_PORT)) || (await listening(LDAP_PORT))) {
      if (Date.now() > deadline) throw new Error('samba was killed but ports 389/636 still accept connections after 10 s');
      await sleep(50);
    }
  }

  try {
    for (const port of [LDAP_PORT, LDAPS_PORT]) {
      if (await listening(port)) {
        throw new Error(`startSambaDc: ${HOST}:${port} is taken by another process (not a Samba DC of these tests): Samba's ports are fixed; see \`ss -ltnp 'sport = :${port}'\``);
      }
    }
    await makeCertificates(dir);
    await run(SAMBA_TOOL, [
      'domain', 'provision',
      `--realm=${REALM.toUpperCase()}`, `--domain=${DOMAIN}`, '--server-role=dc', '--dns-backend=NONE',
      `--adminpass=${adminPassword}`, `--targetdir=${dir}`, '--host-name=idptestdc',
      '--option=netbios name = IDPTESTDC', '--option=interfaces = lo', '--option=bind interfaces only = yes',
    ], dir);
    rewriteSmbConf(confPath, dir);

    const log = openSync(logPath, 'a');
    // detached: a process group of its own, so stop() can kill everything samba started.
    const proc = spawn(SETPRIV, ['--pdeathsig', 'KILL', SAMBA, '-i', '-M', 'single', '-s', confPath], { cwd: dir, stdio: ['ignore', log, log], detached: true });
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

    // Ready when the Administrator can bind over LDAPS with our CA.
    const deadline = Date.now() + 30_000;
    let lastError: unknown;
    for (;;) {
      if (exitedEarly) throw new Error(`samba ${exitedEarly}\n${logTail()}`);
      const client = new Client({ url: `ldaps://${HOST}:${LDAPS_PORT}`, connectTimeout: 1000, timeout: 3000, tlsOptions: { ca: caPem() } });
      try {
        await client.bind(`Administrator@${REALM}`, adminPassword);
        break;
      } catch (error) {
        lastError = error;
      } finally {
        await client.unbind().catch(() => undefined);
      }
      if (Date.now() > deadline) throw new Error(`samba did not accept an LDAPS bind within 30 s (${(lastError as Error | undefined)?.message})\n${logTail()}`);
      await sleep(100);
    }
  } catch (error) {
    await killChild().catch(() => undefined);
    cleanup();
    throw error;
  }

  const ca = caPem();
  const ldapsUrl = `ldaps://${HOST}:${LDAPS_PORT}`;

  /** A fresh LDAPS connection as Administrator for each change. */
  async function asAdmin<T>(action: (client: Client) => Promise<T>): Promise<T> {
    if (stopped) throw new Error('the Samba DC was stopped');
    const client = new Client({ url: ldapsUrl, connectTimeout: 2000, timeout: 10_000, tlsOptions: { ca } });
    try {
      await client.bind(`Administrator@${REALM}`, adminPassword);
      return await action(client);
    } finally {
      await client.unbind().catch(() => undefined);
    }
  }

  const replace = (type: string, value: string) => new Change({ operation: 'replace', modification: new Attribute({ type, values: [value] }) });

  async function userDn(client: Client, name: string): Promise<{ dn: string; userAccountControl: number }> {
    const { searchEntries } = await client.search(BASE_DN, {
      scope: 'sub',
      filter: `(&(objectClass=user)(sAMAccountName=${escapeFilterValue(name)}))`,
      attributes: ['userAccountControl'],
    });
    const [entry, ...more] = searchEntries;
    if (!entry || more.length) throw new Error(`${searchEntries.length} users with sAMAccountName ${name}`);
    return { dn: entry.dn, userAccountControl: Number(entry.userAccountControl) };
  }

  /** An add with the password in it (unicodePwd over LDAPS): the account is enabled at once, the domain's password policy applies. */
  async function createUser(client: Client, dn: string, name: string, password: string, extra: Record<string, string>, flags = 0): Promise<void> {
    const values: Record<string, string | string[]> = {
      objectClass: ['top', 'person', 'organizationalPerson', 'user'],
      cn: name,
      sAMAccountName: name,
      userPrincipalName: `${name}@${REALM}`,
      userAccountControl: String(UF_NORMAL_ACCOUNT | flags),
      ...extra,
    };
    const attributes = Object.entries(values).map(([type, value]) => new Attribute({ type, values: Array.isArray(value) ? value : [value] }));
    attributes.push(new Attribute({ type: 'unicodePwd', values: [unicodePwd(password)] }));
    await client.add(dn, attributes);
  }

  const serviceDn = `CN=idp-service,${USERS_DN}`;
  try {
    await asAdmin((client) =>
      createUser(client, serviceDn, 'idp-service', servicePassword, { description: "the identity provider's search account" }, UF_DONT_EXPIRE_PASSWD),
    );
  } catch (error) {
    stopped = true;
    await killChild().catch(() => undefined);
    cleanup();
    throw error;
  }

  return {
    ldapsUrl,
    url: `ldap://${HOST}:${LDAP_PORT}`,
    caPem: ca,
    baseDn: BASE_DN,
    realm: REALM,
    serviceDn,
    servicePassword,

    async addUser(name, password, options = {}) {
      const parent = options.ou ? `OU=${escapeDnValue(options.ou)},${BASE_DN}` : USERS_DN;
      const dn = `CN=${escapeDnValue(name)},${parent}`;
      const extra: Record<string, string> = {};
      if (options.mail) extra.mail = options.mail;
      if (options.displayName) extra.displayName = options.displayName;
      await asAdmin(async (client) => {
        if (options.ou) {
          await client.add(parent, { objectClass: ['top', 'organizationalUnit'], ou: options.ou }).catch((error: unknown) => {
            if (!(error instanceof AlreadyExistsError)) throw error;
          });
        }
        await createUser(client, dn, name, password, extra);
      });
      return dn;
    },

    async addGroup(name, members) {
      const dn = `CN=${escapeDnValue(name)},${USERS_DN}`;
      await asAdmin((client) =>
        client.add(dn, { objectClass: ['top', 'group'], cn: name, sAMAccountName: name, ...(members.length ? { member: members } : {}) }),
      );
      return dn;
    },

    async addMember(groupDn, memberDn) {
      await asAdmin((client) => client.modify(groupDn, new Change({ operation: 'add', modification: new Attribute({ type: 'member', values: [memberDn] }) })));
    },

    async disable(name) {
      await asAdmin(async (client) => {
        const user = await userDn(client, name);
        await client.modify(user.dn, replace('userAccountControl', String(user.userAccountControl | UF_ACCOUNTDISABLE)));
      });
    },

    async expireAccount(name) {
      await asAdmin(async (client) => client.modify((await userDn(client, name)).dn, replace('accountExpires', fileTime(Date.now() - 86_400_000))));
    },

    async mustChangePassword(name) {
      await asAdmin(async (client) => client.modify((await userDn(client, name)).dn, replace('pwdLastSet', '0')));
    },

    async expirePassword(name) {
      const { dn } = await asAdmin((client) => userDn(client, name));
      await run(SAMBA_PYTHON, ['-c', SET_PWD_LAST_SET_PY, confPath, dn, fileTime(Date.now() - 100 * 86_400_000)], dir, 20_000);
    },

    async lock(name) {
      await asAdmin(async (client) => client.modify((await userDn(client, name)).dn, replace('lockoutTime', fileTime(Date.now()))));
    },

    async objectGuid(dn) {
      const { searchEntries } = await asAdmin((client) => client.search(dn, { scope: 'base', attributes: ['objectGUID'], explicitBufferAttributes: ['objectGUID'] }));
      const value = searchEntries[0]?.objectGUID;
      if (!Buffer.isBuffer(value)) throw new Error(`no objectGUID for ${dn}`);
      return guidToString(value);
    },

    async rename(dn, newCn) {
      const comma = dn.search(/[^\\],/);
      if (comma < 0) throw new Error(`rename: ${dn} has no parent`);
      const newRdn = `CN=${escapeDnValue(newCn)}`;
      await asAdmin((client) => client.modifyDN(dn, newRdn));
      return `${newRdn},${dn.slice(comma + 2)}`;
    },

    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await killChild();
      } finally {
        cleanup();
      }
    },
  };
}
