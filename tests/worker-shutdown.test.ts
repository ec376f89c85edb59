/**
 * The forced side of a worker's shutdown, on a real `orch worker` process whose agent ignores
 * SIGTERM: after SIGTERM the running job is given ORCH_WORKER_SHUTDOWN_S to finish (a repeated
 * SIGTERM changes nothing), then the agent's whole process group is stopped (SIGTERM, then
 * SIGKILL after ORCH_STOP_GRACE_S) and the job released as `failed`/`worker_shutdown`, requeued
 * as a new row with the same attempt; the process exits 0. A second SIGINT exits at once (130).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { groupMembers, killGroup } from '@orch/shared/host/process-group';
import { createTask } from '@orch/shared/pipeline/tasks';
import { startOrch, waitFor, type Orch } from './support/harness.ts';

// Ignores SIGTERM (so does its child: an ignored signal stays ignored across exec) and runs on.
const STUBBORN_AGENT = `trap '' TERM; sleep 300 & wait; sleep 300`;

let orch: Orch | undefined;
const groups: number[] = [];
afterEach(async () => {
  for (const g of groups.splice(0)) killGroup(g, 'SIGKILL');
  await orch?.close();
  orch = undefined;
});

async function runningAgent(o: Orch, taskId: number) {
  return waitFor(
    async () => {
      const r = await o.rt.svc.db
        .selectFrom('agent_runs')
        .innerJoin('jobs', 'jobs.id', 'agent_runs.job_id')
        .select(['agent_runs.pid', 'jobs.id as job_id', 'jobs.worker_id'])
        .where('jobs.task_id', '=', taskId)
        .where('jobs.status', '=', 'running')
        .executeTakeFirst();
      // the agent and its sleep are up
      return r?.pid && (await groupMembers(r.pid)).length >= 2 ? { pid: r.pid, jobId: r.job_id, workerId: r.worker_id! } : null;
    },
    30_000,
    'the agent running',
  );
}

describe('orch worker, forced shutdown', () => {
  it('SIGTERM: the shutdown grace, then the agent group killed and the job released (failed/worker_shutdown, requeued with the same attempt)', async () => {
    orch = await startOrch({ env: { ORCH_AGENT: 'command', ORCH_AGENT_CMD: STUBBORN_AGENT, ORCH_WORKER_SHUTDOWN_S: '1.5', ORCH_STOP_GRACE_S: '1' } });
    const task = await createTask(orch.rt.svc, { project: 'p', title: 'outlives the grace' }, 'test');
    const worker = orch.spawn(['worker']);
    const agent = await runningAgent(orch, task.id);
    groups.push(agent.pid);

    const t0 = Date.now();
    worker.kill('SIGTERM');
    // inside the grace the job is left to finish, and a repeated SIGTERM does not cut it short
    await new Promise((r) => setTimeout(r, 500));
    worker.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 400));
    // the agent's sh and its sleep (and, in the sandbox, bwrap itself)
    expect(await groupMembers(agent.pid)).toHaveLength(orch.config.agent.sandbox.mode === 'bwrap' ? 3 : 2);
    expect((await listTaskJobs(orch.rt.svc.db, task.id)).map((j) => j.status)).toEqual(['running']);

    const exit = await worker;
    const took = (Date.now() - t0) / 1000;
    expect(exit.exitCode, String(exit.stderr)).toBe(0);
    // shutdown grace (1.5 s) + stop grace (1 s: the agent ignores SIGTERM, so SIGKILL) + slack
    expect(took).toBeGreaterThanOrEqual(2.5);
    expect(took).toBeLessThan(15);
    expect(await groupMembers(agent.pid)).toEqual([]); // (zombies aside: their parent was the worker)

    const jobs = await listTaskJobs(orch.rt.svc.db, task.id);
    expect(jobs.map((j) => [j.stage, j.status, j.reason, j.attempt])).toEqual([
      ['analysis', 'failed', 'worker_shutdown', 1],
      ['analysis', 'queued', null, 1],
    ]);
    const row = await orch.rt.svc.db.selectFrom('workers').select('stopped_at').where('id', '=', agent.workerId).executeTakeFirst();
    expect(row?.stopped_at).not.toBeNull();
  });

  it('a second SIGINT exits at once with 130, without waiting for the running job', async () => {
    orch = await startOrch({ env: { ORCH_AGENT: 'command', ORCH_AGENT_CMD: STUBBORN_AGENT, ORCH_WORKER_SHUTDOWN_S: '60' } });
    const task = await createTask(orch.rt.svc, { project: 'p', title: 'operator in a hurry' }, 'test');
    const worker = orch.spawn(['worker']);
    const agent = await runningAgent(orch, task.id);
    groups.push(agent.pid);

    let exited = false;
    void worker.then(() => (exited = true));
    worker.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 500));
    expect(exited).toBe(false); // the first one only starts the graceful stop
    const t0 = Date.now();
    worker.kill('SIGINT');
    const exit = await worker;
    expect(exit.exitCode).toBe(130);
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(exit.stderr).toContain('second interrupt, exiting now');
    // nothing was released: the job is the reaper's to judge (its owner's heartbeat stops)
    expect((await listTaskJobs(orch.rt.svc.db, task.id)).map((j) => j.status)).toEqual(['running']);
  });
});
