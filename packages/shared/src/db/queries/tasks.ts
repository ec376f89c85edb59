/** The `tasks` protocol. Every stage change is a compare-and-set on the current stage. */
import { sql } from 'kysely';
import type { DbOrTx } from '../client.ts';
import type { Task, TaskUpdate } from '../types.ts';
import type { TaskStage } from '../../stages.ts';
import { branchName, tombstoneIssueId } from '../../stages.ts';

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

/** CAS on the stage: returns the updated row or null when the task was not in `from`. */
export async function moveTaskStage(
  db: DbOrTx,
  taskId: number,
  from: TaskStage,
  to: TaskStage,
  extra: TaskUpdate = {},
): Promise<Task | null> {
  const row = await db
    .updateTable('tasks')
    .set({ ...extra, stage: to, updated_at: sql`now()` })
    .where('id', '=', taskId)
    .where('stage', '=', from)
    .returningAll()
    .executeTakeFirst();
  return row ?? null;
}

export async function updateTask(db: DbOrTx, taskId: number, set: TaskUpdate): Promise<Task | null> {
  const row = await db
    .updateTable('tasks')
    .set({ ...set, updated_at: sql`now()` })
    .where('id', '=', taskId)
    .returningAll()
    .executeTakeFirst();
  return row ?? null;
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
    .where('stage', 'not in', ['done', 'cancelled'])
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
        WHERE d.task_id = t.id AND dt.stage NOT IN ('done', 'cancelled'))
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
    .where('stage', 'not in', ['done', 'cancelled'])
    .orderBy('id')
    .limit(1)
    .executeTakeFirst();
  const past = await db
    .selectFrom('tasks')
    .select('id')
    .where('project_id', '=', projectId)
    .where('stage', 'not in', ['analysis', 'done', 'cancelled'])
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
    .where('stage', 'not in', ['done', 'cancelled'])
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
    .where('stage', '<>', 'cancelled')
    .where('stage', '<>', 'done')
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
    .where('stage', 'not in', ['done', 'cancelled'])
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
    .where('stage', 'not in', ['done', 'cancelled'])
    .returning('id')
    .executeTakeFirst();
  return row !== undefined;
}

export async function leaveCriticalWindow(db: DbOrTx, taskId: number, set: TaskUpdate = {}): Promise<void> {
  await db
    .updateTable('tasks')
    .set({ ...set, critical_started_at: null, updated_at: sql`now()` })
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
