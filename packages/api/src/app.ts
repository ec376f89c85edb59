/**
 * The HTTP API: intake only — verify, record, enqueue — plus what an operator reads: the dashboard
 * (`/`), Prometheus metrics (`/metrics`) and the API's own description (`/openapi.json`, `/docs`,
 * generated from the routes: see openapi.ts and router.ts).
 * `createApp(deps)` returns the Hono app as a value; tests call `app.request()` without a port.
 */
import { bodyLimit } from 'hono/body-limit';
import type { ApiDeps } from './deps.ts';
import { bearerAuth } from './auth.ts';
import { errorBody, onError } from './errors.ts';
import { describeApi } from './openapi.ts';
import { router } from './router.ts';
import { dashboardRoutes } from './routes/dashboard.ts';
import { docsRoutes } from './routes/docs.ts';
import { healthRoutes } from './routes/health.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { projectRoutes } from './routes/projects.ts';
import { taskRoutes } from './routes/tasks.ts';
import { webhookRoutes } from './routes/webhooks.ts';

export type { ApiDeps };

export function createApp(d: ApiDeps) {
  const app = router();
  app.onError(onError(d.log));
  app.notFound((c) => c.json(errorBody('not_found', `no route for ${c.req.method} ${c.req.path}`), 404));
  app.use(
    '*',
    bodyLimit({
      maxSize: d.config.api.bodyLimitBytes,
      onError: (c) => c.json(errorBody('payload_too_large', `body over ${d.config.api.bodyLimitBytes} bytes`), 413),
    }),
  );
  // The body is read here, once, under the limit: a route's validator then parses bytes in memory,
  // and a body over the limit is a 413 whoever reads it (a stream failing inside the validator's
  // JSON parse would otherwise be answered as malformed JSON).
  app.use('*', async (c, next) => {
    if (c.req.raw.body) await c.req.arrayBuffer();
    return next();
  });
  // The webhook is authenticated by its signature, everything else mutating by the bearer token.
  app.route('/webhooks', webhookRoutes(d));
  app.use('*', bearerAuth(d.config.api.token));
  app.route('/', healthRoutes(d));
  app.route('/', metricsRoutes(d));
  app.route('/', docsRoutes(describeApi(app)));
  app.route('/', dashboardRoutes(d));
  app.route('/projects', projectRoutes(d));
  app.route('/tasks', taskRoutes(d));
  return app;
}
