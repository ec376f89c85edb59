/**
 * The merge lease: one merge per project at a time. The lock itself is a session-level
 * advisory lock held by the merging worker's connection (it dies with that session); the
 * `merge_leases` row says who holds it, for psql, `GET /queue` and the reaper's reclaim.
 */
import { sql } from 'kysely';
import type pg from 'pg';
import type { DbOrTx } from '../client.ts';

export function mergeLockKey(projectId: number): [number, number] {
  // two-int form: (namespace, project) so it never collides with the claim lock
  return [0x6d657267 /* 'merg' */, projectId];
}

export async function tryMergeLock(client: pg.PoolClient, projectId: number): Promise<boolean> {
  const [a, b] = mergeLockKey(projectId);
  const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [a, b]);
  return r.rows[0]?.ok === true;
}

export async function releaseMergeLock(client: pg.PoolClient, projectId: number): Promise<void> {
  const [a, b] = mergeLockKey(projectId);
  await client.query('SELECT pg_advisory_unlock($1, $2)', [a, b]);
}

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

export async function deleteLease(db: DbOrTx, projectId: number, backendPid: number): Promise<boolean> {
  const r = await db
    .deleteFrom('merge_leases')
    .where('project_id', '=', projectId)
    .where('backend_pid', '=', backendPid)
    .executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

export async function terminateBackend(db: DbOrTx, backendPid: number): Promise<boolean> {
  const r = await sql<{ ok: boolean }>`SELECT pg_terminate_backend(${backendPid}) AS ok`.execute(db);
  return r.rows[0]?.ok === true;
}
