// The LDAP side of directory sign-in, over ldapts: search the user with the service account,
// bind as the user with the typed password, read attributes and (nested) groups. Servers are
// tried in order (failover); every operation has a timeout; at most `maxConcurrent` sign-ins per
// directory talk to it at once (the rest wait briefly, then get "unavailable"), so a slow
// directory cannot take every connection of this node.
import { isIP } from 'node:net';
import { Attribute, Change, Client, InvalidCredentialsError, type Entry } from 'ldapts';
import { bindRefusalOf, type BindRefusal } from './directory-errors.ts';
import type { DirectoryConnection } from './directory-settings.ts';

/** RFC 4515: a value inside a filter. */
export function escapeFilterValue(value: string): string {
  return value.replace(/[\\*()\0]/g, (c) => `\\${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** A DN compared by value (RFC 4514): `cn=Sales\, EMEA` and `CN=Sales\2C EMEA` are the same. */
export function normaliseDn(dn: string): string {
  return dn.split(/(?<!\\),/).map((rdn) => {
    const eq = rdn.indexOf('=');
    const type = rdn.slice(0, eq).trim().toLowerCase();
    const value = rdn.slice(eq + 1).trim().replace(/\\([0-9a-fA-F]{2}|.)/g, (_, c: string) => (c.length === 2 ? String.fromCharCode(parseInt(c, 16)) : c));
    return `${type}=${value.toLowerCase()}`;
  }).join(',');
}

/** The first RDN's value (a group's cn). */
const firstValue = (dn: string) => normaliseDn(dn).split(',')[0]!.split('=')[1] ?? '';

export interface DirectoryUser {
  dn: string;
  /** The stable key (entryUUID, objectGUID as a GUID string). */
  id: string;
  email?: string | undefined;
  name?: string | undefined;
  custom: Record<string, string | string[]>;
  /** Every group the user is in, nested ones included (normalised DNs). */
  groups: string[];
}

export type DirectoryAnswer =
  | { ok: true; user: DirectoryUser }
  | { ok: false; reason: 'invalid_login' | 'no_user' | 'ambiguous' | BindRefusal }
  | { ok: false; reason: 'unavailable'; detail: string };

export class DirectoryUnavailable extends Error {
  constructor(detail: string) {
    super(detail);
    this.name = 'DirectoryUnavailable';
  }
}

const maxGroups = 500;
const maxLoginLength = 256;

/** objectGUID is binary, mixed-endian: shown as Windows writes it. */
function guidOf(value: Buffer): string {
  const hex = value.toString('hex');
  const swap = (s: string) => s.match(/../g)!.reverse().join('');
  return `${swap(hex.slice(0, 8))}-${swap(hex.slice(8, 12))}-${swap(hex.slice(12, 16))}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A GUID string back to objectGUID's bytes, each escaped for a filter. */
function guidFilterValue(guid: string): string {
  const hex = guid.replace(/-/g, '');
  if (!/^[0-9a-f]{32}$/i.test(hex)) return escapeFilterValue(guid);
  const swap = (s: string) => s.match(/../g)!.reverse().join('');
  const bytes = swap(hex.slice(0, 8)) + swap(hex.slice(8, 12)) + swap(hex.slice(12, 16)) + hex.slice(16);
  return bytes.match(/../g)!.map((b) => `\\${b}`).join('');
}

const text = (value: Entry[string] | undefined): string | undefined => {
  const first = Array.isArray(value) ? value[0] : value;
  return first === undefined ? undefined : Buffer.isBuffer(first) ? first.toString('utf8') : String(first);
};

export class LdapDirectory {
  readonly #maxConcurrent: number;
  readonly #active = new Map<string, number>();
  #health: (connectionId: string, up: boolean) => void = () => undefined;

  constructor(options: { maxConcurrent?: number } = {}) {
    this.#maxConcurrent = options.maxConcurrent ?? 16;
  }

  /** Told whether each directory answered (the `idp_directory_up` gauge of /metrics). */
  observe(health: (connectionId: string, up: boolean) => void): void {
    this.#health = health;
  }

  async #slot<T>(connection: DirectoryConnection, work: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + connection.settings.timeoutSeconds * 1000;
    while ((this.#active.get(connection.id) ?? 0) >= this.#maxConcurrent) {
      if (Date.now() > deadline) throw new DirectoryUnavailable('too many sign-ins are waiting for this directory');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    this.#active.set(connection.id, (this.#active.get(connection.id) ?? 0) + 1);
    try {
      return await work();
    } finally {
      this.#active.set(connection.id, (this.#active.get(connection.id) ?? 1) - 1);
    }
  }

  /** A client for one server, TLS set up (ldaps, or StartTLS on ldap://), not yet bound. */
  static async open(connection: DirectoryConnection, url: string): Promise<Client> {
    const { settings } = connection;
    const ms = settings.timeoutSeconds * 1000;
    // A fresh object each time: ldapts keeps the socket in the options it is given. For ldap://
    // the options go to StartTLS only (given to the client too, they break the upgrade).
    // The certificate is checked against the URL's host (ldapts gives StartTLS no host: Node would check "localhost").
    const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
    const tls = () => ({ ...(settings.caPem ? { ca: [settings.caPem] } : {}), minVersion: 'TLSv1.2' as const, host, ...(isIP(host) ? {} : { servername: host }) });
    const secure = url.startsWith('ldaps:');
    const client = new Client({ url, timeout: ms, connectTimeout: ms, strictDN: false, ...(secure ? { tlsOptions: tls() } : {}) });
    try {
      // ldapts times binds and searches, not StartTLS: a server that accepts and then hangs would hold it forever.
      if (!secure && settings.startTls) await within(client.startTLS(tls()), ms, `${url}: StartTLS got no answer in time`);
      return client;
    } catch (error) {
      await client.unbind().catch(() => undefined);
      throw error;
    }
  }

  #down(connection: DirectoryConnection, error: DirectoryUnavailable): DirectoryUnavailable {
    this.#health(connection.id, false);
    return error;
  }

  /** A client on the first server that answers, TLS set up, not yet bound. */
  async #connect(connection: DirectoryConnection, skip = 0): Promise<{ client: Client; url: string; index: number }> {
    const { settings } = connection;
    const failures: string[] = [];
    for (let index = skip; index < settings.urls.length; index++) {
      const url = settings.urls[index]!;
      try {
        const client = await LdapDirectory.open(connection, url);
        return { client, url, index };
      } catch (error) {
        failures.push(`${url}: ${(error as Error).message}`);
      }
    }
    throw this.#down(connection, new DirectoryUnavailable(failures.join('; ') || 'no server'));
  }

  /** Runs `work` with a service-bound client, on the next server if one fails to answer. */
  async #asService<T>(connection: DirectoryConnection, password: string, work: (client: Client, url: string, index: number) => Promise<T>): Promise<T> {
    let skip = 0;
    for (;;) {
      const { client, url, index } = await this.#connect(connection, skip);
      try {
        await client.bind(connection.settings.bindDn, password);
        const result = await work(client, url, index);
        this.#health(connection.id, true);
        return result;
      } catch (error) {
        if (error instanceof InvalidCredentialsError) throw this.#down(connection, new DirectoryUnavailable('the service account was refused (check bind_dn and bind_password)'));
        if (!isConnectionError(error)) throw error;
        if (index + 1 >= connection.settings.urls.length) throw this.#down(connection, new DirectoryUnavailable(`${url}: ${(error as Error).message}`));
        skip = index + 1;
      } finally {
        await client.unbind().catch(() => undefined);
      }
    }
  }

  /** Search-then-bind. Nothing reaches the directory for an empty password or a login with control characters. */
  async authenticate(connection: DirectoryConnection, servicePassword: string, login: string, password: string): Promise<DirectoryAnswer> {
    const typed = login.trim();
    if (!typed || typed.length > maxLoginLength || /[\p{Cc}\p{Cf}]/u.test(typed)) return { ok: false, reason: 'invalid_login' };
    // RFC 4513 5.1.2: a DN with an empty password is an unauthenticated bind that "succeeds".
    if (password.trim() === '') return { ok: false, reason: 'invalid_credentials' };
    try {
      // Each step has its timeout; the whole sign-in has one too, whatever a step does.
      return await within(this.#slot(connection, () => this.#asService(connection, servicePassword, async (service, url) => {
        const found = await this.#findUser(connection, service, typed);
        if (found.length === 0) return { ok: false, reason: 'no_user' } as const;
        if (found.length > 1) return { ok: false, reason: 'ambiguous' } as const;
        const entry = found[0]!;
        const refusal = await this.#bindAs(connection, url, entry.dn, password);
        if (refusal) return { ok: false, reason: refusal } as const;
        return { ok: true, user: await this.#userOf(connection, service, entry) } as const;
      })), connection.settings.timeoutSeconds * 4000, 'the directory did not answer in time');
    } catch (error) {
      if (error instanceof DirectoryUnavailable) return { ok: false, reason: 'unavailable', detail: error.message };
      if (isConnectionError(error)) return { ok: false, reason: 'unavailable', detail: (error as Error).message };
      throw error;
    }
  }

  /**
   * Active Directory: an expired or must-change password replaced by its owner, who proves the
   * current one. One modify that deletes the old `unicodePwd` value and adds the new one (a
   * password *change*, which AD allows whoever knows the old password, unlike a reset), over the
   * TLS connection of the service account. Then the user binds with the new password.
   */
  async changePassword(connection: DirectoryConnection, servicePassword: string, login: string, current: string, next: string): Promise<DirectoryAnswer | { ok: false; reason: 'refused_by_policy'; detail: string }> {
    const typed = login.trim();
    if (!typed || /[\p{Cc}\p{Cf}]/u.test(typed) || current.trim() === '' || next.trim() === '') return { ok: false, reason: 'invalid_credentials' };
    const quoted = (password: string) => Buffer.from(`"${password}"`, 'utf16le');
    try {
      return await this.#slot(connection, () => this.#asService(connection, servicePassword, async (service, url) => {
        const found = await this.#findUser(connection, service, typed);
        if (found.length !== 1) return { ok: false, reason: found.length ? 'ambiguous' : 'no_user' } as const;
        const entry = found[0]!;
        try {
          await service.modify(entry.dn, [
            new Change({ operation: 'delete', modification: new Attribute({ type: 'unicodePwd', values: [quoted(current)] }) }),
            new Change({ operation: 'add', modification: new Attribute({ type: 'unicodePwd', values: [quoted(next)] }) }),
          ]);
        } catch (error) {
          const message = (error as Error).message ?? '';
          // 0000052D: the new password breaks the domain's rules (length, history, complexity).
          if (/0000052D/i.test(message)) return { ok: false, reason: 'refused_by_policy', detail: message.slice(0, 200) } as const;
          // 00000056 (or an invalid-credentials result): the current password is not right.
          if (error instanceof InvalidCredentialsError || /00000056|ERROR_INVALID_PASSWORD/i.test(message) || (error as { code?: number }).code === 19) return { ok: false, reason: 'invalid_credentials' } as const;
          throw error;
        }
        const refusal = await this.#bindAs(connection, url, entry.dn, next);
        if (refusal) return { ok: false, reason: refusal } as const;
        return { ok: true, user: await this.#userOf(connection, service, entry) } as const;
      }));
    } catch (error) {
      if (error instanceof DirectoryUnavailable || isConnectionError(error)) return { ok: false, reason: 'unavailable', detail: (error as Error).message };
      throw error;
    }
  }

  /**
   * Which of these directory ids still name an enabled user (the periodic review). Throws
   * DirectoryUnavailable when the directory cannot say: an outage must never end sessions.
   */
  async stillThere(connection: DirectoryConnection, servicePassword: string, ids: string[]): Promise<Set<string>> {
    const { settings } = connection;
    const found = new Set<string>();
    await this.#asService(connection, servicePassword, async (service) => {
      for (const id of ids) {
        const byId = `(${settings.attributes.id}=${settings.attributes.id === 'objectGUID' ? guidFilterValue(id) : escapeFilterValue(id)})`;
        const enabled = connection.preset === 'active_directory' ? '(!(userAccountControl:1.2.840.113556.1.4.803:=2))' : '';
        const { searchEntries } = await service.search(settings.userBase, { scope: 'sub', filter: enabled ? `(&${byId}${enabled})` : byId, attributes: ['1.1'], sizeLimit: 1 });
        if (searchEntries.length) found.add(id);
      }
    });
    return found;
  }

  /** `idp connections test`: bind, find a user, map it (no password check). */
  async lookup(connection: DirectoryConnection, servicePassword: string, login: string): Promise<DirectoryUser | undefined> {
    return this.#asService(connection, servicePassword, async (service) => {
      const found = await this.#findUser(connection, service, login.trim());
      return found.length === 1 ? this.#userOf(connection, service, found[0]!) : undefined;
    });
  }

  async #findUser(connection: DirectoryConnection, service: Client, login: string): Promise<Entry[]> {
    const { settings } = connection;
    // A function, so that `$&` and the like in the login stay text.
    const escaped = escapeFilterValue(login);
    const filter = settings.userFilter.replaceAll('{login}', () => escaped);
    const attributes = [settings.attributes.id, settings.attributes.email, settings.attributes.name, ...Object.values(settings.attributes.custom)];
    const { searchEntries } = await service.search(settings.userBase, { scope: 'sub', filter, attributes, sizeLimit: 2, explicitBufferAttributes: ['objectGUID'] })
      .catch((error: unknown) => {
        // More than one match stops at the size limit: that is an ambiguous login, not a fault.
        if ((error as { code?: number }).code === 4) return { searchEntries: [{ dn: '' }, { dn: '' }] as Entry[] };
        throw error;
      });
    return searchEntries;
  }

  /** A separate connection for the user's own bind: the service connection stays the service's. */
  async #bindAs(connection: DirectoryConnection, url: string, dn: string, password: string): Promise<BindRefusal | undefined> {
    const client = await LdapDirectory.open(connection, url);
    try {
      await client.bind(dn, password);
      return undefined;
    } catch (error) {
      if (error instanceof InvalidCredentialsError) return bindRefusalOf(error.message);
      throw error;
    } finally {
      await client.unbind().catch(() => undefined);
    }
  }

  async #userOf(connection: DirectoryConnection, service: Client, entry: Entry): Promise<DirectoryUser> {
    const { settings } = connection;
    const rawId = entry[settings.attributes.id];
    const first = Array.isArray(rawId) ? rawId[0] : rawId;
    const id = first === undefined ? undefined : Buffer.isBuffer(first) ? (first.length === 16 ? guidOf(first) : first.toString('hex')) : String(first);
    if (!id) throw new DirectoryUnavailable(`the user entry has no ${settings.attributes.id}: set attributes.id to a stable attribute`);
    const custom: Record<string, string | string[]> = {};
    for (const [ours, theirs] of Object.entries(settings.attributes.custom)) {
      const value = entry[theirs];
      if (value !== undefined) custom[ours] = Array.isArray(value) ? value.map((v) => (Buffer.isBuffer(v) ? v.toString('utf8') : String(v))) : Buffer.isBuffer(value) ? value.toString('utf8') : String(value);
    }
    return { dn: entry.dn, id: id.toLowerCase(), email: text(entry[settings.attributes.email]), name: text(entry[settings.attributes.name]), custom, groups: await this.#groupsOf(connection, service, entry.dn) };
  }

  /** AD walks nesting itself (LDAP_MATCHING_RULE_IN_CHAIN); elsewhere we walk it, bounded. */
  async #groupsOf(connection: DirectoryConnection, service: Client, dn: string): Promise<string[]> {
    const { settings } = connection;
    if (connection.preset === 'active_directory') {
      const { searchEntries } = await service.search(settings.groupBase, { scope: 'sub', filter: `(member:1.2.840.113556.1.4.1941:=${escapeFilterValue(dn)})`, attributes: ['cn'], sizeLimit: maxGroups });
      return searchEntries.map((g) => normaliseDn(g.dn));
    }
    const seen = new Set<string>();
    let frontier = [dn];
    while (frontier.length && seen.size < maxGroups) {
      const next: string[] = [];
      for (const member of frontier) {
        const { searchEntries } = await service.search(settings.groupBase, {
          scope: 'sub', filter: `(&(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))(|(member=${escapeFilterValue(member)})(uniqueMember=${escapeFilterValue(member)})))`, attributes: ['cn'], sizeLimit: maxGroups,
        });
        for (const group of searchEntries) {
          const key = normaliseDn(group.dn);
          if (!seen.has(key)) {
            seen.add(key);
            next.push(group.dn);
          }
        }
      }
      frontier = next;
    }
    return [...seen];
  }

  /** Our roles for these groups: group_roles keys are DNs or cn values, compared by value. */
  static rolesOf(connection: DirectoryConnection, groups: string[]): string[] {
    const roles = new Set<string>();
    const byDn = new Map(Object.entries(connection.settings.groupRoles).map(([key, role]) => [key.includes('=') ? normaliseDn(key) : key.toLowerCase(), role]));
    for (const group of groups) {
      const role = byDn.get(group) ?? byDn.get(firstValue(group));
      if (role) roles.add(role);
    }
    return [...roles];
  }
}

/** `work`, or DirectoryUnavailable after `ms` (the work itself goes on until its socket gives up). */
async function within<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([work, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new DirectoryUnavailable(message)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  const name = (error as { name?: string }).name ?? '';
  return typeof code === 'string' || /Timeout|Connection|Socket|ECONN|EPIPE|closed/i.test(`${name} ${(error as Error).message ?? ''}`);
}
