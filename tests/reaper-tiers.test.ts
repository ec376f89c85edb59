/**
 * The reaper's pure decisions: which tier applies to a running job, when an owner looks dead,
 * when a merge lease is stale. Table-driven; every row names the rule it pins down.
 */
import { describe, expect, it } from 'vitest';
import { decideTier, leaseIsStale, ownerLooksDead, type RunningJobFacts, type TierSettings } from '@orch/shared/reaper/tiers';

const S: TierSettings = { heartbeatTimeoutS: 10, deadTicks: 3, maxRunningS: 3600, finalizeGraceS: 300 };

/** A healthy running job: owner on this host, alive, fresh heartbeat, agent still running. */
function facts(over: Partial<RunningJobFacts> = {}): RunningJobFacts {
  return {
    ownerHeartbeatAgeS: 1,
    ownerStopped: false,
    ownerSameHost: true,
    ownerPidAlive: true,
    runningForS: 60,
    exitRecordedAgoS: null,
    streak: 0,
    ...over,
  };
}

// Owners that look dead in one way each (used to show Tier 2 wins over all of them).
const DEAD_OWNERS: Array<[string, Partial<RunningJobFacts>]> = [
  ['stale heartbeat', { ownerHeartbeatAgeS: 999 }],
  ['no worker row', { ownerHeartbeatAgeS: null, ownerPidAlive: null }],
  ['stopped worker', { ownerStopped: true }],
  ['same host, pid gone', { ownerPidAlive: false }],
];

describe('ownerLooksDead', () => {
  const rows: Array<[string, Partial<RunningJobFacts>, number, boolean]> = [
    ['fresh heartbeat, same host, pid alive', {}, 10, false],
    ['heartbeat exactly at the timeout is not stale', { ownerHeartbeatAgeS: 10 }, 10, false],
    ['heartbeat just past the timeout is stale', { ownerHeartbeatAgeS: 10.001 }, 10, true],
    ['heartbeat far past the timeout', { ownerHeartbeatAgeS: 3600 }, 10, true],
    ['timeout setting is honoured (same age, larger timeout)', { ownerHeartbeatAgeS: 15 }, 20, false],
    ['timeout setting is honoured (same age, smaller timeout)', { ownerHeartbeatAgeS: 15 }, 12, true],
    ['no worker row (null heartbeat age)', { ownerHeartbeatAgeS: null }, 10, true],
    ['stopped worker with a fresh heartbeat', { ownerStopped: true, ownerHeartbeatAgeS: 0 }, 10, true],
    ['same host, pid gone, fresh heartbeat', { ownerPidAlive: false, ownerHeartbeatAgeS: 0 }, 10, true],
    ['same host, pid not checkable, fresh heartbeat', { ownerPidAlive: null }, 10, false],
    ['other host, pid unknown, fresh heartbeat', { ownerSameHost: false, ownerPidAlive: null }, 10, false],
    ['other host, pid reported gone is ignored (not checkable there)', { ownerSameHost: false, ownerPidAlive: false }, 10, false],
    ['other host, pid unknown, stale heartbeat', { ownerSameHost: false, ownerPidAlive: null, ownerHeartbeatAgeS: 11 }, 10, true],
    ['same host, pid alive, stale heartbeat (a hung worker)', { ownerHeartbeatAgeS: 11 }, 10, true],
  ];
  it.each(rows)('%s → %s', (_name, over, timeout, dead) => {
    expect(ownerLooksDead(facts(over), timeout)).toBe(dead);
  });
});

describe('decideTier', () => {
  describe('Tier 2: once the exit code is recorded, only the finalize grace matters', () => {
    it.each([
      ['just exited', 0, { action: 'wait_grace', remainingS: 300 }],
      ['inside the grace', 120, { action: 'wait_grace', remainingS: 180 }],
      ['one ms before the grace ends', 299.999, { action: 'wait_grace' }],
      ['exactly at the grace', 300, { action: 'known_outcome' }],
      ['after the grace', 301, { action: 'known_outcome' }],
    ] as const)('healthy owner, exit %s (%s s ago) → %j', (_n, ago, expected) => {
      const d = decideTier(facts({ exitRecordedAgoS: ago }), S);
      expect(d).toMatchObject(expected);
      if (d.action === 'wait_grace') expect(d.remainingS).toBeCloseTo(300 - ago, 6);
    });

    it.each(DEAD_OWNERS)('inside the grace, a dead owner (%s) still waits: never Tier 1', (_n, dead) => {
      for (const streak of [0, 1, 2, 5]) {
        const d = decideTier(facts({ ...dead, exitRecordedAgoS: 10, streak }), S);
        expect(d).toEqual({ action: 'wait_grace', remainingS: 290 });
      }
    });

    it.each(DEAD_OWNERS)('after the grace, a dead owner (%s) is finalized by its gate, not failed', (_n, dead) => {
      expect(decideTier(facts({ ...dead, exitRecordedAgoS: 400, streak: 5 }), S)).toEqual({ action: 'known_outcome' });
    });

    it('inside the grace, past max running still waits (Tier 2 before Tier 3)', () => {
      expect(decideTier(facts({ runningForS: 10_000, exitRecordedAgoS: 5 }), S)).toEqual({ action: 'wait_grace', remainingS: 295 });
    });

    it('after the grace, past max running is a known outcome, not max_running', () => {
      expect(decideTier(facts({ runningForS: 10_000, exitRecordedAgoS: 301 }), S)).toEqual({ action: 'known_outcome' });
    });

    it('grace 0 finalizes at once', () => {
      expect(decideTier(facts({ exitRecordedAgoS: 0 }), { ...S, finalizeGraceS: 0 })).toEqual({ action: 'known_outcome' });
    });
  });

  describe('Tier 3: max running', () => {
    it.each([
      ['below max', 3599, { action: 'none', streak: 0 }],
      ['exactly max is not over', 3600, { action: 'none', streak: 0 }],
      ['just over max', 3600.5, { action: 'max_running' }],
      ['far over max', 100_000, { action: 'max_running' }],
    ] as const)('healthy owner, %s (%s s) → %j', (_n, runningForS, expected) => {
      expect(decideTier(facts({ runningForS }), S)).toEqual(expected);
    });

    it.each(DEAD_OWNERS)('over max with a dead owner (%s) → max_running, without waiting for a streak', (_n, dead) => {
      expect(decideTier(facts({ ...dead, runningForS: 4000, streak: 0 }), S)).toEqual({ action: 'max_running' });
    });

    it('max running setting is honoured', () => {
      expect(decideTier(facts({ runningForS: 61 }), { ...S, maxRunningS: 60 })).toEqual({ action: 'max_running' });
      expect(decideTier(facts({ runningForS: 59 }), { ...S, maxRunningS: 60 })).toEqual({ action: 'none', streak: 0 });
    });
  });

  describe('Tier 1: dead owner for deadTicks consecutive ticks', () => {
    it.each(DEAD_OWNERS)('%s: streak 0 → suspect 1, 1 → suspect 2, 2 → dead_owner (deadTicks 3)', (_n, dead) => {
      expect(decideTier(facts({ ...dead, streak: 0 }), S)).toEqual({ action: 'suspect', streak: 1 });
      expect(decideTier(facts({ ...dead, streak: 1 }), S)).toEqual({ action: 'suspect', streak: 2 });
      expect(decideTier(facts({ ...dead, streak: 2 }), S)).toEqual({ action: 'dead_owner' });
    });

    it('a streak already past deadTicks (settings lowered) is reaped', () => {
      expect(decideTier(facts({ ownerHeartbeatAgeS: 99, streak: 7 }), S)).toEqual({ action: 'dead_owner' });
    });

    it('deadTicks 1 reaps on the first dead tick', () => {
      expect(decideTier(facts({ ownerHeartbeatAgeS: 99 }), { ...S, deadTicks: 1 })).toEqual({ action: 'dead_owner' });
    });

    it('a live owner resets the streak, whatever it was', () => {
      for (const streak of [0, 1, 2, 10]) expect(decideTier(facts({ streak }), S)).toEqual({ action: 'none', streak: 0 });
    });

    it('stale heartbeat at the threshold: exactly timeout is alive, just past is suspect', () => {
      expect(decideTier(facts({ ownerHeartbeatAgeS: 10 }), S)).toEqual({ action: 'none', streak: 0 });
      expect(decideTier(facts({ ownerHeartbeatAgeS: 10.5 }), S)).toEqual({ action: 'suspect', streak: 1 });
    });

    it('other host with an unknown pid and a fresh heartbeat is alive (the pid cannot be checked there)', () => {
      expect(decideTier(facts({ ownerSameHost: false, ownerPidAlive: null, streak: 2 }), S)).toEqual({ action: 'none', streak: 0 });
    });

    it('other host with a stale heartbeat is dead after the streak', () => {
      const f = facts({ ownerSameHost: false, ownerPidAlive: null, ownerHeartbeatAgeS: 30 });
      expect(decideTier({ ...f, streak: 1 }, S)).toEqual({ action: 'suspect', streak: 2 });
      expect(decideTier({ ...f, streak: 2 }, S)).toEqual({ action: 'dead_owner' });
    });
  });
});

describe('leaseIsStale', () => {
  const rows: Array<[string, { holder_alive: boolean; lock_held: boolean; age_s: number }, number, boolean]> = [
    ['live holder holding the lock, young', { holder_alive: true, lock_held: true, age_s: 5 }, 900, false],
    ['live holder at exactly the TTL', { holder_alive: true, lock_held: true, age_s: 900 }, 900, false],
    ['live holder past the TTL', { holder_alive: true, lock_held: true, age_s: 900.5 }, 900, true],
    ['holder session gone', { holder_alive: false, lock_held: false, age_s: 1 }, 900, true],
    ['holder session gone (lock reported held by a stale view)', { holder_alive: false, lock_held: true, age_s: 1 }, 900, true],
    ['holder alive but no longer holds the lock', { holder_alive: true, lock_held: false, age_s: 1 }, 900, true],
    ['TTL setting is honoured', { holder_alive: true, lock_held: true, age_s: 30 }, 20, true],
  ];
  it.each(rows)('%s → %s', (_n, lease, ttl, stale) => {
    expect(leaseIsStale(lease, ttl)).toBe(stale);
  });
});
