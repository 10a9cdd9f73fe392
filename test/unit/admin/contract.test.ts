// The admin contract (src/admin/schemas.ts) as the router applies it (parseRequest) and as the
// OpenAPI document describes it: the same table, so what is refused is what is documented.
import { Readable } from 'node:stream';
import type { Context } from 'koa';
import { describe, expect, it } from 'vitest';
import { openApiDocument } from '../../../src/admin/openapi.ts';
import { operations, type Operation } from '../../../src/admin/schemas.ts';
import { parseRequest } from '../../../src/admin/validate.ts';
import { NotFoundError, ValidationError } from '../../../src/errors.ts';

/** The parts of a Koa context parseRequest reads: router params, query, the raw request. */
function context(options: { params?: Record<string, string>; query?: Record<string, string | string[]>; json?: unknown } = {}): Context {
  const text = options.json === undefined ? '' : JSON.stringify(options.json);
  const headers: Record<string, string> = text ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) } : {};
  const req = Object.assign(Readable.from(text ? [Buffer.from(text)] : []), { headers });
  return { params: options.params ?? {}, query: options.query ?? {}, req } as unknown as Context;
}

async function refusal(operation: Operation, options: Parameters<typeof context>[0]): Promise<Error> {
  try {
    await parseRequest(context(options), operation);
  } catch (error) {
    return error as Error;
  }
  throw new Error(`expected ${JSON.stringify(options)} to be refused`);
}

const alice = { email: 'alice@example.com' };

describe('parseRequest', () => {
  it('hands a valid request over, typed', async () => {
    const request = await parseRequest(context({ params: alice, json: { name: 'Alice', roles: ['a'], attributes: { team: { lead: true } } } }), operations.updateUser);
    expect(request).toEqual({ params: alice, query: {}, body: { name: 'Alice', roles: ['a'], attributes: { team: { lead: true } } } });
    expect((await parseRequest(context(), operations.rotateKeys)).body).toBeUndefined();
    expect((await parseRequest(context({ query: { pending_approval: 'true' } }), operations.listUsers)).query).toEqual({ pending_approval: 'true' });
  });

  it.each([
    [operations.rotateKeys, { json: { now: 'true', revoke_old: 'true' } }, 'now must be a boolean (true or false); revoke_old must be a boolean (true or false)'],
    [operations.rotateKeys, { json: { force: true, now: true } }, 'unknown field force'],
    [operations.rotateKeys, { json: [] }, 'the request body must be a JSON object'],
    [operations.createUser, { json: { email: 'x@example.com', password: 'p'.repeat(12), invite: 'true' } }, 'invite must be a boolean (true or false)'],
    [operations.createUser, { json: { email: 'x@example.com' } }, 'password is required (or invite: true to mail a set-password link)'],
    [operations.createUser, { json: { password: 'p' } }, 'email is required'],
    [operations.createUser, { json: { email: '', password: 'p' } }, 'email is required'],
    [operations.createUser, { json: { email: 'x@example.com', invite: true, roles: [1, 2] } }, 'roles must be a list of strings'],
    [operations.createUser, { json: { email: 'x@example.com', invite: true, roles: ['r'.repeat(65)] } }, 'roles must be a string of at most 64 characters'],
    [operations.createUser, { json: { email: 'x@example.com', invite: true, attributes: ['ops'] } }, 'attributes must be a JSON object'],
    [operations.createUser, { json: { email: 'x@example.com', invite: true, attributes: { a: [{ b: 'x\u0000' }] } } }, 'attributes.a.b must not contain control characters'],
    [operations.createUser, { json: { email: 'x@example.com', invite: true, attributes: { a: { 'k\ud800': 1 } } } }, 'a field name in attributes.a must be well-formed Unicode (a lone UTF-16 surrogate is not)'],
    [operations.updateUser, { params: alice }, 'a JSON request body is required'],
    [operations.updateUser, { params: { email: 'alice\u0000@example.com' }, json: {} }, 'email must not contain control characters'],
    [operations.updateUser, { params: { email: `${'a'.repeat(320)}@example.com` }, json: {} }, 'email must be a string of at most 320 characters'],
    [operations.showUser, { params: alice, json: { verbose: true } }, 'this operation takes no request body'],
    [operations.showUser, { params: alice, query: { verbose: '1' } }, 'unknown query parameter verbose'],
    [operations.listUsers, { query: { pending_approval: 'yes' } }, 'pending_approval must be one of true, false'],
    [operations.listUsers, { query: { pending_approval: ['true', 'true'] } }, 'pending_approval must be one of true, false'],
  ] as [Operation, Parameters<typeof context>[0], string][])('refuses %#: %s', async (operation, options, message) => {
    const error = await refusal(operation, options);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error.message).toBe(message);
  });

  it('answers a path parameter outside its enumeration (an unknown action) with 404', async () => {
    for (const action of ['promote', 'constructor', '__proto__', 'sessions']) {
      const error = await refusal(operations.userAction, { params: { ...alice, action } });
      expect(error).toBeInstanceOf(NotFoundError);
      expect(error.message).toBe(`no action ${action}`);
    }
  });

  it('leaves client metadata open (unknown fields pass to the registration schema), strings still checked', async () => {
    const metadata = { redirect_uris: ['https://app.example.com/cb'], software_id: 'x', x_vendor: { deep: [1] } };
    expect((await parseRequest(context({ json: metadata }), operations.registerClient)).body).toEqual(metadata);
    expect((await refusal(operations.registerClient, { json: { ...metadata, client_name: 'a\u0000' } })).message).toBe('client_name must not contain control characters');
  });
});

describe('the OpenAPI document generated from the contract', () => {
  const doc = openApiDocument('https://idp.example');
  type Schema = { $ref?: string; additionalProperties?: unknown };
  const resolve = (schema: Schema): Schema => (schema.$ref ? (doc.components.schemas[schema.$ref.replace('#/components/schemas/', '')] as Schema) : schema);

  it('has one operation per entry of the table, at its path and method', () => {
    const documented = Object.entries(doc.paths).flatMap(([path, item]) => Object.keys(item).filter((k) => k !== 'parameters').map((method) => `${method} ${path}`));
    const table = Object.values(operations as Record<string, Operation>).map((o) => `${o.method} ${o.path.replace(/:(\w+)/g, '{$1}')}`);
    expect(documented.sort()).toEqual(table.sort());
  });

  it('says every body but client registration refuses unknown fields, and documents 415 and 413 everywhere', () => {
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, operation] of Object.entries(item as Record<string, { operationId?: string; requestBody?: { content: Record<string, { schema: Schema }> }; responses: Record<string, unknown> }>)) {
        if (method === 'parameters') continue;
        expect(Object.keys(operation.responses), `${method} ${path}`).toEqual(expect.arrayContaining(['400', '401', '403', '413', '415']));
        if (!operation.requestBody) continue;
        expect(Object.keys(operation.requestBody.content), `${method} ${path}`).toEqual(['application/json']);
        const schema = resolve(operation.requestBody.content['application/json']!.schema);
        // Connections take one of two strict bodies, by kind.
        const choices = (schema as { anyOf?: Schema[] }).anyOf?.map(resolve) ?? [schema];
        for (const choice of choices) expect(choice.additionalProperties, `${method} ${path}`).toEqual(operation.operationId === 'registerClient' ? {} : false);
      }
    }
  });

  it('resolves every reference', () => {
    const text = JSON.stringify(doc);
    for (const [, kind, name] of text.matchAll(/"\$ref":"#\/components\/(schemas|responses)\/([^"]+)"/g)) {
      expect((doc.components as Record<string, Record<string, unknown>>)[kind!]![name!], `${kind}/${name}`).toBeDefined();
    }
    expect(text).not.toContain('$schema');
  });
});
