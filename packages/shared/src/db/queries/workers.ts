import { sql } from 'kysely';
import type { DbOrTx } from '../client.ts';

/** What a worker runs its steps with (host/isolation.ts makes it; stored as the row's jsonb). */
export interface WorkerIsolation {
  sandbox: 'bwrap' | 'none';
  network: 'on' | 'off';
  limits: string;
  warning: string | null;
}

export async function registerWorker(db: DbOrTx, w: { id: string; host: string; pid: number; slots: number; isolation?: WorkerIsolation }): Promise<void> {
  await db
    .insertInto('workers')
    .values({ id: w.id, host: w.host, pid: w.pid, slots: w.slots, isolation: w.isolation ? JSON.stringify(w.isolation) : null })
    .execute();
}

export async function heartbeatWorker(db: DbOrTx, id: string): Promise<void> {
  await db.updateTable('workers').set({ heartbeat_at: sql`now()` }).where('id', '=', id).execute();
}

export async function markWorkerStopped(db: DbOrTx, id: string): Promise<void> {
  await db.updateTable('workers').set({ stopped_at: sql`now()` }).where('id', '=', id).execute();
}

/**
 * Whether a worker is alive: registered, not stopped, and its heartbeat younger than `timeoutS`
 * by the database's clock (never the caller's: a host whose clock is off would judge wrongly).
 */
export async function workerAlive(db: DbOrTx, id: string, timeoutS: number): Promise<boolean> {
  const r = await sql<{ alive: boolean }>`
    SELECT stopped_at IS NULL AND now() - heartbeat_at < make_interval(secs => ${timeoutS}) AS alive
    FROM workers WHERE id = ${id}
  `.execute(db);
  return r.rows[0]?.alive === true;
}

export interface WorkerView {
  id: string;
  host: string;
  pid: number;
  heartbeat_at: Date;
  heartbeat_age_s: number;
  running: number;
  /** null for a worker of an orch before the sandbox */
  isolation: WorkerIsolation | null;
}

/** Workers not stopped, or stopped but still owning running jobs. */
export async function listActiveWorkers(db: DbOrTx): Promise<WorkerView[]> {
  const r = await sql<WorkerView>`
    SELECT w.id, w.host, w.pid, w.heartbeat_at, w.isolation,
           round(extract(epoch FROM now() - w.heartbeat_at)::numeric, 3)::float8 AS heartbeat_age_s,
           (SELECT count(*)::int FROM jobs j WHERE j.worker_id = w.id AND j.status = 'running') AS running
    FROM workers w
    WHERE w.stopped_at IS NULL
       OR EXISTS (SELECT 1 FROM jobs j WHERE j.worker_id = w.id AND j.status = 'running')
    ORDER BY w.started_at
  `.execute(db);
  return r.rows;
}
