/** The tracker of a deployment: Plane when PLANE_BASE_URL/PLANE_API_KEY/PLANE_WORKSPACE_SLUG are set, else none. */
import type { Config } from '../runtime/config.ts';
import { createPlaneTracker } from './plane.ts';
import type { PlaneTracker } from './plane.ts';

export function createTracker(config: Pick<Config, 'plane'>, opts: { fetch?: typeof fetch } = {}): PlaneTracker | null {
  const api = config.plane.api;
  if (!api) return null;
  const s = config.plane.states;
  return createPlaneTracker({
    baseUrl: api.baseUrl,
    apiKey: api.apiKey,
    workspaceSlug: api.workspaceSlug,
    stateNames: { in_progress: s.in_progress, in_review: s.in_review, done: s.done, cancelled: s.cancelled, blocked: s.blocked },
    ...(opts.fetch ? { fetch: opts.fetch } : {}),
  });
}
