/**
 * Ages are the database's (`now() - heartbeat_at`), never the caller's clock against a database
 * timestamp: a host whose clock runs 10 minutes ahead — far past ORCH_HEARTBEAT_TIMEOUT_S and the
 * reaper's freshness window — still judges a live owner alive and still shows the ticking reaper
 * leader. Only `Date` is faked (timers run for real, Postgres keeps its own clock).
 */
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApp } from '@orch/api/app';
import { completeCancel, requestCancel } from '@orch/shared/cancel';
import { claimNextJob, getJob } from '@orch/shared/db/queries/jobs';
import { saveReaperState } from '@orch/shared/db/queries/reaper-state';
import { heartbeatWorker, registerWorker } from '@orch/shared/db/queries/workers';
import { createTask } from '@orch/shared/pipeline/tasks';
import { startOrch, type Orch } from './support/harness.ts';

const AHEAD_MS = 10 * 60 * 1000;

let orch: Orch;
beforeAll(async () => {
  orch = await startOrch();
});
afterAll(async () => orch?.close());
afterEach(() => {
  vi.useRealTimers();
});

/** From here on this process's `Date` runs 10 minutes ahead of the database's clock. */
async function skewClock(): Promise<void> {
  vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + AHEAD_MS });
  const r = await sql<{ ms: number }>`SELECT extract(epoch FROM now()) * 1000 AS ms`.execute(orch.rt.svc.db);
  expect(Date.now() - Number(r.rows[0]!.ms)).toBeGreaterThan(AHEAD_MS - 5_000);
}

describe('a caller whose clock is 10 minutes ahead', () => {
  it('judges an owner that heartbeats alive: completing a cancel waits for it (wait_owner)', async () => {
    const svc = orch.rt.svc;
    await registerWorker(svc.db, { id: 'w-live', host: 'test-host', pid: process.pid, slots: 1 });
    const task = await createTask(svc, { project: 'p', title: 'owned by a live worker' }, 'test');
    const job = await claimNextJob(svc.db, { workerId: 'w-live', host: 'test-host', pid: process.pid, maxConcurrency: 5 });
    expect(job?.task_id).toBe(task.id);
    await requestCancel(svc, task.id, 'test');
    await heartbeatWorker(svc.db, 'w-live');

    await skewClock();
    expect(await completeCancel(svc, task.id, 'test')).toBe('wait_owner');
    expect((await getJob(svc.db, job!.id))!.status).toBe('running');
  });

  it('still shows the ticking reaper leader in GET /queue', async () => {
    const svc = orch.rt.svc;
    await saveReaperState(svc.db, {
      id: 'r-1',
      host: 'test-host',
      pid: 4242,
      isLeader: true,
      intervalS: 1,
      add: { dead_owner: 0, known_outcome: 0, max_running: 0, lease_reclaims: 0, cancels_completed: 0 },
      error: null,
    });
    const app = createApp({ db: svc.db, boss: svc.boss, config: orch.config, log: orch.log });
    await skewClock();
    const q = (await (await app.request('/queue')).json()) as { reaper: { leader: string | null } };
    expect(q.reaper.leader).toBe('test-host:4242');
  });
});
