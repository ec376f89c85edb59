/**
 * What every step shares: the job's run dir (prompt file, artefact dir), the contract
 * environment, and running one step process (agent, test command, deploy command) in its own
 * process group with its exit recorded the moment it exits. An agent's stdout lines feed a run
 * monitor (agents/monitor.ts: parser, budgets, stall); its verdict stops the process group
 * through the job handle, and its picture of the run (usage, cost, session, transcript, the
 * agent's failure classified) is what the exit records.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { createRunMonitor, type MonitorStop, type RunMonitor } from '@orch/shared/agents/monitor';
import type { AgentStreamParser, AgentUsage, RunOutput } from '@orch/shared/agents/types';
import { recordAgentExit, recordRunProgress, restartAgentRun, startAgentRun } from '@orch/shared/db/queries/agent-runs';
import type { AgentRun, Job, Project } from '@orch/shared/db/types';
import { isolateCommand, type StepFiles } from '@orch/shared/host/isolation';
import { startGroupProcess, type ProcessExit } from '@orch/shared/host/process-group';
import { jobRunDir } from '@orch/shared/host/task-files';
import { classifyAgentRun, stopFailure, type Failure } from '@orch/shared/pipeline/failures';
import { stepEnv } from '@orch/shared/runtime/config';
import type { Logger } from '@orch/shared/runtime/logger';
import type { JobContext, RunningJob, StopReason } from '../job-handle.ts';

export interface JobDirs {
  artefactDir: string;
  promptFile: string;
  /** the job's private HOME and TMPDIR (writable in the sandbox; nothing of the worker's) */
  home: string;
  tmp: string;
}

export function jobDirs(ctx: JobContext, project: Project, job: Job): JobDirs {
  const base = jobRunDir(ctx.svc.config.worktreeRoot, project.slug, job.task_id, job.id);
  return { artefactDir: path.join(base, 'artefacts'), promptFile: path.join(base, 'prompt.md'), home: path.join(base, 'home'), tmp: path.join(base, 'tmp') };
}

/** Create the job's run dirs (the artefact dir empty). */
export async function makeJobDirs(dirs: JobDirs): Promise<void> {
  await fs.rm(dirs.artefactDir, { recursive: true, force: true });
  for (const d of [dirs.artefactDir, dirs.home, dirs.tmp]) await fs.mkdir(d, { recursive: true });
}

/**
 * A step's environment: the allowlisted part of the worker's (runtime/config.ts `stepEnv`: PATH,
 * locale, what the agent's CLI needs, ORCH_AGENT_ENV_ALLOW), the job's own HOME and TMPDIR, the
 * agent's variables, and the agent contract's (§7).
 */
export function contractEnv(ctx: JobContext, job: Job, dirs: JobDirs, extra: Record<string, string>, passEnv: readonly string[] = []): Record<string, string> {
  const allow = [...passEnv, ...(ctx.svc.config.agent.sandbox.envAllow ?? [])];
  return {
    ...stepEnv(allow),
    HOME: dirs.home,
    TMPDIR: dirs.tmp,
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
  /** `agent`: an adapter's run (monitored, classified, recorded); `deploy`: recorded; `test`: neither */
  kind: 'agent' | 'deploy' | 'test';
  agentName: string;
  file: string;
  args: string[];
  shell: boolean;
  cwd: string;
  env: Record<string, string>;
  /** what the step may see and write (its repository is `cwd`) */
  files: StepFiles;
  /** run it in the sandbox (when this worker has one); false only for a project's unsandboxed deploy */
  sandboxed: boolean;
  parser: AgentStreamParser | null;
  /** the session this run continues (recorded on its row) */
  resumedSessionId?: string | null;
  /** the adapter's login hint, for an authentication failure's words */
  loginHint?: string;
  /** take over this job's run row (a resumed run that found its session gone) instead of starting one */
  run?: AgentRun | null;
  /**
   * checked when the process exits: true leaves the exit unrecorded and returns the row in
   * `keptRun`, for a fresh run to take it over (a resume whose session is gone)
   */
  keepRunIf?: (out: RunOutput) => boolean;
}

export interface StepProcessResult extends ProcessExit {
  tail: string;
  usage: AgentUsage | null;
  /** the agent's failure as classified at its exit (exit ≠ 0), or orch's stop */
  failure: Failure | null;
  /** set when `keepRunIf` held: the exit was not recorded, the row waits for its next process */
  keptRun: AgentRun | null;
}

/** How often transcripts of running agents are written (for `orch logs --follow` and the dashboard). */
const PROGRESS_FLUSH_MS = 3000;

const STOP_CAUSE: Partial<Record<StopReason, 'stalled' | 'agent_timeout' | 'budget_exceeded' | 'worker_shutdown'>> = {
  stalled: 'stalled',
  agent_timeout: 'agent_timeout',
  budget_exceeded: 'budget_exceeded',
  worker_shutdown: 'worker_shutdown',
};

/** Start a step process in its own group, record its run, wait for it, record its exit at once. */
export async function runStepProcess(ctx: JobContext, rj: RunningJob, spec: StepProcessSpec, log: Logger): Promise<StepProcessResult> {
  const { svc } = ctx;
  const cfg = svc.config.agent;
  const monitor: RunMonitor | null =
    spec.kind === 'agent' && spec.parser
      ? createRunMonitor(spec.parser, { maxCostUsd: cfg.maxCostUsd, maxTokens: cfg.maxTokens, stallS: cfg.stallS, prices: cfg.prices }, Date.now())
      : null;
  const onVerdict = (stop: MonitorStop | null) => {
    if (!stop || rj.stopReason) return;
    log.warn({ reason: stop.reason, detail: stop.detail }, `${spec.agentName}: ${stop.reason}; stopping it`);
    void rj.requestStop(stop.reason, stop.detail);
  };
  const cmd = isolateCommand(svc.config, ctx.isolation, { jobId: rj.job.id, file: spec.file, args: spec.args, shell: spec.shell, sandboxed: spec.sandboxed, env: spec.env, files: spec.files });
  const proc = startGroupProcess({
    file: cmd.file,
    args: cmd.args,
    cwd: spec.cwd,
    env: spec.env,
    sandboxed: cmd.sandboxed,
    onStdoutLine: monitor ? (line) => onVerdict(monitor.onLine(line, Date.now())) : undefined,
  });
  rj.proc = proc;
  let run: AgentRun | null = null;
  if (spec.run) {
    await restartAgentRun(svc.db, spec.run.id, proc.pid);
    run = spec.run;
  } else if (spec.kind !== 'test') {
    run = await startAgentRun(svc.db, { jobId: rj.job.id, agent: spec.agentName, host: svc.config.hostId, pid: proc.pid, resumedSessionId: spec.resumedSessionId });
  }
  // A stop that arrived while we were starting must still reach the process.
  if (rj.stopReason) void proc.stop(svc.config.stop.graceS);
  const timeout = setTimeout(() => {
    log.warn({ timeoutS: cfg.timeoutS }, 'step timed out; stopping it');
    void rj.requestStop('agent_timeout', `stopped after ${cfg.timeoutS} s (ORCH_AGENT_TIMEOUT_S=${cfg.timeoutS})`);
  }, cfg.timeoutS * 1000);
  // the stall watchdog, and the transcript written while the agent runs
  let lastFlushAt = Date.now();
  let flushed = -1;
  let flushing = false;
  const watch = monitor
    ? setInterval(
        () => {
          onVerdict(monitor.check(Date.now()));
          const entries = monitor.parser.transcript();
          const last = entries.at(-1)?.n ?? -1;
          if (run && last !== flushed && !flushing && Date.now() - lastFlushAt >= PROGRESS_FLUSH_MS) {
            flushing = true;
            lastFlushAt = Date.now();
            recordRunProgress(svc.db, run.id, { sessionId: monitor.usage().sessionId, transcript: entries })
              .then(() => (flushed = last))
              .catch((err: unknown) => log.warn({ err }, 'could not record the transcript so far'))
              .finally(() => (flushing = false));
          }
        },
        Math.min(1000, Math.max(100, (cfg.stallS * 1000) / 5)),
      )
    : null;
  const exit = await proc.exited;
  await cmd.release().catch((err: unknown) => log.warn({ err }, 'could not remove the step cgroups'));
  clearTimeout(timeout);
  if (watch) clearInterval(watch);
  rj.proc = null;
  const tail = proc.tail();
  const usage = monitor?.usage() ?? null;

  const out: RunOutput = { exitCode: exit.exitCode, usage, tail };
  if (run && spec.keepRunIf && !rj.stopReason && spec.keepRunIf(out)) {
    log.info({ exitCode: exit.exitCode }, `${spec.agentName}: its session is gone; the run is handed to a fresh start`);
    return { ...exit, tail, usage, failure: null, keptRun: run };
  }

  let failure: Failure | null = null;
  const cause = rj.stopReason ? STOP_CAUSE[rj.stopReason] : undefined;
  if (cause) failure = stopFailure(cause, rj.stopDetail);
  else if (spec.kind === 'agent' && !rj.stopReason && exit.exitCode !== 0) {
    failure = classifyAgentRun({
      agent: spec.agentName,
      exitCode: exit.exitCode,
      signal: exit.signal,
      errorCode: usage?.errorCode ?? null,
      error: usage?.error ?? null,
      lastMessage: usage?.result ?? null,
      tail,
      loginHint: spec.loginHint,
    });
  }
  if (run) {
    const cost = monitor?.cost() ?? null;
    const stopped = rj.stopReason ? `stopped: ${rj.stopReason}${rj.stopDetail ? ` — ${rj.stopDetail}` : ''}` : null;
    await recordAgentExit(svc.db, run.id, {
      exitCode: exit.exitCode ?? -1,
      signal: exit.signal,
      costUsd: cost?.usd ?? null,
      costSource: cost?.source ?? null,
      tokensIn: usage?.tokensIn ?? null,
      tokensOut: usage?.tokensOut ?? null,
      logTail: tail,
      error: failure && !cause ? failure.detail : (stopped ?? usage?.error ?? null),
      failureCode: failure?.code ?? null,
      failureClass: failure?.class ?? null,
      sessionId: usage?.sessionId ?? null,
      lastMessage: usage?.result ?? null,
      transcript: monitor?.parser.transcript() ?? [],
    });
  }
  log.info({ exitCode: exit.exitCode, signal: exit.signal, pid: proc.pid, failure: failure?.code }, `${spec.agentName} exited`);
  return { ...exit, tail, usage, failure, keptRun: null };
}
