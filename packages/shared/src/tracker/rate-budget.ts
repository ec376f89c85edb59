/**
 * One Plane request budget per API key for the whole fleet, kept in Postgres (ADR 0008).
 *
 * Plane throttles per key with DRF's sliding window (apps/api/plane/api/rate_limit.py
 * `ApiKeyRateThrottle`: `rate = os.environ.get("API_KEY_RATE_LIMIT", "60/minute")`, key
 * `api_key:<key>`), so every process that holds the key — `orch reaper` on two hosts, `orch up`,
 * the api resolving a state name — spends from the same 60 a minute. Each request first takes a
 * slot here: the same sliding window, counted in the database (a little wider than Plane's, so a
 * request sent at the window's edge and received a moment later is still inside ours).
 *
 * Priority: the outbox (and the webhook's rare state-name lookup) may spend the whole window; the
 * poll may spend only up to `limit − reserve`, and nothing while a Plane outbox row is due. A 429
 * (only `Retry-After`; apps/api/plane/authentication/adapter/exception.py) pauses the key for the
 * whole fleet until then.
 */
import { createHash } from 'node:crypto';
import type { Db } from '../db/client.ts';
import { ensurePlaneRateBudget, pausePlaneRequests, takePlaneRequest, type PlaneCaller, type TakeAnswer } from '../db/queries/plane-rate-budget.ts';

export type { PlaneCaller };

export type TakeResult = { ok: true } | { ok: false; retryAt: Date; reason: 'paused' | 'exhausted' | 'outbox_first' };

export interface PlaneRateBudget {
  /** One request's slot, or when to ask again. Throws only when the database cannot be asked. */
  take(caller: PlaneCaller): Promise<TakeResult>;
  /** Plane answered 429: pause the key (fleet-wide) until `until`. */
  rateLimited(caller: PlaneCaller, until: Date): Promise<void>;
}

export interface RateBudgetLimits {
  /** requests per window Plane allows the key (API_KEY_RATE_LIMIT; 60/minute by default) */
  limit: number;
  /** of those, the ones only the outbox may spend */
  reserve: number;
  /** Plane's window (60 s) plus a margin for the time a request takes to arrive */
  windowS: number;
}

/** Plane's window is 60 s; ours is 2 s wider (a request is counted when sent, Plane counts it on arrival). */
export const PLANE_WINDOW_S = 62;
/** how long the poll waits for "outbox first" to clear before it gives up the pass (ms) */
const OUTBOX_FIRST_RETRY_MS = 1000;

export function planeKeyHash(apiKey: string): string {
  return createHash('sha256').update(apiKey, 'utf8').digest('hex');
}

/** How many of the window's slots `caller` may use. */
export function capFor(caller: PlaneCaller, l: Pick<RateBudgetLimits, 'limit' | 'reserve'>): number {
  return caller === 'poll' ? Math.max(0, l.limit - l.reserve) : l.limit;
}

/**
 * When a denied take can succeed: at the end of the pause; or when enough of the window's sends
 * have aged out to leave a slot under `cap`; or (outbox first) in a second. Pure.
 */
export function nextTakeAt(a: Pick<TakeAnswer, 'pausedUntil' | 'recent' | 'now' | 'outboxWaiting'>, cap: number, windowS: number, yieldToOutbox: boolean): TakeResult {
  const now = a.now.getTime();
  if (a.pausedUntil && a.pausedUntil.getTime() > now) return { ok: false, retryAt: a.pausedUntil, reason: 'paused' };
  if (a.recent.length >= cap) {
    // the (len − cap + 1)-th oldest send must leave the window
    const idx = a.recent.length - cap;
    const leaving = cap <= 0 ? now + windowS * 1000 : a.recent[idx]!.getTime() + windowS * 1000;
    return { ok: false, retryAt: new Date(Math.max(leaving, now + 1)), reason: 'exhausted' };
  }
  if (yieldToOutbox && a.outboxWaiting) return { ok: false, retryAt: new Date(now + OUTBOX_FIRST_RETRY_MS), reason: 'outbox_first' };
  return { ok: true };
}

export function createPlaneRateBudget(db: Db, apiKey: string, limits: RateBudgetLimits): PlaneRateBudget {
  const keyHash = planeKeyHash(apiKey);
  let ensured: Promise<void> | null = null;
  const ensure = () => (ensured ??= ensurePlaneRateBudget(db, keyHash).catch((err: unknown) => {
    ensured = null;
    throw err;
  }));

  async function take(caller: PlaneCaller): Promise<TakeResult> {
    await ensure();
    const cap = capFor(caller, limits);
    const yieldToOutbox = caller === 'poll';
    let a = await takePlaneRequest(db, { keyHash, caller, cap, windowS: limits.windowS, yieldToOutbox });
    if (!a.found) {
      ensured = null;
      await ensure();
      a = await takePlaneRequest(db, { keyHash, caller, cap, windowS: limits.windowS, yieldToOutbox });
    }
    if (a.taken) return { ok: true };
    const r = nextTakeAt(a, cap, limits.windowS, yieldToOutbox);
    // taken is false, so a "would be ok" answer means the row changed between: ask again shortly
    return r.ok ? { ok: false, retryAt: new Date(a.now.getTime() + 50), reason: 'exhausted' } : r;
  }

  return {
    take,
    async rateLimited(caller, until) {
      await ensure();
      await pausePlaneRequests(db, { keyHash, caller, until });
    },
  };
}

/** A budget that never says no (a client used without a database, e.g. in a one-off script). */
export const UNLIMITED_BUDGET: PlaneRateBudget = {
  take: async () => ({ ok: true }),
  rateLimited: async () => {},
};
