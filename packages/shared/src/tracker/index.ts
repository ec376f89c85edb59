/** The tracker of a deployment: Plane when PLANE_BASE_URL/PLANE_API_KEY/PLANE_WORKSPACE_SLUG are set, else none. */
import type { Config } from '../config.ts';
import { createPlaneTracker } from './plane.ts';
import type { PlaneTracker } from './plane.ts';

export function createTracker(config: Pick<Config, 'plane' | 'planeStates'>, opts: { fetch?: typeof fetch } = {}): PlaneTracker | null {
  if (!config.plane) return null;
  const s = config.planeStates;
  return createPlaneTracker({
    baseUrl: config.plane.baseUrl,
    apiKey: config.plane.apiKey,
    workspaceSlug: config.plane.workspaceSlug,
    stateNames: { in_progress: s.in_progress, in_review: s.in_review, done: s.done, cancelled: s.cancelled, blocked: s.blocked },
    ...(opts.fetch ? { fetch: opts.fetch } : {}),
  });
}
