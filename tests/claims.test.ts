/**
 * The claim (docs/adr/0013): flat in the backlog — a capped project's queue is never walked, the
 * oldest head of the projects with a free slot wins — exact caps under concurrent claims across
 * many projects, and stage affinity (a job preferring a host is left to it for
 * ORCH_AFFINITY_WAIT_MS, measured by the database clock).
 */
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { claimNextJob, type Claimer } from '@orch/shared/db/queries/jobs';
import { requestCancel } from '@orch/shared/cancel';
import { registerWorker } from '@orch/shared/db/queries/workers';
import { createTask } from '@orch/shared/pipeline/tasks';
import { startOrch, type Orch } from './support/harness.ts';

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
