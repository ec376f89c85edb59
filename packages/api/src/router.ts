/**
 * How a route file declares its routes: `router()` is an OpenAPIHono whose request validation
 * fails like every other error (400 `{"error":{"code":"invalid_request","message"}}`, the first
 * issue named), and `json()` / `errors()` are the pieces a route describes its responses with.
 * A route is `createRoute({ method, path, request, responses })` plus its handler, in its file.
 */
import { OpenAPIHono, type z } from '@hono/zod-openapi';
import { errorBody } from './errors.ts';
import { ErrorSchema } from './schemas.ts';

type Issue = z.core.$ZodIssue;

/** `id: must be a positive integer`, `title: Too small …`, `body: Invalid input …` */
function describeIssue(target: string, issue: Issue): string {
  const where = issue.path.join('.') || (target === 'json' ? 'body' : target);
  return `${where}: ${issue.message}`;
}

export function router(): OpenAPIHono {
  return new OpenAPIHono({
    defaultHook: (result, c) => {
      if (!result.success) return c.json(errorBody('invalid_request', describeIssue(result.target, result.error.issues[0]!)), 400);
    },
  });
}

export function json<T extends z.ZodType>(schema: T, description: string) {
  return { description, content: { 'application/json': { schema } } };
}

/** The errors every route of a kind can answer, described once. */
export const AUTH_ERRORS = { 401: 'missing or invalid bearer token (only when ORCH_API_TOKEN is set)' } as const;
export const BODY_ERRORS = {
  400: 'invalid body (malformed JSON, or a field that does not validate)',
  413: 'body over ORCH_API_BODY_LIMIT_BYTES',
  415: 'Content-Type is not application/json',
} as const;
/** On every route that reads the database: it is logged; the body never carries the cause. */
export const INTERNAL_ERROR = { 500: 'internal error (logged)' } as const;

/** Error responses, each `{"error":{"code","message"}}`: `errors({ 404: 'unknown task' }, AUTH_ERRORS)`. */
export function errors<S extends number>(...described: Array<Partial<Record<S, string>>>) {
  const out = {} as Record<S, ReturnType<typeof json<typeof ErrorSchema>>>;
  for (const d of described)
    for (const [status, text] of Object.entries(d) as Array<[string, string]>) {
      const prev = out[Number(status) as S]?.description;
      out[Number(status) as S] = json(ErrorSchema, prev && prev !== text ? `${prev}; ${text}` : text);
    }
  return out;
}
