/**
 * Failures a person can read, and what the next attempt and a resume need (docs/adr/0011):
 * - jobs.detail: the failure in words (the agent's own error, the gate's verdict with the test
 *   command's exit code and output tail, the budget or stall with its figure); jobs.reason stays
 *   the stable machine code. jobs.failure_class: config | transient | agent, which decided
 *   whether the job was retried.
 * - agent_runs: the CLI's session (session_id; resumed_session_id when the run continued one),
 *   the agent's last message, its failure classified at exit (failure_code, failure_class; its
 *   words stay in `error`), where cost_usd came from (cost_source: reported by the agent, or
 *   estimated from its token usage, at a fallback price for an unknown model), and the readable
 *   transcript (jsonb array of {n, at, kind, text}).
 * - v_task_timeline gains detail and failure_class (appended, so CREATE OR REPLACE keeps it).
 */
import { sql, type Kysely } from 'kysely';

const CLASSES = `('config','transient','agent')`;

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE jobs
      ADD COLUMN detail text,
      ADD COLUMN failure_class text CHECK (failure_class IN ${sql.raw(CLASSES)});
    ALTER TABLE agent_runs
      ADD COLUMN session_id text,
      ADD COLUMN resumed_session_id text,
      ADD COLUMN last_message text,
      ADD COLUMN failure_code text,
      ADD COLUMN failure_class text CHECK (failure_class IN ${sql.raw(CLASSES)}),
      ADD COLUMN cost_source text CHECK (cost_source IN ('reported','estimated','estimated_fallback')),
      ADD COLUMN transcript jsonb NOT NULL DEFAULT '[]'::jsonb;

    CREATE OR REPLACE VIEW v_task_timeline AS
    SELECT j.task_id, t.title, t.stage AS task_stage, j.id AS job_id, j.stage, j.attempt, j.status,
           j.reason, j.run_after, j.started_at, j.finished_at,
           round(extract(epoch FROM coalesce(j.finished_at, CASE WHEN j.status = 'running' THEN now() END) - j.started_at)::numeric, 1)::float8 AS duration_s,
           round(extract(epoch FROM j.started_at - j.run_after)::numeric, 3)::float8 AS dispatch_s,
           coalesce(w.host, j.host) AS host, r.agent, r.exit_code, r.cost_usd, r.tokens_in, r.tokens_out,
           j.detail, j.failure_class
    FROM jobs j
    JOIN tasks t ON t.id = j.task_id
    LEFT JOIN workers w ON w.id = j.worker_id
    LEFT JOIN agent_runs r ON r.job_id = j.id;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  // a view's columns cannot be dropped by CREATE OR REPLACE: recreate 0002's definition
  await sql`
    DROP VIEW v_task_timeline;
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
    ALTER TABLE agent_runs
      DROP COLUMN session_id,
      DROP COLUMN resumed_session_id,
      DROP COLUMN last_message,
      DROP COLUMN failure_code,
      DROP COLUMN failure_class,
      DROP COLUMN cost_source,
      DROP COLUMN transcript;
    ALTER TABLE jobs DROP COLUMN detail, DROP COLUMN failure_class;
  `.execute(db);
}
