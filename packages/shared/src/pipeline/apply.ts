/**
 * Applying a decided transition inside the transaction that won the job flip: advance the
 * stage (through the serial gate), send back, retry, block — and the enqueue each implies.
 * Also the promotion of tasks waiting on the serial gate or on dependencies, which every
 * task reaching a terminal stage triggers in its own transaction.
 */
import type { DbOrTx } from '../db/client.ts';
import type { Job, Project, Task } from '../db/types.ts';
import { appendEvent } from '../db/queries/events.ts';
import { getProject, lockProject } from '../db/queries/projects.ts';
import {
  blockTask,
  clearWaiting,
  getTask,
  moveTaskStage,
  serialGateState,
  tasksReadyAfterDependencies,
  waitForSerialGate,
} from '../db/queries/tasks.ts';
import { sendDispatch, type Boss } from '../queue.ts';
import { nextStage, type Stage, type WorkStage } from '../stages.ts';
import type { Then } from './transitions.ts';
import { enqueueJob } from './enqueue.ts';
import { reportToTracker } from './report.ts';

export interface ApplyInput {
  job: Job;
  task: Task;
  project: Project;
  then: Then;
  actor: string;
}

export async function applyThen(tx: DbOrTx, boss: Boss, a: ApplyInput): Promise<void> {
  const { job, task, project, then, actor } = a;
  switch (then.kind) {
    case 'none':
      return;
    case 'retry':
      await enqueueJob(tx, boss, { taskId: task.id, stage: job.stage, attempt: then.attempt, delayS: then.delayS, preferredHost: job.host });
      await appendEvent(tx, {
        taskId: task.id,
        jobId: job.id,
        kind: 'retry_scheduled',
        actor,
        reason: job.reason,
        data: { stage: job.stage, attempt: then.attempt, delay_s: then.delayS },
      });
      return;
    case 'block':
      if (!(await blockTask(tx, task.id, job.stage, then.reason))) return skipped(tx, a, job.stage);
      await appendEvent(tx, { taskId: task.id, jobId: job.id, kind: 'blocked', actor, reason: then.reason });
      await reportToTracker(tx, task, project, { role: 'blocked', comment: blockedComment(task.id, job.stage, then.reason) });
      return;
    case 'send_back': {
      const moved = await moveTaskStage(tx, task.id, job.stage, then.to, { reviewRounds: then.reviewRounds });
      if (!moved) return skipped(tx, a, then.to);
      await enqueueJob(tx, boss, { taskId: task.id, stage: then.to, attempt: 1, preferredHost: job.host });
      await appendEvent(tx, {
        taskId: task.id,
        jobId: job.id,
        kind: 'sent_back',
        actor,
        reason: then.reason,
        data: { from: job.stage, to: then.to, review_round: then.reviewRounds, detail: job.detail ?? job.reason },
      });
      return;
    }
    case 'advance':
      await advance(tx, boss, a, then.to, then.reason);
      return;
  }
}

async function skipped(tx: DbOrTx, a: ApplyInput, to: string): Promise<void> {
  // The task is no longer in the job's stage: someone already moved it (idempotent re-drive).
  await appendEvent(tx, {
    taskId: a.task.id,
    jobId: a.job.id,
    kind: 'advance_skipped',
    actor: a.actor,
    reason: `task not in ${a.job.stage}`,
    data: { to },
  });
}

async function advance(tx: DbOrTx, boss: Boss, a: ApplyInput, to: Stage, reason: string): Promise<void> {
  const { job, task, project, actor } = a;
  if (job.stage === 'analysis' && project.serial) {
    await lockProject(tx, project.id);
    const gate = await serialGateState(tx, project.id);
    const mayEnter = gate.oldestLiveTaskId === task.id && gate.pastAnalysis.every((id) => id === task.id);
    if (!mayEnter) {
      await waitForSerialGate(tx, task.id);
      await appendEvent(tx, { taskId: task.id, jobId: job.id, kind: 'waiting', actor, reason: 'serial', data: { next: to } });
      return;
    }
  }
  const moved = await moveTaskStage(tx, task.id, job.stage, to);
  if (!moved) return skipped(tx, a, to);
  await appendEvent(tx, { taskId: task.id, jobId: job.id, kind: 'stage_changed', actor, reason, data: { from: job.stage, to } });
  if (to === 'done') {
    await reportToTracker(tx, task, project, { role: 'done', comment: `<p>orch: task done${moved.merged_sha ? `, merged as <code>${moved.merged_sha.slice(0, 12)}</code>` : ''}.</p>` });
    await onTaskTerminal(tx, boss, moved, actor);
    return;
  }
  if (to === 'review') await reportToTracker(tx, task, project, { role: 'in_review' });
  // the host that ran this stage holds the task's worktree: the next stage prefers it
  await enqueueJob(tx, boss, { taskId: task.id, stage: to as WorkStage, attempt: 1, preferredHost: job.host });
}

/** A task reached done or cancelled: open the gates it was holding (serial, dependencies). */
export async function onTaskTerminal(tx: DbOrTx, boss: Boss, task: Task, actor: string): Promise<void> {
  const project = await getProject(tx, task.project_id);
  if (project?.serial) await promoteSerial(tx, boss, project.id, actor);
  await promoteDependents(tx, boss, actor);
}

/** The oldest live task of a serial project may pass its gate once nobody else is past analysis. */
export async function promoteSerial(tx: DbOrTx, boss: Boss, projectId: number, actor: string): Promise<number | null> {
  const project = await lockProject(tx, projectId);
  if (!project) return null;
  const gate = await serialGateState(tx, projectId);
  if (gate.oldestLiveTaskId === null || gate.pastAnalysis.length > 0) return null;
  const task = await getTask(tx, gate.oldestLiveTaskId);
  if (!task || task.waiting_for !== 'serial' || task.stage !== 'analysis' || task.cancel_requested_at) return null;
  const to = nextStage('analysis', project);
  const moved = await moveTaskStage(tx, task.id, 'analysis', to);
  if (!moved) return null;
  await appendEvent(tx, { taskId: task.id, kind: 'stage_changed', actor, reason: 'serial_gate_opened', data: { from: 'analysis', to } });
  await enqueueJob(tx, boss, { taskId: task.id, stage: to as WorkStage, attempt: 1 });
  return task.id;
}

/** Tasks whose dependencies are now all terminal start their analysis. */
export async function promoteDependents(tx: DbOrTx, boss: Boss, actor: string): Promise<number[]> {
  const ready = await tasksReadyAfterDependencies(tx);
  const started: number[] = [];
  for (const id of ready) {
    if (!(await clearWaiting(tx, id, 'dependencies'))) continue;
    await appendEvent(tx, { taskId: id, kind: 'dependencies_met', actor });
    await enqueueJob(tx, boss, { taskId: id, stage: 'analysis', attempt: 1 });
    started.push(id);
  }
  return started;
}

/** Wake a worker for a slot that was just freed (same transaction as the flip). */
export async function slotFreed(tx: DbOrTx, boss: Boss, jobId: number): Promise<void> {
  await sendDispatch(boss, tx, { jobId, reason: 'slot_freed' });
}

/**
 * The Plane comment of a blocked task: the reason's first line as a sentence, the rest (a test
 * command's output, say) as preformatted text.
 */
function blockedComment(taskId: number, stage: string, reason: string): string {
  const [first = '', ...rest] = reason.split('\n');
  const more = rest.join('\n').trim();
  return (
    `<p>orch: task blocked in <b>${escapeHtml(stage)}</b>: ${escapeHtml(first)}</p>` +
    (more ? `<pre>${escapeHtml(more)}</pre>` : '') +
    `<p>Retry with <code>orch task retry ${taskId}</code>.</p>`
  );
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}
