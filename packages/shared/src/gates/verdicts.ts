/** Pure parts of the quality gates: read an artefact, decide. */
import type { GateVerdict } from '../pipeline/transitions.ts';

/** Review verdict from the first non-empty line: `VERDICT: APPROVE` | `VERDICT: REQUEST_CHANGES`. */
export function reviewVerdict(content: string | null | undefined): GateVerdict {
  if (!content || !content.trim()) return { verdict: 'fail', reason: 'no_review_artefact' };
  const first = content.split('\n').find((l) => l.trim() !== '')!.trim();
  const m = /^VERDICT:\s*(APPROVE|REQUEST_CHANGES)\s*$/i.exec(first);
  if (!m) return { verdict: 'fail', reason: 'review_verdict_missing' };
  return m[1]!.toUpperCase() === 'APPROVE'
    ? { verdict: 'pass' }
    : { verdict: 'send_back', reason: 'changes_requested' };
}

export function analysisVerdict(content: string | null | undefined): GateVerdict {
  return content && content.trim() ? { verdict: 'pass' } : { verdict: 'fail', reason: 'no_analysis_artefact' };
}

export function implementationVerdict(i: { commitsAhead: number; testCommand: string | null; testExitCode: number | null }): GateVerdict {
  if (i.commitsAhead <= 0) return { verdict: 'fail', reason: 'no_commits_ahead_of_base' };
  if (i.testCommand) {
    if (i.testExitCode === null) return { verdict: 'fail', reason: 'tests_not_run' };
    if (i.testExitCode !== 0) return { verdict: 'fail', reason: `tests_failed_exit_${i.testExitCode}` };
  }
  return { verdict: 'pass' };
}

/** An agent (or deploy command) that did not exit 0 fails its stage whatever the gate says. */
export function exitVerdict(exitCode: number | null | undefined): GateVerdict | null {
  if (exitCode === null || exitCode === undefined) return { verdict: 'fail', reason: 'no_exit_code' };
  if (exitCode !== 0) return { verdict: 'fail', reason: `agent_exit_${exitCode}` };
  return null;
}
