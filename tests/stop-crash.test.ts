/**
 * STOP is restart-safe (ARCHITECTURE §5 "Every step is idempotent and restart-safe"): the
 * worker owning the job is SIGKILLed in the middle of stopping its agent; the reaper completes
 * the cancel, and the janitor kills the orphaned agent tree on the same host.
 */
import fs from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { requestCancel } from '@orch/shared/cancel';
import { worktreePath } from '@orch/shared/host/git';
import { createTask } from '@orch/shared/pipeline/tasks';
import { killGroup } from '@orch/shared/host/process-group';
import { branchesOf, startOrch, waitFor, type Orch } from './support/harness.ts';
import { agentControl, eventsOf, groupMembers, jobsOf, liveProcess, sleep, taskRow, waitRunningAgent, waitStage } from './support/stop-helpers.ts';

let orch: Orch | undefined;
afterEach(async () => {
  await orch?.close();
  orch = undefined;
});

describe('STOP survives a crash', () => {
  it('TC-11a: worker SIGKILLed mid-cancel (whole agent tree ignores TERM) → the reaper completes the cancel, the janitor leaves no survivor', async () => {
    await crashMidCancel(true);
  });

  it('TC-11b: worker SIGKILLed mid-cancel (the `sh -c` leader obeyed TERM, its children ignore it) → no survivor either', async () => {
    await crashMidCancel(false);
  });
});

/**
 * A separate worker process with a long grace runs an agent whose children ignore SIGTERM;
 * STOP makes it send TERM and wait out the grace; it is SIGKILLed meanwhile.
 * `leaderIgnoresTerm`: the `sh -c` wrapper (the group leader, whose pid is recorded) ignores
 * TERM too and stays; otherwise it exits on TERM and only its children are left.
 */
async function crashMidCancel(leaderIgnoresTerm: boolean): Promise<void> {
  const ctl = await agentControl();
  await ctl.mode('implementation', 'ignore-term');
  orch = await startOrch({ env: ctl.env });
  const t = await createTask(orch.rt.svc, { project: 'p', title: 'Crash while cancelling' }, 'test');
  // a separate worker process with a long grace: after STOP it sends TERM, then waits 30 s
  const worker = orch.spawn(['worker'], {
    ORCH_STOP_GRACE_S: '30',
    ...(leaderIgnoresTerm ? { ORCH_AGENT_CMD: `trap '' TERM; ${ctl.env.ORCH_AGENT_CMD}` } : {}),
  });
  const { pid, procs, job } = await waitRunningAgent(orch, t.id, 'implementation', 3, 40_000);
  expect(job.pid).toBe(worker.pid);

  await requestCancel(orch.rt.svc, t.id, 'test');
  if (orch.config.agent.sandbox.mode === 'bwrap' && !leaderIgnoresTerm) {
    // in the sandbox the agent's namespace ends with its command: the leader obeyed TERM, so
    // its TERM-ignoring children went with it, and the cancel completes without waiting
    await waitStage(orch, t.id, 'cancelled', 10_000);
    for (const p of procs) expect(await liveProcess(p)).toBe(false);
    worker.kill('SIGKILL');
    return;
  }
  await sleep(600); // the worker has seen the cancel (poll 0.2 s) and is waiting out its grace
  expect((await taskRow(orch, t.id)).stage).toBe('implementation');
  const tKill = Date.now();
  worker.kill('SIGKILL');
  await worker;
  await sleep(300);
  if (orch.config.agent.sandbox.mode === 'bwrap') {
    // in the sandbox (--die-with-parent) the kernel ends the agent's pid namespace with its worker
    expect(await groupMembers(pid)).toEqual([]);
  } else {
    // unsandboxed, the agent ignores TERM and lives in its own session: it survived its worker
    expect((await groupMembers(pid)).length).toBeGreaterThan(0);
  }

  const reaper = await orch.reaper();
  reaper.start();
  await waitStage(orch, t.id, 'cancelled', 20_000);
  const completeMs = Date.now() - tKill;
  try {
    await waitFor(async () => (await groupMembers(pid)).length === 0, 5_000, 'orphaned agent tree killed');
  } finally {
    killGroup(pid, 'SIGKILL'); // never leave the test's own survivors behind, even when it fails
  }
  const deadMs = Date.now() - tKill;
  for (const p of procs) expect(await liveProcess(p)).toBe(false);
  console.log(
    `[stop] TC-11${leaderIgnoresTerm ? 'a' : 'b'} worker SIGKILL→cancel complete ${completeMs} ms, →orphan tree dead ${deadMs} ms (heartbeat timeout ${orch.config.heartbeat.timeoutS} s)`,
  );

  const jobs = await jobsOf(orch, t.id);
  expect(jobs.map((j) => [j.stage, j.status])).toEqual([
    ['analysis', 'done'],
    ['implementation', 'cancelled'],
  ]);
  expect(await branchesOf(orch.repo)).toEqual(['main']);
  expect(await fs.access(worktreePath(orch.config.worktreeRoot, 'p', t.id)).then(() => true, () => false)).toBe(false);
  const cancelled = (await eventsOf(orch, t.id)).find((e) => e.kind === 'cancelled')!;
  expect(cancelled.actor).toMatch(/^reaper:/);
  await sleep(500);
  expect(await jobsOf(orch, t.id)).toHaveLength(2);
}
