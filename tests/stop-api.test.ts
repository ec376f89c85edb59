/**
 * STOP entry points and the cancel's bookkeeping (ARCHITECTURE §5, §9 "STOP details"):
 * queued tasks, the deferred critical window as `GET /queue` shows it, done/twice/unknown,
 * Plane's STOP with the tombstone and a re-create from "To Analyse", and the kill switch.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { completeCancel, requestCancel } from '@orch/shared/cancel';
import { listArtefacts } from '@orch/shared/db/queries/artefacts';
import { enterCriticalWindow, getLiveTaskByIssue, leaveCriticalWindow } from '@orch/shared/db/queries/tasks';
import { OrchError } from '@orch/shared/runtime/errors';
import { createTask } from '@orch/shared/pipeline/tasks';
import { startOrch, type Orch } from './support/harness.ts';
import {
  agentControl,
  apiOf,
  eventsOf,
  jobsOf,
  PLANE_PROJECT,
  planeStateChange,
  postPlane,
  sleep,
  taskRow,
  waitRunningAgent,
  waitStage,
  WEBHOOK_SECRET,
} from './support/stop-helpers.ts';

let orch: Orch | undefined;
afterEach(async () => {
  await orch?.close();
  orch = undefined;
});

describe('STOP of a task without a running job', () => {
  it('TC-01: STOP while queued → job and task cancelled, never requeued (completeCancel, and reaper tick)', async () => {
    orch = await startOrch();
    const svc = orch.rt.svc;
    const a = await createTask(svc, { project: 'p', title: 'queued one' }, 'test');
    const b = await createTask(svc, { project: 'p', title: 'queued two' }, 'test');
    expect((await jobsOf(orch, a.id)).map((j) => j.status)).toEqual(['queued']);

    // a: completed directly; b: by a reaper tick
    expect((await requestCancel(svc, a.id, 'test')).status).toBe('requested');
    const t0 = Date.now();
    expect(await completeCancel(svc, a.id, 'test')).toBe('completed');
    const completeMs = Date.now() - t0;
    expect((await requestCancel(svc, b.id, 'test')).status).toBe('requested');
    const reaper = await orch.reaper();
    const tick = await reaper.tick();
    expect(tick.errors).toEqual([]);
    expect(tick.cancels_completed).toBe(1);

    for (const id of [a.id, b.id]) {
      const t = await taskRow(orch, id);
      expect(t.stage).toBe('cancelled');
      expect(t.cancelled_at).toBeInstanceOf(Date);
      expect(t.cancel_requested_at).toBeInstanceOf(Date);
      const jobs = await jobsOf(orch, id);
      expect(jobs.map((j) => [j.stage, j.status])).toEqual([['analysis', 'cancelled']]);
      const kinds = (await eventsOf(orch, id)).map((e) => e.kind);
      expect(kinds).toContain('cancel_requested');
      expect(kinds.filter((k) => k === 'cancelled')).toHaveLength(1);
    }

    // never requeued: a worker started afterwards finds nothing to run
    const w = await orch.worker();
    await w.drain();
    await sleep(1200);
    await reaper.tick();
    expect(w.stats.claimed).toBe(0);
    for (const id of [a.id, b.id]) expect((await jobsOf(orch, id)).map((j) => j.status)).toEqual(['cancelled']);
    const q = await apiOf(orch).get('/queue');
    expect(q.body.jobs.counts.queued).toBe(0);
    expect(q.body.stop.pending).toEqual([]);
    expect(q.body.stop.completed_total).toBe(2);
    console.log(`[stop] TC-01 completeCancel of a queued task: ${completeMs} ms`);
  });

  it('TC-06 (rows): critical window → completeCancel is deferred and GET /queue lists it under stop.deferred; once closed it completes', async () => {
    orch = await startOrch();
    const svc = orch.rt.svc;
    const api = apiOf(orch);
    const t = await createTask(svc, { project: 'p', title: 'critical' }, 'test');
    expect(await enterCriticalWindow(svc.db, t.id)).toBe(true);
    expect((await requestCancel(svc, t.id, 'test')).status).toBe('requested');

    expect(await completeCancel(svc, t.id, 'test')).toBe('deferred');
    expect(await completeCancel(svc, t.id, 'test', { ownerWorkerId: 'anyone' })).toBe('deferred');
    let q = await api.get('/queue');
    expect(q.status).toBe(200);
    expect(q.body.stop.deferred).toEqual([t.id]);
    expect(q.body.stop.pending).toEqual([]);
    expect((await taskRow(orch, t.id)).stage).toBe('analysis');
    expect((await jobsOf(orch, t.id)).map((j) => j.status)).toEqual(['queued']);

    await leaveCriticalWindow(svc.db, t.id);
    q = await api.get('/queue');
    expect(q.body.stop.deferred).toEqual([]);
    expect(q.body.stop.pending).toEqual([t.id]);
    expect(await completeCancel(svc, t.id, 'test')).toBe('completed');
    q = await api.get('/queue');
    expect(q.body.stop).toMatchObject({ enabled: true, pending: [], deferred: [], completed_total: 1 });
    expect((await taskRow(orch, t.id)).stage).toBe('cancelled');
    expect(await completeCancel(svc, t.id, 'test')).toBe('noop');
  });
});

describe('STOP answers', () => {
  it('TC-08: STOP after done is a no-op: 200 already_done, task unchanged', async () => {
    orch = await startOrch();
    const svc = orch.rt.svc;
    await orch.worker();
    const t = await createTask(svc, { project: 'p', title: 'finish first' }, 'test');
    const done = await waitStage(orch, t.id, 'done', 30_000);
    await sleep(300); // let the worker's after-done cleanup settle

    const before = await taskRow(orch, t.id);
    expect((await requestCancel(svc, t.id, 'test')).status).toBe('already_done');
    const r = await apiOf(orch).post(`/tasks/${t.id}/stop`);
    expect(r.status).toBe(200);
    expect(r.body.status).toBe('already_done');
    expect(await completeCancel(svc, t.id, 'test')).toBe('noop');
    const after = await taskRow(orch, t.id);
    expect(after).toEqual(before);
    expect(after.stage).toBe('done');
    expect(after.cancel_requested_at).toBeNull();
    expect(after.merged_sha).toBe(done.merged_sha);
    expect((await eventsOf(orch, t.id)).map((e) => e.kind)).not.toContain('cancel_requested');
  });

  it('TC-09: STOP twice → second answers 200 with the task unchanged; after the cancel, 200 already_cancelled; `orch stop` exits 0 saying so', async () => {
    orch = await startOrch();
    const svc = orch.rt.svc;
    const api = apiOf(orch);
    const t = await createTask(svc, { project: 'p', title: 'twice' }, 'test');

    const first = await api.post(`/tasks/${t.id}/stop`);
    expect(first.status).toBe(202);
    expect(first.body.status).toBe('requested');
    const row1 = await taskRow(orch, t.id);
    const second = await api.post(`/tasks/${t.id}/stop`);
    expect(second.status).toBe(200);
    expect(second.body.status).toBe('already_requested');
    const row2 = await taskRow(orch, t.id);
    expect(row2).toEqual(row1);
    expect((await eventsOf(orch, t.id)).filter((e) => e.kind === 'cancel_requested')).toHaveLength(1);

    expect(await completeCancel(svc, t.id, 'test')).toBe('completed');
    const row3 = await taskRow(orch, t.id);
    const third = await api.post(`/tasks/${t.id}/stop`);
    expect(third.status).toBe(200);
    expect(third.body.status).toBe('already_cancelled');
    expect(third.body.task.stage).toBe('cancelled');
    expect(await taskRow(orch, t.id)).toEqual(row3);

    const cli = await orch.spawn(['stop', String(t.id)]);
    expect(cli.exitCode).toBe(0);
    expect(String(cli.stdout)).toMatch(/already cancelled/);
    expect(await taskRow(orch, t.id)).toEqual(row3);
  });

  it('TC-10: unknown task → 404 JSON error (API, requestCancel, CLI); unknown Plane issue → ignored_unknown_issue', async () => {
    orch = await startOrch({ env: { PLANE_WEBHOOK_SECRET: WEBHOOK_SECRET }, project: { plane_project: PLANE_PROJECT } });
    const api = apiOf(orch);
    const r = await api.post('/tasks/999999/stop');
    expect(r.status).toBe(404);
    expect(r.body).toEqual({ error: { code: 'not_found', message: expect.any(String) } });
    const bad = await api.post('/tasks/abc/stop');
    expect(bad.status).toBeGreaterThanOrEqual(400);
    expect(bad.status).toBeLessThan(500);
    expect(bad.body.error.code).toEqual(expect.any(String));
    await expect(requestCancel(orch.rt.svc, 999999, 'test')).rejects.toMatchObject({ code: 'not_found' });

    const w = await postPlane(orch, planeStateChange('11111111-2222-4333-8444-555555555555', 'Never seen', 'STOP'));
    expect(w.status).toBe(202);
    expect(w.body).toEqual({ status: 'ignored_unknown_issue', task_id: null });

    const cli = await orch.spawn(['stop', '999999']);
    expect(cli.exitCode).not.toBe(0);
    expect(String(cli.stderr)).toMatch(/unknown task/);
  });
});

describe('Plane STOP', () => {
  it('TC-14: STOP webhook → running agent stopped, plane_issue_id tombstoned, artefacts kept; "To Analyse" again → a new task runs to done', async () => {
    const ctl = await agentControl();
    orch = await startOrch({ env: { ...ctl.env, PLANE_WEBHOOK_SECRET: WEBHOOK_SECRET }, project: { plane_project: PLANE_PROJECT } });
    await orch.worker();
    (await orch.reaper()).start();
    const issue = 'e1b5f0b4-6a3b-4d50-9f7c-1b7f2b1d2c3e';

    const created = await postPlane(orch, planeStateChange(issue, 'Plane task', 'To Analyse'));
    expect(created.status).toBe(202);
    expect(created.body.status).toBe('task_created');
    const t1 = created.body.task_id as number;
    await ctl.mode(`${t1}-implementation`, 'tree');
    await waitRunningAgent(orch, t1, 'implementation', 3);

    const stopBody = planeStateChange(issue, 'Plane task', 'STOP', 'To Analyse');
    const stop = await postPlane(orch, stopBody);
    expect(stop.body).toEqual({ status: 'stop_requested', task_id: t1 });
    const c1 = await waitStage(orch, t1, 'cancelled');
    expect(c1.plane_issue_id).toBe(`${issue}~cancelled~${t1}`);
    expect(c1.cancel_reason).toBe('plane_stop');
    expect((await listArtefacts(orch.rt.svc.db, t1)).map((a) => a.stage)).toContain('analysis');
    expect(await getLiveTaskByIssue(orch.rt.svc.db, issue)).toBeUndefined();
    // redelivery of the same STOP is harmless
    expect((await postPlane(orch, stopBody)).body.status).toBe('duplicate');
    // a STOP of an issue whose only task is cancelled: nothing live to stop
    await sleep(5);
    expect((await postPlane(orch, planeStateChange(issue, 'Plane task', 'STOP', 'Backlog'))).body.status).toBe('ignored_unknown_issue');

    const again = await postPlane(orch, planeStateChange(issue, 'Plane task', 'To Analyse', 'STOP'));
    expect(again.body.status).toBe('task_created');
    const t2 = again.body.task_id as number;
    expect(t2).not.toBe(t1);
    const d2 = await waitStage(orch, t2, 'done', 30_000);
    expect(d2.plane_issue_id).toBe(issue);
    expect((await getLiveTaskByIssue(orch.rt.svc.db, issue))?.id).toBe(t2);
    expect((await jobsOf(orch, t2)).map((j) => [j.stage, j.status])).toEqual([
      ['analysis', 'done'],
      ['implementation', 'done'],
      ['review', 'done'],
      ['merge', 'done'],
    ]);
    // the cancelled task stayed cancelled and tombstoned
    expect(await taskRow(orch, t1)).toMatchObject({ stage: 'cancelled', plane_issue_id: `${issue}~cancelled~${t1}` });
  });
});

describe('kill switch ORCH_STOP_STATUS_ENABLED=false', () => {
  it('KS-01: POST stop → 409 stop_disabled, Plane STOP ignored, `orch stop` exits non-zero; the pipeline still runs to done', async () => {
    orch = await startOrch({
      env: { ORCH_STOP_STATUS_ENABLED: 'false', PLANE_WEBHOOK_SECRET: WEBHOOK_SECRET },
      project: { plane_project: PLANE_PROJECT },
    });
    const issue = 'a1b2c3d4-0000-4000-8000-00000000beef';
    const created = await postPlane(orch, planeStateChange(issue, 'Switch off', 'To Analyse'));
    expect(created.body.status).toBe('task_created');
    const id = created.body.task_id as number;

    const r = await apiOf(orch).post(`/tasks/${id}/stop`);
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe('stop_disabled');
    const p = await postPlane(orch, planeStateChange(issue, 'Switch off', 'STOP', 'To Analyse'));
    expect(p.status).toBe(202);
    expect(p.body.status).toBe('ignored_stop_disabled');
    const cli = await orch.spawn(['stop', String(id)]);
    expect(cli.exitCode).not.toBe(0);
    expect(String(cli.stderr) + String(cli.stdout)).toMatch(/STOP is disabled|stop_disabled/);
    await expect(requestCancel(orch.rt.svc, id, 'test')).rejects.toBeInstanceOf(OrchError);
    expect((await taskRow(orch, id)).cancel_requested_at).toBeNull();

    await orch.worker();
    (await orch.reaper()).start();
    const done = await waitStage(orch, id, 'done', 30_000);
    expect(done.cancel_requested_at).toBeNull();
    expect(done.plane_issue_id).toBe(issue);
    expect((await jobsOf(orch, id)).every((j) => j.status === 'done')).toBe(true);
    const q = await apiOf(orch).get('/queue');
    expect(q.body.stop.enabled).toBe(false);
  });
});

