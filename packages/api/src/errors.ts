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
    // hono/body-limit's stream error (its class is not exported): the body-limit middleware
    // answers 413 for it; nothing to log.
    if (err.name === 'BodyLimitError') return c.json(errorBody('payload_too_large', 'body over the limit'), 413);
    if (err instanceof HTTPException) {
      if (err.status === 415)
        return c.json(errorBody('unsupported_media_type', `Content-Type ${c.req.header('content-type') ?? '(none)'} is not supported: send application/json`), 415);
      const code = err.status === 413 ? 'payload_too_large' : err.status === 401 ? 'unauthorized' : 'invalid_request';
      return c.json(errorBody(code, err.message || code), err.status);
    }
    if (err instanceof SyntaxError) return c.json(errorBody('invalid_request', 'malformed JSON body'), 400);
    log.error({ err, path: c.req.path }, 'request failed');
    return c.json(errorBody('internal', 'internal error'), 500);
  };
}
