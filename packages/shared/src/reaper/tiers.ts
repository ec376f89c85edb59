/**
 * The reaper's decision for one running job: a pure function of its row facts.
 * - Tier 2, known outcome: the agent's exit code is recorded; once it is, only Tier 2 applies
 *   (a live worker finalizing inside the grace is never touched).
 * - Tier 3, backstop: running longer than ORCH_REAPER_MAX_RUNNING_S.
 * - Tier 1, dead owner: owner heartbeat stale, owner stopped or missing, or (same host) its pid
 *   gone — for ORCH_REAPER_DEAD_TICKS consecutive ticks.
 */
export interface RunningJobFacts {
  ownerHeartbeatAgeS: number | null; // null: no such worker row
  ownerStopped: boolean;
  ownerSameHost: boolean;
  ownerPidAlive: boolean | null; // null: not checkable (other host)
  runningForS: number;
  exitRecordedAgoS: number | null; // null: agent still running (or no agent)
  streak: number;
}

export interface TierSettings {
  heartbeatTimeoutS: number;
  deadTicks: number;
  maxRunningS: number;
  finalizeGraceS: number;
}

export type TierDecision =
  | { action: 'none'; streak: 0 }
  | { action: 'suspect'; streak: number }
  | { action: 'dead_owner' }
  | { action: 'known_outcome' }
  | { action: 'wait_grace'; remainingS: number }
  | { action: 'max_running' };

export function ownerLooksDead(f: RunningJobFacts, heartbeatTimeoutS: number): boolean {
  if (f.ownerHeartbeatAgeS === null || f.ownerStopped) return true;
  if (f.ownerSameHost && f.ownerPidAlive === false) return true;
  return f.ownerHeartbeatAgeS > heartbeatTimeoutS;
}

export function decideTier(f: RunningJobFacts, s: TierSettings): TierDecision {
  if (f.exitRecordedAgoS !== null) {
    return f.exitRecordedAgoS >= s.finalizeGraceS
      ? { action: 'known_outcome' }
      : { action: 'wait_grace', remainingS: s.finalizeGraceS - f.exitRecordedAgoS };
  }
  if (f.runningForS > s.maxRunningS) return { action: 'max_running' };
  if (!ownerLooksDead(f, s.heartbeatTimeoutS)) return { action: 'none', streak: 0 };
  const streak = f.streak + 1;
  return streak >= s.deadTicks ? { action: 'dead_owner' } : { action: 'suspect', streak };
}

/** Should a merge lease be reclaimed? Holder session gone, lock no longer held, or too old. */
export function leaseIsStale(l: { holder_alive: boolean; lock_held: boolean; age_s: number }, ttlS: number): boolean {
  return !l.holder_alive || !l.lock_held || l.age_s > ttlS;
}
