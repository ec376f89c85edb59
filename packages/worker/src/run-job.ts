/**
 * One claimed job, start to finish: worktree from the remote branch → the step (agent, merge or
 * deploy) → exit code recorded at once → push / PR / artefacts → finalize (claim-before-act).
 * A stop request (STOP, the reaper flipped the job, a budget, shutdown) can arrive at any
 * point; `checkpoint()` turns it into a `StepStopped` between steps, and the process group of a
 * running step is stopped through the same SIGTERM → grace → SIGKILL path.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { AgentAdapter } from '@orch/shared/agents/types';
import { childBaseEnv } from '@orch/shared/config';
import { completeCancel } from '@orch/shared/cancel';
import { recordAgentExit, startAgentRun } from '@orch/shared/db/queries/agent-runs';
import { insertArtefact, latestStageArtefact } from '@orch/shared/db/queries/artefacts';
import { appendEvent } from '@orch/shared/db/queries/events';
import { markTestStarted, setTestExitCode } from '@orch/shared/db/queries/jobs';
import { getProject } from '@orch/shared/db/queries/projects';
import { enterCriticalWindow, getTask, leaveCriticalWindow, updateTask } from '@orch/shared/db/queries/tasks';
import type { Job, Project, Task } from '@orch/shared/db/types';
import type { Forge } from '@orch/shared/forge/types';
import type { StepReport } from '@orch/shared/gates/index';
import { prepareWorktree, pushBranch, syncMirror, worktreePath, type ProjectRepo } from '@orch/shared/git';
import type { Logger } from '@orch/shared/logger';
import { abortJob, finalizeJob } from '@orch/shared/pipeline/finalize';
import { removeFeatureBranch } from '@orch/shared/pipeline/branches';
import { startGroupProcess, type GroupProcess, type ProcessExit } from '@orch/shared/process-group';
import { renderPrompt } from '@orch/shared/prompts';
import type { Services } from '@orch/shared/services';
import { AGENT_STAGES, isTerminal } from '@orch/shared/stages';
import { jobRunDir, removeTaskFiles } from '@orch/shared/task-files';
import { runMergeStep } from './merge-step.ts';

export type StopReason = 'cancel' | 'job_flipped' | 'agent_timeout' | 'budget_exceeded' | 'worker_shutdown';

export class StepStopped extends Error {
  readonly reason: StopReason;
  constructor(reason: StopReason) {
    super(`stopped: ${reason}`);
    this.reason = reason;
  }
}

/** The worker's handle on a running job: how the cancel watch and shutdown reach it. */
export class RunningJob {
  readonly job: Job;
  stopReason: StopReason | null = null;
  proc: GroupProcess | null = null;
  /** inside an irreversible step (merge call, deploy command): a cancel waits for it */
  critical = false;
  private readonly graceS: number;
  constructor(job: Job, graceS: number) {
    this.job = job;
    this.graceS = graceS;
  }
  /** Ask the job to stop; stops its process group now if one is running. */
  requestStop(reason: StopReason): Promise<void> {
    if (reason === 'cancel' && this.critical) return Promise.resolve();
    if (!this.stopReason) this.stopReason = reason;
    return this.proc ? this.proc.stop(this.graceS).then(() => undefined) : Promise.resolve();
  }
  checkpoint(): void {
    if (this.stopReason) throw new StepStopped(this.stopReason);
  }
}

export interface JobContext {
  svc: Services;
  agent: AgentAdapter;
  workerId: string;
  log: Logger;
}

interface StepResult {
  report?: StepReport;
  criticalStepRan?: boolean;
}

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
    const repo = await syncMirror(svc.config.worktreeRoot, project.slug, forge.remoteUrl);
    rj.checkpoint();
    let result: StepResult;
    if (AGENT_STAGES.has(job.stage)) result = await agentStep(ctx, rj, { task, project, forge, repo, log });
    else if (job.stage === 'merge') result = await mergeStep(ctx, rj, { task, project, forge, repo, log });
    else result = await deployStep(ctx, rj, { task, project, forge, repo, log });

    const outcome = await finalizeJob(svc, job.id, actor, result);
    log.info({ outcome: outcome.kind, verdict: outcome.kind === 'finalized' ? outcome.verdict : undefined }, 'job finalized');
    await afterJob(ctx, task.id, project, log);
  } catch (err) {
    if (err instanceof StepStopped) {
      await onStopped(ctx, rj, err.reason, log);
    } else {
      log.error({ err: (err as Error).message }, 'job failed with an error');
      await abortJob(svc, job.id, actor, { reason: 'worker_error', error: String((err as Error).message).slice(0, 2000) }).catch((e) =>
        log.error({ err: (e as Error).message }, 'could not fail the job'),
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
      await abortJob(svc, rj.job.id, actor, { reason });
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

interface StepInput {
  task: Task;
  project: Project;
  forge: Forge;
  repo: ProjectRepo;
  log: Logger;
}

function jobDirs(ctx: JobContext, project: Project, job: Job) {
  const base = jobRunDir(ctx.svc.config.worktreeRoot, project.slug, job.task_id, job.id);
  return { artefactDir: path.join(base, 'artefacts'), promptFile: path.join(base, 'prompt.md') };
}

/** Start a step process in its own group, record its run, wait for it, record its exit at once. */
async function runProcess(
  ctx: JobContext,
  rj: RunningJob,
  spec: { agentName: string; file: string; args: string[]; shell: boolean; cwd: string; env: Record<string, string>; parser: ReturnType<AgentAdapter['invocation']>['parser']; record: boolean },
  log: Logger,
): Promise<ProcessExit & { tail: string }> {
  const { svc } = ctx;
  const maxCost = svc.config.agent.maxCostUsd;
  const proc = startGroupProcess({
    file: spec.file,
    args: spec.args,
    shell: spec.shell,
    cwd: spec.cwd,
    env: spec.env,
    onStdoutLine: spec.parser
      ? (line) => {
          spec.parser!.onLine(line);
          const cost = spec.parser!.usage().costUsd;
          if (maxCost > 0 && cost !== null && cost > maxCost && !rj.stopReason) {
            log.warn({ cost, maxCost }, 'agent over budget; stopping it');
            void rj.requestStop('budget_exceeded');
          }
        }
      : undefined,
  });
  rj.proc = proc;
  const run = spec.record ? await startAgentRun(svc.db, { jobId: rj.job.id, agent: spec.agentName, host: svc.config.hostId, pid: proc.pid }) : null;
  // A stop that arrived while we were starting must still reach the process.
  if (rj.stopReason) void proc.stop(svc.config.stop.graceS);
  const timeout = setTimeout(() => {
    log.warn({ timeoutS: svc.config.agent.timeoutS }, 'step timed out; stopping it');
    void rj.requestStop('agent_timeout');
  }, svc.config.agent.timeoutS * 1000);
  const exit = await proc.exited;
  clearTimeout(timeout);
  rj.proc = null;
  const tail = proc.tail();
  if (run) {
    const usage = spec.parser?.usage();
    await recordAgentExit(svc.db, run.id, {
      exitCode: exit.exitCode ?? -1,
      signal: exit.signal,
      costUsd: usage?.costUsd ?? null,
      tokensIn: usage?.tokensIn ?? null,
      tokensOut: usage?.tokensOut ?? null,
      logTail: tail,
      error: usage?.error ?? (rj.stopReason ? `stopped: ${rj.stopReason}` : null),
    });
  }
  log.info({ exitCode: exit.exitCode, signal: exit.signal, pid: proc.pid }, `${spec.agentName} exited`);
  return { ...exit, tail };
}

function contractEnv(job: Job, dirs: { artefactDir: string; promptFile: string }, extra: Record<string, string>): Record<string, string> {
  return {
    ...childBaseEnv(),
    ...extra,
    ORCH_TASK_ID: String(job.task_id),
    ORCH_JOB_ID: String(job.id),
    ORCH_STAGE: job.stage,
    ORCH_ATTEMPT: String(job.attempt),
    ORCH_PROMPT_FILE: dirs.promptFile,
    ORCH_ARTEFACT_DIR: dirs.artefactDir,
  };
}

async function agentStep(ctx: JobContext, rj: RunningJob, s: StepInput): Promise<StepResult> {
  const { svc } = ctx;
  const { task, project, forge, repo, log } = s;
  const job = rj.job;
  const branch = task.branch!;
  const wt = worktreePath(svc.config.worktreeRoot, project.slug, task.id);
  await prepareWorktree(repo, wt, { branch, base: project.base_branch });
  rj.checkpoint();

  const dirs = jobDirs(ctx, project, job);
  await fs.rm(dirs.artefactDir, { recursive: true, force: true });
  await fs.mkdir(dirs.artefactDir, { recursive: true });
  const analysis = await latestStageArtefact(svc.db, task.id, 'analysis');
  const review = await latestStageArtefact(svc.db, task.id, 'review');
  const prompt = await renderPrompt(job.stage, {
    task_id: task.id,
    project: project.slug,
    title: task.title,
    body: task.body,
    attempt: job.attempt,
    branch,
    base: project.base_branch,
    artefact_dir: dirs.artefactDir,
    analysis: analysis?.content ?? '(none)',
    review_feedback: task.review_rounds > 0 && review ? `The last review asked for changes:\n${review.content}` : '',
    test_hint: project.test_command ? `The tests (\`${project.test_command}\`) must pass.` : '',
  });
  await fs.writeFile(dirs.promptFile, prompt);

  const inv = ctx.agent.invocation({ taskId: task.id, stage: job.stage, attempt: job.attempt, worktree: wt, promptFile: dirs.promptFile, artefactDir: dirs.artefactDir });
  const exit = await runProcess(
    ctx,
    rj,
    { agentName: ctx.agent.name, file: inv.file, args: inv.args, shell: inv.shell, cwd: wt, env: contractEnv(job, dirs, inv.env), parser: inv.parser, record: true },
    log,
  );
  rj.checkpoint();

  // Artefacts first: they are the gate's input and outlive everything else.
  for (const name of await fs.readdir(dirs.artefactDir).catch(() => [] as string[])) {
    if (!name.endsWith('.md')) continue;
    const content = await fs.readFile(path.join(dirs.artefactDir, name), 'utf8');
    await insertArtefact(svc.db, { taskId: task.id, jobId: job.id, stage: job.stage, name, content });
  }
  if (exit.exitCode !== 0) return {};

  if (job.stage === 'implementation' && project.test_command) {
    await markTestStarted(svc.db, job.id);
    const test = await runProcess(
      ctx,
      rj,
      { agentName: 'test', file: project.test_command, args: [], shell: true, cwd: wt, env: contractEnv(job, dirs, {}), parser: null, record: false },
      log,
    );
    rj.checkpoint();
    await setTestExitCode(svc.db, job.id, test.exitCode ?? -1);
    await insertArtefact(svc.db, { taskId: task.id, jobId: job.id, stage: job.stage, name: 'test.log', content: test.tail });
  }

  const sha = await pushBranch(wt, branch);
  await appendEvent(svc.db, { taskId: task.id, jobId: job.id, kind: 'branch_pushed', actor: `worker:${ctx.workerId}`, data: { branch, sha } });
  if (job.stage === 'implementation') {
    const pr = await forge.ensurePullRequest({ head: branch, base: project.base_branch, title: task.title, body: task.body, taskId: task.id });
    if (task.pr_number !== pr.number) await updateTask(svc.db, task.id, { pr_number: pr.number });
  }
  return {};
}

async function mergeStep(ctx: JobContext, rj: RunningJob, s: StepInput): Promise<StepResult> {
  return runMergeStep(ctx, rj, s);
}

async function deployStep(ctx: JobContext, rj: RunningJob, s: StepInput): Promise<StepResult> {
  const { svc } = ctx;
  const { task, project, repo, log } = s;
  const job = rj.job;
  const wt = worktreePath(svc.config.worktreeRoot, project.slug, task.id);
  await prepareWorktree(repo, wt, { branch: project.base_branch, base: project.base_branch, startAt: 'base', detach: true });
  rj.checkpoint();
  // The deploy command is irreversible: enter the critical window, or stop if a cancel came first.
  rj.critical = true;
  if (!(await enterCriticalWindow(svc.db, task.id))) {
    rj.critical = false;
    throw new StepStopped('cancel');
  }
  const dirs = jobDirs(ctx, project, job);
  await fs.mkdir(dirs.artefactDir, { recursive: true });
  try {
    await runProcess(
      ctx,
      rj,
      { agentName: 'deploy', file: project.deploy_command!, args: [], shell: true, cwd: wt, env: contractEnv(job, dirs, {}), parser: null, record: true },
      log,
    );
  } finally {
    await leaveCriticalWindow(svc.db, task.id);
    rj.critical = false;
  }
  return { criticalStepRan: true };
}
