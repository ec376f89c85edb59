/**
 * What happens after a job's gate has been evaluated: a pure function of the job, the task
 * and the verdict. The finalizer applies the result inside the transaction that won the flip.
 * A failure's class decides the retry (pipeline/failures.ts): `config` blocks the task at once
 * (no retry can fix it), `transient` retries after a backoff, `agent` retries at once — the next
 * attempt's prompt says why this one failed, and waiting would not change that.
 */
import { nextStage, retryBackoffS, sendBackTarget, type Stage, type WorkStage } from '../stages.ts';
import { failureText, type FailureClass } from './failures.ts';

export type GateVerdict =
  | { verdict: 'pass'; detail?: string }
  /** `reason` is the stable code, `detail` the words; `failure` defaults to `agent` */
  | { verdict: 'fail'; reason: string; detail?: string; failure?: FailureClass }
  /** review REQUEST_CHANGES, merge conflict: back to implementation */
  | { verdict: 'send_back'; reason: string; detail?: string };

export interface AfterGateInput {
  stage: WorkStage;
  attempt: number;
  maxAttempts: number;
  verdict: GateVerdict;
  reviewRounds: number;
  maxReviewRounds: number;
  taskTerminal: boolean;
  cancelRequested: boolean;
  /** merge/deploy: the irreversible step ran, so its outcome is recorded truthfully */
  criticalStepRan: boolean;
  hasDeployCommand: boolean;
  backoffBaseS: number;
}

/** Why a passing gate moves a task on: the reason of its `stage_changed` event. */
const ADVANCE_REASONS: Readonly<Record<WorkStage, string>> = {
  analysis: 'gate_passed',
  implementation: 'gate_passed',
  review: 'review_approved',
  merge: 'merged',
  deploy: 'deployed',
};

/** Why a task is sent back: the code before the verdict's detail (`merge_conflict: …` → `merge_conflict`). */
function sendBackReason(verdictReason: string): string {
  const i = verdictReason.indexOf(':');
  return i === -1 ? verdictReason : verdictReason.slice(0, i);
}

export type Then =
  | { kind: 'advance'; to: Stage; reason: string }
  | { kind: 'send_back'; to: WorkStage; reviewRounds: number; reason: string }
  | { kind: 'retry'; attempt: number; delayS: number }
  | { kind: 'block'; reason: string }
  | { kind: 'none' };

export interface AfterGate {
  job: 'done' | 'failed' | 'cancelled';
  reason: string | null;
  then: Then;
}

/** The retry (or block) that follows a failure of `failure`'s class on attempt `attempt`. */
export function retryOrBlock(
  i: { attempt: number; maxAttempts: number; backoffBaseS: number },
  f: { code: string; detail?: string | null; failure: FailureClass },
): Extract<Then, { kind: 'retry' | 'block' }> {
  const text = failureText(f);
  if (f.failure === 'config') return { kind: 'block', reason: text };
  if (i.attempt >= i.maxAttempts) return { kind: 'block', reason: `attempts_exhausted: ${text}` };
  return { kind: 'retry', attempt: i.attempt + 1, delayS: f.failure === 'transient' ? retryBackoffS(i.backoffBaseS, i.attempt) : 0 };
}

export function decideAfterGate(i: AfterGateInput): AfterGate {
  const v = i.verdict;
  const jobStatus: 'done' | 'failed' = v.verdict === 'fail' ? 'failed' : 'done';
  const reason = v.verdict === 'pass' ? null : v.reason;

  // Requeue guards: nothing moves on for a task that is finished or being cancelled.
  if (i.taskTerminal) return { job: jobStatus, reason: reason ?? 'task_terminal', then: { kind: 'none' } };
  if (i.cancelRequested) {
    // A step that completed its irreversible part keeps its true outcome; anything else is cancelled.
    if (i.criticalStepRan) return { job: jobStatus, reason, then: { kind: 'none' } };
    return { job: 'cancelled', reason: 'cancel_requested', then: { kind: 'none' } };
  }

  switch (v.verdict) {
    case 'pass':
      return {
        job: 'done',
        reason: null,
        then: { kind: 'advance', to: nextStage(i.stage, { deploy_command: i.hasDeployCommand ? 'x' : null }), reason: ADVANCE_REASONS[i.stage] },
      };
    case 'send_back': {
      const rounds = i.reviewRounds + 1;
      // A review that requests changes did its work: the job is done either way.
      const job = i.stage === 'review' ? 'done' : 'failed';
      if (rounds > i.maxReviewRounds) return { job, reason: v.reason, then: { kind: 'block', reason: 'review_rounds_exhausted' } };
      return { job, reason: v.reason, then: { kind: 'send_back', to: sendBackTarget(i.stage), reviewRounds: rounds, reason: sendBackReason(v.reason) } };
    }
    case 'fail':
      return { job: 'failed', reason: v.reason, then: retryOrBlock(i, { code: v.reason, detail: v.detail, failure: v.failure ?? 'agent' }) };
  }
}

/**
 * A job that did not reach its gate (dead owner, max running, worker shutdown, a stall, a budget,
 * the timeout): what follows the flip to `failed`. `sameAttempt` (worker shutdown) requeues
 * without spending an attempt.
 */
export function decideAfterAbort(i: {
  attempt: number;
  maxAttempts: number;
  taskTerminal: boolean;
  cancelRequested: boolean;
  sameAttempt: boolean;
  backoffBaseS: number;
  reason: string;
  detail?: string | null;
  failure?: FailureClass;
}): Then {
  if (i.taskTerminal || i.cancelRequested) return { kind: 'none' };
  if (i.sameAttempt) return { kind: 'retry', attempt: i.attempt, delayS: 0 };
  return retryOrBlock(i, { code: i.reason, detail: i.detail, failure: i.failure ?? 'transient' });
}
