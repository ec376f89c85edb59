/**
 * Indexes for the queries that run on a timer (reaper ticks, worker sweeps) or once per job
 * (gates), so that their cost follows the live work instead of the history. Found by the soak:
 * with thousands of finished tasks, these were sequential scans repeated every second.
 * - artefacts_job: a gate reads the artefact its job produced (`getJobArtefact`).
 * - tasks_waiting: the serial-gate and dependency promotions look for waiting tasks.
 * - tasks_critical: the reaper looks for critical windows left open by a dead owner.
 * - tasks_terminal_branch + task_events_branch_closed: the branch sweep looks for finished
 *   tasks of the last day whose branch deletion was never recorded.
 * Plain CREATE INDEX (it runs inside the migration's transaction): on a large existing table it
 * blocks writes to that table while it builds; run `orch migrate` before starting the fleet.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE INDEX artefacts_job ON artefacts (job_id, name, id);
    CREATE INDEX tasks_waiting ON tasks (waiting_for, project_id, id) WHERE waiting_for IS NOT NULL;
    CREATE INDEX tasks_critical ON tasks (id) WHERE critical_started_at IS NOT NULL;
    CREATE INDEX tasks_terminal_branch ON tasks (updated_at) WHERE stage IN ('done', 'cancelled') AND branch IS NOT NULL;
    CREATE INDEX task_events_branch_closed ON task_events (task_id) WHERE kind IN ('branch_deleted', 'branch_delete_refused');
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP INDEX IF EXISTS artefacts_job, tasks_waiting, tasks_critical, tasks_terminal_branch, task_events_branch_closed;
  `.execute(db);
}
