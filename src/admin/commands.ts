// Operator commands behind the `idp` CLI. Each takes the assembled IdP and plain input, returns
// what to print; src/main.ts owns argument parsing, standard input and exit codes.
import type { AdminServices } from './services.ts';
import { textIssue } from '../clients/service.ts';
import { auditEvents, isAuditEventType } from '../audit/events.ts';
import { ValidationError } from '../errors.ts';
import { parseBoundedJson } from '../http/json-body.ts';
import type { AccountRecord, AccountStatus } from '../store/accounts.ts';
import { connectionView } from '../federation/connections.ts';
import { ConnectionChanges as ConnectionChangesBody, DirectoryChanges as DirectoryChangesBody, NewConnection as NewConnectionBody, NewDirectory as NewDirectoryBody } from './schemas.ts';
import { parseBody } from './validate.ts';

export interface UserAttributesInput {
  name?: string | undefined;
  userType?: string | undefined;
  roles?: string[] | undefined;
  /** A JSON object: as text from the CLI, parsed (and checked by the contract) from the API. */
  attributes?: string | Record<string, unknown> | undefined;
}

/** The CLI's --attributes text under the API's rules: bounded depth, a JSON object, clean strings. */
function attributesFrom(input: string | Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (typeof input !== 'string') return input;
  const parsed = parseBoundedJson(input, { what: '--attributes' });
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ValidationError('--attributes must be a JSON object');
  const issue = textIssue(parsed, 'attributes');
  if (issue) throw new ValidationError(issue);
  return parsed as Record<string, unknown>;
}

export function userView(a: AccountRecord) {
  return {
    id: a.id, email: a.email, name: a.name, status: a.status, email_verified: a.emailVerified,
    user_type: a.userType, roles: a.roles, approval: a.approval, attributes: a.attributes,
    has_password: a.passwordHash !== null, password_changed_at: a.passwordChangedAt?.toISOString() ?? null, created_at: a.createdAt.toISOString(),
  };
}

/** `metadata`: the CLI's standard input as text, or the API's parsed body. */
export async function createClient(idp: AdminServices, metadata: string | Record<string, unknown>, actor = 'cli'): Promise<Record<string, unknown>> {
  // Depth-bounded like the API's bodies: the metadata is walked and stringified afterwards.
  const input = typeof metadata === 'string' ? parseBoundedJson(metadata, { what: 'standard input' }) : metadata;
  const created = await idp.clients.create(input);
  await idp.audit.record({ type: 'client.created', outcome: 'success', actor, clientId: created.metadata.client_id, details: { grant_types: created.metadata.grant_types ?? ['authorization_code'], scope: created.metadata.scope ?? null, token_endpoint_auth_method: created.metadata.token_endpoint_auth_method ?? 'client_secret_basic' } });
  return created.clientSecret ? { ...created.metadata, client_secret: created.clientSecret, client_secret_expires_at: 0 } : created.metadata;
}

export async function listClients(idp: AdminServices) {
  return idp.clients.list();
}

export async function deleteClient(idp: AdminServices, id: string, actor = 'cli'): Promise<void> {
  await idp.clients.delete(id);
  await idp.audit.record({ type: 'client.deleted', outcome: 'success', actor, clientId: id });
}

export async function createUser(idp: AdminServices, input: { email: string; password: string } & UserAttributesInput, actor = 'cli') {
  const account = await idp.accounts.create({
    email: input.email, password: input.password, name: input.name ?? null,
    userType: input.userType, roles: input.roles, attributes: attributesFrom(input.attributes),
  });
  await idp.audit.record({ type: 'user.created', outcome: 'success', actor, subject: account.id });
  return userView(account);
}

/** Creates the account without a password and mails a single-use set-password link. */
export async function inviteUser(idp: AdminServices, input: { email: string } & UserAttributesInput, actor = 'cli') {
  const account = await idp.selfService.invite({ email: input.email, name: input.name ?? null, ...(input.userType ? { userType: input.userType } : {}), roles: input.roles ?? [], attributes: attributesFrom(input.attributes) ?? {} }, { actor });
  return userView(account);
}

export async function showUser(idp: AdminServices, email: string) {
  return userView(await idp.accounts.requireByEmail(email));
}

export async function updateUser(idp: AdminServices, email: string, input: UserAttributesInput, actor = 'cli') {
  const attributes = attributesFrom(input.attributes);
  const account = await idp.accounts.update(email, { ...(input.name !== undefined ? { name: input.name } : {}), ...(input.userType ? { userType: input.userType } : {}), ...(input.roles ? { roles: input.roles } : {}), ...(attributes ? { attributes } : {}) });
  await idp.audit.record({ type: 'user.updated', outcome: 'success', actor, subject: account.id, details: { fields: Object.keys(input).filter((k) => input[k as keyof UserAttributesInput] !== undefined), ...(input.roles ? { roles: input.roles } : {}), ...(input.userType ? { userType: input.userType } : {}) } });
  return userView(account);
}

/** disable / enable: a disabled account cannot sign in, and its sessions end at once. */
export async function setUserStatus(idp: AdminServices, email: string, status: Extract<AccountStatus, 'active' | 'disabled'>, actor = 'cli') {
  const account = await idp.accounts.setStatus(email, status);
  const ended = status === 'disabled' ? await idp.sessions.revokeAll(account.id, 'admin_revoked', actor) : 0;
  await idp.audit.record({ type: status === 'disabled' ? 'user.disabled' : 'user.enabled', outcome: 'success', actor, subject: account.id, details: { sessionsEnded: ended } });
  return userView(account);
}

export async function decideApproval(idp: AdminServices, email: string, decision: 'verified' | 'rejected', actor = 'cli') {
  const account = await idp.accounts.decideApproval(email, decision);
  await idp.audit.record({ type: decision === 'verified' ? 'user.approved' : 'user.rejected', outcome: 'success', actor, subject: account.id });
  return userView(account);
}

/** An administrator's reset of a user's second factors (lost phone): they enrol again at next sign-in. */
export async function resetUserMfa(idp: AdminServices, email: string, actor = 'cli') {
  const account = await idp.accounts.requireByEmail(email);
  return { email: account.email, ...(await idp.mfa.reset(account.id, actor)) };
}

export async function listSessions(idp: AdminServices, email: string) {
  const account = await idp.accounts.requireByEmail(email);
  return (await idp.sessions.list(account.id)).map((s) => ({ ...s, createdAt: s.createdAt.toISOString(), lastSeenAt: s.lastSeenAt.toISOString(), expiresAt: s.expiresAt.toISOString() }));
}

/** Ends one session (by sid) or, without one, every session of the account. */
export async function revokeSessions(idp: AdminServices, email: string, sid: string | undefined, actor = 'cli') {
  const account = await idp.accounts.requireByEmail(email);
  if (sid === undefined) return { revoked: await idp.sessions.revokeAll(account.id, 'admin_revoked', actor) };
  if (!(await idp.sessions.revoke(account.id, sid, 'admin_revoked', actor))) throw new ValidationError(`${account.email} has no active session ${sid}`);
  return { revoked: 1 };
}

export async function unlockUser(idp: AdminServices, email: string, actor = 'cli') {
  const account = await idp.accounts.unlock(email);
  await idp.audit.record({ type: 'user.unlocked', outcome: 'success', actor, subject: account.id });
  return { unlocked: account.email };
}

export async function listUsers(idp: AdminServices, options: { pendingApproval?: boolean } = {}) {
  const accounts = await idp.accounts.list(1000, undefined, options.pendingApproval ? 'pending' : undefined);
  return accounts.map(userView);
}

const iso = (date: Date | null) => date?.toISOString() ?? null;

export async function listKeys(idp: AdminServices) {
  const keys = await idp.keys.listPublished();
  return keys.map((k) => ({
    kid: k.kid,
    alg: k.alg,
    state: k.state,
    created: iso(k.createdAt),
    activates: iso(k.activateAt),
    activated: iso(k.activatedAt),
    retired: iso(k.retiredAt),
    retires: iso(k.removeAt),
  }));
}

export async function rotateKeys(idp: AdminServices, options: { now?: boolean; revokeOld?: boolean; alg?: string }, actor = 'cli') {
  const result = await idp.keyLifecycle.rotate({ ...options, actor });
  return { kid: result!.kid, alg: result!.alg, state: result!.state, activates: result!.activateAt.toISOString() };
}

export async function retireKey(idp: AdminServices, kid: string, actor = 'cli') {
  await idp.keyLifecycle.retire(kid, actor);
  return { retired: kid };
}

/** The audit catalogue: every event type with its meaning and detail fields. */
export function auditCatalogue() {
  return Object.entries(auditEvents).map(([type, event]) => ({ type, description: event.description, fields: [...event.fields] }));
}

export interface AuditQuery {
  /** A type of the catalogue, or a family by its prefix ending in "." (login., key.). */
  type?: string | undefined;
  /** The account's address (looked up) or its id. */
  user?: string | undefined;
  since?: string | undefined;
  before?: number | undefined;
  limit?: number | undefined;
}

/** The newest audit events matching the query, newest first. */
export async function searchAudit(idp: AdminServices, query: AuditQuery) {
  const { type } = query;
  if (type !== undefined && !isAuditEventType(type) && !(type.endsWith('.') && Object.keys(auditEvents).some((t) => t.startsWith(type)))) {
    throw new ValidationError(`type ${JSON.stringify(type.slice(0, 64))} is not an audit event type (see idp audit events) nor a prefix of one ending in "."`);
  }
  const limit = query.limit ?? 100;
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new ValidationError('limit must be a whole number from 1 to 1000');
  const since = query.since === undefined ? undefined : new Date(query.since);
  if (since && Number.isNaN(since.getTime())) throw new ValidationError('since must be a date and time (ISO 8601)');
  const subject = query.user === undefined ? undefined : query.user.includes('@') ? (await idp.accounts.findByEmail(query.user))?.id ?? '-' : query.user;
  return idp.audit.search({ type, subject, since, beforeSeq: query.before, limit });
}

/** The body as an object: the CLI's standard input as text, or the API's parsed body. */
const bodyOf = (input: string | Record<string, unknown>) => (typeof input === 'string' ? parseBoundedJson(input, { what: 'standard input' }) : input);

/** A new connection of either kind (`kind: "ldap"` for a directory), checked under its kind's contract. */
export async function createConnection(idp: AdminServices, input: string | Record<string, unknown>, actor = 'cli') {
  const raw = bodyOf(input);
  if (typeof raw === 'object' && raw !== null && (raw as { kind?: unknown }).kind === 'ldap') {
    return connectionView(await idp.connections.createDirectory(parseBody(NewDirectoryBody, raw), actor));
  }
  return connectionView(await idp.connections.create(parseBody(NewConnectionBody, raw), actor));
}

export async function listConnections(idp: AdminServices) {
  return (await idp.connections.listAll()).map(connectionView);
}

export async function showConnection(idp: AdminServices, id: string) {
  return connectionView(await idp.connections.requireAny(id));
}

export async function updateConnection(idp: AdminServices, id: string, input: string | Record<string, unknown>, actor = 'cli') {
  const current = await idp.connections.requireAny(id);
  const raw = bodyOf(input);
  if (current.kind === 'ldap') return connectionView(await idp.connections.updateDirectory(id, parseBody(DirectoryChangesBody, raw), actor));
  return connectionView(await idp.connections.update(id, parseBody(ConnectionChangesBody, raw), actor));
}

export async function deleteConnection(idp: AdminServices, id: string, actor = 'cli'): Promise<void> {
  await idp.connections.delete(id, actor);
}

export async function testConnection(idp: AdminServices, id: string, login?: string) {
  return idp.connections.test(id, login);
}
