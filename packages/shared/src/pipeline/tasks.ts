/** Creating tasks and the operator's retry: each one transaction with the enqueue it implies. */
import { appendEvent } from '../db/queries/events.ts';
import { liveJobOfTask } from '../db/queries/jobs.ts';
import { getProject, getProjectBySlug } from '../db/queries/projects.ts';
import {
  addDependencies,
  existingTaskIds,
  insertTask,
  lockTask,
  unblockTask,
  unfinishedDependencies,
} from '../db/queries/tasks.ts';
import type { Task } from '../db/types.ts';
import { OrchError } from '../runtime/errors.ts';
import type { Services } from '../runtime/services.ts';
import { isTerminal, type WorkStage } from '../stages.ts';
import { enqueueJob } from './enqueue.ts';
import { reportToTracker } from './report.ts';

export interface NewTaskInput {
  project: string | number;
  title: string;
  body?: string;
  planeIssueId?: string | null;
  dependsOn?: number[];
}

export async function createTask(svc: Pick<Services, 'db' | 'boss'>, input: NewTaskInput, actor: string): Promise<Task> {
  const title = input.title.trim();
  if (!title) throw new OrchError('invalid_request', 'title must not be empty');
  if (title.length > 500) throw new OrchError('invalid_request', 'title must be at most 500 characters');
  // Postgres text cannot hold U+0000: bad input, not an internal error at the insert.
  if (title.includes('\u0000') || input.body?.includes('\u0000')) throw new OrchError('invalid_request', 'title and body must not contain NUL characters');
  const project =
    typeof input.project === 'number' ? await getProject(svc.db, input.project) : await getProjectBySlug(svc.db, input.project);
  if (!project) throw new OrchError('not_found', `unknown project: ${input.project}`);
  const deps = [...new Set(input.dependsOn ?? [])];
  const found = await existingTaskIds(svc.db, deps);
  const missing = deps.filter((d) => !found.includes(d));
  if (missing.length) throw new OrchError('invalid_request', `unknown dependency task(s): ${missing.join(', ')}`);

  return svc.db
    .transaction()
    .execute(async (tx) => {
    // FOR SHARE on the dependencies: a dependency turning terminal right now either committed
    // before (we see it terminal) or waits for us (and then promotes this task).
    const unfinished = await unfinishedDependencies(tx, deps);
    const task = await insertTask(tx, {
      projectId: project.id,
      title,
      body: input.body ?? '',
      planeIssueId: input.planeIssueId ?? null,
      waitingFor: unfinished.length ? 'dependencies' : null,
    });
    await addDependencies(tx, task.id, deps);
    await appendEvent(tx, {
      taskId: task.id,
      kind: 'created',
      actor,
      data: { project: project.slug, plane_issue_id: task.plane_issue_id, depends_on: deps, waiting_for: task.waiting_for },
    });
    if (!unfinished.length) await enqueueJob(tx, svc.boss, { taskId: task.id, stage: 'analysis', attempt: 1 });
    await reportToTracker(tx, task, project, { role: 'in_progress', comment: `<p>orch: picked up as task ${task.id} (branch <code>${task.branch}</code>).</p>` });
    return task;
  })
    .catch((err: { code?: string; constraint?: string }) => {
      // Two deliveries of one Plane issue racing: the unique plane_issue_id lets one through.
      if (err.code === '23505' && err.constraint === 'tasks_plane_issue_id_key')
        throw new OrchError('conflict', `a live task already exists for Plane issue ${input.planeIssueId}`);
      throw err;
    });
}

/**
 * The operator's deliberate way on for a blocked (or failed, job-less) task: a fresh job of its
 * current stage, attempt 1. Refused for terminal or cancelling tasks and while a job is live.
 */
export async function retryTask(svc: Pick<Services, 'db' | 'boss'>, taskId: number, actor: string, reason = 'operator_retry'): Promise<Task> {
  return svc.db.transaction().execute(async (tx) => {
    const task = await lockTask(tx, taskId);
    if (!task) throw new OrchError('not_found', `unknown task: ${taskId}`);
    if (isTerminal(task.stage)) throw new OrchError('conflict', `task ${taskId} is ${task.stage}`);
    if (task.cancel_requested_at) throw new OrchError('conflict', `task ${taskId} is being cancelled`);
    if (task.waiting_for) throw new OrchError('conflict', `task ${taskId} is waiting for ${task.waiting_for}`);
    const live = await liveJobOfTask(tx, taskId);
    if (live) throw new OrchError('conflict', `task ${taskId} already has a ${live.status} job (${live.id})`);
    const updated = (await unblockTask(tx, taskId, task.stage))!;
    await enqueueJob(tx, svc.boss, { taskId, stage: task.stage as WorkStage, attempt: 1 });
    await appendEvent(tx, { taskId, kind: 'retried', actor, reason, data: { stage: task.stage } });
    return updated;
  });
}
