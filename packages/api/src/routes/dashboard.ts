/**
 * `GET /`: the dashboard, one static page (inline CSS/JS, no build step) that polls `GET /queue`,
 * `GET /tasks` and `GET /tasks/:id`, and calls `POST /tasks/:id/stop`. The only thing the server
 * adds is whether the API wants a bearer token, so the page asks for it before the first STOP.
 */
import { readFileSync } from 'node:fs';
import { createRoute, z } from '@hono/zod-openapi';
import type { ApiDeps } from '../deps.ts';
import { router } from '../router.ts';

const PAGE = readFileSync(new URL('../dashboard/index.html', import.meta.url), 'utf8');

const dashboard = createRoute({
  method: 'get',
  path: '/',
  summary: 'Dashboard (HTML)',
  responses: { 200: { description: 'the dashboard page', content: { 'text/html': { schema: z.string() } } } },
});

export function dashboardRoutes(d: ApiDeps) {
  const page = PAGE.replace('"__ORCH_AUTH_REQUIRED__"', d.config.api.token ? 'true' : 'false');
  return router().openapi(dashboard, (c) => c.html(page, 200, { 'cache-control': 'no-store' }));
}
