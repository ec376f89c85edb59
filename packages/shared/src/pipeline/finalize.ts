/**
 * Claim-before-act finalization. Whoever finalizes a job (its worker, or the reaper's Tier 2)
 * evaluates the gate read-only, then flips the job with one atomic
 * `UPDATE jobs SET status = $terminal WHERE id = $1 AND status = 'running'`. Only the winner of
 * that flip advances the task and enqueues the next job, in the same transaction. A loser does
 * nothing else: no advance, no enqueue, no comment.
 */
import { flipRunningJob, getJob } from '../db/queries/jobs.ts';
import { getProject } from '../db/queries/projects.ts';
import { getTask, lockTask } from '../db/queries/tasks.ts';
import { appendEvent } from '../db/queries/events.ts';
import { evaluateGate, type StepReport } from '../gates/index.ts';
import type { Services } from '../runtime/services.ts';
import { isTerminal } from '../stages.ts';
import { applyThen, slotFreed } from './apply.ts';
import { reportJobFinished } from './forge-report.ts';
import { decideAfterAbort, decideAfterGate, type GateVerdict } from './transitions.ts';
import { stopFailure, type FailureClass, type StopCause } from './failures.ts';
import type { Job } from '../db/types.ts';

export type FinalizeOutcome =
  | { kind: 'finalized'; job: Job; verdict: GateVerdict }
  | { kind: 'lost' }
  | { kind: 'not_running' };

export async function finalizeJob(
  svc: Services,
  jobId: number,
  actor: string,
  opts: { report?: StepReport; criticalStepRan?: boolean } = {},
): Promise<FinalizeOutcome> {
  const job = await getJob(svc.db, jobId);
  if (!job || job.status !== 'running') return { kind: 'not_running' };
  const task = await getTask(svc.db, job.task_id);
  const project = task && (await getProject(svc.db, task.project_id));
  if (!task || !project) return { kind: 'not_running' };

  // 1. Read-only: the gate.
  const { verdict, step } = await evaluateGate({ svc, job, task, project, report: opts.report });
  // merge: the forge merged; deploy: the deploy command ran to its exit
  const criticalStepRan = opts.criticalStepRan ?? ((job.stage === 'merge' && task.merged_sha !== null) || (job.stage === 'deploy' && step.kind === 'exited'));

  // 2. Flip first; 3. only the winner acts, in the same transaction.
  return svc.db.transaction().execute(async (tx) => {
    const current = (await lockTask(tx, task.id))!;
    const decision = decideAfterGate({
      stage: job.stage,
      attempt: job.attempt,
      maxAttempts: svc.config.jobMaxAttempts,
      verdict,
      reviewRounds: current.review_rounds,
      maxReviewRounds: svc.config.maxReviewRounds,
      taskTerminal: isTerminal(current.stage),
      cancelRequested: current.cancel_requested_at !== null,
      criticalStepRan,
      hasDeployCommand: Boolean(project.deploy_command),
      backoffBaseS: svc.config.retryBackoffBaseS,
    });
    const failed = verdict.verdict !== 'pass' && decision.reason === verdict.reason;
    const flipped = await flipRunningJob(tx, job.id, decision.job, {
      reason: decision.reason,
      outcome: verdict.verdict,
      exitCode: step.kind === 'exited' ? step.exitCode : null,
      detail: failed ? (verdict.detail ?? null) : null,
      failureClass: failed && verdict.verdict === 'fail' ? (verdict.failure ?? 'agent') : null,
    });
    if (!flipped) return { kind: 'lost' } as const;
    await appendEvent(tx, {
      taskId: task.id,
      jobId: job.id,
      kind: `job_${decision.job}`,
      actor,
      reason: decision.reason,
      data: { stage: job.stage, attempt: job.attempt, verdict: verdict.verdict, then: decision.then.kind, ...(flipped.detail ? { detail: flipped.detail, class: flipped.failure_class } : {}) },
    });
    await applyThen(tx, svc.boss, { job: flipped, task: current, project, then: decision.then, actor });
    await reportJobFinished(tx, svc.config.api, { job: flipped, task: current, project, verdict });
    await slotFreed(tx, svc.boss, job.id);
    return { kind: 'finalized', job: flipped, verdict } as const;
  });
}

/**
 * A running job that will not reach its gate: dead owner (Tier 1), max running (Tier 3),
 * worker shutdown (requeued with the same attempt), a worker error, or stopped by a budget, a
 * stall or the timeout. Same flip, same requeue guards (never for a terminal or cancelling
 * task); the failure's class decides the retry, its words are the job's detail.
 */
export async function abortJob(
  svc: Services,
  jobId: number,
  actor: string,
  a: { reason: string; sameAttempt?: boolean; error?: string; detail?: string; failure?: FailureClass },
): Promise<{ kind: 'aborted'; job: Job } | { kind: 'lost' }> {
  const job = await getJob(svc.db, jobId);
  if (!job || job.status !== 'running') return { kind: 'lost' };
  return svc.db.transaction().execute(async (tx) => {
    const task = (await lockTask(tx, job.task_id))!;
    const project = (await getProject(tx, task.project_id))!;
    const cancelling = task.cancel_requested_at !== null;
    const stop = !cancelling && a.reason !== 'cancel_requested' && isStopCause(a.reason) ? stopFailure(a.reason, a.detail) : null;
    const failure = cancelling ? null : (a.failure ?? stop?.class ?? 'transient');
    const detail = cancelling ? null : (stop?.detail ?? a.detail ?? null);
    const flipped = await flipRunningJob(tx, job.id, cancelling ? 'cancelled' : 'failed', {
      reason: cancelling ? 'cancel_requested' : a.reason,
      error: a.error ?? null,
      detail,
      failureClass: failure,
    });
    if (!flipped) return { kind: 'lost' } as const;
    const then = decideAfterAbort({
      attempt: job.attempt,
      maxAttempts: svc.config.jobMaxAttempts,
      taskTerminal: isTerminal(task.stage),
      cancelRequested: cancelling,
      sameAttempt: a.sameAttempt ?? false,
      backoffBaseS: svc.config.retryBackoffBaseS,
      reason: a.reason,
      detail,
      failure: failure ?? undefined,
    });
    await appendEvent(tx, {
      taskId: task.id,
      jobId: job.id,
      kind: `job_${flipped.status}`,
      actor,
      reason: flipped.reason,
      data: { stage: job.stage, attempt: job.attempt, then: then.kind, ...(detail ? { detail, class: failure } : {}) },
    });
    await applyThen(tx, svc.boss, { job: flipped, task, project, then, actor });
    // a shutdown's requeue runs the same attempt again at once: its next start says "pending"
    if (!a.sameAttempt) await reportJobFinished(tx, svc.config.api, { job: flipped, task, project });
    await slotFreed(tx, svc.boss, job.id);
    return { kind: 'aborted', job: flipped } as const;
  });
}

const STOP_CAUSES: ReadonlySet<string> = new Set<StopCause>(['stalled', 'agent_timeout', 'budget_exceeded', 'dead_owner', 'max_running', 'worker_shutdown', 'worker_error']);
function isStopCause(reason: string): reason is StopCause {
  return STOP_CAUSES.has(reason);
}
