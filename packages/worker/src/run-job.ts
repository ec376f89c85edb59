/**
 * One claimed job, start to finish: this host's mirror of the remote → the stage's step (agent,
 * merge or deploy, from `STAGE_STEPS`) → finalize (claim-before-act) → the task's files and
 * branch removed once it is finished. A stop request becomes a `StepStopped` (job-handle.ts) and
 * ends here according to its reason.
 */
import { completeCancel } from '@orch/shared/cancel';
import { getProject } from '@orch/shared/db/queries/projects';
import { getTask } from '@orch/shared/db/queries/tasks';
import type { Project } from '@orch/shared/db/types';
import { syncMirror } from '@orch/shared/host/git';
import { removeTaskFiles } from '@orch/shared/host/task-files';
import { removeFeatureBranch } from '@orch/shared/pipeline/branches';
import { reportJobStarted } from '@orch/shared/pipeline/forge-report';
import { abortJob, finalizeJob } from '@orch/shared/pipeline/finalize';
import type { Logger } from '@orch/shared/runtime/logger';
import { isTerminal, STAGE_STEPS, type StepKind } from '@orch/shared/stages';
import { StepStopped, type JobContext, type RunningJob, type Step, type StopReason } from './job-handle.ts';
import { agentStep } from './steps/agent.ts';
import { deployStep } from './steps/deploy.ts';
import { mergeStep } from './steps/merge.ts';

const STEPS: Readonly<Record<StepKind, Step>> = { agent: agentStep, merge: mergeStep, deploy: deployStep };

export async function runJob(ctx: JobContext, rj: RunningJob): Promise<void> {
  const { svc, workerId } = ctx;
  const job = rj.job;
  const actor = `worker:${workerId}`;
  const log = ctx.log.child({ jobId: job.id, taskId: job.task_id, stage: job.stage, attempt: job.attempt });
  log.info('job claimed');
  try {
    const task = (await getTask(svc.db, job.task_id))!;
    const project = (await getProject(svc.db, task.project_id))!;
    const forge = svc.forgeFor(project);
    await reportJobStarted(svc.db, svc.config.api, job, task, project);
    const repo = await syncMirror(svc.config.worktreeRoot, project.slug, forge.remoteUrl);
    rj.checkpoint();
    const result = await STEPS[STAGE_STEPS[job.stage]](ctx, rj, { task, project, forge, repo, log });

    const outcome = await finalizeJob(svc, job.id, actor, result);
    log.info({ outcome: outcome.kind, verdict: outcome.kind === 'finalized' ? outcome.verdict : undefined }, 'job finalized');
    await afterJob(ctx, task.id, project, log);
  } catch (err) {
    if (err instanceof StepStopped) {
      await onStopped(ctx, rj, err.reason, log);
    } else {
      log.error({ err }, 'job failed with an error');
      const message = String((err as Error).message).slice(0, 2000);
      await abortJob(svc, job.id, actor, { reason: 'worker_error', error: message, detail: message.slice(0, 500) }).catch((e) =>
        log.error({ err: e }, 'could not fail the job'),
      );
    }
  }
}

async function onStopped(ctx: JobContext, rj: RunningJob, reason: StopReason, log: Logger): Promise<void> {
  const { svc, workerId } = ctx;
  const actor = `worker:${workerId}`;
  log.info({ reason }, 'job stopped');
  switch (reason) {
    case 'cancel':
      await completeCancel(svc, rj.job.task_id, actor, { ownerWorkerId: workerId });
      return;
    case 'job_flipped':
      return; // the reaper (or a cancel) already owns the outcome
    case 'worker_shutdown':
      await abortJob(svc, rj.job.id, actor, { reason: 'worker_shutdown', sameAttempt: true });
      return;
    case 'agent_timeout':
    case 'budget_exceeded':
    case 'stalled':
      await abortJob(svc, rj.job.id, actor, { reason, detail: rj.stopDetail ?? undefined });
      return;
  }
}

/** After the finalize: a finished task leaves no worktree, run dir or feature branch behind. */
async function afterJob(ctx: JobContext, taskId: number, project: Project, log: Logger): Promise<void> {
  const task = await getTask(ctx.svc.db, taskId);
  if (!task) return;
  if (task.cancel_requested_at && task.stage !== 'cancelled') {
    await completeCancel(ctx.svc, taskId, `worker:${ctx.workerId}`, { ownerWorkerId: ctx.workerId });
    return;
  }
  if (!isTerminal(task.stage)) return;
  await removeTaskFiles(ctx.svc.config.worktreeRoot, project.slug, taskId);
  if (task.stage === 'done') {
    const r = await removeFeatureBranch(ctx.svc, task, project, `worker:${ctx.workerId}`);
    log.info({ branch: task.branch, result: r }, 'feature branch removed after done');
  }
}
