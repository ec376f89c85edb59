/** Parse a JSON body with a zod schema; any failure is a 400 with the first issue named. */
import type { Context } from 'hono';
import type { z } from 'zod';
import { OrchError } from '@orch/shared/runtime/errors';

export async function jsonBody<T extends z.ZodType>(c: Context, schema: T): Promise<z.output<T>> {
  let raw: unknown;
  try {
    raw = await c.req.json();
  } catch (err) {
    // only a parse error is the client's malformed JSON; anything else (the body limit) goes on
    if (err instanceof SyntaxError) throw new OrchError('invalid_request', 'body must be valid JSON');
    throw err;
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new OrchError('invalid_request', `${i.path.join('.') || 'body'}: ${i.message}`);
  }
  return r.data;
}

export function idParam(c: Context, name = 'id'): number {
  const v = c.req.param(name) ?? '';
  if (!/^\d{1,15}$/.test(v)) throw new OrchError('invalid_request', `${name} must be a positive integer`);
  return Number(v);
}
