// Upstream identity provider connections: the operator's commands (create, change, delete, test)
// and what sign-in asks of them (the buttons for a client, the connection an address is routed
// to). The client secret is kept only in a KMS envelope bound to the connection.
import { randomBytes } from 'node:crypto';
import type { AuditSink } from '../audit/types.ts';
import { ConflictError, NotFoundError, ValidationError } from '../errors.ts';
import { decryptEnvelope, encryptEnvelope } from '../keys/envelope.ts';
import type { KeyEncryptionProvider } from '../keys/key-encryption.ts';
import { isUniqueViolation } from '../store/database.ts';
import type { ConnectionRow, ConnectionStore } from '../store/connections.ts';
import type { UpstreamIdentityStore } from '../store/upstream-identities.ts';
import type { OidcUpstream } from './oidc-upstream.ts';
import { LdapDirectory } from './directory.ts';
import {
  directoryProblems, directorySettingsInput, directorySettingsView, readDirectorySettings, resolveDirectorySettings,
  type DirectoryChanges, type DirectoryConnection, type NewDirectory,
} from './directory-settings.ts';
import {
  readSettings, resolveSettings, settingsInput, settingsProblems, settingsView,
  type Connection, type ConnectionChanges, type NewConnection, type Preset,
} from './settings.ts';

const secretContext = (id: string) => ({ purpose: 'connection-secret', connection: id });

/** A connection id from its display name: "Contoso (Entra)" → contoso-entra. */
function slugOf(name: string): string {
  const slug = name.normalize('NFKD').replace(/[^\x20-\x7e]/g, '').toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 48);
  return slug || `connection-${randomBytes(3).toString('hex')}`;
}

export type AnyConnection = Connection | DirectoryConnection;

/** The stored settings' input with the fields a change sent laid over them. */
function merged<T extends object>(current: T, changes: object): T {
  return { ...current, ...Object.fromEntries(Object.entries(changes).filter(([, value]) => value !== undefined)) };
}

export function connectionView(connection: AnyConnection) {
  if (connection.kind === 'ldap') {
    return {
      id: connection.id, kind: connection.kind, preset: connection.preset, display_name: connection.displayName, enabled: connection.enabled,
      ...directorySettingsView(connection.settings), has_bind_password: connection.hasSecret,
      created_at: connection.createdAt.toISOString(), updated_at: connection.updatedAt.toISOString(),
    };
  }
  return {
    id: connection.id, kind: connection.kind, preset: connection.preset, display_name: connection.displayName, enabled: connection.enabled,
    ...settingsView(connection.settings), has_client_secret: connection.hasSecret,
    created_at: connection.createdAt.toISOString(), updated_at: connection.updatedAt.toISOString(),
  };
}

export interface ConnectionServiceDeps {
  store: ConnectionStore;
  identities: UpstreamIdentityStore;
  kms: KeyEncryptionProvider;
  audit: AuditSink;
  upstream: OidcUpstream;
  directory?: LdapDirectory;
  /** Plain-http issuers (development and tests on loopback only). */
  allowHttp: boolean;
  /** Clients every enabled connection is offered to (our own account page). */
  offeredToAll?: readonly string[];
  /**
   * Seconds this node may keep the list of connections for the sign-in screens (changes made on
   * another node or by the CLI show within this time; this node's own at once). 0: always read.
   */
  cacheSeconds?: number;
}

const secretCacheMs = 5 * 60_000;

export class ConnectionService {
  readonly #deps: ConnectionServiceDeps;
  readonly #secrets = new Map<string, { envelope: string; secret: string; expires: number }>();
  #cached: { rows: Promise<ConnectionRow[]>; expires: number } | undefined;

  /** Every row, for the screens' lookups (buttons, routing): briefly cached, see cacheSeconds. */
  #rows(): Promise<ConnectionRow[]> {
    const ttl = (this.#deps.cacheSeconds ?? 0) * 1000;
    if (ttl > 0 && this.#cached && this.#cached.expires > Date.now()) return this.#cached.rows;
    const rows = this.#deps.store.list();
    if (ttl > 0) {
      this.#cached = { rows, expires: Date.now() + ttl };
      rows.catch(() => (this.#cached = undefined));
    }
    return rows;
  }

  #changed(): void {
    this.#cached = undefined;
  }

  constructor(deps: ConnectionServiceDeps) {
    this.#deps = deps;
  }

  /** A stored row as a connection; a row whose settings cannot be read is left out. */
  #read(row: ConnectionRow): Connection | undefined {
    const settings = row.kind === 'oidc' ? readSettings(row.settings) : undefined;
    if (!settings) return undefined;
    return { id: row.id, kind: 'oidc', preset: row.preset as Preset, displayName: row.displayName, enabled: row.enabled, settings, hasSecret: row.secret !== null, createdAt: row.createdAt, updatedAt: row.updatedAt };
  }

  #readDirectory(row: ConnectionRow): DirectoryConnection | undefined {
    const settings = row.kind === 'ldap' ? readDirectorySettings(row.settings) : undefined;
    if (!settings) return undefined;
    return { id: row.id, kind: 'ldap', preset: row.preset as DirectoryConnection['preset'], displayName: row.displayName, enabled: row.enabled, settings, hasSecret: row.secret !== null, createdAt: row.createdAt, updatedAt: row.updatedAt };
  }

  #readAny(row: ConnectionRow): AnyConnection | undefined {
    return this.#read(row) ?? this.#readDirectory(row);
  }

  /** Every connection of every kind (operators' lists). */
  async listAll(): Promise<AnyConnection[]> {
    return (await this.#deps.store.list()).map((row) => this.#readAny(row)).filter((c): c is AnyConnection => c !== undefined);
  }

  async requireAny(id: string): Promise<AnyConnection> {
    const row = await this.#deps.store.find(id);
    const connection = row && this.#readAny(row);
    if (!connection) throw new NotFoundError(`no connection ${id.slice(0, 64)}`);
    return connection;
  }

  async findDirectory(id: string): Promise<DirectoryConnection | undefined> {
    const row = await this.#deps.store.find(id);
    return row ? this.#readDirectory(row) : undefined;
  }

  /** The enabled directory an address's domain signs in against, for this client. */
  async directoryFor(email: string, clientId: string | undefined, options: { anyClient?: boolean } = {}): Promise<DirectoryConnection | undefined> {
    const domain = email.slice(email.lastIndexOf('@') + 1).toLowerCase();
    const all = options.anyClient === true || (clientId !== undefined && (this.#deps.offeredToAll ?? []).includes(clientId));
    return (await this.#rows()).map((row) => this.#readDirectory(row))
      .find((c): c is DirectoryConnection => c !== undefined && c.enabled && c.settings.domains.includes(domain)
        && (all || c.settings.clients.includes('*') || (clientId !== undefined && c.settings.clients.includes(clientId))));
  }

  async createDirectory(input: NewDirectory, actor: string): Promise<DirectoryConnection> {
    const { id, kind: _kind, preset, display_name: displayName, enabled, bind_password: secret, ...fields } = input;
    const settings = resolveDirectorySettings(preset, fields);
    const problems = directoryProblems(settings);
    if (problems.length) throw new ValidationError(problems.join('; '));
    return this.#readDirectory(await this.#insert({ id, kind: 'ldap', preset, displayName, enabled, settings, secret }, settings.urls[0]!, actor))!;
  }


  async updateDirectory(id: string, changes: DirectoryChanges, actor: string): Promise<DirectoryConnection> {
    const current = await this.findDirectory(id);
    if (!current) throw new NotFoundError(`no directory connection ${id.slice(0, 64)}`);
    const { preset: newPreset, display_name: displayName, enabled, bind_password: secret, ...fields } = changes;
    const preset = newPreset ?? current.preset;
    const settings = resolveDirectorySettings(preset, merged(directorySettingsInput(current.settings), fields));
    const problems = directoryProblems(settings);
    if (problems.length) throw new ValidationError(problems.join('; '));
    return this.#readDirectory(await this.#change(id, { preset, displayName, enabled, settings, secret }, Object.keys(changes).filter((k) => k !== 'bind_password'), actor))!;
  }


  #check(preset: Preset, settings: Connection['settings']) {
    const problems = settingsProblems(preset, settings, this.#deps.allowHttp);
    if (problems.length) throw new ValidationError(problems.join('; '));
  }

  /** The OIDC connections, as the sign-in screens see them (briefly cached). */
  async list(): Promise<Connection[]> {
    return (await this.#rows()).map((row) => this.#read(row)).filter((c): c is Connection => c !== undefined);
  }

  async find(id: string): Promise<Connection | undefined> {
    const row = await this.#deps.store.find(id);
    return row ? this.#read(row) : undefined;
  }

  async require(id: string): Promise<Connection> {
    const connection = await this.find(id);
    if (!connection) throw new NotFoundError(`no connection ${id.slice(0, 64)}`);
    return connection;
  }

  async create(input: NewConnection, actor: string): Promise<Connection> {
    const { id, kind: _kind, preset, display_name: displayName, enabled, client_secret: secret, ...fields } = input;
    const settings = resolveSettings(preset, fields);
    this.#check(preset, settings);
    return this.#read(await this.#insert({ id, kind: 'oidc', preset, displayName, enabled, settings, secret }, settings.issuer, actor))!;
  }

  /** A new row of either kind: its secret sealed for it, a taken id refused, audited. */
  async #insert(input: { id: string | undefined; kind: 'oidc' | 'ldap'; preset: string; displayName: string; enabled: boolean | undefined; settings: object; secret: string }, issuer: string, actor: string): Promise<ConnectionRow> {
    const id = input.id ?? slugOf(input.displayName);
    const sealed = await encryptEnvelope(this.#deps.kms, Buffer.from(input.secret, 'utf8'), secretContext(id));
    let row: ConnectionRow;
    try {
      row = await this.#deps.store.create({ id, kind: input.kind, preset: input.preset, displayName: input.displayName, enabled: input.enabled ?? true, settings: JSON.stringify(input.settings), secret: sealed });
    } catch (error) {
      if (isUniqueViolation(error)) throw new ConflictError(`a connection ${id} exists`);
      throw error;
    }
    this.#changed();
    await this.#deps.audit.record({ type: 'connection.created', outcome: 'success', actor, details: { connection: id, preset: input.preset, issuer } });
    return row;
  }

  /** Changed settings of either kind, a new secret sealed if one came, audited (`fields`: the names that came, no secret). */
  async #change(id: string, input: { preset: string; displayName: string | undefined; enabled: boolean | undefined; settings: object; secret: string | undefined }, fields: string[], actor: string): Promise<ConnectionRow> {
    const sealed = input.secret === undefined ? undefined : await encryptEnvelope(this.#deps.kms, Buffer.from(input.secret, 'utf8'), secretContext(id));
    const row = await this.#deps.store.update(id, {
      preset: input.preset, settings: JSON.stringify(input.settings),
      ...(input.displayName !== undefined ? { displayName: input.displayName } : {}), ...(input.enabled !== undefined ? { enabled: input.enabled } : {}), ...(sealed ? { secret: sealed } : {}),
    });
    if (!row) throw new NotFoundError(`no connection ${id.slice(0, 64)}`);
    this.#changed();
    await this.#deps.audit.record({ type: 'connection.updated', outcome: 'success', actor, details: { connection: id, fields, secretChanged: sealed !== undefined } });
    return row;
  }


  async update(id: string, changes: ConnectionChanges, actor: string): Promise<Connection> {
    const current = await this.require(id);
    const { preset: newPreset, display_name: displayName, enabled, client_secret: secret, ...fields } = changes;
    const preset = newPreset ?? current.preset;
    const settings = resolveSettings(preset, merged(settingsInput(current.settings), fields));
    this.#check(preset, settings);
    return this.#read(await this.#change(id, { preset, displayName, enabled, settings, secret }, Object.keys(changes).filter((k) => k !== 'client_secret'), actor))!;
  }


  /** Deletes the connection and its links: those accounts keep their other ways to sign in. */
  async delete(id: string, actor: string): Promise<void> {
    await this.requireAny(id);
    const links = await this.#deps.identities.deleteForConnection(id);
    if (!(await this.#deps.store.delete(id))) throw new NotFoundError(`no connection ${id.slice(0, 64)}`);
    this.#changed();
    await this.#deps.audit.record({ type: 'connection.deleted', outcome: 'success', actor, details: { connection: id, links } });
  }

  /** `login`: for a directory, a user to look up and map (no password is checked). */
  async test(id: string, login?: string) {
    const any = await this.requireAny(id);
    if (any.kind === 'ldap') return this.#testDirectory(any, login);
    const connection = any;
    const checks = await this.#deps.upstream.test(connection);
    const secret = await this.secretOf(connection).then(() => true, () => false);
    checks.push({ check: 'client secret', ok: secret, detail: secret ? 'unwraps with the configured KMS' : 'cannot be unwrapped with the configured KMS: set it again' });
    return { connection: id, ok: checks.every((c) => c.ok), checks };
  }

  async #testDirectory(connection: DirectoryConnection, login: string | undefined) {
    const checks: { check: string; ok: boolean; detail: string }[] = [];
    const directory = this.#deps.directory ?? new LdapDirectory();
    let password: string | undefined;
    try {
      password = await this.secretOf(connection);
      checks.push({ check: 'bind password', ok: true, detail: 'unwraps with the configured KMS' });
    } catch {
      checks.push({ check: 'bind password', ok: false, detail: 'cannot be unwrapped with the configured KMS: set it again' });
    }
    let user: Awaited<ReturnType<LdapDirectory['lookup']>>;
    if (password !== undefined) {
      try {
        user = await directory.lookup(connection, password, login ?? '');
        checks.push({ check: 'service bind', ok: true, detail: `bound as ${connection.settings.bindDn}` });
        if (login !== undefined) {
          checks.push({ check: 'user search', ok: user !== undefined, detail: user ? `found ${user.dn}` : `no single entry matches ${connection.settings.userFilter} under ${connection.settings.userBase}` });
        }
      } catch (error) {
        checks.push({ check: 'service bind', ok: false, detail: (error as Error).message });
      }
    }
    const mapped = user ? { dn: user.dn, id: user.id, email: user.email ?? null, name: user.name ?? null, groups: user.groups, roles: LdapDirectory.rolesOf(connection, user.groups), attributes: user.custom } : undefined;
    return { connection: connection.id, ok: checks.every((c) => c.ok), checks, ...(mapped ? { user: mapped } : {}) };
  }

  /**
   * The unwrapped secret. Kept in this process for a few minutes per stored version (the envelope
   * text is the key), so that a KMS in the cloud is not asked at every federated sign-in; a changed
   * secret is a new envelope, read at once.
   */
  async secretOf(connection: Pick<AnyConnection, 'id'>): Promise<string> {
    const row = await this.#deps.store.find(connection.id);
    if (!row?.secret) throw new ValidationError(`connection ${connection.id} has no client secret`);
    const cached = this.#secrets.get(connection.id);
    if (cached && cached.envelope === row.secret && cached.expires > Date.now()) return cached.secret;
    const secret = (await decryptEnvelope(this.#deps.kms, row.secret, secretContext(connection.id))).toString('utf8');
    this.#secrets.set(connection.id, { envelope: row.secret, secret, expires: Date.now() + secretCacheMs });
    return secret;
  }

  /** The enabled connections a client's sign-in offers. */
  async offeredTo(clientId: string | undefined): Promise<Connection[]> {
    const all = clientId !== undefined && (this.#deps.offeredToAll ?? []).includes(clientId);
    return (await this.list()).filter((c) => c.enabled && (all || c.settings.clients.includes('*') || (clientId !== undefined && c.settings.clients.includes(clientId))));
  }

  /** The enabled connection an address's domain is routed to, for this client (home-realm discovery). */
  async routedFor(email: string, clientId: string | undefined): Promise<Connection | undefined> {
    const domain = email.slice(email.lastIndexOf('@') + 1).toLowerCase();
    return (await this.offeredTo(clientId)).find((c) => c.settings.domains.includes(domain));
  }
}
