/** Bearer token on mutating routes when ORCH_API_TOKEN is set (timing-safe compare). */
import { timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import { errorBody } from './errors.ts';

export function bearerAuth(token: string | undefined): MiddlewareHandler {
  const expected = token ? Buffer.from(token) : null;
  return async (c, next) => {
    if (!expected || c.req.method === 'GET' || c.req.method === 'HEAD' || c.req.method === 'OPTIONS') return next();
    const header = c.req.header('authorization') ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(header);
    const given = m ? Buffer.from(m[1]!.trim()) : null;
    if (!given || given.length !== expected.length || !timingSafeEqual(given, expected))
      return c.json(errorBody('unauthorized', 'missing or invalid bearer token'), 401);
    return next();
  };
}
