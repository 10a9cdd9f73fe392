// The admin API's contract, written once: every operation with its path and query parameters,
// request body and response, as zod schemas. The router is built from this table (routes.ts),
// requests are checked against it in one place (validate.ts), and the OpenAPI document is
// generated from it (openapi.ts), so the three cannot drift apart.
//
// Rules every operation follows (the OpenAPI document states them too):
// - a request body is JSON (application/json, UTF-8): anything else is 415; at most 64 KiB (413)
//   and 32 levels of nesting (400), bounded while parsing (src/http/json-body.ts);
// - unknown fields in a body and unknown query parameters are refused (400 naming them; connection
//   bodies by the schema of their kind, in the handler), except in client registration, whose RFC 7591 metadata is open and checked by oidc-provider's own
//   registration schema plus our policy (src/clients/service.ts);
// - an operation without a body refuses one (400); keys/rotate, whose body is optional, takes an
//   empty one, with or without a Content-Type;
// - every string anywhere in the input (keys and nested values included) must be well-formed
//   UTF-16 without control characters (validate.ts; the same check as client metadata);
// - wrong types are 400 naming the field; errors are `{error, error_description}`.
import { z } from 'zod';
import { ConnectionChangesSchema, NewConnectionSchema } from '../federation/settings.ts';
import { DirectoryChangesSchema, NewDirectorySchema } from '../federation/directory-settings.ts';

/** Schemas with an id become components/schemas of the OpenAPI document and are referenced by it. */
export const components = z.registry<{ id: string }>();
function named<T extends z.ZodType>(id: string, description: string, schema: T): T {
  const described = schema.meta({ description }) as T;
  components.add(described, { id });
  return described;
}

// Length bounds are the database columns' (and the account service's) limits.
const emailParam = z.string().max(320).meta({ format: 'email', description: 'the account address (any case)' });
// Responses are built here, not parsed from callers: a format documents them (z.iso.datetime() would add a long pattern).
const dateTime = z.string().meta({ format: 'date-time' });
// Type errors of the list and of its items read the same: "roles must be a list of strings".
const listOfStrings = (issue: z.core.$ZodRawIssue) => (issue.code === 'invalid_type' ? 'must be a list of strings' : undefined);
const roles = z.array(z.string({ error: listOfStrings }).max(64), { error: listOfStrings });
const attributes = z.record(z.string(), z.unknown(), { error: 'must be a JSON object' })
  .meta({ description: 'custom attributes (names like roles; at most 16 KiB of JSON), released as claims per CLAIM_MAPPINGS' });

// Requests.

const NewUser = named('NewUser', 'A user with a password, or (invite: true) one who sets it through a mailed link; password is then ignored', z.strictObject({
  // Not z.email(): the account service checks (and normalises) addresses, for the CLI too.
  email: z.string().min(1, { error: 'is required' }).max(320),
  password: z.string().max(4096).optional(),
  invite: z.boolean().optional(),
  name: z.string().max(200).optional(),
  user_type: z.string().max(64).optional(),
  roles: roles.optional(),
  attributes: attributes.optional(),
}).superRefine((user, ctx) => {
  if (user.invite !== true && !user.password) ctx.addIssue({ code: 'custom', path: ['password'], message: 'is required (or invite: true to mail a set-password link)' });
}));

const UserChanges = named('UserChanges', 'Only the fields sent change', z.strictObject({
  name: z.string().max(200).optional(),
  user_type: z.string().max(64).optional(),
  roles: roles.optional(),
  attributes: attributes.optional(),
}));

const KeyRotation = named('KeyRotation', 'Without a body (or with {}): stage a key that signs after KEY_PREPUBLICATION_SECONDS', z.strictObject({
  now: z.boolean().optional().meta({ description: 'emergency: the new key signs as soon as every node publishes it (3 × KEY_REFRESH_SECONDS + 2 s), not after KEY_PREPUBLICATION_SECONDS' }),
  revoke_old: z.boolean().optional().meta({ description: 'with now: the old key leaves the JWKS once every node has switched to the new one (tokens it signed stop verifying)' }),
  // Not an enum here: the key lifecycle refuses algorithms outside KEY_ALGORITHMS, for the CLI too.
  alg: z.string().max(10).optional().meta({ description: 'one of KEY_ALGORITHMS (RS256, PS256, ES256, EdDSA)' }),
}));

const NewClient = named('NewClient', 'RFC 7591 client metadata (client_name, redirect_uris, grant_types, token_endpoint_auth_method, scope, jwks, first_party, ...): an open object, validated by the provider\'s registration schema and our policy; client_secret is generated', z.looseObject({}));

export const NewConnection = named('NewConnection', 'An upstream OpenID provider: kind oidc (the default), a preset (entra, okta, google, jumpcloud, generic), its issuer, our client at it, and the rules for its users', NewConnectionSchema);
export const ConnectionChanges = named('ConnectionChanges', 'Only the fields sent change (client_secret: a new secret)', ConnectionChangesSchema);
export const NewDirectory = named('NewDirectory', 'A company directory: kind ldap, a preset (openldap, active_directory), its servers, the service account, where and how users are found, and the rules for them', NewDirectorySchema);
export const DirectoryChanges = named('DirectoryChanges', 'Only the fields sent change (bind_password: a new password)', DirectoryChangesSchema);
// One resource for both kinds: the body is one of two strict schemas, chosen by its `kind` (new
// connections) or by the stored connection's kind (changes); the handler checks it (bodyByKind).
const AnyNewConnection = named('AnyNewConnection', 'NewConnection (kind oidc or absent) or NewDirectory (kind ldap)', z.union([NewConnection, NewDirectory]));
const AnyConnectionChanges = named('AnyConnectionChanges', 'ConnectionChanges or DirectoryChanges, by the kind of the connection', z.union([ConnectionChanges, DirectoryChanges]));

// Responses.

const User = named('User', 'An account, never with its password or hash', z.object({
  id: z.string(), email: z.string(), name: z.string().nullable(),
  status: z.enum(['active', 'pending_verification', 'disabled', 'locked']),
  email_verified: z.boolean(), user_type: z.string(), roles: z.array(z.string()),
  approval: z.enum(['unverified', 'pending', 'verified', 'rejected']).nullable(),
  attributes: z.record(z.string(), z.unknown()),
  has_password: z.boolean(), password_changed_at: dateTime.nullable(), created_at: dateTime,
}));
const Users = named('Users', 'Users', z.array(User));
const Unlocked = named('Unlocked', 'The address whose lockout ended', z.object({ unlocked: z.string() }));
const MfaReset = named('MfaReset', 'Second factors and remembered devices removed', z.object({ email: z.string(), factors: z.number().int(), devices: z.number().int() }));
const ActionResult = named('ActionResult', 'disable, enable, approve, reject: the user; unlock: Unlocked; reset-mfa: MfaReset', z.union([User, Unlocked, MfaReset]));
const Session = named('Session', 'A sign-in session', z.object({
  sid: z.string(), device: z.string(), ip: z.string().nullable(), location: z.string().nullable(),
  createdAt: dateTime, lastSeenAt: dateTime, expiresAt: dateTime, clients: z.array(z.string()),
}));
const Sessions = named('Sessions', 'Active sessions', z.array(Session));
const Revoked = named('Revoked', 'How many sessions ended', z.object({ revoked: z.number().int() }));
const Client = named('Client', 'Registered client metadata (no secret, no digest)', z.looseObject({ client_id: z.string(), client_id_issued_at: z.number().int() }));
const Clients = named('Clients', 'Clients', z.array(Client));
const CreatedClient = named('CreatedClient', 'The new client; client_secret (when it authenticates with one) is shown here only', z.looseObject({
  client_id: z.string(), client_id_issued_at: z.number().int(), client_secret: z.string().optional(), client_secret_expires_at: z.literal(0).optional(),
}));
const Key = named('Key', 'A published signing key (public facts only)', z.object({
  kid: z.string(), alg: z.string(), state: z.enum(['staged', 'active', 'retired']),
  created: dateTime.nullable(), activates: dateTime.nullable(), activated: dateTime.nullable(), retired: dateTime.nullable(), retires: dateTime.nullable(),
}));
const Keys = named('Keys', 'Signing keys', z.array(Key));
const RotatedKey = named('RotatedKey', 'The new key: staged (published) now, signing from `activates`', z.object({ kid: z.string(), alg: z.string(), state: z.enum(['staged', 'active']), activates: dateTime }));
const AuditVerification = named('AuditVerification', 'ok, or where the hash chain breaks', z.object({ ok: z.boolean(), rows: z.number().int(), seq: z.number().int().optional(), reason: z.string().optional() }));
const AuditEventTypes = named('AuditEventTypes', 'The audit catalogue: every event type, what it means and its detail fields', z.array(z.object({ type: z.string(), description: z.string(), fields: z.array(z.string()) })));
const AuditEvents = named('AuditEvents', 'Audit events, newest first', z.array(z.object({
  seq: z.number().int(), time: dateTime, type: z.string(), outcome: z.enum(['success', 'failure']), actor: z.string().nullable(), subject: z.string().nullable(),
  clientId: z.string().nullable(), ip: z.string().nullable(), requestId: z.string().nullable(), details: z.record(z.string(), z.unknown()),
})));
const Connection = named('Connection', 'A connection as stored (its fields as in NewConnection or NewDirectory), never with its client secret or bind password', z.looseObject({
  id: z.string(), kind: z.enum(['oidc', 'ldap']), preset: z.string(), display_name: z.string(), enabled: z.boolean(), created_at: dateTime, updated_at: dateTime,
}));
const Connections = named('Connections', 'Connections', z.array(Connection));
const ConnectionTest = named('ConnectionTest', 'What `test` found: discovery, JWKS, client authentication, PKCE, scopes, tenants, the client secret', z.object({
  connection: z.string(), ok: z.boolean(), checks: z.array(z.object({ check: z.string(), ok: z.boolean(), detail: z.string() })),
  user: z.looseObject({}).optional().meta({ description: 'LDAP with ?login=: the user found and what it maps to (id, email, name, groups, roles, attributes)' }),
}));
export const ErrorBody = named('Error', 'Every error', z.object({ error: z.string(), error_description: z.string() }));

// Parameters. Path parameters are strings as the router decoded them.

const emailPath = z.object({ email: emailParam });
const connectionPath = z.object({ id: z.string().max(64) });
export const userActions = ['disable', 'enable', 'unlock', 'approve', 'reject', 'reset-mfa'] as const;

export interface Operation {
  method: 'get' | 'post' | 'patch' | 'delete';
  /** In the router's syntax (/users/:email); the document writes /users/{email}. */
  path: `/${string}`;
  summary: string;
  /** Every path parameter. A value outside an enum here names no resource: 404. */
  params?: z.ZodObject;
  /** A strict object; without one, the operation takes no query parameters. */
  query?: z.ZodObject;
  /** A named schema; without one, the operation takes no body. */
  body?: z.ZodType;
  bodyRequired?: boolean;
  /** The body is one of the union's strict schemas, picked by kind in the handler (which checks it): validation only makes it a JSON object. */
  bodyByKind?: true;
  status: 200 | 201 | 204;
  /** A named schema; none for 204. */
  response?: z.ZodType;
  /** Error statuses beyond those of every operation (400, 401, 403, 413, 415). */
  errors?: readonly (404 | 409)[];
}

export const operations = {
  listUsers: {
    method: 'get', path: '/users', summary: 'List users', status: 200, response: Users,
    query: z.strictObject({ pending_approval: z.enum(['true', 'false']).optional().meta({ description: 'true: only users waiting for an approval decision' }) }),
  },
  createUser: {
    method: 'post', path: '/users', summary: 'Create a user with a password, or invite one (a set-password link is mailed)',
    body: NewUser, bodyRequired: true, status: 201, response: User, errors: [409],
  },
  showUser: { method: 'get', path: '/users/:email', summary: 'One user', params: emailPath, status: 200, response: User, errors: [404] },
  updateUser: {
    method: 'patch', path: '/users/:email', summary: 'Change name, user type, roles or attributes',
    params: emailPath, body: UserChanges, bodyRequired: true, status: 200, response: User, errors: [404],
  },
  userAction: {
    method: 'post', path: '/users/:email/:action', summary: 'disable (ends the sessions), enable, unlock, approve / reject (approval workflow), reset-mfa',
    params: z.object({ email: emailParam, action: z.enum(userActions) }), status: 200, response: ActionResult, errors: [404],
  },
  listSessions: { method: 'get', path: '/users/:email/sessions', summary: "The user's active sessions", params: emailPath, status: 200, response: Sessions, errors: [404] },
  revokeSessions: {
    method: 'delete', path: '/users/:email/sessions', summary: 'End every session: refresh tokens revoked, back-channel logout sent',
    params: emailPath, status: 200, response: Revoked, errors: [404],
  },
  revokeSession: {
    method: 'delete', path: '/users/:email/sessions/:sid', summary: 'End one session (its id, or the sid claim a client got)',
    params: z.object({ email: emailParam, sid: z.string().max(100) }), status: 200, response: Revoked, errors: [404],
  },
  listClients: { method: 'get', path: '/clients', summary: 'List clients', status: 200, response: Clients },
  registerClient: {
    method: 'post', path: '/clients', summary: 'Register a client (RFC 7591 metadata); the client_secret is in this response only',
    body: NewClient, bodyRequired: true, status: 201, response: CreatedClient, errors: [409],
  },
  deleteClient: { method: 'delete', path: '/clients/:id', summary: 'Delete a client', params: z.object({ id: z.string().max(128) }), status: 204, errors: [404] },
  listConnections: { method: 'get', path: '/connections', summary: 'List upstream identity provider connections', status: 200, response: Connections },
  createConnection: {
    method: 'post', path: '/connections', summary: 'Add an upstream OpenID provider (the client secret is stored wrapped by the KMS and never shown again)',
    body: AnyNewConnection, bodyRequired: true, bodyByKind: true, status: 201, response: Connection, errors: [409],
  },
  showConnection: { method: 'get', path: '/connections/:id', summary: 'One connection', params: connectionPath, status: 200, response: Connection, errors: [404] },
  updateConnection: {
    method: 'patch', path: '/connections/:id', summary: 'Change a connection', params: connectionPath, body: AnyConnectionChanges, bodyRequired: true, bodyByKind: true, status: 200, response: Connection, errors: [404],
  },
  deleteConnection: { method: 'delete', path: '/connections/:id', summary: 'Delete a connection and its accounts\' links to it', params: connectionPath, status: 204, errors: [404] },
  testConnection: {
    method: 'post', path: '/connections/:id/test', summary: 'OIDC: fetch discovery and JWKS; LDAP: bind with the service account and look up ?login=; report what is wrong', params: connectionPath, query: z.strictObject({ login: z.string().max(256).optional().meta({ description: 'LDAP: a user to look up and map' }) }), status: 200, response: ConnectionTest, errors: [404],
  },
  listKeys: { method: 'get', path: '/keys', summary: 'Signing keys with their state and dates', status: 200, response: Keys },
  rotateKeys: {
    method: 'post', path: '/keys/rotate', summary: 'Stage a new signing key (now: an emergency switch as soon as every node publishes it)',
    body: KeyRotation, bodyRequired: false, status: 201, response: RotatedKey,
  },
  verifyAudit: { method: 'get', path: '/audit/verify', summary: 'Walk the audit hash chain', status: 200, response: AuditVerification },
  listAuditEventTypes: { method: 'get', path: '/audit/events', summary: 'The audit catalogue (the same names `idp audit events` prints)', status: 200, response: AuditEventTypes },
  searchAudit: {
    method: 'get', path: '/audit', summary: 'Audit events, newest first', status: 200, response: AuditEvents,
    query: z.strictObject({
      type: z.string().max(64).optional().meta({ description: 'an event type of the catalogue, or a family by its prefix ending in "." (login., key.)' }),
      user: z.string().max(320).optional().meta({ description: 'the account, by address or id' }),
      since: z.string().max(40).optional().meta({ description: 'ISO 8601 date and time' }),
      before: z.string().regex(/^\d{1,15}$/, { error: 'must be a sequence number' }).optional().meta({ description: 'only events older than this sequence number (the next page)' }),
      limit: z.string().regex(/^\d{1,4}$/, { error: 'must be a number from 1 to 1000' }).optional().meta({ description: '1 to 1000 (default 100)' }),
    }),
  },
} as const satisfies Record<string, Operation>;

export type Operations = typeof operations;
export type OperationId = keyof Operations;

type Output<S> = S extends z.ZodType ? z.output<S> : undefined;
/** What a handler gets: the parsed parameters and body of its operation. */
export interface OperationInput<O extends Operation> {
  params: O['params'] extends z.ZodType ? z.output<O['params']> : Record<string, never>;
  query: O['query'] extends z.ZodType ? z.output<O['query']> : Record<string, never>;
  body: O['bodyRequired'] extends true ? Output<O['body']> : Output<O['body']> | undefined;
}
