/** Inputs of the pure decision functions shared by their table tests. */
import type { AfterGateInput } from '@orch/shared/pipeline/transitions';

/** A first attempt of a live task whose gate passed; cases override what they test. */
export const AFTER_GATE_BASE: AfterGateInput = {
  stage: 'analysis',
  attempt: 1,
  maxAttempts: 3,
  verdict: { verdict: 'pass' },
  reviewRounds: 0,
  maxReviewRounds: 3,
  taskTerminal: false,
  cancelRequested: false,
  criticalStepRan: false,
  hasDeployCommand: false,
  backoffBaseS: 10,
};
