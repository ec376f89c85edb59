/**
 * STOP of running work (ARCHITECTURE §5 steps 2–5): the agent's whole process group dies
 * (SIGTERM, grace, SIGKILL), jobs end `cancelled` and are never requeued, the worktree and the
 * remote feature branch go, the task ends `cancelled` — from inside a stage, between stages,
 * during the review loop, and when the branch is already gone.
 */
import fs from 'node:fs/promises';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { requestCancel } from '@orch/shared/cancel';
import { worktreePath } from '@orch/shared/host/git';
import { git } from '@orch/shared/host/git';
import { createTask } from '@orch/shared/pipeline/tasks';
import { branchesOf, startOrch, waitFor, type Orch } from './support/harness.ts';
import { agentControl, eventsOf, groupMembers, jobsOf, liveProcess, runsOf, sleep, taskRow, waitRunningAgent, waitStage } from './support/stop-helpers.ts';

let orch: Orch | undefined;
afterEach(async () => {
  await orch?.close();
  orch = undefined;
});

const latencies: string[] = [];
afterAll(() => {
  if (latencies.length) console.log(`[stop] latencies:\n  ${latencies.join('\n  ')}`);
});

const exists = (p: string) => fs.access(p).then(() => true, () => false);

/** Every job ended; none queued or running; the cancelled ones say why. */
async function expectNoLiveJob(o: Orch, id: number) {
  const jobs = await jobsOf(o, id);
  expect(jobs.filter((j) => j.status === 'queued' || j.status === 'running')).toEqual([]);
  for (const j of jobs.filter((j) => j.status === 'cancelled')) expect(j.reason).toBe('cancel_requested');
  return jobs;
}

/** STOP → the whole group is gone; returns ms until it was. */
async function stopAndTimeDeath(o: Orch, id: number, leader: number, timeoutMs = 10_000): Promise<number> {
  const t0 = Date.now();
  expect((await requestCancel(o.rt.svc, id, 'test')).status).toBe('requested');
  await waitFor(async () => (await groupMembers(leader)).length === 0, timeoutMs, `process group ${leader} dead`);
  return Date.now() - t0;
}

describe('STOP of a running agent', () => {
  it('TC-02: STOP while running → every process of the agent group dies, job/task cancelled, worktree and remote branch removed', async () => {
    const ctl = await agentControl();
    await ctl.mode('implementation', 'tree');
    orch = await startOrch({ env: ctl.env });
    const t = await createTask(orch.rt.svc, { project: 'p', title: 'Stop me while running' }, 'test');
    await orch.worker();
    (await orch.reaper()).start();

    // leader sh + script sh (or exec'd), the tree's sh, 2× sleep 300, sleep 30
    const { pid, procs } = await waitRunningAgent(orch, t.id, 'implementation', 4);
    const wt = worktreePath(orch.config.worktreeRoot, 'p', t.id);
    expect(await exists(wt)).toBe(true);
    expect(await branchesOf(orch.repo)).toContain(t.branch);

    const t0 = Date.now();
    const deadMs = await stopAndTimeDeath(orch, t.id, pid);
    for (const p of procs) expect(await liveProcess(p)).toBe(false);
    const cancelled = await waitStage(orch, t.id, 'cancelled');
    const completeMs = Date.now() - t0;
    latencies.push(`TC-02 STOP→tree dead ${deadMs} ms, STOP→cancel complete ${completeMs} ms (grace 1 s)`);
    expect(deadMs).toBeLessThan(1000 + orch.config.stop.graceS * 1000);

    expect(cancelled.cancelled_at).toBeInstanceOf(Date);
    const jobs = await expectNoLiveJob(orch, t.id);
    expect(jobs.map((j) => [j.stage, j.status])).toEqual([
      ['analysis', 'done'],
      ['implementation', 'cancelled'],
    ]);
    const run = (await runsOf(orch, t.id)).find((r) => r.job_id === jobs[1]!.id)!;
    expect(run.exit_code).not.toBeNull(); // the exit was recorded
    expect(await exists(wt)).toBe(false);
    expect(await branchesOf(orch.repo)).toEqual(['main']);
    const events = await eventsOf(orch, t.id);
    const kinds = events.map((e) => e.kind);
    expect(kinds).toEqual(expect.arrayContaining(['cancel_requested', 'job_cancelled', 'cancelled']));
    expect(events.filter((e) => e.kind === 'cancel_error').map((e) => e.reason)).toEqual([]);

    // nothing comes back: no requeue, no stage after cancelled
    await sleep(800);
    expect(await jobsOf(orch, t.id)).toHaveLength(2);
    expect((await taskRow(orch, t.id)).stage).toBe('cancelled');
  });

  it('TC-03: an agent ignoring SIGTERM is SIGKILLed after ORCH_STOP_GRACE_S (1 s) — no survivor', async () => {
    const ctl = await agentControl();
    await ctl.mode('analysis', 'ignore-term');
    // In the sandbox a step ends with its command (the kernel ends its pid namespace), so the
    // command itself ignores TERM here; unsandboxed, its children ignoring it is enough.
    const sandboxed = (process.env.ORCH_TEST_SANDBOX ?? 'none') === 'bwrap';
    const cmd: Record<string, string> = sandboxed ? { ORCH_AGENT_CMD: `trap '' TERM; ${ctl.env.ORCH_AGENT_CMD}` } : {};
    orch = await startOrch({ env: { ...ctl.env, ...cmd, ORCH_STOP_GRACE_S: '1' } });
    const t = await createTask(orch.rt.svc, { project: 'p', title: 'Stubborn agent' }, 'test');
    await orch.worker();
    (await orch.reaper()).start();

    const { pid, procs } = await waitRunningAgent(orch, t.id, 'analysis', 3);
    const t0 = Date.now();
    const deadMs = await stopAndTimeDeath(orch, t.id, pid);
    for (const p of procs) expect(await liveProcess(p)).toBe(false);
    await waitStage(orch, t.id, 'cancelled');
    latencies.push(`TC-03 STOP→tree dead ${deadMs} ms (TERM ignored, grace 1 s), STOP→cancel complete ${Date.now() - t0} ms`);
    // it took the grace (TERM alone did nothing), and not much more than grace + one poll
    expect(deadMs).toBeGreaterThanOrEqual(900);
    expect(deadMs).toBeLessThan(1000 + 1000 + 500);
    const jobs = await expectNoLiveJob(orch, t.id);
    expect(jobs.map((j) => [j.stage, j.status])).toEqual([['analysis', 'cancelled']]);
    const run = (await runsOf(orch, t.id))[0]!;
    // recorded at once; the leader (the `sh -c` wrapper) may report its deferred TERM, the
    // TERM-ignoring children were SIGKILLed — the deadMs bound above is what proves it
    expect(run.exit_code).not.toBeNull();
    expect(run.error).toBe('stopped: cancel');
    expect(await branchesOf(orch.repo)).toEqual(['main']);
  });
});

describe('STOP between steps', () => {
  it('TC-04: STOP between stages (implementation retry queued in backoff) → the queued job is cancelled, never runs', async () => {
    const ctl = await agentControl();
    // a transient failure: retried after the backoff (the agent's own failures retry at once)
    await ctl.mode('implementation', 'flaky');
    orch = await startOrch({ env: { ...ctl.env, ORCH_RETRY_BACKOFF_BASE_S: '60' } });
    const t = await createTask(orch.rt.svc, { project: 'p', title: 'Between stages' }, 'test');
    const w = await orch.worker();
    (await orch.reaper()).start();

    const queued = await waitFor(async () => {
      const jobs = await jobsOf(orch!, t.id);
      return jobs.find((j) => j.stage === 'implementation' && j.attempt === 2 && j.status === 'queued');
    }, 20_000, 'implementation retry queued');
    expect(queued.run_after.getTime()).toBeGreaterThan(Date.now() + 30_000);
    expect((await taskRow(orch, t.id)).stage).toBe('implementation');
    expect(await branchesOf(orch.repo)).toContain(t.branch);
    const claimedBefore = w.stats.claimed;

    const t0 = Date.now();
    await requestCancel(orch.rt.svc, t.id, 'test');
    await waitStage(orch, t.id, 'cancelled');
    latencies.push(`TC-04 STOP→cancel complete (queued job, worker NOTIFY/reaper) ${Date.now() - t0} ms`);
    const jobs = await expectNoLiveJob(orch, t.id);
    expect(jobs.map((j) => [j.stage, j.attempt, j.status])).toEqual([
      ['analysis', 1, 'done'],
      ['implementation', 1, 'failed'],
      ['implementation', 2, 'cancelled'],
    ]);
    expect(jobs[2]!.started_at).toBeNull();
    expect(w.stats.claimed).toBe(claimedBefore);
    expect(await branchesOf(orch.repo)).toEqual(['main']);
    expect(await exists(worktreePath(orch.config.worktreeRoot, 'p', t.id))).toBe(false);
  });

  it('TC-05: STOP during the review loop (REQUEST_CHANGES again and again) → loop ends, no new job after the cancel', async () => {
    const ctl = await agentControl();
    await ctl.mode('review', 'slow 0.2 changes');
    await ctl.mode('implementation', 'slow 0.2');
    orch = await startOrch({ env: { ...ctl.env, ORCH_MAX_REVIEW_ROUNDS: '50' } });
    const t = await createTask(orch.rt.svc, { project: 'p', title: 'Endless review' }, 'test');
    await orch.worker();
    (await orch.reaper()).start();

    await waitFor(async () => (await taskRow(orch!, t.id)).review_rounds >= 2, 30_000, 'two review rounds');
    const t0 = Date.now();
    await requestCancel(orch.rt.svc, t.id, 'test');
    const c = await waitStage(orch, t.id, 'cancelled');
    latencies.push(`TC-05 STOP→cancel complete (review loop) ${Date.now() - t0} ms`);
    const jobs = await expectNoLiveJob(orch, t.id);
    const n = jobs.length;
    expect(jobs.filter((j) => j.stage === 'review').length).toBeGreaterThanOrEqual(2);
    expect(jobs.some((j) => j.stage === 'merge')).toBe(false);
    // every job created after the STOP was requested... there is none
    expect(jobs.filter((j) => j.created_at.getTime() > c.cancel_requested_at!.getTime())).toEqual([]);
    await sleep(1000);
    expect(await jobsOf(orch, t.id)).toHaveLength(n);
    expect((await taskRow(orch, t.id)).stage).toBe('cancelled');
    expect(await branchesOf(orch.repo)).toEqual(['main']);
  });

  it('TC-12: the remote feature branch is already deleted → the cancel still completes, without error', async () => {
    const ctl = await agentControl();
    await ctl.mode('implementation', 'tree');
    orch = await startOrch({ env: ctl.env });
    const t = await createTask(orch.rt.svc, { project: 'p', title: 'Branch gone' }, 'test');
    await orch.worker();
    (await orch.reaper()).start();
    const { pid } = await waitRunningAgent(orch, t.id, 'implementation', 4);
    await git(['update-ref', '-d', `refs/heads/${t.branch}`], { cwd: orch.repo });
    expect(await branchesOf(orch.repo)).toEqual(['main']);

    await stopAndTimeDeath(orch, t.id, pid);
    await waitStage(orch, t.id, 'cancelled');
    await expectNoLiveJob(orch, t.id);
    const events = await eventsOf(orch, t.id);
    const kinds = events.map((e) => e.kind);
    expect(kinds).toContain('cancelled');
    expect(events.filter((e) => e.kind === 'cancel_error').map((e) => e.reason)).toEqual([]);
    expect(kinds).not.toContain('branch_delete_refused');
    expect(await branchesOf(orch.repo)).toEqual(['main']);
  });
});
