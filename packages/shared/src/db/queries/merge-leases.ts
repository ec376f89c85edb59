/**
 * The merge lease: one merge per project at a time. The lock is a session-level
 * advisory lock held by the merging worker's connection (advisory-locks.ts; it dies with that
 * session); the `merge_leases` row says who holds it, for psql, `GET /queue` and the reaper's
 * reclaim.
 */
import { sql } from 'kysely';
import type pg from 'pg';
import type { DbOrTx } from '../client.ts';
import { mergeLockKey } from './advisory-locks.ts';

export async function recordLease(
  client: pg.PoolClient,
  l: { projectId: number; jobId: number; workerId: string },
): Promise<void> {
  await client.query(
    `INSERT INTO merge_leases (project_id, job_id, worker_id, backend_pid, acquired_at)
     VALUES ($1, $2, $3, pg_backend_pid(), now())
     ON CONFLICT (project_id) DO UPDATE
       SET job_id = excluded.job_id, worker_id = excluded.worker_id,
           backend_pid = excluded.backend_pid, acquired_at = excluded.acquired_at`,
    [l.projectId, l.jobId, l.workerId],
  );
}

export async function clearLease(client: pg.PoolClient, projectId: number, jobId: number): Promise<void> {
  await client.query('DELETE FROM merge_leases WHERE project_id = $1 AND job_id = $2', [projectId, jobId]);
}

export interface LeaseView {
  project_id: number;
  project: string;
  job_id: number;
  worker_id: string | null;
  backend_pid: number;
  acquired_at: Date;
  age_s: number;
  holder_alive: boolean;
  lock_held: boolean;
}

/** Leases with whether their backend is still connected and still holds the lock. */
export async function listLeases(db: DbOrTx): Promise<LeaseView[]> {
  const r = await sql<LeaseView>`
    SELECT l.project_id, p.slug AS project, l.job_id, l.worker_id, l.backend_pid, l.acquired_at,
           round(extract(epoch FROM now() - l.acquired_at)::numeric, 3)::float8 AS age_s,
           EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.backend_pid) AS holder_alive,
           EXISTS (SELECT 1 FROM pg_locks k
                   WHERE k.locktype = 'advisory' AND k.granted AND k.pid = l.backend_pid
                     AND k.classid = ${mergeLockKey(0)[0]}::oid AND k.objid = l.project_id::oid
                     AND k.objsubid = 2) AS lock_held
    FROM merge_leases l JOIN projects p ON p.id = l.project_id
    ORDER BY l.acquired_at
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
