/**
 * Pure parts of the quality gates: read an artefact or a recorded outcome, decide. A failing
 * verdict carries a stable code (`reason`), the words a person reads (`detail`: which gate, what
 * was missing, the test command's exit code and the last lines of its output) and the failure's
 * class (pipeline/failures.ts), which decides whether a retry can help.
 */
import type { AgentRun } from '../db/types.ts';
import type { GateVerdict } from '../pipeline/transitions.ts';
import { classifyAgentRun, lastLines, type FailureClass } from '../pipeline/failures.ts';

/** Lines of the test command's output quoted in a failure's words (the next prompt quotes more). */
const TEST_TAIL_LINES = 15;

/** Review verdict from the first non-empty line: `VERDICT: APPROVE` | `VERDICT: REQUEST_CHANGES`. */
export function reviewVerdict(content: string | null | undefined): GateVerdict {
  if (!content || !content.trim())
    return { verdict: 'fail', reason: 'no_review_artefact', failure: 'agent', detail: 'review gate: the agent wrote no review ($ORCH_ARTEFACT_DIR/review.md is missing or empty).' };
  const first = content.split('\n').find((l) => l.trim() !== '')!.trim();
  const m = /^VERDICT:\s*(APPROVE|REQUEST_CHANGES)\s*$/i.exec(first);
  if (!m)
    return {
      verdict: 'fail',
      reason: 'review_verdict_missing',
      failure: 'agent',
      detail: `review gate: the first line of review.md must be exactly \`VERDICT: APPROVE\` or \`VERDICT: REQUEST_CHANGES\`; it is \`${first.length > 120 ? `${first.slice(0, 119)}…` : first}\`.`,
    };
  return m[1]!.toUpperCase() === 'APPROVE'
    ? { verdict: 'pass' }
    : { verdict: 'send_back', reason: 'changes_requested', detail: 'the review requested changes (its review.md is passed to the next implementation).' };
}

export function analysisVerdict(content: string | null | undefined): GateVerdict {
  return content && content.trim()
    ? { verdict: 'pass' }
    : { verdict: 'fail', reason: 'no_analysis_artefact', failure: 'agent', detail: 'analysis gate: the agent exited 0 but wrote no analysis ($ORCH_ARTEFACT_DIR/analysis.md is missing or empty).' };
}

export interface ImplementationFacts {
  commitsAhead: number;
  testCommand: string | null;
  testExitCode: number | null;
  /** the test command's output (test.log), when it ran */
  testOutput?: string | null;
  branch?: string | null;
  base?: string;
}

export function implementationVerdict(i: ImplementationFacts): GateVerdict {
  if (i.commitsAhead <= 0)
    return {
      verdict: 'fail',
      reason: 'no_commits_ahead_of_base',
      failure: 'agent',
      detail: `implementation gate: the branch${i.branch ? ` ${i.branch}` : ''} has no commits ahead of ${i.base ?? 'base'}; the changes must be committed (git add, git commit; orch pushes).`,
    };
  if (i.testCommand) {
    if (i.testExitCode === null)
      return { verdict: 'fail', reason: 'tests_not_run', failure: 'agent', detail: `implementation gate: the test command \`${i.testCommand}\` did not run.` };
    if (i.testExitCode !== 0) {
      const tail = lastLines(i.testOutput ?? '', TEST_TAIL_LINES);
      const notFound = i.testExitCode === 127;
      return {
        verdict: 'fail',
        reason: `tests_failed_exit_${i.testExitCode}`,
        failure: 'agent',
        detail: `implementation gate: the test command \`${i.testCommand}\` exited ${i.testExitCode}${notFound ? ' (command not found)' : ''}.${tail ? ` The last lines of its output:\n${tail}` : ' It printed nothing.'}`,
      };
    }
  }
  return { verdict: 'pass' };
}

/** What became of a step's process: the gate's input, as a value (never a reason string). */
export type StepOutcome = { kind: 'exited'; exitCode: number } | { kind: 'no_exit' } | { kind: 'no_process' };

export function stepOutcome(run: Pick<AgentRun, 'exit_code'> | undefined, hasProcess: boolean): StepOutcome {
  if (!hasProcess) return { kind: 'no_process' };
  if (!run || run.exit_code === null) return { kind: 'no_exit' };
  return { kind: 'exited', exitCode: run.exit_code };
}

type RunFacts = Pick<AgentRun, 'agent' | 'exit_code' | 'signal' | 'error' | 'failure_code' | 'failure_class' | 'last_message' | 'log_tail'>;

/**
 * An agent (or deploy command) that did not exit 0 fails its stage whatever the gate says, with
 * the failure the worker classified when it exited (or, for a row without one, from its tail).
 */
export function exitVerdict(run: RunFacts | undefined): GateVerdict | null {
  if (!run || run.exit_code === null)
    return { verdict: 'fail', reason: 'no_exit_code', failure: 'transient', detail: "the step's exit was not recorded (its worker died before the process ended)." };
  if (run.exit_code === 0) return null;
  if (run.failure_code && run.failure_class) return { verdict: 'fail', reason: run.failure_code, failure: run.failure_class, detail: run.error ?? undefined };
  const f = classifyAgentRun({ agent: run.agent, exitCode: run.exit_code, signal: run.signal, errorCode: null, error: run.error, lastMessage: run.last_message, tail: run.log_tail });
  return { verdict: 'fail', reason: f.code, failure: f.class, detail: f.detail };
}

/** The deploy command's exit: a failed deploy is retried after a backoff (it is not the agent's to fix). */
export function deployVerdict(run: RunFacts | undefined): GateVerdict {
  const v = exitVerdict(run);
  if (v === null) return { verdict: 'pass' };
  if (v.verdict !== 'fail' || !run || run.exit_code === null) return v;
  const failure: FailureClass = v.failure === 'config' ? 'config' : 'transient';
  const tail = lastLines(run.log_tail, TEST_TAIL_LINES);
  return {
    verdict: 'fail',
    reason: v.failure === 'config' ? v.reason : `deploy_failed_exit_${run.exit_code}`,
    failure,
    detail: `deploy gate: the deploy command exited ${run.exit_code}.${tail ? ` The last lines of its output:\n${tail}` : ''}`,
  };
}
