/** The `tasks` protocol. Every stage change is a compare-and-set on the current stage. */
import { sql } from 'kysely';
import type { DbOrTx } from '../client.ts';
import type { Task } from '../types.ts';
import type { TaskStage } from '../../stages.ts';
import { assertTransition, branchName, tombstoneIssueId } from '../../stages.ts';
import { stageIsLive, stageIsTerminal } from './terminal.ts';

export async function insertTask(
  db: DbOrTx,
  t: { projectId: number; title: string; body: string; planeIssueId: string | null; waitingFor: Task['waiting_for'] },
): Promise<Task> {
  const row = await db
    .insertInto('tasks')
    .values({
      project_id: t.projectId,
      title: t.title,
      body: t.body,
      plane_issue_id: t.planeIssueId,
      waiting_for: t.waitingFor,
      branch: null,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return db
    .updateTable('tasks')
    .set({ branch: branchName(row.id, row.title) })
    .where('id', '=', row.id)
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function getTask(db: DbOrTx, id: number): Promise<Task | undefined> {
  return db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function lockTask(db: DbOrTx, id: number): Promise<Task | undefined> {
  return db.selectFrom('tasks').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
}

/** The live (not tombstoned) task of a Plane issue. */
export async function getLiveTaskByIssue(db: DbOrTx, planeIssueId: string): Promise<Task | undefined> {
  return db.selectFrom('tasks').selectAll().where('plane_issue_id', '=', planeIssueId).executeTakeFirst();
}

export async function listTasks(
  db: DbOrTx,
  f: { projectId?: number; stage?: TaskStage; limit?: number } = {},
): Promise<Task[]> {
  let q = db.selectFrom('tasks').selectAll();
  if (f.projectId !== undefined) q = q.where('project_id', '=', f.projectId);
  if (f.stage !== undefined) q = q.where('stage', '=', f.stage);
  return q.orderBy('id', 'desc').limit(f.limit ?? 200).execute();
}

/**
 * The one statement that moves a task along the stage graph: a compare-and-set on the current
 * stage, refused (IllegalTransitionError, nothing written) for an edge STAGE_TRANSITIONS lacks.
 * Returns the updated row, or null when the task was not in `from` (someone moved it first).
 * Cancel is not a transition: `markTaskCancelled` is its own statement.
 */
export async function moveTaskStage(
  db: DbOrTx,
  taskId: number,
  from: TaskStage,
  to: TaskStage,
  opts: { reviewRounds?: number } = {},
): Promise<Task | null> {
  assertTransition(from, to);
  const row = await db
    .updateTable('tasks')
    .set({
      stage: to,
      waiting_for: null,
      ...(opts.reviewRounds !== undefined ? { review_rounds: opts.reviewRounds } : {}),
      updated_at: sql`now()`,
    })
    .where('id', '=', taskId)
    .where('stage', '=', from)
    .returningAll()
    .executeTakeFirst();
  return row ?? null;
}

/** Attempts exhausted in `stage`: the task stays there, blocked, until an operator retries it. */
export async function blockTask(db: DbOrTx, taskId: number, stage: TaskStage, reason: string): Promise<Task | null> {
  const row = await db
    .updateTable('tasks')
    .set({ blocked_at: sql`now()`, blocked_reason: reason, updated_at: sql`now()` })
    .where('id', '=', taskId)
    .where('stage', '=', stage)
    .returningAll()
    .executeTakeFirst();
  return row ?? null;
}

/** The operator's retry: a blocked task of a live stage is unblocked (CAS on the stage). */
export async function unblockTask(db: DbOrTx, taskId: number, stage: TaskStage): Promise<Task | null> {
  const row = await db
    .updateTable('tasks')
    .set({ blocked_at: null, blocked_reason: null, updated_at: sql`now()` })
    .where('id', '=', taskId)
    .where('stage', '=', stage)
    .returningAll()
    .executeTakeFirst();
  return row ?? null;
}

/** A task that passed analysis but may not pass the serial gate yet waits in analysis. */
export async function waitForSerialGate(db: DbOrTx, taskId: number): Promise<Task | null> {
  const row = await db
    .updateTable('tasks')
    .set({ waiting_for: 'serial', updated_at: sql`now()` })
    .where('id', '=', taskId)
    .where('stage', '=', 'analysis')
    .returningAll()
    .executeTakeFirst();
  return row ?? null;
}

/** The task's pull request, once opened (any live stage; the same number again is a no-op). */
export async function setTaskPullRequest(db: DbOrTx, taskId: number, prNumber: number): Promise<boolean> {
  const row = await db
    .updateTable('tasks')
    .set({ pr_number: prNumber, updated_at: sql`now()` })
    .where('id', '=', taskId)
    .where(stageIsLive('stage'))
    .where(sql<boolean>`pr_number IS DISTINCT FROM ${prNumber}`)
    .returning('id')
    .executeTakeFirst();
  return row !== undefined;
}

/** A merge recorded for a task in the merge stage, once (the first sha wins). */
export async function recordMergedSha(db: DbOrTx, taskId: number, sha: string | null): Promise<boolean> {
  const row = await db
    .updateTable('tasks')
    .set({ merged_sha: sha, updated_at: sql`now()` })
    .where('id', '=', taskId)
    .where('stage', '=', 'merge')
    .where('merged_sha', 'is', null)
    .returning('id')
    .executeTakeFirst();
  return row !== undefined;
}

export async function addDependencies(db: DbOrTx, taskId: number, dependsOn: number[]): Promise<void> {
  if (dependsOn.length === 0) return;
  await db
    .insertInto('task_dependencies')
    .values(dependsOn.map((d) => ({ task_id: taskId, depends_on_task_id: d })))
    .onConflict((oc) => oc.doNothing())
    .execute();
}

/** Lock the dependency rows (FOR SHARE) and return the ones not terminal yet. */
export async function unfinishedDependencies(db: DbOrTx, ids: number[]): Promise<Array<{ id: number; stage: TaskStage }>> {
  if (ids.length === 0) return [];
  return db
    .selectFrom('tasks')
    .select(['id', 'stage'])
    .where('id', 'in', ids)
    .where(stageIsLive('stage'))
    .forShare()
    .execute();
}

export async function existingTaskIds(db: DbOrTx, ids: number[]): Promise<number[]> {
  if (ids.length === 0) return [];
  const rows = await db.selectFrom('tasks').select('id').where('id', 'in', ids).execute();
  return rows.map((r) => r.id);
}

/** Tasks waiting on dependencies whose dependencies are now all terminal. */
export async function tasksReadyAfterDependencies(db: DbOrTx, limit = 100): Promise<number[]> {
  const rows = await sql<{ id: number }>`
    SELECT t.id FROM tasks t
    WHERE t.waiting_for = 'dependencies' AND t.stage = 'analysis' AND t.cancel_requested_at IS NULL
      AND NOT EXISTS (
        SELECT 1 FROM task_dependencies d JOIN tasks dt ON dt.id = d.depends_on_task_id
        WHERE d.task_id = t.id AND ${stageIsLive('dt.stage')})
    ORDER BY t.id
    LIMIT ${limit}
  `.execute(db);
  return rows.rows.map((r) => r.id);
}

/**
 * Serial gate of a project (call with the project row locked): the task that may be past
 * analysis now — the oldest non-terminal task — and whether some other task already is.
 */
export async function serialGateState(
  db: DbOrTx,
  projectId: number,
): Promise<{ oldestLiveTaskId: number | null; pastAnalysis: number[] }> {
  const oldest = await db
    .selectFrom('tasks')
    .select('id')
    .where('project_id', '=', projectId)
    .where(stageIsLive('stage'))
    .orderBy('id')
    .limit(1)
    .executeTakeFirst();
  const past = await db
    .selectFrom('tasks')
    .select('id')
    .where('project_id', '=', projectId)
    .where(stageIsLive('stage'))
    .where('stage', '<>', 'analysis')
    .execute();
  return { oldestLiveTaskId: oldest?.id ?? null, pastAnalysis: past.map((r) => r.id) };
}

export async function projectsWithSerialWaiters(db: DbOrTx): Promise<number[]> {
  const rows = await db
    .selectFrom('tasks')
    .select('project_id')
    .distinct()
    .where('waiting_for', '=', 'serial')
    .where('stage', '=', 'analysis')
    .execute();
  return rows.map((r) => r.project_id);
}

/** Set the cancel request (idempotent: the first request's time is kept). */
export async function requestTaskCancel(db: DbOrTx, taskId: number, reason: string): Promise<Task | null> {
  const row = await db
    .updateTable('tasks')
    .set({
      cancel_requested_at: sql`coalesce(cancel_requested_at, now())`,
      cancel_reason: sql`coalesce(cancel_reason, ${reason})`,
      updated_at: sql`now()`,
    })
    .where('id', '=', taskId)
    .where(stageIsLive('stage'))
    .returningAll()
    .executeTakeFirst();
  return row ?? null;
}

/** Final step of a cancel: stage → cancelled, cancelled_at set, plane_issue_id tombstoned. */
export async function markTaskCancelled(db: DbOrTx, taskId: number): Promise<Task | null> {
  const task = await getTask(db, taskId);
  if (!task) return null;
  const row = await db
    .updateTable('tasks')
    .set({
      stage: 'cancelled',
      cancelled_at: sql`now()`,
      critical_started_at: null,
      waiting_for: null,
      plane_issue_id: task.plane_issue_id ? tombstoneIssueId(task.plane_issue_id, taskId) : null,
      updated_at: sql`now()`,
    })
    .where('id', '=', taskId)
    .where(stageIsLive('stage'))
    .where('cancel_requested_at', 'is not', null)
    .returningAll()
    .executeTakeFirst();
  return row ?? null;
}

/** Tasks with a cancel requested and not completed. */
export async function pendingCancels(db: DbOrTx): Promise<Task[]> {
  return db
    .selectFrom('tasks')
    .selectAll()
    .where('cancel_requested_at', 'is not', null)
    .where('cancelled_at', 'is', null)
    .where(stageIsLive('stage'))
    .orderBy('id')
    .execute();
}

/** Enter the critical window (merge call, deploy command) unless a cancel was requested. */
export async function enterCriticalWindow(db: DbOrTx, taskId: number): Promise<boolean> {
  const row = await db
    .updateTable('tasks')
    .set({ critical_started_at: sql`now()`, updated_at: sql`now()` })
    .where('id', '=', taskId)
    .where('cancel_requested_at', 'is', null)
    .where(stageIsLive('stage'))
    .returning('id')
    .executeTakeFirst();
  return row !== undefined;
}

/** Leave the critical window; the merge's sha, when the merge call merged, is recorded with it. */
export async function leaveCriticalWindow(db: DbOrTx, taskId: number, outcome: { mergedSha?: string | null } = {}): Promise<void> {
  await db
    .updateTable('tasks')
    .set({
      critical_started_at: null,
      ...(outcome.mergedSha !== undefined ? { merged_sha: sql<string | null>`coalesce(merged_sha, ${outcome.mergedSha})` } : {}),
      updated_at: sql`now()`,
    })
    .where('id', '=', taskId)
    .execute();
}

/** CAS: stop waiting on `kind` (only one caller wins; it enqueues). */
export async function clearWaiting(db: DbOrTx, taskId: number, kind: 'serial' | 'dependencies'): Promise<Task | null> {
  const row = await db
    .updateTable('tasks')
    .set({ waiting_for: null, updated_at: sql`now()` })
    .where('id', '=', taskId)
    .where('waiting_for', '=', kind)
    .where('stage', '=', 'analysis')
    .where('cancel_requested_at', 'is', null)
    .returningAll()
    .executeTakeFirst();
  return row ?? null;
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
  const rows = await db.selectFrom('tasks').select('id').where('id', 'in', ids).where(stageIsTerminal('stage')).execute();
  return rows.map((r) => r.id);
}

/** Finished tasks of the last day whose feature branch deletion was never recorded. */
export async function branchesToSweep(db: DbOrTx, limit = 20): Promise<Array<{ id: number; project_id: number; branch: string }>> {
  const r = await sql<{ id: number; project_id: number; branch: string }>`
    SELECT t.id, t.project_id, t.branch FROM tasks t
    WHERE ${stageIsTerminal('t.stage')} AND t.branch IS NOT NULL
      AND t.updated_at > now() - interval '1 day'
      AND NOT EXISTS (SELECT 1 FROM task_events e WHERE e.task_id = t.id AND e.kind IN ('branch_deleted', 'branch_delete_refused'))
    ORDER BY t.id
    LIMIT ${limit}
  `.execute(db);
  return r.rows;
}
