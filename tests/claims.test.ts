/**
 * The claim (docs/adr/0013): flat in the backlog — a capped project's queue is never walked, the
 * oldest head of the projects with a free slot wins — exact caps under concurrent claims across
 * many projects, and stage affinity (a job preferring a host is left to it for
 * ORCH_AFFINITY_WAIT_MS, measured by the database clock).
 */
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { startAgentRun, recordAgentExit } from '@orch/shared/db/queries/agent-runs';
import { insertArtefact } from '@orch/shared/db/queries/artefacts';
import { claimNextJob, listTaskJobs, type Claimer } from '@orch/shared/db/queries/jobs';
import { requestCancel } from '@orch/shared/cancel';
import { registerWorker } from '@orch/shared/db/queries/workers';
import { finalizeJob } from '@orch/shared/pipeline/finalize';
import { createTask } from '@orch/shared/pipeline/tasks';
import { startOrch, waitFor, type Orch } from './support/harness.ts';

let orch: Orch | undefined;
afterEach(async () => {
  await orch?.close();
  orch = undefined;
});

async function claimer(o: Orch, id: string, host = 'test-host', extra: Partial<Claimer> = {}): Promise<Claimer> {
  await registerWorker(o.rt.svc.db, { id, host, pid: process.pid, slots: 10 });
  return { workerId: id, host, pid: process.pid, maxConcurrency: o.config.maxConcurrency, ...extra };
}

/** `n` tasks of the project, each with one job queued (due, older than anything created after) */
async function bulkQueued(o: Orch, projectId: number, n: number): Promise<void> {
  await sql`
    WITH t AS (INSERT INTO tasks (project_id, title) SELECT ${projectId}, 'backlog ' || g FROM generate_series(1, ${n}::int) g RETURNING id)
    INSERT INTO jobs (task_id, project_id, stage, run_after) SELECT id, ${projectId}, 'analysis', now() - interval '1 hour' FROM t
  `.execute(o.rt.svc.db);
}

describe('flat claims', () => {
  it('a capped project with a long queue ahead: the claim takes the other project’s job, and none when nothing is claimable', async () => {
    orch = await startOrch({ env: { ORCH_MAX_CONCURRENCY: '10' }, project: { max_concurrency: 1 } });
    const { db } = orch.rt.svc;
    const w = await claimer(orch, 'w1');
    const first = await createTask(orch.rt.svc, { project: 'p', title: 'holds the slot' }, 'test');
    expect((await claimNextJob(db, w))!.task_id).toBe(first.id); // p's one slot is now taken
    await bulkQueued(orch, orch.project.id, 5000);
    expect(await claimNextJob(db, w)).toBeNull();

    const q = await orch.addProject({ slug: 'q', max_concurrency: 5 });
    const other = await createTask(orch.rt.svc, { project: 'q', title: 'claimable' }, 'test');
    const job = await claimNextJob(db, w);
    expect(job).toMatchObject({ task_id: other.id, project_id: q.id, status: 'running', worker_id: 'w1' });
    expect(await claimNextJob(db, w)).toBeNull();
    const queued = await sql<{ n: number }>`SELECT count(*)::int AS n FROM jobs WHERE status = 'queued' AND project_id = ${orch.project.id}`.execute(db);
    expect(queued.rows[0]!.n).toBe(5000);
  });

  it('the oldest head among projects with a free slot wins; a head whose task is being cancelled is passed over', async () => {
    orch = await startOrch({ env: { ORCH_MAX_CONCURRENCY: '10' }, project: { max_concurrency: 5 } });
    const { db } = orch.rt.svc;
    const w = await claimer(orch, 'w1');
    await orch.addProject({ slug: 'q', max_concurrency: 5 });
    const p1 = await createTask(orch.rt.svc, { project: 'p', title: 'p1' }, 'test');
    const q1 = await createTask(orch.rt.svc, { project: 'q', title: 'q1' }, 'test');
    const p2 = await createTask(orch.rt.svc, { project: 'p', title: 'p2' }, 'test');
    expect((await requestCancel(orch.rt.svc, p1.id, 'test')).status).toBe('requested');
    const order = [];
    for (let i = 0; i < 3; i++) order.push((await claimNextJob(db, w))?.task_id ?? null);
    expect(order).toEqual([q1.id, p2.id, null]);
  });
});

describe('caps under concurrent claims across projects', () => {
  it('six projects capped at 1, 24 claimers at once: one job per project, and the fleet cap when it is lower', async () => {
    orch = await startOrch({ env: { ORCH_MAX_CONCURRENCY: '4' }, project: { max_concurrency: 1 } });
    const { db } = orch.rt.svc;
    const projects = [orch.project];
    for (let i = 1; i < 6; i++) projects.push(await orch.addProject({ slug: `p${i}`, max_concurrency: 1 }));
    for (const p of projects) for (let i = 0; i < 3; i++) await createTask(orch.rt.svc, { project: p.slug, title: `${p.slug}-${i}` }, 'test');
    const claimers = await Promise.all(Array.from({ length: 24 }, (_, i) => claimer(orch!, `w${i}`)));

    const running = async () =>
      (await sql<{ project_id: number; n: number }>`SELECT project_id, count(*)::int AS n FROM jobs WHERE status = 'running' GROUP BY project_id`.execute(db)).rows;
    // fleet cap 4 binds first
    expect((await Promise.all(claimers.map((c) => claimNextJob(db, c)))).filter(Boolean)).toHaveLength(4);
    expect((await running()).every((r) => r.n === 1)).toBe(true);
    // with room in the fleet, the project caps bind: two more, one for each project still free
    const wide = claimers.map((c) => ({ ...c, maxConcurrency: 100 }));
    expect((await Promise.all(wide.map((c) => claimNextJob(db, c)))).filter(Boolean)).toHaveLength(2);
    const after = await running();
    expect(after).toHaveLength(6);
    expect(after.every((r) => r.n === 1)).toBe(true);
    expect((await Promise.all(wide.map((c) => claimNextJob(db, c)))).filter(Boolean)).toHaveLength(0);
  });
});

describe('stage affinity', () => {
  it('the next stage records the host that ran the previous one', async () => {
    orch = await startOrch();
    const { db } = orch.rt.svc;
    const task = await createTask(orch.rt.svc, { project: 'p', title: 'affinity' }, 'test');
    const job = (await claimNextJob(db, await claimer(orch, 'wa', 'host-a')))!;
    expect(job.preferred_host).toBeNull(); // a task's first job prefers nobody
    const run = await startAgentRun(db, { jobId: job.id, agent: 'test', host: 'host-a', pid: null });
    await recordAgentExit(db, run.id, { exitCode: 0, signal: null, costUsd: null, tokensIn: null, tokensOut: null, logTail: '', error: null });
    await insertArtefact(db, { taskId: task.id, jobId: job.id, stage: 'analysis', name: 'analysis.md', content: '# plan' });
    expect((await finalizeJob(orch.rt.svc, job.id, 'test')).kind).toBe('finalized');
    const next = (await listTaskJobs(db, task.id)).at(-1)!;
    expect(next).toMatchObject({ stage: 'implementation', status: 'queued', preferred_host: 'host-a' });
  });

  it('a job preferring host A: host B does not take it before the wait and does after it; host A takes one at once', async () => {
    const waitMs = 1000;
    orch = await startOrch({ env: { ORCH_MAX_CONCURRENCY: '10' }, project: { max_concurrency: 10 } });
    const { db } = orch.rt.svc;
    const a = await claimer(orch, 'wa', 'host-a', { affinityWaitMs: waitMs });
    const b = await claimer(orch, 'wb', 'host-b', { affinityWaitMs: waitMs });
    const t1 = await createTask(orch.rt.svc, { project: 'p', title: 't1' }, 'test');
    const t2 = await createTask(orch.rt.svc, { project: 'p', title: 't2' }, 'test');
    // both became due just now (database clock) and prefer host A
    await sql`UPDATE jobs SET preferred_host = 'host-a', run_after = now() WHERE status = 'queued'`.execute(db);

    expect(await claimNextJob(db, b)).toBeNull();
    expect(await claimNextJob(db, { ...b, affinityWaitMs: 0 }).then((j) => j?.task_id)).toBe(t1.id); // 0 = no preference
    expect((await claimNextJob(db, a))?.task_id).toBe(t2.id);

    const t3 = await createTask(orch.rt.svc, { project: 'p', title: 't3' }, 'test');
    await sql`UPDATE jobs SET preferred_host = 'host-a', run_after = now() WHERE task_id = ${t3.id}`.execute(db);
    expect(await claimNextJob(db, b)).toBeNull();
    await new Promise((r) => setTimeout(r, waitMs + 100));
    expect((await claimNextJob(db, b))?.task_id).toBe(t3.id);
  });

  it('a worker of another host woken for a job preferring host A claims it once the wait is over, not at its next poll', async () => {
    orch = await startOrch({ env: { ORCH_AFFINITY_WAIT_MS: '400', ORCH_DISPATCH_POLL_S: '60' } });
    const { db } = orch.rt.svc;
    const task = await createTask(orch.rt.svc, { project: 'p', title: 'left to host A' }, 'test');
    const [queued] = await listTaskJobs(db, task.id);
    await sql`UPDATE jobs SET preferred_host = 'host-a', run_after = now() WHERE id = ${queued!.id}`.execute(db);
    const b = await orch.worker({ env: { ORCH_HOST_ID: 'host-b' }, id: 'wb' }); // its start-up drain leaves the job alone
    await new Promise((r) => setTimeout(r, 100));
    expect(b.stats.claimed).toBe(0);
    await sql`SELECT pg_notify('orch_dispatch', ${`${queued!.id}@host-a`})`.execute(db); // the wake enqueueJob sends
    await waitFor(async () => b.stats.claimed === 1, 5000, 'host B claims after the wait');
    const r = await sql<{ waited_s: number; worker_id: string }>`
      SELECT extract(epoch FROM started_at - run_after)::float8 AS waited_s, worker_id FROM jobs WHERE id = ${queued!.id}`.execute(db);
    expect(r.rows[0]!.worker_id).toBe('wb');
    expect(r.rows[0]!.waited_s).toBeGreaterThanOrEqual(0.4);
    expect(r.rows[0]!.waited_s).toBeLessThan(5);
  });
});
