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
import { analysisVerdict, deployVerdict, exitVerdict, implementationVerdict, reviewVerdict, stepOutcome, type StepOutcome } from './verdicts.ts';
import { STAGE_STEPS } from '../stages.ts';

/** A merge that conflicted, as the merge step saw it (the forge's words, the files, the base). */
export interface MergeConflict {
  message: string;
  /** files that conflict between the branch and base (from this host's mirror; may be empty) */
  files: string[];
  base: string;
  head: string;
}

/** What the worker saw during the step and cannot be re-read later (e.g. a merge conflict). */
export interface StepReport {
  mergeConflict?: MergeConflict;
  /**
   * the forge refused the merge: `push_rejected: <words>` (a hook or branch protection, for good)
   * or its words for another refusal
   */
  mergeRefused?: string;
}

/** The conflict in words: what the next implementation must do. */
function conflictText(c: MergeConflict): string {
  const files = c.files.length > 0 ? ` in ${c.files.map((f) => `\`${f}\``).join(', ')}` : '';
  return `merge gate: ${c.head} conflicts with ${c.base}${files} (${c.message}). Bring the branch up to date with origin/${c.base} (git fetch origin && git merge origin/${c.base}), resolve the conflicts and commit.`;
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
    const exit = exitVerdict(run);
    if (exit) return exit;
    const a = await getJobArtefact(ctx.svc.db, ctx.job.id, 'analysis.md');
    return analysisVerdict(a?.content);
  },

  async implementation(ctx, run) {
    const exit = exitVerdict(run);
    if (exit) return exit;
    const repo = await syncMirror(ctx.svc.config.worktreeRoot, ctx.project.slug, ctx.svc.forgeFor(ctx.project).remoteUrl);
    const ahead = ctx.task.branch ? await commitsAhead(repo, ctx.task.branch, ctx.project.base_branch) : 0;
    const testLog = ctx.project.test_command && ctx.job.test_exit_code !== null && ctx.job.test_exit_code !== 0 ? await getJobArtefact(ctx.svc.db, ctx.job.id, 'test.log') : undefined;
    return implementationVerdict({
      commitsAhead: ahead,
      testCommand: ctx.project.test_command,
      testExitCode: ctx.job.test_exit_code,
      testOutput: testLog?.content,
      branch: ctx.task.branch,
      base: ctx.project.base_branch,
    });
  },

  async review(ctx, run) {
    const exit = exitVerdict(run);
    if (exit) return exit;
    const a = await getJobArtefact(ctx.svc.db, ctx.job.id, 'review.md');
    return reviewVerdict(a?.content);
  },

  async merge(ctx) {
    const conflict = ctx.report?.mergeConflict;
    if (conflict) return { verdict: 'send_back', reason: 'merge_conflict', detail: conflictText(conflict) };
    if (ctx.task.merged_sha) return { verdict: 'pass', detail: ctx.task.merged_sha };
    if (ctx.task.pr_number !== null) {
      const pr = await ctx.svc.forgeFor(ctx.project).getPullRequest(ctx.task.pr_number);
      if (pr?.state === 'merged') return { verdict: 'pass', detail: pr.mergedSha ?? undefined };
    }
    const why = ctx.report?.mergeRefused;
    // A push the server rejected (hook, branch protection) is refused the same way on every retry:
    // a person has to act, so it blocks at once with the server's words.
    if (why?.startsWith('push_rejected:'))
      return { verdict: 'fail', reason: 'push_rejected', failure: 'config', detail: `merge gate: ${why.slice('push_rejected:'.length).trim()}.` };
    return {
      verdict: 'fail',
      reason: 'not_merged',
      failure: 'transient',
      detail: `merge gate: the pull request${ctx.task.pr_number !== null ? ` #${ctx.task.pr_number}` : ''} was not merged${why ? `: ${why}` : ''}.`,
    };
  },

  async deploy(_ctx, run) {
    return deployVerdict(run);
  },
};

export interface GateResult {
  verdict: GateVerdict;
  /** what became of the step's process (merge has none) */
  step: StepOutcome;
}

/** Evaluate the job's gate. Never throws: an error reading state is a failed gate (transient). */
export async function evaluateGate(ctx: GateContext): Promise<GateResult> {
  const hasProcess = STAGE_STEPS[ctx.job.stage] !== 'merge';
  let run: AgentRun | undefined;
  try {
    run = await getJobRun(ctx.svc.db, ctx.job.id);
    return { verdict: await QG_CHECKS[ctx.job.stage](ctx, run), step: stepOutcome(run, hasProcess) };
  } catch (err) {
    const message = String((err as Error).message).slice(0, 500);
    return { verdict: { verdict: 'fail', reason: 'gate_error', failure: 'transient', detail: `${ctx.job.stage} gate: could not read the outcome: ${message}` }, step: stepOutcome(run, hasProcess) };
  }
}
