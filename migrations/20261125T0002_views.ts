/**
 * Views for psql: what is running right now, and each task's timeline. Views, not tables:
 * they hold no state and always agree with the rows they read.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    -- Running jobs with their age, the job's and its worker's heartbeat age, and finished_age_s
    -- (seconds since the agent exited; NULL while it runs — Tier 2 acts past the finalize grace).
    CREATE VIEW v_running_jobs AS
    SELECT j.id AS job_id, j.task_id, p.slug AS project, t.title, j.stage, j.attempt,
           j.worker_id, coalesce(w.host, j.host) AS host, j.pid AS worker_pid, r.pid AS agent_pid,
           j.started_at,
           round(extract(epoch FROM now() - j.started_at)::numeric, 1)::float8 AS age_s,
           j.heartbeat_at,
           round(extract(epoch FROM now() - j.heartbeat_at)::numeric, 1)::float8 AS heartbeat_age_s,
           round(extract(epoch FROM now() - w.heartbeat_at)::numeric, 1)::float8 AS worker_heartbeat_age_s,
           CASE WHEN r.exit_code IS NOT NULL
                THEN round(extract(epoch FROM now() - r.finished_at)::numeric, 1)::float8 END AS finished_age_s,
           t.cancel_requested_at IS NOT NULL AS stop_requested
    FROM jobs j
    JOIN tasks t ON t.id = j.task_id
    JOIN projects p ON p.id = t.project_id
    LEFT JOIN workers w ON w.id = j.worker_id
    LEFT JOIN agent_runs r ON r.job_id = j.id
    WHERE j.status = 'running';

    -- One row per job of every task: stage, attempt, status, when, how long, what it cost.
    CREATE VIEW v_task_timeline AS
    SELECT j.task_id, t.title, t.stage AS task_stage, j.id AS job_id, j.stage, j.attempt, j.status,
           j.reason, j.run_after, j.started_at, j.finished_at,
           round(extract(epoch FROM coalesce(j.finished_at, CASE WHEN j.status = 'running' THEN now() END) - j.started_at)::numeric, 1)::float8 AS duration_s,
           round(extract(epoch FROM j.started_at - j.run_after)::numeric, 3)::float8 AS dispatch_s,
           coalesce(w.host, j.host) AS host, r.agent, r.exit_code, r.cost_usd, r.tokens_in, r.tokens_out
    FROM jobs j
    JOIN tasks t ON t.id = j.task_id
    LEFT JOIN workers w ON w.id = j.worker_id
    LEFT JOIN agent_runs r ON r.job_id = j.id;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP VIEW IF EXISTS v_task_timeline, v_running_jobs`.execute(db);
}
