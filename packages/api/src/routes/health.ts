import { Hono } from 'hono';
import { pendingMigrations, pingDb } from '@orch/shared/db/migrate';
import { queueSnapshot } from '@orch/shared/db/queries/queue';
import type { ApiDeps } from '../deps.ts';
import { errorBody } from '../errors.ts';

export function healthRoutes(d: ApiDeps) {
  return new Hono()
    .get('/healthz', (c) => c.json({ ok: true }))
    .get('/readyz', async (c) => {
      try {
        await pingDb(d.db);
      } catch (err) {
        return c.json(errorBody('unavailable', `database unreachable: ${(err as Error).message}`), 503);
      }
      const pending = await pendingMigrations(d.db);
      if (pending.length) return c.json(errorBody('unavailable', `migrations pending: ${pending.join(', ')}`), 503);
      return c.json({ ok: true });
    })
    .get('/queue', async (c) =>
      c.json(
        await queueSnapshot(d.db, {
          reaperEnabled: d.config.reaper.enabled,
          reaperIntervalS: d.config.reaper.intervalS,
          stopEnabled: d.config.stop.enabled,
        }),
      ),
    );
}
