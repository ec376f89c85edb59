/**
 * The promises that races must not break: one advance per job however many finalizers race,
 * exact concurrency caps, the serial gate, dependencies.
 */
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { startAgentRun, recordAgentExit } from '@orch/shared/db/queries/agent-runs';
import { insertArtefact } from '@orch/shared/db/queries/artefacts';
import { claimNextJob, listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getTask } from '@orch/shared/db/queries/tasks';
import { registerWorker } from '@orch/shared/db/queries/workers';
import { finalizeJob } from '@orch/shared/pipeline/finalize';
import { createTask } from '@orch/shared/pipeline/tasks';
import { startOrch, waitFor, type Orch } from './support/harness.ts';
import { agentCmd } from './support/agents.ts';

let orch: Orch | undefined;
afterEach(async () => {
  await orch?.close();
  orch = undefined;
});

async function fakeWorker(o: Orch, id: string) {
  await registerWorker(o.rt.svc.db, { id, host: 'test-host', pid: process.pid, slots: 10 });
  return { workerId: id, host: 'test-host', pid: process.pid, maxConcurrency: o.config.maxConcurrency };
}

describe('claim-before-act', () => {
  it('N concurrent finalizers of one job: exactly one advance and one enqueue', async () => {
    orch = await startOrch();
    const { db } = orch.rt.svc;
    const task = await createTask(orch.rt.svc, { project: 'p', title: 'race' }, 'test');
    const job = (await claimNextJob(db, await fakeWorker(orch, 'w1')))!;
    expect(job.task_id).toBe(task.id);
    const run = await startAgentRun(db, { jobId: job.id, agent: 'test', host: 'test-host', pid: null });
    await recordAgentExit(db, run.id, { exitCode: 0, signal: null, costUsd: null, tokensIn: null, tokensOut: null, logTail: '', error: null });
    await insertArtefact(db, { taskId: task.id, jobId: job.id, stage: 'analysis', name: 'analysis.md', content: '# plan' });

    const outcomes = await Promise.all(Array.from({ length: 12 }, (_, i) => finalizeJob(orch!.rt.svc, job.id, `racer-${i}`)));
    // one winner, and it is the one that acted: the flipped row is its own, and the only
    // job_done event is signed by it (the other eleven, lost or late, wrote nothing)
    const winners = outcomes.flatMap((o, i) => (o.kind === 'finalized' ? [{ o, actor: `racer-${i}` }] : []));
    expect(winners).toHaveLength(1);
    expect(winners[0]!.o).toMatchObject({ job: { id: job.id, status: 'done' }, verdict: { verdict: 'pass' } });
    const done = await sql<{ actor: string }>`SELECT actor FROM task_events WHERE task_id = ${task.id} AND kind = 'job_done'`.execute(db);
    expect(done.rows.map((r) => r.actor)).toEqual([winners[0]!.actor]);

    const jobs = await listTaskJobs(db, task.id);
    expect(jobs.map((j) => [j.stage, j.status])).toEqual([
      ['analysis', 'done'],
      ['implementation', 'queued'],
    ]);
    expect((await getTask(db, task.id))!.stage).toBe('implementation');
    const events = await sql<{ n: number }>`SELECT count(*)::int AS n FROM task_events WHERE task_id = ${task.id} AND kind = 'stage_changed'`.execute(db);
    expect(events.rows[0]!.n).toBe(1);
    const tokens = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pgboss.job WHERE name = 'orch-dispatch' AND data->>'jobId' = ${String(jobs[1]!.id)}`.execute(db);
    expect(tokens.rows[0]!.n).toBe(1);
  });
});

describe('concurrency caps', () => {
  it('fleet and project caps hold exactly while 30 claimers race', async () => {
    orch = await startOrch({ env: { ORCH_MAX_CONCURRENCY: '5' }, project: { max_concurrency: 2 } });
    const { db } = orch.rt.svc;
    await orch.addProject({ slug: 'q', max_concurrency: 10 });
    for (let i = 0; i < 12; i++) {
      await createTask(orch.rt.svc, { project: 'p', title: `p${i}` }, 'test');
      await createTask(orch.rt.svc, { project: 'q', title: `q${i}` }, 'test');
    }
    const claimers = await Promise.all(Array.from({ length: 30 }, (_, i) => fakeWorker(orch!, `w${i}`)));
    const claimed = await Promise.all(claimers.map((c) => claimNextJob(db, c)));
    expect(claimed.filter(Boolean)).toHaveLength(5);
    const perProject = await sql<{ slug: string; n: number }>`
      SELECT p.slug, count(*)::int AS n FROM jobs j JOIN tasks t ON t.id = j.task_id JOIN projects p ON p.id = t.project_id
      WHERE j.status = 'running' GROUP BY p.slug`.execute(db);
    const bySlug = Object.fromEntries(perProject.rows.map((r) => [r.slug, r.n]));
    expect(bySlug.p).toBe(2);
    expect(bySlug.q).toBe(3);
    // a second wave claims nothing: every slot is taken
    expect((await Promise.all(claimers.map((c) => claimNextJob(db, c)))).filter(Boolean)).toHaveLength(0);
  });

  it('real workers never exceed the caps (sampled while running)', async () => {
    orch = await startOrch({
      env: { ORCH_MAX_CONCURRENCY: '3', ORCH_WORKER_SLOTS: '4', ORCH_AGENT: 'command', ORCH_AGENT_CMD: agentCmd({ ORCH_AGENT_SLEEP: '0.2' }) },
      project: { max_concurrency: 2 },
    });
    const { db } = orch.rt.svc;
    for (let i = 0; i < 8; i++) await createTask(orch.rt.svc, { project: 'p', title: `t${i}` }, 'test');
    await Promise.all([orch.worker(), orch.worker()]);
    let maxRunning = 0;
    await waitFor(async () => {
      const r = await sql<{ n: number; done: number }>`
        SELECT (SELECT count(*)::int FROM jobs WHERE status = 'running') AS n,
               (SELECT count(*)::int FROM tasks WHERE stage = 'done') AS done`.execute(db);
      maxRunning = Math.max(maxRunning, r.rows[0]!.n);
      return r.rows[0]!.done === 8;
    }, 60_000, 'all tasks done');
    expect(maxRunning).toBeGreaterThan(0);
    expect(maxRunning).toBeLessThanOrEqual(2);
  });
});

describe('serial gate', () => {
  it('one task past analysis at a time, in creation order, even when a younger analysis finishes first', async () => {
    // task 1's analysis is slow, so tasks 2 and 3 finish analysis first and must wait for it.
    const cmd = `if [ "$ORCH_TASK_ID" = 1 ] && [ "$ORCH_STAGE" = analysis ]; then sleep 1.5; fi; ${agentCmd()}`;
    orch = await startOrch({ env: { ORCH_AGENT: 'command', ORCH_AGENT_CMD: cmd, ORCH_MAX_CONCURRENCY: '6', ORCH_WORKER_SLOTS: '6' }, project: { serial: true, max_concurrency: 6 } });
    const { db } = orch.rt.svc;
    const ids: number[] = [];
    for (let i = 0; i < 3; i++) ids.push((await createTask(orch.rt.svc, { project: 'p', title: `s${i}` }, 'test')).id);
    expect(ids).toEqual([1, 2, 3]);
    await orch.worker();
    const reaper = await orch.reaper();
    reaper.start();
    let maxPast = 0;
    await waitFor(async () => {
      const r = await sql<{ past: number; done: number }>`
        SELECT count(*) FILTER (WHERE stage NOT IN ('analysis','done','cancelled'))::int AS past,
               count(*) FILTER (WHERE stage = 'done')::int AS done FROM tasks`.execute(db);
      maxPast = Math.max(maxPast, r.rows[0]!.past);
      return r.rows[0]!.done === 3;
    }, 60_000, 'serial tasks done');
    expect(maxPast).toBe(1);
    const order = await sql<{ task_id: number }>`
      SELECT task_id FROM task_events WHERE kind = 'stage_changed' AND data->>'to' = 'done' ORDER BY id`.execute(db);
    expect(order.rows.map((r) => r.task_id)).toEqual([1, 2, 3]);
    const waited = await sql<{ n: number }>`SELECT count(*)::int AS n FROM task_events WHERE kind = 'waiting' AND reason = 'serial'`.execute(db);
    expect(waited.rows[0]!.n).toBeGreaterThanOrEqual(1);
  });
});

describe('dependencies', () => {
  it('a dependent task waits (no job) until its dependency is terminal, then runs to done', async () => {
    const cmd = `if [ "$ORCH_TASK_ID" = 1 ]; then sleep 0.3; fi; ${agentCmd()}`;
    orch = await startOrch({ env: { ORCH_AGENT: 'command', ORCH_AGENT_CMD: cmd } });
    const { db } = orch.rt.svc;
    const a = await createTask(orch.rt.svc, { project: 'p', title: 'a' }, 'test');
    const b = await createTask(orch.rt.svc, { project: 'p', title: 'b', dependsOn: [a.id] }, 'test');
    expect(b.waiting_for).toBe('dependencies');
    expect(await listTaskJobs(db, b.id)).toEqual([]);
    await expect(createTask(orch.rt.svc, { project: 'p', title: 'c', dependsOn: [999] }, 'test')).rejects.toThrow(/unknown dependency/);
    await orch.worker();
    await waitFor(async () => (await getTask(db, b.id))?.stage === 'done', 60_000, 'b done');
    const aDone = await sql<{ id: number }>`SELECT id FROM task_events WHERE task_id = ${a.id} AND data->>'to' = 'done'`.execute(db);
    const bFirstJob = (await listTaskJobs(db, b.id))[0]!;
    const aDoneEvent = await sql<{ created_at: Date }>`SELECT created_at FROM task_events WHERE id = ${aDone.rows[0]!.id}`.execute(db);
    expect(bFirstJob.created_at.getTime()).toBeGreaterThanOrEqual(aDoneEvent.rows[0]!.created_at.getTime());
  });
});
