/** The `jobs` protocol: insert queued, claim queued → running, flip running → terminal. */
import { sql } from 'kysely';
import type { DbOrTx } from '../client.ts';
import type { Job } from '../types.ts';
import { takeClaimLock } from './advisory-locks.ts';
import { stageIsLive } from './terminal.ts';
import type { JobStatus, WorkStage } from '../../stages.ts';
import type { FailureClass } from '../../pipeline/failures.ts';


export async function insertQueuedJob(
  db: DbOrTx,
  j: { taskId: number; stage: WorkStage; attempt: number; delayS?: number; preferredHost?: string | null },
): Promise<Job> {
  return db
    .insertInto('jobs')
    .values({
      task_id: j.taskId,
      project_id: sql<number>`(SELECT project_id FROM tasks WHERE id = ${j.taskId})`,
      stage: j.stage,
      attempt: j.attempt,
      run_after: sql<Date>`now() + make_interval(secs => ${j.delayS ?? 0})`,
      preferred_host: j.preferredHost ?? null,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function getJob(db: DbOrTx, id: number): Promise<Job | undefined> {
  return db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function listTaskJobs(db: DbOrTx, taskId: number): Promise<Job[]> {
  return db.selectFrom('jobs').selectAll().where('task_id', '=', taskId).orderBy('id').execute();
}

/** The task's latest finished job before `beforeJobId`: what a new job's prompt says about the last attempt. */
export async function previousFinishedJob(db: DbOrTx, taskId: number, beforeJobId: number): Promise<Job | undefined> {
  return db
    .selectFrom('jobs')
    .selectAll()
    .where('task_id', '=', taskId)
    .where('id', '<', beforeJobId)
    .where('finished_at', 'is not', null)
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
}

export async function liveJobOfTask(db: DbOrTx, taskId: number): Promise<Job | undefined> {
  return db
    .selectFrom('jobs')
    .selectAll()
    .where('task_id', '=', taskId)
    .where('status', 'in', ['queued', 'running'])
    .executeTakeFirst();
}

/**
 * The task's live job, row-locked (FOR UPDATE): waits for a claim in flight on it to commit or
 * roll back, and then sees the claim's outcome (`queued` turned `running`).
 */
export async function lockLiveJobOfTask(db: DbOrTx, taskId: number): Promise<Job | undefined> {
  const rows = await db
    .selectFrom('jobs')
    .selectAll()
    .where('task_id', '=', taskId)
    .where('status', 'in', ['queued', 'running'])
    .orderBy('id')
    .forUpdate()
    .execute();
  return rows.find((j) => j.status === 'running') ?? rows[0];
}

export interface Claimer {
  workerId: string;
  host: string;
  pid: number;
  maxConcurrency: number;
  /** ORCH_AFFINITY_WAIT_MS: a job preferring another host is left to it this long after it is due (0 or absent: no wait) */
  affinityWaitMs?: number;
}

/**
 * Claim the oldest claimable queued job (`queued → running`), stamping worker/host/pid, in one
 * statement. It runs in its own transaction after the fleet-wide claim lock, so its snapshot
 * sees every earlier claim and the fleet cap (`maxConcurrency`) and each project's
 * `max_concurrency` hold exactly under races (docs/adr/0013: the lock is held for the one
 * statement). Claimable: due, task not terminal and not being cancelled, caps not reached, and
 * either preferring no other host or due for longer than the affinity wait (database clock).
 *
 * Flat in the backlog: only projects with a free slot are looked at, and each one's queue is
 * entered at its head through `jobs_queued_project` (a LATERAL pick), so the cost follows the
 * number of projects, not of queued jobs. The oldest of those heads wins; a head row-locked by
 * someone else (a cancel in flight) is skipped.
 */
export async function claimNextJob(db: DbOrTx, c: Claimer): Promise<Job | null> {
  return db.transaction().execute(async (tx) => {
    await takeClaimLock(tx);
    const claimed = await sql<Job>`
      WITH heads AS (
        SELECT head.id
        FROM projects p
        CROSS JOIN LATERAL (
          SELECT j.id
          FROM jobs j
          JOIN tasks t ON t.id = j.task_id
          WHERE j.project_id = p.id
            AND j.status = 'queued'
            AND j.run_after <= now()
            AND ${stageIsLive('t.stage')}
            AND t.cancel_requested_at IS NULL
            AND (j.preferred_host IS NULL OR j.preferred_host = ${c.host}
                 OR j.run_after <= now() - make_interval(secs => ${(c.affinityWaitMs ?? 0) / 1000}))
          ORDER BY j.project_id, j.run_after, j.id -- jobs_queued_project's order: the head is its first entry
          LIMIT 1
        ) head
        WHERE (SELECT count(*) FROM jobs r WHERE r.project_id = p.id AND r.status = 'running') < p.max_concurrency
          AND (SELECT count(*) FROM jobs WHERE status = 'running') < ${c.maxConcurrency}
      ),
      pick AS (
        -- the heads by primary key: a join here may be planned as a hash join over all of jobs
        -- (projects is small and seldom analyzed, so its row estimate is a guess)
        SELECT j.id
        FROM jobs j
        WHERE j.id = ANY(ARRAY(SELECT id FROM heads))
          AND j.status = 'queued'
        ORDER BY j.run_after, j.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
      )
      UPDATE jobs
      SET status = 'running', worker_id = ${c.workerId}, host = ${c.host}, pid = ${c.pid}, started_at = now(), heartbeat_at = now()
      FROM pick
      WHERE jobs.id = pick.id AND jobs.status = 'queued'
      RETURNING jobs.*
    `.execute(tx);
    return claimed.rows[0] ?? null;
  });
}

export type TerminalJobStatus = Exclude<JobStatus, 'queued' | 'running'>;

/**
 * The one atomic terminal flip: `running → done|failed|cancelled` iff still running.
 * Returns the flipped row, or null when someone else flipped it first (the loser does nothing).
 */
export async function flipRunningJob(
  db: DbOrTx,
  jobId: number,
  to: TerminalJobStatus,
  f: { reason?: string | null; error?: string | null; exitCode?: number | null; outcome?: string | null; detail?: string | null; failureClass?: FailureClass | null } = {},
): Promise<Job | null> {
  const row = await db
    .updateTable('jobs')
    .set({
      status: to,
      finished_at: sql`now()`,
      reason: f.reason ?? null,
      error: f.error ?? null,
      exit_code: f.exitCode ?? null,
      outcome: f.outcome ?? null,
      detail: f.detail ?? null,
      failure_class: f.failureClass ?? null,
    })
    .where('id', '=', jobId)
    .where('status', '=', 'running')
    .returningAll()
    .executeTakeFirst();
  return row ?? null;
}

/** `queued → cancelled` for every queued job of a task (never requeued). */
export async function cancelQueuedJobs(db: DbOrTx, taskId: number, reason: string): Promise<Job[]> {
  return db
    .updateTable('jobs')
    .set({ status: 'cancelled', finished_at: sql`now()`, reason })
    .where('task_id', '=', taskId)
    .where('status', '=', 'queued')
    .returningAll()
    .execute();
}

export async function heartbeatJobs(db: DbOrTx, workerId: string, jobIds: number[]): Promise<void> {
  if (jobIds.length === 0) return;
  await db
    .updateTable('jobs')
    .set({ heartbeat_at: sql`now()` })
    .where('id', 'in', jobIds)
    .where('worker_id', '=', workerId)
    .where('status', '=', 'running')
    .execute();
}

/**
 * The project's test command is part of the step: while it runs the outcome is not known yet
 * (the reaper's Tier 2 waits), and its end restarts Tier 2's finalize grace.
 */
export async function markTestStarted(db: DbOrTx, jobId: number): Promise<void> {
  await db.updateTable('jobs').set({ test_started_at: sql`now()` }).where('id', '=', jobId).where('status', '=', 'running').execute();
}

export async function setTestExitCode(db: DbOrTx, jobId: number, code: number): Promise<void> {
  await db
    .updateTable('jobs')
    .set({ test_exit_code: code, test_finished_at: sql`now()` })
    .where('id', '=', jobId)
    .where('status', '=', 'running')
    .execute();
}

/** Status and cancel flag of the given jobs: what a worker's cancel watch polls. */
export async function watchJobs(
  db: DbOrTx,
  jobIds: number[],
): Promise<Array<{ id: number; status: JobStatus; cancel_requested: boolean }>> {
  if (jobIds.length === 0) return [];
  const rows = await db
    .selectFrom('jobs')
    .innerJoin('tasks', 'tasks.id', 'jobs.task_id')
    .select(['jobs.id', 'jobs.status', 'tasks.cancel_requested_at'])
    .where('jobs.id', 'in', jobIds)
    .execute();
  return rows.map((r) => ({ id: r.id, status: r.status, cancel_requested: r.cancel_requested_at !== null }));
}

export async function countJobsByStatus(db: DbOrTx): Promise<Record<JobStatus, number>> {
  const rows = await db.selectFrom('jobs').select(['status', sql<number>`count(*)::int`.as('n')]).groupBy('status').execute();
  const out: Record<JobStatus, number> = { queued: 0, running: 0, done: 0, failed: 0, cancelled: 0 };
  for (const r of rows) out[r.status] = r.n;
  return out;
}

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

/** Every running job with what liveness decisions need (ages computed by the database clock). */
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
