// The admin REST API (/admin/v1, described by /admin/v1/openapi.json): the operator commands of
// the CLI over HTTP. Callers are machine clients of this IdP: a client registered with the scope
// `idp:admin` gets an opaque access token by the client-credentials grant for the resource
// `${ISSUER}/admin`, and sends it as a Bearer token. Every change is audited with the client as actor.
import { bodyParser } from '@koa/bodyparser';
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type { Idp } from '../app.ts';
import { IdpError, ValidationError } from '../errors.ts';
import { adminResource, adminScope } from '../provider/configuration.ts';
import {
  createClient, createUser, decideApproval, deleteClient, inviteUser, listClients, listKeys, listSessions, listUsers, resetUserMfa,
  revokeSessions, rotateKeys, setUserStatus, showUser, unlockUser, updateUser, type UserAttributesInput,
} from './commands.ts';
import { openApiDocument } from './openapi.ts';

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

const controlCharacters = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

const str = (value: unknown, name: string, max = 320): string | undefined => {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || value.length > max) throw new ValidationError(`${name} must be a string of at most ${max} characters`);
  if (controlCharacters.test(value)) throw new ValidationError(`${name} must not contain control characters`);
  return value;
};

/** A path parameter; control characters (a NUL breaks PostgreSQL) never reach a query. */
const param = (ctx: Context, name: string, max: number): string => {
  const value = String(ctx.params[name] ?? '');
  if (controlCharacters.test(value)) throw new ValidationError(`${name} must not contain control characters`);
  return value.slice(0, max);
};

function profileOf(body: Record<string, unknown>): UserAttributesInput {
  const roles = body.roles;
  if (roles !== undefined && (!Array.isArray(roles) || roles.some((r) => typeof r !== 'string'))) throw new ValidationError('roles must be a list of strings');
  const attributes = body.attributes;
  if (attributes !== undefined && (typeof attributes !== 'object' || attributes === null || Array.isArray(attributes))) throw new ValidationError('attributes must be a JSON object');
  return {
    name: str(body.name, 'name', 200),
    userType: str(body.user_type, 'user_type', 64),
    roles: roles as string[] | undefined,
    attributes: attributes === undefined ? undefined : JSON.stringify(attributes),
  };
}

/** Anything under /admin/v1 that no route answered (a wrong path or method) is a JSON error too. */
export async function adminFallback(ctx: Context, next: Next): Promise<void> {
  if (!ctx.path.startsWith('/admin/v1/') && ctx.path !== '/admin/v1') return next();
  await next();
  if (ctx.status === 404 && (ctx.body === undefined || ctx.body === null || !ctx.type.includes('json'))) problem(ctx, 404, 'not_found', `no such admin API resource: ${ctx.method} ${ctx.path.slice(0, 100)}`);
  else if (ctx.status === 405) problem(ctx, 405, 'method_not_allowed', `${ctx.method} is not allowed on ${ctx.path.slice(0, 100)}`);
}

export function adminRoutes(idp: Idp): Router {
  const router = new Router({ prefix: '/admin/v1' });
  const json = bodyParser({ enableTypes: ['json'], jsonLimit: '64kb', encoding: 'utf-8' });
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
      problem(ctx, error.status, error.status === 404 ? 'not_found' : error.status === 409 ? 'conflict' : 'invalid_request', error.message);
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
  const body = (ctx: Context): Record<string, unknown> => {
    const value = ctx.request.body;
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ValidationError('the request body must be a JSON object');
    return value as Record<string, unknown>;
  };
  // The router has decoded the path parameter already.
  const email = (ctx: Context) => param(ctx, 'email', 320);

  router.get('/users', async (ctx) => {
    ctx.body = await listUsers(idp, { pendingApproval: ctx.query.pending_approval === 'true' });
  });
  router.post('/users', json, async (ctx) => {
    const input = body(ctx);
    const address = str(input.email, 'email');
    if (!address) throw new ValidationError('email is required');
    const profile = profileOf(input);
    if (input.invite === true) {
      ctx.body = await inviteUser(idp, { email: address, ...profile }, actor(ctx));
    } else {
      const password = str(input.password, 'password', 4096);
      if (!password) throw new ValidationError('password is required (or invite: true to mail a set-password link)');
      ctx.body = await createUser(idp, { email: address, password, ...profile }, actor(ctx));
    }
    ctx.status = 201;
  });
  router.get('/users/:email', async (ctx) => {
    ctx.body = await showUser(idp, email(ctx));
  });
  router.patch('/users/:email', json, async (ctx) => {
    ctx.body = await updateUser(idp, email(ctx), profileOf(body(ctx)), actor(ctx));
  });
  const actions: Record<string, (ctx: Context) => Promise<unknown>> = {
    disable: (ctx) => setUserStatus(idp, email(ctx), 'disabled', actor(ctx)),
    enable: (ctx) => setUserStatus(idp, email(ctx), 'active', actor(ctx)),
    unlock: (ctx) => unlockUser(idp, email(ctx), actor(ctx)),
    approve: (ctx) => decideApproval(idp, email(ctx), 'verified', actor(ctx)),
    reject: (ctx) => decideApproval(idp, email(ctx), 'rejected', actor(ctx)),
    'reset-mfa': (ctx) => resetUserMfa(idp, email(ctx), actor(ctx)),
  };
  router.post('/users/:email/:action', async (ctx) => {
    const name = String(ctx.params.action);
    const action = Object.hasOwn(actions, name) ? actions[name] : undefined;
    if (!action) return problem(ctx, 404, 'not_found', `no action ${String(ctx.params.action).slice(0, 40)}`);
    ctx.body = await action(ctx);
  });
  router.get('/users/:email/sessions', async (ctx) => {
    ctx.body = await listSessions(idp, email(ctx));
  });
  router.delete('/users/:email/sessions', async (ctx) => {
    ctx.body = await revokeSessions(idp, email(ctx), undefined, actor(ctx));
  });
  router.delete('/users/:email/sessions/:sid', async (ctx) => {
    ctx.body = await revokeSessions(idp, email(ctx), param(ctx, 'sid', 100), actor(ctx));
  });

  router.get('/clients', async (ctx) => {
    ctx.body = await listClients(idp);
  });
  router.post('/clients', json, async (ctx) => {
    ctx.body = await createClient(idp, JSON.stringify(body(ctx)), actor(ctx));
    ctx.status = 201;
  });
  router.delete('/clients/:id', async (ctx) => {
    await deleteClient(idp, param(ctx, 'id', 128), actor(ctx));
    ctx.status = 204;
  });

  router.get('/keys', async (ctx) => {
    ctx.body = await listKeys(idp);
  });
  router.post('/keys/rotate', json, async (ctx) => {
    const input = ctx.request.body === undefined ? {} : body(ctx);
    const alg = str(input.alg, 'alg', 10);
    ctx.body = await rotateKeys(idp, { now: input.now === true, revokeOld: input.revoke_old === true, ...(alg ? { alg } : {}) }, actor(ctx));
    ctx.status = 201;
  });

  router.get('/audit/verify', async (ctx) => {
    ctx.body = await idp.audit.verify();
  });
  return router;
}
