/**
 * `GET /`: the dashboard, one static page (inline CSS/JS, no build step) that polls `GET /queue`,
 * `GET /tasks` and `GET /tasks/:id`, and calls `POST /tasks/:id/stop`. The only thing the server
 * adds is whether the API wants a bearer token, so the page asks for it before the first STOP.
 */
import { readFileSync } from 'node:fs';
import { Hono } from 'hono';
import type { ApiDeps } from '../deps.ts';

const PAGE = readFileSync(new URL('../dashboard/index.html', import.meta.url), 'utf8');

export function dashboardRoutes(d: ApiDeps) {
  const page = PAGE.replace('"__ORCH_AUTH_REQUIRED__"', d.config.api.token ? 'true' : 'false');
  return new Hono().get('/', (c) => c.html(page, 200, { 'cache-control': 'no-store' }));
}
