/**
 * What every step shares: the job's run dir (prompt file, artefact dir), the contract
 * environment, and running one step process (agent, test command, deploy command) in its own
 * process group with its exit recorded the moment it exits.
 */
import path from 'node:path';
import type { AgentAdapter } from '@orch/shared/agents/types';
import { recordAgentExit, startAgentRun } from '@orch/shared/db/queries/agent-runs';
import type { Job, Project } from '@orch/shared/db/types';
import { startGroupProcess, type ProcessExit } from '@orch/shared/host/process-group';
import { jobRunDir } from '@orch/shared/host/task-files';
import { childBaseEnv } from '@orch/shared/runtime/config';
import type { Logger } from '@orch/shared/runtime/logger';
import type { JobContext, RunningJob } from '../job-handle.ts';

export interface JobDirs {
  artefactDir: string;
  promptFile: string;
}

export function jobDirs(ctx: JobContext, project: Project, job: Job): JobDirs {
  const base = jobRunDir(ctx.svc.config.worktreeRoot, project.slug, job.task_id, job.id);
  return { artefactDir: path.join(base, 'artefacts'), promptFile: path.join(base, 'prompt.md') };
}

/** The agent contract's variables (§7), on top of the base environment and the agent's own. */
export function contractEnv(job: Job, dirs: JobDirs, extra: Record<string, string>): Record<string, string> {
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

export interface StepProcessSpec {
  agentName: string;
  file: string;
  args: string[];
  shell: boolean;
  cwd: string;
  env: Record<string, string>;
  parser: ReturnType<AgentAdapter['invocation']>['parser'];
  /** record an `agent_runs` row (agents and the deploy command; not the test command) */
  record: boolean;
}

/** Start a step process in its own group, record its run, wait for it, record its exit at once. */
export async function runStepProcess(ctx: JobContext, rj: RunningJob, spec: StepProcessSpec, log: Logger): Promise<ProcessExit & { tail: string }> {
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
