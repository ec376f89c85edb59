/**
 * STOP: one declarative cancel. `requestCancel` records the wish (idempotent) and wakes the
 * fleet; `completeCancel` does what is left, step by idempotent step, and is called by whoever
 * sees a pending cancel — the owning worker after stopping its agent, any worker on NOTIFY,
 * the reaper on every tick — so a cancel interrupted by a crash completes on the next look.
 *
 * Steps: (1) cancel_requested_at + NOTIFY; (2) the owner stops the agent's process group;
 * (3) every queued/running job → cancelled (never requeued); (4) remote feature branch deleted
 * through the forge (never the base branch, never a force-push) and this host's worktree
 * removed; (5) task → cancelled, cancelled_at, plane_issue_id tombstoned. During a critical
 * window (merge call, deploy command) the cancel is deferred until the step's outcome is
 * recorded. This module is a leaf: it imports nothing of worker, reaper or api.
 */
import { sql } from 'kysely';
import { appendEvent } from './db/queries/events.ts';
import { cancelQueuedJobs, liveJobOfTask, lockLiveJobOfTask } from './db/queries/jobs.ts';
import { getProject } from './db/queries/projects.ts';
import { getLiveTaskByIssue, getTask, lockTask, markTaskCancelled, requestTaskCancel } from './db/queries/tasks.ts';
import { workerAlive } from './db/queries/workers.ts';
import type { Job, Task } from './db/types.ts';
import { OrchError } from './runtime/errors.ts';
import { removeTaskFiles } from './host/task-files.ts';
import { removeFeatureBranch } from './pipeline/branches.ts';
import { abortJob } from './pipeline/finalize.ts';
import { onTaskTerminal } from './pipeline/apply.ts';
import { reportToTracker } from './pipeline/report.ts';
import { CANCEL_CHANNEL } from './queue.ts';
import type { Services } from './runtime/services.ts';
import { isTerminal } from './stages.ts';

export type CancelRequestResult =
  | { status: 'requested'; task: Task }
  | { status: 'already_requested'; task: Task }
  | { status: 'already_cancelled'; task: Task }
  | { status: 'already_done'; task: Task };

/** Find a task by numeric id or by Plane issue id (live task of that issue). */
async function findTask(svc: Pick<Services, 'db'>, ref: string | number): Promise<Task | undefined> {
  if (typeof ref === 'number' || /^\d+$/.test(ref)) return getTask(svc.db, Number(ref));
  return getLiveTaskByIssue(svc.db, ref);
}

export async function requestCancel(
  svc: Pick<Services, 'db' | 'config'>,
  ref: string | number,
  actor: string,
  reason = 'stop',
): Promise<CancelRequestResult> {
  if (!svc.config.stop.enabled) throw new OrchError('stop_disabled', 'STOP is disabled (ORCH_STOP_STATUS_ENABLED=false)');
  const task = await findTask(svc, ref);
  if (!task) throw new OrchError('not_found', `unknown task: ${ref}`);
  if (isTerminal(task.stage)) return terminalAnswer(task);
  return svc.db.transaction().execute(async (tx) => {
    const before = (await lockTask(tx, task.id))!;
    if (isTerminal(before.stage)) return terminalAnswer(before);
    // A second STOP leaves the task exactly as it is (not even updated_at moves).
    if (before.cancel_requested_at) return { status: 'already_requested', task: before } as const;
    const after = (await requestTaskCancel(tx, task.id, reason))!;
    await appendEvent(tx, { taskId: task.id, kind: 'cancel_requested', actor, reason });
    await sql`SELECT pg_notify(${CANCEL_CHANNEL}, ${String(task.id)})`.execute(tx);
    return { status: 'requested', task: after } as const;
  });
}

function terminalAnswer(task: Task): CancelRequestResult {
  return task.stage === 'cancelled' ? { status: 'already_cancelled', task } : { status: 'already_done', task };
}

// ---------------------------------------------------------------------------------------------
// What is left to do: a pure function of the rows.

export interface CancelState {
  task: Pick<Task, 'stage' | 'cancel_requested_at' | 'critical_started_at'>;
  liveJob: Pick<Job, 'status' | 'worker_id'> | null;
  /** the live job's owner heartbeat is fresh (and not stopped) */
  ownerAlive: boolean;
  /** the caller is the worker that owns the live job and has already stopped its agent */
  callerOwnsJob: boolean;
}

export type CancelPlan =
  | { kind: 'noop' }
  | { kind: 'deferred' }
  | { kind: 'wait_owner' }
  | { kind: 'complete'; flipRunning: boolean };

export function planCancel(s: CancelState): CancelPlan {
  if (isTerminal(s.task.stage) || !s.task.cancel_requested_at) return { kind: 'noop' };
  if (s.task.critical_started_at) return { kind: 'deferred' };
  if (s.liveJob?.status === 'running') {
    if (s.callerOwnsJob || !s.ownerAlive) return { kind: 'complete', flipRunning: true };
    return { kind: 'wait_owner' };
  }
  return { kind: 'complete', flipRunning: false };
}

export type CancelOutcome = CancelPlan['kind'] | 'completed';

/**
 * Do what is left of a requested cancel. Idempotent; throws only on I/O errors (callers are
 * never-raise loops that log and look again on their next tick).
 */
export async function completeCancel(
  svc: Services,
  taskId: number,
  actor: string,
  opts: { ownerWorkerId?: string } = {},
): Promise<CancelOutcome> {
  const task = await getTask(svc.db, taskId);
  if (!task) return 'noop';
  const live = (await liveJobOfTask(svc.db, taskId)) ?? null;
  const ownerAlive = live?.status === 'running' && live.worker_id ? await workerAlive(svc.db, live.worker_id, svc.config.heartbeat.timeoutS) : false;
  const plan = planCancel({
    task,
    liveJob: live,
    ownerAlive,
    callerOwnsJob: live?.worker_id !== null && live?.worker_id === opts.ownerWorkerId,
  });
  if (plan.kind !== 'complete') return plan.kind;

  if (plan.flipRunning && live) await abortJob(svc, live.id, actor, { reason: 'cancel_requested' });

  const project = (await getProject(svc.db, task.project_id))!;
  // Recorded (branch_deleted / branch_delete_refused), so the reaper's branch sweep knows it is done.
  await removeFeatureBranch(svc, task, project, actor);
  await removeTaskFiles(svc.config.worktreeRoot, project.slug, taskId);

  return svc.db.transaction().execute(async (tx) => {
    const current = (await lockTask(tx, taskId))!;
    // Lock the live jobs too: a claim that picked the queued job before the cancel was requested
    // (claims do not lock the task) may still be in flight; a plain read would see `queued`, the
    // queued-job cancel below would then skip the row the claim turns `running`, and the task
    // would end cancelled under a running job. Locked, we wait for the claim and see it.
    const again = planCancel({ task: current, liveJob: (await lockLiveJobOfTask(tx, taskId)) ?? null, ownerAlive: true, callerOwnsJob: false });
    if (again.kind === 'complete' && again.flipRunning) return 'wait_owner' as const; // a job started meanwhile
    if (again.kind !== 'complete') return again.kind;
    const cancelledJobs = await cancelQueuedJobs(tx, taskId, 'cancel_requested');
    const done = await markTaskCancelled(tx, taskId);
    if (!done) return 'noop' as const;
    await appendEvent(tx, {
      taskId,
      kind: 'cancelled',
      actor,
      reason: task.cancel_reason,
      data: { queued_jobs_cancelled: cancelledJobs.map((j) => j.id), branch_deleted: task.branch, plane_issue_id: done.plane_issue_id },
    });
    await reportToTracker(tx, task, project, { role: 'cancelled', comment: '<p>orch: task cancelled (STOP). Artefacts are kept.</p>' });
    await onTaskTerminal(tx, svc.boss, done, actor);
    return 'completed' as const;
  });
}
