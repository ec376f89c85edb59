/**
 * Claims flat in the backlog (issue 18, docs/adr/0013):
 * - jobs.project_id: the task's project on the job row (backfilled from tasks; a task never
 *   changes project), so the claim counts running jobs per project and walks each project's
 *   queue without joining tasks first.
 * - jobs_queued_project: each project's queue in claim order (`run_after, id`), so the claim
 *   takes the head of every project that has a free slot with one index probe each: its cost
 *   follows the number of projects, not of queued jobs. It replaces jobs_queued (run_after, id):
 *   with both, the planner may walk the fleet-wide queue filtering on the project (estimating
 *   the first match near), which is the scan this migration removes.
 * - jobs_running_project: the running count per project, index-only.
 * - jobs.preferred_host: the host that ran the task's previous stage and holds its worktree;
 *   other hosts leave the job alone for ORCH_AFFINITY_WAIT_MS after it is due.
 * Plain CREATE INDEX and a full-table UPDATE (inside the migration's transaction): on a large
 * jobs table this blocks writes to it while it runs; run `orch migrate` before starting the fleet.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE jobs
      ADD COLUMN project_id bigint REFERENCES projects(id),
      ADD COLUMN preferred_host text;
    UPDATE jobs j SET project_id = t.project_id FROM tasks t WHERE t.id = j.task_id;
    ALTER TABLE jobs ALTER COLUMN project_id SET NOT NULL;
    CREATE INDEX jobs_queued_project ON jobs (project_id, run_after, id) WHERE status = 'queued';
    CREATE INDEX jobs_running_project ON jobs (project_id) WHERE status = 'running';
    DROP INDEX jobs_queued;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE INDEX jobs_queued ON jobs (run_after, id) WHERE status = 'queued';
    DROP INDEX IF EXISTS jobs_queued_project, jobs_running_project;
    ALTER TABLE jobs DROP COLUMN project_id, DROP COLUMN preferred_host;
  `.execute(db);
}
