/** The tracker of a deployment: Plane when PLANE_BASE_URL/PLANE_API_KEY/PLANE_WORKSPACE_SLUG are set, else none. */
import type { Db } from '../db/client.ts';
import type { Config } from '../runtime/config.ts';
import type { Logger } from '../runtime/logger.ts';
import { createPlaneTracker } from './plane.ts';
import type { PlaneTracker } from './plane.ts';
import { createPlaneRateBudget, PLANE_WINDOW_S } from './rate-budget.ts';

/**
 * With `db`, every request takes a slot of the fleet's budget for the key (rate-budget.ts); without
 * it (a one-off tool) requests go out unmetered.
 */
export function createTracker(config: Pick<Config, 'plane'>, opts: { db?: Db; log?: Logger; fetch?: typeof fetch } = {}): PlaneTracker | null {
  const api = config.plane.api;
  if (!api) return null;
  const s = config.plane.states;
  return createPlaneTracker({
    baseUrl: api.baseUrl,
    apiKey: api.apiKey,
    workspaceSlug: api.workspaceSlug,
    stateNames: { in_progress: s.in_progress, in_review: s.in_review, done: s.done, cancelled: s.cancelled, blocked: s.blocked },
    ...(opts.db ? { budget: createPlaneRateBudget(opts.db, api.apiKey, { limit: config.plane.rate.limit, reserve: config.plane.rate.outboxReserve, windowS: PLANE_WINDOW_S }) } : {}),
    ...(opts.log ? { log: opts.log } : {}),
    ...(opts.fetch ? { fetch: opts.fetch } : {}),
  });
}
