// The one place where admin API input is checked against the contract (schemas.ts): path
// parameters, query parameters and the body of a request, before any handler sees them.
import type { Context } from 'koa';
import { z } from 'zod';
import { textIssue } from '../clients/service.ts';
import { NotFoundError, ValidationError } from '../errors.ts';
import { readJsonBody } from '../http/json-body.ts';
import type { Operation, OperationInput } from './schemas.ts';

type Issue = z.core.$ZodIssue;
type Where = 'params' | 'query' | 'body';
const noQuery = z.strictObject({});

/** A field path as callers write it: names joined with dots, list positions left out (see textIssue). */
const fieldOf = (path: readonly PropertyKey[]) => path.filter((p) => typeof p === 'string').join('.');

/**
 * Messages for zod's issues when the schema gave none: "must be a boolean (true or false)",
 * "is required". Per parse, so that zod's global configuration (used by config.ts) stays as it is.
 */
const errorMap: z.core.$ZodErrorMap = (issue) => {
  switch (issue.code) {
    case 'invalid_type': {
      if (issue.input === undefined) return 'is required';
      const expected: Record<string, string> = { string: 'a string', boolean: 'a boolean (true or false)', number: 'a number', int: 'an integer', array: 'a list', object: 'a JSON object', record: 'a JSON object' };
      return `must be ${expected[issue.expected] ?? issue.expected}`;
    }
    case 'too_big':
      return issue.origin === 'string' ? `must be a string of at most ${issue.maximum} characters` : `must have at most ${issue.maximum} items`;
    case 'too_small':
      return issue.origin === 'string' ? `must be at least ${issue.minimum} characters` : `must have at least ${issue.minimum} items`;
    case 'invalid_value':
      return `must be one of ${issue.values.map(String).join(', ')}`;
    default:
      return undefined;
  }
};

function describe(issue: Issue, where: Where): string {
  const field = fieldOf(issue.path);
  if (issue.code === 'unrecognized_keys') {
    const what = where === 'query' ? 'unknown query parameter' : 'unknown field';
    return issue.keys.map((key) => `${what} ${field ? `${field}.` : ''}${key.slice(0, 64)}`).join('; ');
  }
  return `${field || (where === 'body' ? 'the request body' : where)} ${issue.message}`;
}

function parse<S extends z.ZodType>(schema: S, value: unknown, where: Where): z.output<S> {
  const result = schema.safeParse(value, { error: errorMap });
  if (result.success) return result.data;
  // A path parameter outside its enumeration (an unknown action) names no resource.
  const [first] = result.error.issues;
  if (where === 'params' && first?.code === 'invalid_value') {
    const name = String(first.path[0]);
    throw new NotFoundError(`no ${name} ${String((value as Record<string, unknown>)[name]).slice(0, 40)}`);
  }
  // Each message once (roles [1, 2] has two identical issues), five at most.
  throw new ValidationError([...new Set(result.error.issues.map((issue) => describe(issue, where)))].slice(0, 5).join('; '));
}

/**
 * The text rules (well-formed UTF-16, no control characters) on every string of one part of the
 * input, keys and nested values included: one walk instead of a refinement on each string field,
 * so that no field (or attribute, or client metadata) can be left out. After the schema, which
 * has made the part an object.
 */
function checkText(value: unknown): void {
  const issue = textIssue(value);
  if (issue) throw new ValidationError(issue);
}

/**
 * The checked input of `operation` for this request, or a 4xx error (ValidationError 400,
 * NotFoundError 404, 413, 415) that the router turns into `{error, error_description}`.
 * Parameters come first: a bad address is refused before its body is read.
 */
export async function parseRequest<O extends Operation>(ctx: Context, operation: O): Promise<OperationInput<O>> {
  // The router has decoded the path parameters once already.
  const rawParams = { ...ctx.params } as Record<string, unknown>;
  const params = operation.params ? parse(operation.params, rawParams, 'params') : {};
  checkText(rawParams);
  const rawQuery = { ...ctx.query };
  const query = parse(operation.query ?? noQuery, rawQuery, 'query');
  checkText(rawQuery);

  const raw = await readJsonBody(ctx);
  let body: unknown;
  if (raw === undefined) {
    if (operation.body && operation.bodyRequired) throw new ValidationError('a JSON request body is required');
  } else {
    if (!operation.body) throw new ValidationError('this operation takes no request body');
    if (operation.bodyByKind && (typeof raw !== 'object' || raw === null || Array.isArray(raw))) throw new ValidationError('the request body must be a JSON object');
    body = operation.bodyByKind ? raw : parse(operation.body, raw, 'body');
    checkText(raw);
  }
  return { params, query, body } as OperationInput<O>;
}

/** Input the CLI read (standard input) under the same contract and text rules as an API body. */
export function parseBody<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  const parsed = parse(schema, value, 'body');
  checkText(value);
  return parsed;
}
