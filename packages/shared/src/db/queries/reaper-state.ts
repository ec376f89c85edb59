/** The reaper's own tables: dead-owner streaks per job and each reaper's state and counters. */
import { sql } from 'kysely';
import type { DbOrTx } from '../client.ts';

export async function setStreak(db: DbOrTx, jobId: number, ticks: number): Promise<void> {
  await sql`
    INSERT INTO reaper_streaks (job_id, ticks, updated_at) VALUES (${jobId}, ${ticks}, now())
    ON CONFLICT (job_id) DO UPDATE SET ticks = excluded.ticks, updated_at = now()
  `.execute(db);
}

/** Forget streaks of jobs that are healthy again or no longer running. */
export async function clearStreaks(db: DbOrTx, keepJobIds: number[]): Promise<void> {
  let q = db.deleteFrom('reaper_streaks');
  if (keepJobIds.length) q = q.where('job_id', 'not in', keepJobIds);
  await q.execute();
}

export interface ReaperCounters {
  dead_owner: number;
  known_outcome: number;
  max_running: number;
  lease_reclaims: number;
  cancels_completed: number;
}

export async function saveReaperState(
  db: DbOrTx,
  s: { id: string; host: string; pid: number; isLeader: boolean; intervalS: number; add: ReaperCounters; error: string | null },
): Promise<void> {
  await sql`
    INSERT INTO reaper_state (id, host, pid, is_leader, last_tick_at, interval_s, reaped_dead_owner,
      reaped_known_outcome, reaped_max_running, lease_reclaims, cancels_completed, last_error, last_error_at, updated_at)
    VALUES (${s.id}, ${s.host}, ${s.pid}, ${s.isLeader}, now(), ${s.intervalS}, ${s.add.dead_owner}, ${s.add.known_outcome},
      ${s.add.max_running}, ${s.add.lease_reclaims}, ${s.add.cancels_completed}, ${s.error},
      CASE WHEN ${s.error}::text IS NULL THEN NULL ELSE now() END, now())
    ON CONFLICT (id) DO UPDATE SET
      is_leader = excluded.is_leader, last_tick_at = now(), interval_s = excluded.interval_s,
      reaped_dead_owner = reaper_state.reaped_dead_owner + excluded.reaped_dead_owner,
      reaped_known_outcome = reaper_state.reaped_known_outcome + excluded.reaped_known_outcome,
      reaped_max_running = reaper_state.reaped_max_running + excluded.reaped_max_running,
      lease_reclaims = reaper_state.lease_reclaims + excluded.lease_reclaims,
      cancels_completed = reaper_state.cancels_completed + excluded.cancels_completed,
      last_error = coalesce(excluded.last_error, reaper_state.last_error),
      last_error_at = coalesce(excluded.last_error_at, reaper_state.last_error_at),
      updated_at = now()
  `.execute(db);
}
