/**
 * STOP, pure parts: what is left of a cancel (`planCancel`) and the tombstone of a cancelled
 * task's Plane issue id (ARCHITECTURE §5 step 5, §9 "Tasks").
 */
import { describe, expect, it } from 'vitest';
import { planCancel, type CancelState } from '@orch/shared/cancel';
import { startGroupProcess } from '@orch/shared/host/process-group';
import { isTombstoned, originalIssueId, tombstoneIssueId } from '@orch/shared/stages';
import { groupMembers } from './support/stop-helpers.ts';

const T0 = new Date('2025-01-01T00:00:00Z');

function state(over: {
  stage?: string;
  requested?: boolean;
  critical?: boolean;
  job?: 'queued' | 'running' | null;
  worker?: string | null;
  ownerAlive?: boolean;
  callerOwnsJob?: boolean;
}): CancelState {
  return {
    task: {
      stage: (over.stage ?? 'implementation') as CancelState['task']['stage'],
      cancel_requested_at: over.requested === false ? null : T0,
      critical_started_at: over.critical ? T0 : null,
    },
    liveJob: over.job === null || over.job === undefined ? null : { status: over.job, worker_id: over.worker === undefined ? 'w1' : over.worker },
    ownerAlive: over.ownerAlive ?? false,
    callerOwnsJob: over.callerOwnsJob ?? false,
  };
}

describe('planCancel (what is left of a requested cancel)', () => {
  it('STOP-U1: noop for a done task, a cancelled task, or no cancel requested', () => {
    expect(planCancel(state({ stage: 'done', job: null }))).toEqual({ kind: 'noop' });
    expect(planCancel(state({ stage: 'cancelled', job: null }))).toEqual({ kind: 'noop' });
    // even with a (stray) running job or a critical window, a sink is never touched again
    expect(planCancel(state({ stage: 'done', job: 'running', critical: true }))).toEqual({ kind: 'noop' });
    expect(planCancel(state({ stage: 'cancelled', job: 'queued' }))).toEqual({ kind: 'noop' });
    expect(planCancel(state({ requested: false, job: 'running', ownerAlive: true }))).toEqual({ kind: 'noop' });
    expect(planCancel(state({ requested: false, job: null }))).toEqual({ kind: 'noop' });
  });

  it('STOP-U2 (TC-06): deferred while the critical window is open, whoever asks', () => {
    for (const job of ['running', 'queued', null] as const)
      for (const callerOwnsJob of [true, false])
        for (const ownerAlive of [true, false])
          expect(planCancel(state({ stage: 'merge', critical: true, job, callerOwnsJob, ownerAlive }))).toEqual({ kind: 'deferred' });
    expect(planCancel(state({ stage: 'deploy', critical: true, job: 'running' }))).toEqual({ kind: 'deferred' });
  });

  it('STOP-U3: a running job with a live owner waits for the owner (unless the caller is the owner)', () => {
    expect(planCancel(state({ job: 'running', ownerAlive: true }))).toEqual({ kind: 'wait_owner' });
    expect(planCancel(state({ job: 'running', ownerAlive: true, callerOwnsJob: true }))).toEqual({ kind: 'complete', flipRunning: true });
  });

  it('STOP-U4: a running job whose owner is dead is flipped by whoever sees it (crash-safe)', () => {
    expect(planCancel(state({ job: 'running', ownerAlive: false }))).toEqual({ kind: 'complete', flipRunning: true });
    expect(planCancel(state({ job: 'running', worker: null, ownerAlive: false }))).toEqual({ kind: 'complete', flipRunning: true });
  });

  it('STOP-U5: no running job (queued, backoff, between stages) → complete without a flip, in every live stage', () => {
    for (const stage of ['analysis', 'implementation', 'review', 'merge', 'deploy']) {
      expect(planCancel(state({ stage, job: 'queued' }))).toEqual({ kind: 'complete', flipRunning: false });
      expect(planCancel(state({ stage, job: null }))).toEqual({ kind: 'complete', flipRunning: false });
      expect(planCancel(state({ stage, job: 'queued', ownerAlive: true, callerOwnsJob: true }))).toEqual({ kind: 'complete', flipRunning: false });
    }
  });
});

describe('tombstone of plane_issue_id', () => {
  const uuid = 'e1b5f0b4-6a3b-4d50-9f7c-1b7f2b1d2c3e';

  it('STOP-U6: tombstone is `<uuid>~cancelled~<task_id>`, parseable back to the original', () => {
    const t = tombstoneIssueId(uuid, 42);
    expect(t).toBe(`${uuid}~cancelled~42`);
    expect(originalIssueId(t)).toBe(uuid);
    expect(isTombstoned(t)).toBe(true);
    expect(t).not.toBe(uuid); // frees the natural key for a new task
  });

  it('STOP-U7: a live id is its own original and not tombstoned; null is not tombstoned', () => {
    expect(originalIssueId(uuid)).toBe(uuid);
    expect(isTombstoned(uuid)).toBe(false);
    expect(isTombstoned(null)).toBe(false);
  });

  it('STOP-U8: two cancelled tasks of one issue get distinct tombstones (unique column holds)', () => {
    const a = tombstoneIssueId(uuid, 1);
    const b = tombstoneIssueId(uuid, 2);
    expect(a).not.toBe(b);
    expect(originalIssueId(a)).toBe(originalIssueId(b));
  });
});

describe('process group (the stop path of agents, deploy and test commands)', () => {
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

  it('PG-01: STOP of a tree that ignores SIGTERM → SIGKILL after the grace, nobody left', async () => {
    const p = startGroupProcess({ file: "trap '' TERM; sh -c 'sleep 300 & wait' & sleep 300", args: [], shell: true, cwd: '/tmp', env });
    await new Promise((r) => setTimeout(r, 200));
    expect((await groupMembers(p.pid)).length).toBeGreaterThanOrEqual(3);
    const t0 = Date.now();
    const exit = await p.stop(0.5);
    const ms = Date.now() - t0;
    expect(exit.signal).toBe('SIGKILL');
    expect(ms).toBeGreaterThanOrEqual(450);
    expect(ms).toBeLessThan(1500);
    expect(await groupMembers(p.pid)).toEqual([]);
  });

  it('PG-02: a leader that exits on its own leaving a background child → the step ends at once and the child is swept', async () => {
    const p = startGroupProcess({ file: 'sleep 300 & echo leader-done; exit 3', args: [], shell: true, cwd: '/tmp', env });
    const t0 = Date.now();
    const exit = await Promise.race([p.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 3000))]);
    expect(exit).toEqual({ exitCode: 3, signal: null });
    expect(Date.now() - t0).toBeLessThan(1500);
    expect(p.tail()).toContain('leader-done');
    await new Promise((r) => setTimeout(r, 100));
    expect(await groupMembers(p.pid)).toEqual([]);
  });
});
