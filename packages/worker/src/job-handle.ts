/**
 * The worker's handle on one claimed job and what every step receives. A stop request (STOP, the
 * reaper flipped the job, a budget, a stall, the timeout, shutdown) can arrive at any point;
 * `checkpoint()` turns it into a `StepStopped` between steps, and the process group of a running
 * step is stopped through the same SIGTERM → grace → SIGKILL path.
 */
import type { AgentAdapter } from '@orch/shared/agents/types';
import type { Job, Project, Task } from '@orch/shared/db/types';
import type { Forge } from '@orch/shared/forge/types';
import type { StepReport } from '@orch/shared/gates/index';
import type { ProjectRepo } from '@orch/shared/host/git';
import type { Isolation } from '@orch/shared/host/isolation';
import type { GroupProcess } from '@orch/shared/host/process-group';
import type { Logger } from '@orch/shared/runtime/logger';
import type { Services } from '@orch/shared/runtime/services';

export type StopReason = 'cancel' | 'job_flipped' | 'agent_timeout' | 'budget_exceeded' | 'stalled' | 'worker_shutdown';

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
  /** the stop in words, with its figure (the budget hit, the stall's length) */
  stopDetail: string | null = null;
  proc: GroupProcess | null = null;
  /** inside an irreversible step (merge call, deploy command): a cancel waits for it */
  critical = false;
  private readonly graceS: number;
  constructor(job: Job, graceS: number) {
    this.job = job;
    this.graceS = graceS;
  }
  /** Ask the job to stop; stops its process group now if one is running. */
  requestStop(reason: StopReason, detail?: string): Promise<void> {
    if (reason === 'cancel' && this.critical) return Promise.resolve();
    if (!this.stopReason) {
      this.stopReason = reason;
      this.stopDetail = detail ?? null;
    }
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
  /** this worker's sandbox and limits (found at start) */
  isolation: Isolation;
}

/** What a step works on: the job's task and project, the forge and this host's mirror. */
export interface StepInput {
  task: Task;
  project: Project;
  forge: Forge;
  repo: ProjectRepo;
  log: Logger;
}

/** What a step hands to the finalizer. */
export interface StepResult {
  report?: StepReport;
  criticalStepRan?: boolean;
}

/** A stage's step: agent, merge or deploy (see `STAGE_STEPS` in stages.ts). */
export type Step = (ctx: JobContext, rj: RunningJob, s: StepInput) => Promise<StepResult>;
