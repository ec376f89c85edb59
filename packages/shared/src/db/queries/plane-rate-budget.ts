/**
 * The fleet's Plane request budget, one row per API key (`key_hash` = sha256 of the key; the key
 * itself is never stored). `sent_at` holds the send times of the last window — the same sliding
 * window Plane's throttle keeps per key — so every process of every host counts the same requests.
 * Times are the database's (`clock_timestamp()`), never a host's.
 */
import { sql } from 'kysely';
import type { DbOrTx } from '../client.ts';
import { dueOutboxHeadExists } from './outbox.ts';

export type PlaneCaller = 'outbox' | 'poll' | 'intake';

export async function ensurePlaneRateBudget(db: DbOrTx, keyHash: string): Promise<void> {
  await db.insertInto('plane_rate_budget').values({ key_hash: keyHash }).onConflict((oc) => oc.column('key_hash').doNothing()).execute();
}

export interface TakeAnswer {
  /** false: no row for this key yet (call ensurePlaneRateBudget) */
  found: boolean;
  taken: boolean;
  pausedUntil: Date | null;
  /** send times inside the window, before this take, oldest first */
  recent: Date[];
  now: Date;
  /** some Plane outbox row is due and first in line */
  outboxWaiting: boolean;
}

/**
 * Take one request from the key's budget, in one statement: it succeeds iff the key is not paused,
 * fewer than `cap` requests were sent in the last `windowS` seconds and — when `yieldToOutbox` —
 * no Plane outbox row is due. The row is locked for the statement, so concurrent takers of all
 * processes see each other's requests.
 */
export async function takePlaneRequest(
  db: DbOrTx,
  t: { keyHash: string; caller: PlaneCaller; cap: number; windowS: number; yieldToOutbox: boolean },
): Promise<TakeAnswer> {
  const r = await sql<{ taken: boolean; paused_until: Date | null; recent: Date[]; now: Date; outbox_waiting: boolean }>`
    WITH cur AS (
      SELECT key_hash, paused_until,
             ARRAY(SELECT s FROM unnest(sent_at) AS s WHERE s > clock_timestamp() - make_interval(secs => ${t.windowS}) ORDER BY s) AS recent,
             ${dueOutboxHeadExists('plane')} AS outbox_waiting
      FROM plane_rate_budget WHERE key_hash = ${t.keyHash}
      FOR UPDATE
    ), upd AS (
      UPDATE plane_rate_budget b
      SET sent_at = cur.recent || clock_timestamp(),
          requests = jsonb_set(b.requests, ARRAY[${t.caller}::text], to_jsonb(coalesce((b.requests ->> ${t.caller}::text)::bigint, 0) + 1))
      FROM cur
      WHERE b.key_hash = cur.key_hash
        AND (cur.paused_until IS NULL OR cur.paused_until <= clock_timestamp())
        AND cardinality(cur.recent) < ${t.cap}
        AND NOT (${t.yieldToOutbox} AND cur.outbox_waiting)
      RETURNING 1
    )
    SELECT (SELECT count(*) FROM upd) > 0 AS taken, cur.paused_until, cur.recent, clock_timestamp() AS now, cur.outbox_waiting
    FROM cur
  `.execute(db);
  const row = r.rows[0];
  if (!row) return { found: false, taken: false, pausedUntil: null, recent: [], now: new Date(), outboxWaiting: false };
  return { found: true, taken: row.taken, pausedUntil: row.paused_until, recent: row.recent, now: row.now, outboxWaiting: row.outbox_waiting };
}

/** Plane answered 429: nobody of the fleet sends on this key before `until`; counted for `caller`. */
export async function pausePlaneRequests(db: DbOrTx, p: { keyHash: string; caller: PlaneCaller; until: Date }): Promise<void> {
  await sql`
    UPDATE plane_rate_budget
    SET paused_until = greatest(coalesce(paused_until, ${p.until}), ${p.until}),
        rate_limited = jsonb_set(rate_limited, ARRAY[${p.caller}::text], to_jsonb(coalesce((rate_limited ->> ${p.caller}::text)::bigint, 0) + 1))
    WHERE key_hash = ${p.keyHash}
  `.execute(db);
}

/** Requests sent and 429s received, by caller, summed over every key (for /metrics). */
export async function planeRequestTotals(db: DbOrTx): Promise<Array<{ caller: string; requests: number; rate_limited: number }>> {
  const r = await sql<{ caller: string; requests: number; rate_limited: number }>`
    SELECT c.caller,
           coalesce(sum((b.requests ->> c.caller)::bigint), 0)::float8 AS requests,
           coalesce(sum((b.rate_limited ->> c.caller)::bigint), 0)::float8 AS rate_limited
    FROM plane_rate_budget b
    CROSS JOIN LATERAL (SELECT jsonb_object_keys(b.requests || b.rate_limited) AS caller) c
    GROUP BY c.caller ORDER BY c.caller
  `.execute(db);
  return r.rows;
}
