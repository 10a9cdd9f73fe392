// The admin REST API (/admin/v1, described by /admin/v1/openapi.json): the operator commands of
// the CLI over HTTP. Callers are machine clients of this IdP: a client registered with the scope
// `idp:admin` gets an opaque access token by the client-credentials grant for the resource
// `${ISSUER}/admin`, and sends it as a Bearer token. Every change is audited with the client as actor.
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type { AdminServices } from './services.ts';
import { IdpError } from '../errors.ts';
import { adminResource, adminScope } from '../clients/admin-access.ts';
import {
  auditCatalogue, createClient, createConnection, createUser, deleteConnection, listConnections, showConnection, testConnection, updateConnection, searchAudit, decideApproval, deleteClient, inviteUser, listClients, listKeys, listSessions, listUsers, resetUserMfa,
  revokeSessions, rotateKeys, setUserStatus, showUser, unlockUser, updateUser,
} from './commands.ts';
import { openApiDocument } from './openapi.ts';
import { operations, type OperationId, type Operations, type OperationInput } from './schemas.ts';
import { parseRequest } from './validate.ts';

interface AdminToken {
  clientId: string;
  scope?: string;
  aud?: string | string[];
  isExpired?: boolean;
  iat?: number;
  extra?: { registration?: number };
  /** Set for DPoP-bound tokens, which this API does not accept (it verifies no DPoP proofs). */
  jkt?: string;
}

function problem(ctx: Context, status: number, error: string, description: string) {
  ctx.status = status;
  ctx.body = { error, error_description: description };
  if (status === 401) ctx.set('www-authenticate', `Bearer error="${error}", error_description="${description.replace(/"/g, "'")}"`);
}

/** The `error` of an IdpError's status (anything else 4xx is invalid_request). */
const errorCodes: Record<number, string> = { 404: 'not_found', 409: 'conflict', 413: 'request_too_large', 415: 'unsupported_media_type' };

/** One handler per operation of the contract: the compiler refuses a missing one. */
type Handlers = { [K in OperationId]: (request: OperationInput<Operations[K]>, actor: string) => Promise<unknown> };

function handlers(idp: AdminServices): Handlers {
  // The profile fields of a body, as the commands (shared with the CLI) name them.
  const profile = (body: { name?: string | undefined; user_type?: string | undefined; roles?: string[] | undefined; attributes?: Record<string, unknown> | undefined }) => ({
    name: body.name, userType: body.user_type, roles: body.roles, attributes: body.attributes,
  });
  const actions = {
    disable: (email: string, actor: string) => setUserStatus(idp, email, 'disabled', actor),
    enable: (email: string, actor: string) => setUserStatus(idp, email, 'active', actor),
    unlock: (email: string, actor: string) => unlockUser(idp, email, actor),
    approve: (email: string, actor: string) => decideApproval(idp, email, 'verified', actor),
    reject: (email: string, actor: string) => decideApproval(idp, email, 'rejected', actor),
    'reset-mfa': (email: string, actor: string) => resetUserMfa(idp, email, actor),
  };
  return {
    listUsers: ({ query }) => listUsers(idp, { pendingApproval: query.pending_approval === 'true' }),
    createUser: ({ body }, actor) => body.invite === true
      ? inviteUser(idp, { email: body.email, ...profile(body) }, actor)
      // The schema requires a password without invite: true.
      : createUser(idp, { email: body.email, password: body.password!, ...profile(body) }, actor),
    showUser: ({ params }) => showUser(idp, params.email),
    updateUser: ({ params, body }, actor) => updateUser(idp, params.email, profile(body), actor),
    userAction: ({ params }, actor) => actions[params.action](params.email, actor),
    listSessions: ({ params }) => listSessions(idp, params.email),
    revokeSessions: ({ params }, actor) => revokeSessions(idp, params.email, undefined, actor),
    revokeSession: ({ params }, actor) => revokeSessions(idp, params.email, params.sid, actor),
    listClients: () => listClients(idp),
    registerClient: ({ body }, actor) => createClient(idp, body, actor),
    deleteClient: ({ params }, actor) => deleteClient(idp, params.id, actor),
    listConnections: () => listConnections(idp),
    createConnection: ({ body }, actor) => createConnection(idp, body as Record<string, unknown>, actor),
    showConnection: ({ params }) => showConnection(idp, params.id),
    updateConnection: ({ params, body }, actor) => updateConnection(idp, params.id, body as Record<string, unknown>, actor),
    deleteConnection: ({ params }, actor) => deleteConnection(idp, params.id, actor),
    testConnection: ({ params, query }) => testConnection(idp, params.id, query.login),
    listKeys: () => listKeys(idp),
    rotateKeys: ({ body }, actor) => rotateKeys(idp, { now: body?.now === true, revokeOld: body?.revoke_old === true, ...(body?.alg ? { alg: body.alg } : {}) }, actor),
    verifyAudit: () => idp.audit.verify(),
    listAuditEventTypes: async () => auditCatalogue(),
    searchAudit: ({ query }) => searchAudit(idp, { type: query.type, user: query.user, since: query.since, before: query.before === undefined ? undefined : Number(query.before), limit: query.limit === undefined ? undefined : Number(query.limit) }),
  };
}

/** Anything under /admin/v1 that no route answered (a wrong path or method) is a JSON error too. */
export async function adminFallback(ctx: Context, next: Next): Promise<void> {
  if (!ctx.path.startsWith('/admin/v1/') && ctx.path !== '/admin/v1') return next();
  await next();
  if (ctx.status === 404 && (ctx.body === undefined || ctx.body === null || !ctx.type.includes('json'))) problem(ctx, 404, 'not_found', `no such admin API resource: ${ctx.method} ${ctx.path.slice(0, 100)}`);
  else if (ctx.status === 405) problem(ctx, 405, 'method_not_allowed', `${ctx.method} is not allowed on ${ctx.path.slice(0, 100)}`);
}

export function adminRoutes(idp: AdminServices): Router {
  const router = new Router({ prefix: '/admin/v1' });
  const audience = adminResource(idp.config.ISSUER);

  router.get('/openapi.json', (ctx) => {
    ctx.body = openApiDocument(idp.config.ISSUER);
  });

  /** Bearer token of a client holding the admin scope for this audience; errors as JSON, never HTML. */
  router.use(async (ctx: Context, next: Next) => {
    const header = ctx.get('authorization');
    const match = /^Bearer ([A-Za-z0-9._~+/-]{20,512}=*)$/.exec(header);
    if (!match) return rejected(ctx, 401, 'invalid_token', 'a Bearer access token for the admin API is required');
    const token = (await idp.provider.ClientCredentials.find(match[1]!)) as unknown as AdminToken | undefined;
    const audiences = token ? [token.aud ?? []].flat() : [];
    if (!token || token.isExpired || !audiences.includes(audience)) return rejected(ctx, 401, 'invalid_token', 'the access token is unknown, expired or not meant for the admin API', token?.clientId);
    if (token.jkt) return rejected(ctx, 401, 'invalid_token', 'DPoP-bound tokens are not accepted by the admin API', token.clientId);
    if (!String(token.scope ?? '').split(' ').includes(adminScope)) return rejected(ctx, 403, 'insufficient_scope', `the scope ${adminScope} is required`, token.clientId);
    // The client's registration is read again: removing the scope (or the client) takes effect at once.
    const client = await idp.clients.findForProvider(token.clientId);
    // A client deleted and registered again under the same id does not inherit the old tokens:
    // each token names the registration it was issued to.
    const registration = await idp.clients.registeredAt(token.clientId);
    if (!client || registration === undefined || token.extra?.registration !== registration) return rejected(ctx, 401, 'invalid_token', 'the client of this access token no longer exists', token.clientId);
    if (!String(client.scope ?? '').split(' ').includes(adminScope) || client.token_endpoint_auth_method === 'none') return rejected(ctx, 403, 'insufficient_scope', 'this client may not use the admin API', token.clientId);
    ctx.state.adminActor = `client:${token.clientId}`;
    ctx.set('cache-control', 'no-store');
    try {
      await next();
    } catch (error) {
      if (!(error instanceof IdpError) || error.status >= 500) throw error;
      problem(ctx, error.status, errorCodes[error.status] ?? 'invalid_request', error.message);
    }
    // Reads of users and sessions are personal data: who looked is recorded too (changes audit themselves).
    if (ctx.method === 'GET' && /^\/admin\/v1\/users/.test(ctx.path) && ctx.status === 200) {
      await idp.audit.record({ type: 'admin_api.read', outcome: 'success', actor: actor(ctx), ip: ctx.ip, requestId: ctx.state.requestId as string, details: { path: ctx.path.slice(0, 200) } });
    }
  });

  const actor = (ctx: Context) => ctx.state.adminActor as string;
  async function rejected(ctx: Context, status: number, error: string, description: string, clientId?: string) {
    await idp.audit.record({ type: 'admin_api.rejected', outcome: 'failure', clientId: clientId ?? null, ip: ctx.ip, userAgent: ctx.get('user-agent'), requestId: ctx.state.requestId as string, details: { error, method: ctx.method, path: ctx.path.slice(0, 200) } });
    problem(ctx, status, error, description);
  }

  // The router is the contract's table: every operation, its path and method, nothing else.
  const handle = handlers(idp);
  for (const [id, operation] of Object.entries(operations) as [OperationId, Operations[OperationId]][]) {
    const handler = handle[id] as (request: OperationInput<typeof operation>, actor: string) => Promise<unknown>;
    router[operation.method](operation.path, async (ctx) => {
      const result = await handler(await parseRequest(ctx, operation), actor(ctx));
      ctx.status = operation.status;
      if (operation.status !== 204) ctx.body = result;
    });
  }
  return router;
}
