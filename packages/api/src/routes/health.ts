import { createRoute, z } from '@hono/zod-openapi';
import { pendingMigrations, pingDb } from '@orch/shared/db/migrate';
import { queueSnapshot } from '@orch/shared/db/queries/queue';
import type { ApiDeps } from '../deps.ts';
import { errorBody } from '../errors.ts';
import { errors, INTERNAL_ERROR, json, router } from '../router.ts';
import { QueueSchema } from '../schemas.ts';

const ok = z.strictObject({ ok: z.literal(true) });

const healthz = createRoute({ method: 'get', path: '/healthz', summary: 'Liveness', responses: { 200: json(ok, 'alive') } });

const readyz = createRoute({
  method: 'get',
  path: '/readyz',
  summary: 'Readiness: database reachable and migrations current',
  responses: { 200: json(ok, 'ready'), ...errors({ 503: 'database unreachable, or migrations pending' }) },
});

const queue = createRoute({
  method: 'get',
  path: '/queue',
  summary: 'Queue snapshot: jobs, workers, reaper, stop, merge',
  responses: { 200: json(QueueSchema, 'the snapshot'), ...errors(INTERNAL_ERROR) },
});

export function healthRoutes(d: ApiDeps) {
  return router()
    .openapi(healthz, (c) => c.json({ ok: true as const }, 200))
    .openapi(readyz, async (c) => {
      // A readiness probe answers 503, never 500: any failure to read the database is "not ready".
      let pending: string[];
      try {
        await pingDb(d.db);
        pending = await pendingMigrations(d.db);
      } catch (err) {
        return c.json(errorBody('unavailable', `database unreachable: ${(err as Error).message}`), 503);
      }
      if (pending.length) return c.json(errorBody('unavailable', `migrations pending: ${pending.join(', ')}`), 503);
      return c.json({ ok: true as const }, 200);
    })
    .openapi(queue, async (c) =>
      c.json(
        await queueSnapshot(d.db, {
          reaperEnabled: d.config.reaper.enabled,
          reaperIntervalS: d.config.reaper.intervalS,
          stopEnabled: d.config.stop.enabled,
        }),
        200,
      ),
    );
}
