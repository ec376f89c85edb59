/**
 * QG_CHECKS: after a step, the stage's gate — not the exit code — decides whether the task
 * advances. Gates only read: Postgres (artefacts, runs, recorded test result), the remote
 * repository (through this host's mirror) and the forge. The worker and the reaper evaluate
 * the same gate, so a job finalized by either ends the same way.
 */
import type { AgentRun, Job, Project, Task } from '../db/types.ts';
import { getJobArtefact } from '../db/queries/artefacts.ts';
import { getJobRun } from '../db/queries/agent-runs.ts';
import { commitsAhead, syncMirror } from '../host/git.ts';
import type { Services } from '../runtime/services.ts';
import type { WorkStage } from '../stages.ts';
import type { GateVerdict } from '../pipeline/transitions.ts';
import { analysisVerdict, exitVerdict, implementationVerdict, reviewVerdict } from './verdicts.ts';

/** What the worker saw during the step and cannot be re-read later (e.g. a merge conflict). */
export interface StepReport {
  mergeConflict?: string;
  /** the forge refused the merge for good (e.g. `push_rejected: …`): the gate fails with it */
  mergeRefused?: string;
}

export interface GateContext {
  svc: Services;
  job: Job;
  task: Task;
  project: Project;
  report?: StepReport;
}

type Check = (ctx: GateContext, run: AgentRun | undefined) => Promise<GateVerdict>;

const QG_CHECKS: Readonly<Record<WorkStage, Check>> = {
  async analysis(ctx, run) {
    const exit = exitVerdict(run?.exit_code);
    if (exit) return exit;
    const a = await getJobArtefact(ctx.svc.db, ctx.job.id, 'analysis.md');
    return analysisVerdict(a?.content);
  },

  async implementation(ctx, run) {
    const exit = exitVerdict(run?.exit_code);
    if (exit) return exit;
    const repo = await syncMirror(ctx.svc.config.worktreeRoot, ctx.project.slug, ctx.svc.forgeFor(ctx.project).remoteUrl);
    const ahead = ctx.task.branch ? await commitsAhead(repo, ctx.task.branch, ctx.project.base_branch) : 0;
    return implementationVerdict({ commitsAhead: ahead, testCommand: ctx.project.test_command, testExitCode: ctx.job.test_exit_code });
  },

  async review(ctx, run) {
    const exit = exitVerdict(run?.exit_code);
    if (exit) return exit;
    const a = await getJobArtefact(ctx.svc.db, ctx.job.id, 'review.md');
    return reviewVerdict(a?.content);
  },

  async merge(ctx) {
    if (ctx.report?.mergeConflict) return { verdict: 'send_back', reason: `merge_conflict: ${ctx.report.mergeConflict}` };
    if (ctx.report?.mergeRefused) return { verdict: 'fail', reason: ctx.report.mergeRefused };
    if (ctx.task.merged_sha) return { verdict: 'pass', detail: ctx.task.merged_sha };
    if (ctx.task.pr_number !== null) {
      const pr = await ctx.svc.forgeFor(ctx.project).getPullRequest(ctx.task.pr_number);
      if (pr?.state === 'merged') return { verdict: 'pass', detail: pr.mergedSha ?? undefined };
    }
    return { verdict: 'fail', reason: 'not_merged' };
  },

  async deploy(_ctx, run) {
    return exitVerdict(run?.exit_code) ?? { verdict: 'pass' };
  },
};

/** Evaluate the job's gate. Never throws: an error reading state is a failed gate. */
export async function evaluateGate(ctx: GateContext): Promise<GateVerdict> {
  try {
    const run = await getJobRun(ctx.svc.db, ctx.job.id);
    return await QG_CHECKS[ctx.job.stage](ctx, run);
  } catch (err) {
    return { verdict: 'fail', reason: `gate_error: ${(err as Error).message}`.slice(0, 500) };
  }
}
