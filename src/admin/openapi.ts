// The admin API's OpenAPI 3.1 description, served at /admin/v1/openapi.json: generated from the
// contract (schemas.ts), which the router is built from and requests are checked against.
import { z } from 'zod';
import { maxJsonBytes, maxJsonDepth } from '../http/json-body.ts';
import { components, operations, type Operation } from './schemas.ts';

type Json = Record<string, unknown>;

/** OpenAPI 3.1 schemas are JSON Schema 2020-12, its dialect by default: no $schema or $id needed. */
function clean(schema: Json): Json {
  const { $schema: _schema, $id: _id, ...rest } = schema;
  return rest;
}

const uri = (id: string) => `#/components/schemas/${id}`;

// Input and output shapes are the same (no transforms); "input" keeps response objects open
// (new fields may appear) while z.strictObject bodies say additionalProperties: false.
// Integers are documented without zod's safe-integer bounds, which say nothing to a reader.
const plainIntegers = ({ jsonSchema }: { jsonSchema: Json }) => {
  if (jsonSchema.type === 'integer' && jsonSchema.minimum === Number.MIN_SAFE_INTEGER) {
    delete jsonSchema.minimum;
    delete jsonSchema.maximum;
  }
};
const generated = z.toJSONSchema(components, { uri, io: 'input', override: plainIntegers }).schemas;
const componentSchemas = Object.fromEntries(Object.entries(generated).map(([id, schema]) => [id, clean(schema as Json)]));

/** A reference to a named schema; the contract names every body and response. */
function ref(schema: z.ZodType): Json {
  const id = components.get(schema)?.id;
  if (!id) throw new Error('admin contract: a body or response schema has no id (use named())');
  return { $ref: uri(id) };
}

/** Parameter schemas are plain strings and enums: inlined. */
const inline = (schema: z.ZodType): Json => clean(z.toJSONSchema(schema, { io: 'input' }) as Json);

function parametersOf(object: z.ZodObject | undefined, location: 'path' | 'query'): Json[] {
  if (!object) return [];
  return Object.entries(object.shape).map(([name, schema]) => {
    const { description, ...rest } = inline(schema as z.ZodType);
    return { name, in: location, required: location === 'path' || !(schema as z.ZodType).safeParse(undefined).success, ...(description ? { description } : {}), schema: rest };
  });
}

const errorResponses = {
  BadRequest: [400, 'Invalid input: a wrong type, an unknown field, a control character, JSON nested deeper than the limit'],
  Unauthorized: [401, 'Missing, unknown or expired token'],
  Forbidden: [403, 'The token lacks the admin scope'],
  NotFound: [404, 'No such user, session, client or action'],
  Conflict: [409, 'Already exists'],
  PayloadTooLarge: [413, `The request body is larger than ${maxJsonBytes / 1024} KiB`],
  UnsupportedMediaType: [415, 'A request body that is not application/json'],
} as const;
const errorOf = Object.fromEntries(Object.entries(errorResponses).map(([name, [status]]) => [status, { $ref: `#/components/responses/${name}` }])) as Record<number, Json>;
const everyOperationErrors = [400, 401, 403, 413, 415];

function operationObject(id: string, operation: Operation): Json {
  const query = parametersOf(operation.query, 'query');
  return {
    operationId: id,
    summary: operation.summary,
    ...(query.length ? { parameters: query } : {}),
    ...(operation.body ? { requestBody: { required: operation.bodyRequired === true, content: { 'application/json': { schema: ref(operation.body) } } } } : {}),
    responses: {
      [operation.status]: {
        description: operation.status === 204 ? 'Done, no content' : 'Success',
        ...(operation.response ? { content: { 'application/json': { schema: ref(operation.response) } } } : {}),
      },
      ...Object.fromEntries([...everyOperationErrors, ...(operation.errors ?? [])].sort((a, b) => a - b).map((status) => [status, errorOf[status]])),
    },
  };
}

/** /users/:email → /users/{email} */
const templated = (path: string) => path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

function paths(): Record<string, Json> {
  const items: Record<string, Json> = {};
  for (const [id, operation] of Object.entries(operations) as [string, Operation][]) {
    const path = templated(operation.path);
    // Path parameters belong to the path item; its operations must agree on them.
    const parameters = parametersOf(operation.params, 'path');
    const item = (items[path] ??= parameters.length ? { parameters } : {});
    if (JSON.stringify(item.parameters ?? []) !== JSON.stringify(parameters)) throw new Error(`admin contract: the operations on ${path} declare different path parameters`);
    item[operation.method] = operationObject(id, operation);
  }
  return items;
}

// Built once, at start: a contract mistake (paths disagreeing on parameters, an unnamed schema) stops the process.
const pathItems = paths();

const rules = [
  `Request bodies are JSON (Content-Type application/json, UTF-8; anything else is 415), at most ${maxJsonBytes / 1024} KiB (413) and ${maxJsonDepth} levels of nesting (400).`,
  'Unknown body fields and unknown query parameters are refused (400 naming them), except in client registration, whose RFC 7591 metadata is open.',
  'Operations without a request body refuse one (400); keys/rotate takes an empty body.',
  'Every string of the input, nested ones and field names included, must be well-formed UTF-16 without control characters (400).',
  'Errors are JSON: {"error", "error_description"}.',
].join(' ');

export function openApiDocument(issuer: string) {
  return {
    openapi: '3.1.0',
    info: {
      title: 'idp admin API', version: '1',
      description: `Operator API of the identity provider: users, sessions, clients, keys, audit. The CLI (\`idp\`) offers the same commands. ${rules}`,
    },
    servers: [{ url: `${issuer}/admin/v1` }],
    security: [{ adminToken: [] }],
    paths: pathItems,
    components: {
      securitySchemes: {
        adminToken: {
          type: 'oauth2',
          description: `A client registered with scope "idp:admin" asks the token endpoint for resource ${issuer}/admin.`,
          flows: { clientCredentials: { tokenUrl: `${issuer}/token`, scopes: { 'idp:admin': 'administer this identity provider' } } },
        },
      },
      responses: Object.fromEntries(Object.entries(errorResponses).map(([name, [, description]]) => [name, { description, content: { 'application/json': { schema: { $ref: uri('Error') } } } }])),
      schemas: componentSchemas,
    },
  };
}
