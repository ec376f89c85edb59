/**
 * The reconciliation poll's two tables: `plane_poll_passes` (one pass per Plane project per
 * interval for the whole fleet, and how far back the next pass must list) and
 * `plane_issue_states` (the last state orch knows each issue was in, and as of which
 * `updated_at`, so the poll can tell a new move from an issue still sitting where it was).
 */
import { sql } from 'kysely';
import type { DbOrTx } from '../client.ts';
import type { PlaneIssueStateSource } from '../types.ts';

export interface PollClaim {
  /** newest `updated_at` seen on the first page of the last complete pass */
  watermark: Date | null;
  /** the last exhaustive complete pass, or null */
  fullAt: Date | null;
  /** seconds since `fullAt`, by the database's clock (null: never) */
  fullAgeS: number | null;
}

/**
 * Claim this interval's pass over a Plane project: wins iff nobody claimed it in the last
 * `minGapS` seconds (by the database's clock). Returns what the pass needs, or null.
 */
export async function claimPollPass(db: DbOrTx, c: { planeProjectId: string; who: string; minGapS: number }): Promise<PollClaim | null> {
  const r = await sql<{ watermark: Date | null; full_at: Date | null; full_age_s: number | null }>`
    INSERT INTO plane_poll_passes AS p (plane_project_id, claimed_at, claimed_by)
    VALUES (${c.planeProjectId}, now(), ${c.who})
    ON CONFLICT (plane_project_id) DO UPDATE SET claimed_at = now(), claimed_by = excluded.claimed_by
    WHERE p.claimed_at < now() - make_interval(secs => ${c.minGapS})
    RETURNING watermark, full_at, extract(epoch FROM now() - full_at)::float8 AS full_age_s
  `.execute(db);
  const row = r.rows[0];
  return row ? { watermark: row.watermark, fullAt: row.full_at, fullAgeS: row.full_age_s } : null;
}

/**
 * A pass ended. `complete`: every page it needed was read and every issue handled, so the
 * watermark may move (and `full_at` when it read every page); otherwise only the outcome is kept
 * and the next pass lists as far back as this one had to.
 */
export async function finishPollPass(
  db: DbOrTx,
  f: { planeProjectId: string; who: string; outcome: string; complete: boolean; exhaustive: boolean; newest: Date | null },
): Promise<void> {
  await sql`
    UPDATE plane_poll_passes SET
      last_outcome = ${f.outcome},
      completed_at = CASE WHEN ${f.complete} THEN now() ELSE completed_at END,
      watermark = CASE WHEN ${f.complete} AND ${f.newest}::timestamptz IS NOT NULL THEN greatest(coalesce(watermark, ${f.newest}::timestamptz), ${f.newest}::timestamptz) ELSE watermark END,
      full_at = CASE WHEN ${f.complete} AND ${f.exhaustive} THEN now() ELSE full_at END
    WHERE plane_project_id = ${f.planeProjectId} AND claimed_by = ${f.who}
  `.execute(db);
}

/** Remember the state an issue is in as of `stateAt` (a UTC instant); an older fact never wins. */
export async function noteIssueState(db: DbOrTx, n: { issueId: string; stateId: string; stateAt: string; source: PlaneIssueStateSource }): Promise<void> {
  await sql`
    INSERT INTO plane_issue_states AS s (issue_id, state_id, state_at, source)
    VALUES (${n.issueId}, ${n.stateId}, ${n.stateAt}::timestamptz, ${n.source})
    ON CONFLICT (issue_id) DO UPDATE SET state_id = excluded.state_id, state_at = excluded.state_at, source = excluded.source, noted_at = now()
    WHERE excluded.state_at >= s.state_at
  `.execute(db);
}

export async function lastIssueState(db: DbOrTx, issueId: string): Promise<{ state_id: string; state_at: string } | undefined> {
  const r = await sql<{ state_id: string; state_at: string }>`
    SELECT state_id, to_char(state_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS state_at
    FROM plane_issue_states WHERE issue_id = ${issueId}
  `.execute(db);
  return r.rows[0];
}
