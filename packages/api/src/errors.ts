/** Every error is JSON `{ "error": { "code", "message" } }`; bad input is a 4xx, never a 5xx. */
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { OrchError } from '@orch/shared/runtime/errors';
import type { Logger } from '@orch/shared/runtime/logger';

export function errorBody(code: string, message: string) {
  return { error: { code, message } };
}

export function onError(log: Logger) {
  return (err: Error, c: Context) => {
    if (err instanceof OrchError) return c.json(errorBody(err.code, err.message), err.status as 400);
    if (err instanceof HTTPException) {
      const code = err.status === 413 ? 'payload_too_large' : err.status === 401 ? 'unauthorized' : 'invalid_request';
      return c.json(errorBody(code, err.message || code), err.status);
    }
    if (err instanceof SyntaxError) return c.json(errorBody('invalid_request', 'malformed JSON body'), 400);
    log.error({ err, path: c.req.path }, 'request failed');
    return c.json(errorBody('internal', 'internal error'), 500);
  };
}
