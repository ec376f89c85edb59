/** What the reaper reads and the bookkeeping it keeps (its only write on jobs is the flip). */
import { sql } from 'kysely';
import type { DbOrTx } from '../client.ts';
import { mergeLockKey } from './merge-leases.ts';

export interface RunningJobRow {
  id: number;
  task_id: number;
  stage: string;
  worker_id: string | null;
  job_host: string | null;
  owner_host: string | null;
  owner_pid: number | null;
  owner_stopped: boolean;
  owner_hb_age_s: number | null;
  running_for_s: number;
  exit_age_s: number | null;
  agent_pid: number | null;
  streak: number;
}

export async function runningJobFacts(db: DbOrTx): Promise<RunningJobRow[]> {
  const r = await sql<RunningJobRow>`
    SELECT j.id, j.task_id, j.stage, j.worker_id, j.host AS job_host,
           w.host AS owner_host, w.pid AS owner_pid, (w.stopped_at IS NOT NULL) AS owner_stopped,
           extract(epoch FROM now() - w.heartbeat_at)::float8 AS owner_hb_age_s,
           extract(epoch FROM now() - j.started_at)::float8 AS running_for_s,
           -- outcome known: the agent exited and no test command is still running; the grace
           -- counts from the later of the two ends
           CASE WHEN r.exit_code IS NOT NULL AND (j.test_started_at IS NULL OR j.test_finished_at IS NOT NULL)
                THEN extract(epoch FROM now() - greatest(r.finished_at, j.test_finished_at))::float8 END AS exit_age_s,
           r.pid AS agent_pid,
           coalesce(s.ticks, 0) AS streak
    FROM jobs j
    LEFT JOIN workers w ON w.id = j.worker_id
    LEFT JOIN agent_runs r ON r.job_id = j.id
    LEFT JOIN reaper_streaks s ON s.job_id = j.id
    WHERE j.status = 'running'
    ORDER BY j.id
  `.execute(db);
  return r.rows;
}

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

/** Tasks stuck in a critical window whose step no longer runs (the owner died inside it). */
export async function orphanedCriticalWindows(db: DbOrTx): Promise<Array<{ id: number; project_id: number; pr_number: number | null }>> {
  const r = await sql<{ id: number; project_id: number; pr_number: number | null }>`
    SELECT t.id, t.project_id, t.pr_number FROM tasks t
    WHERE t.critical_started_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.task_id = t.id AND j.status = 'running')
  `.execute(db);
  return r.rows;
}

/** Terminal tasks among the given ids (the janitor's worktree check). */
export async function terminalTaskIds(db: DbOrTx, ids: number[]): Promise<number[]> {
  if (ids.length === 0) return [];
  const rows = await db.selectFrom('tasks').select('id').where('id', 'in', ids).where('stage', 'in', ['done', 'cancelled']).execute();
  return rows.map((r) => r.id);
}

/**
 * Of the given jobs (the job ids found in live processes' environments), those that are no
 * longer running, with the agent pid recorded for them on this host. Bounded by the live
 * processes, not by history.
 */
export async function agentPidsOfFinishedJobs(db: DbOrTx, host: string, jobIds: number[]): Promise<Array<{ job_id: number; pid: number }>> {
  if (jobIds.length === 0) return [];
  const r = await sql<{ job_id: number; pid: number }>`
    SELECT r.job_id, r.pid FROM agent_runs r JOIN jobs j ON j.id = r.job_id
    WHERE r.job_id = ANY(${jobIds}::bigint[]) AND r.host = ${host} AND r.pid IS NOT NULL AND j.status <> 'running'
  `.execute(db);
  return r.rows.map((row) => ({ job_id: Number(row.job_id), pid: Number(row.pid) }));
}

/** Finished tasks of the last day whose feature branch deletion was never recorded. */
export async function branchesToSweep(db: DbOrTx, limit = 20): Promise<Array<{ id: number; project_id: number; branch: string }>> {
  const r = await sql<{ id: number; project_id: number; branch: string }>`
    SELECT t.id, t.project_id, t.branch FROM tasks t
    WHERE t.stage IN ('done', 'cancelled') AND t.branch IS NOT NULL
      AND t.updated_at > now() - interval '1 day'
      AND NOT EXISTS (SELECT 1 FROM task_events e WHERE e.task_id = t.id AND e.kind IN ('branch_deleted', 'branch_delete_refused'))
    ORDER BY t.id
    LIMIT ${limit}
  `.execute(db);
  return r.rows;
}

/**
 * Reclaim one stale merge lease, atomically: the row is deleted only if it is still the lease
 * the reaper judged (same merge job and backend), and the holder's backend is
 * terminated only if that backend still holds this project's merge lock. A backend that no
 * longer holds the lock is a pooled connection doing other work (or about to): it is never
 * killed. Returns whether the lease row was removed and whether a backend was terminated.
 */
export async function reclaimLease(
  db: DbOrTx,
  l: { project_id: number; job_id: number; backend_pid: number },
): Promise<{ removed: boolean; terminated: boolean }> {
  const [classid] = mergeLockKey(l.project_id);
  const r = await sql<{ terminated: boolean | null }>`
    WITH gone AS (
      DELETE FROM merge_leases
      WHERE project_id = ${l.project_id} AND job_id = ${l.job_id} AND backend_pid = ${l.backend_pid}
      RETURNING project_id, backend_pid
    )
    SELECT (SELECT pg_terminate_backend(g.backend_pid)
            WHERE EXISTS (SELECT 1 FROM pg_locks k
                          WHERE k.locktype = 'advisory' AND k.granted AND k.pid = g.backend_pid
                            AND k.classid = ${classid}::oid AND k.objid = g.project_id::oid AND k.objsubid = 2)) AS terminated
    FROM gone g
  `.execute(db);
  const row = r.rows[0];
  return { removed: row !== undefined, terminated: row?.terminated === true };
}
