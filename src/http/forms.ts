// HTML form posts: one body parser for every screen, and field access that never throws.
import { bodyParser } from '@koa/bodyparser';
import type { Context, Middleware } from 'koa';

/** Parses urlencoded form bodies (16 KiB at most) for the screens' POST routes. */
export const formBody: Middleware = bodyParser({ enableTypes: ['form'], formLimit: '16kb', encoding: 'utf-8' }) as Middleware;

/** A posted field as a string cut to `max` characters; '' when absent or not a string. */
export function formField(ctx: Context, name: string, max = 4096): string {
  const value = (ctx.request.body as Record<string, unknown> | undefined)?.[name];
  return typeof value === 'string' ? value.slice(0, max) : '';
}

/** Every string field of a posted form, each cut to `max` characters (other values dropped). */
export function formFields(ctx: Context, max = 16_384): Record<string, string> {
  const body = ctx.request.body as Record<string, unknown> | undefined;
  const fields: Record<string, string> = {};
  for (const [name, value] of Object.entries(body ?? {})) if (typeof value === 'string') fields[name] = value.slice(0, max);
  return fields;
}
