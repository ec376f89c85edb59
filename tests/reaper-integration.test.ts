/**
 * The reaper against a real Postgres: tiers, claim-before-act under races, leadership, streaks
 * across restarts, Tier 3's kill, a zombie holding the last slot, merge-lease reclaim, the
 * janitor, the kill switch and the `GET /queue` reaper block.
 *
 * Most cases build their running jobs by hand (a fake worker row + `claimNextJob`), so the
 * reaper is driven with `tick()` for determinism; the cases about real processes (Tier 3, the
 * zombie, merges) run a real in-process worker.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { createApp } from '@orch/api/app';
import { recordAgentExit, startAgentRun } from '@orch/shared/db/queries/agent-runs';
import { insertArtefact } from '@orch/shared/db/queries/artefacts';
import { claimNextJob, flipRunningJob, getJob, listTaskJobs } from '@orch/shared/db/queries/jobs';
import { tryMergeLock } from '@orch/shared/db/queries/advisory-locks';
import { recordLease } from '@orch/shared/db/queries/merge-leases';
import { getTask } from '@orch/shared/db/queries/tasks';
import { heartbeatWorker, registerWorker } from '@orch/shared/db/queries/workers';
import type { Job, Task } from '@orch/shared/db/types';
import { abortJob, finalizeJob } from '@orch/shared/pipeline/finalize';
import { createTask } from '@orch/shared/pipeline/tasks';
import { groupMembers, killGroup, processAlive } from '@orch/shared/host/process-group';
import { killOrphanAgents } from '@orch/shared/host/orphans';
import type { Reaper, TickReport } from '@orch/reaper/reaper';
import { bareRepo, startOrch, waitFor, type Orch } from './support/harness.ts';

let orchs: Orch[] = [];
async function orchWith(env: Record<string, string> = {}, project: Record<string, unknown> = {}): Promise<Orch> {
  const o = await startOrch({ env, project: { max_concurrency: 50, ...project } });
  orchs.push(o);
  return o;
}
let spawned: number[] = [];
afterEach(async () => {
  for (const o of orchs) await o.close();
  orchs = [];
  for (const pid of spawned) killGroup(pid, 'SIGKILL');
  spawned = [];
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A pid that certainly belonged to a process and is gone now. */
function deadPid(): number {
  for (;;) {
    const pid = spawnSync('true').pid!;
    if (!processAlive(pid)) return pid;
  }
}

async function fakeWorker(o: Orch, w: { id: string; host?: string; pid?: number; hbAgeS?: number }): Promise<void> {
  await registerWorker(o.rt.svc.db, { id: w.id, host: w.host ?? 'elsewhere', pid: w.pid ?? process.pid, slots: 4 });
  if (w.hbAgeS) await setHeartbeatAge(o, w.id, w.hbAgeS);
}

async function setHeartbeatAge(o: Orch, workerId: string, ageS: number): Promise<void> {
  await sql`UPDATE workers SET heartbeat_at = now() - make_interval(secs => ${ageS}) WHERE id = ${workerId}`.execute(o.rt.svc.db);
}

/** A new task whose analysis job is claimed (running) by the given worker row. */
async function runningJob(o: Orch, workerId: string, title = 'a task', project = 'p'): Promise<{ task: Task; job: Job }> {
  const w = (await o.rt.svc.db.selectFrom('workers').selectAll().where('id', '=', workerId).executeTakeFirst())!;
  const task = await createTask(o.rt.svc, { project, title }, 'test');
  const job = await claimNextJob(o.rt.svc.db, { workerId, host: w.host, pid: w.pid, maxConcurrency: 100 });
  expect(job?.task_id).toBe(task.id);
  return { task, job: job! };
}

/** The agent of a running job ran and exited (optionally leaving the analysis artefact). */
async function agentExited(o: Orch, job: Job, opts: { exitCode?: number; artefact?: string | null; host?: string } = {}): Promise<void> {
  const run = await startAgentRun(o.rt.svc.db, { jobId: job.id, agent: 'command', host: opts.host ?? 'elsewhere', pid: deadPid() });
  if (opts.artefact !== null) {
    await insertArtefact(o.rt.svc.db, { taskId: job.task_id, jobId: job.id, stage: job.stage, name: `${job.stage}.md`, content: opts.artefact ?? '# analysis\n\nfine\n' });
  }
  await recordAgentExit(o.rt.svc.db, run.id, { exitCode: opts.exitCode ?? 0, signal: null, costUsd: null, tokensIn: null, tokensOut: null, logTail: '', error: null });
}

async function count(o: Orch, q: ReturnType<typeof sql<{ n: number }>>): Promise<number> {
  return (await q.execute(o.rt.svc.db)).rows[0]!.n;
}

async function dispatchTokensFor(o: Orch, jobId: number): Promise<number> {
  return count(o, sql<{ n: number }>`SELECT count(*)::int AS n FROM pgboss.job WHERE name = 'orch-dispatch' AND data->>'jobId' = ${String(jobId)}`);
}

/** Everything a finalizer could write, for "nothing was written" assertions. */
async function footprint(o: Orch, taskId: number) {
  const db = o.rt.svc.db;
  return {
    task: await getTask(db, taskId),
    jobs: await listTaskJobs(db, taskId),
    events: await count(o, sql<{ n: number }>`SELECT count(*)::int AS n FROM task_events WHERE task_id = ${taskId}`),
    artefacts: await count(o, sql<{ n: number }>`SELECT count(*)::int AS n FROM artefacts WHERE task_id = ${taskId}`),
    // wake tokens naming one of this task's jobs (the reaper's dispatch backstop sends anonymous ones)
    tokens: await count(
      o,
      sql<{ n: number }>`SELECT count(*)::int AS n FROM pgboss.job WHERE name = 'orch-dispatch'
        AND data->>'jobId' IN (SELECT id::text FROM jobs WHERE task_id = ${taskId})`,
    ),
    outbox: await count(o, sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox`),
  };
}

async function events(o: Orch, taskId: number, kind?: string) {
  let q = o.rt.svc.db.selectFrom('task_events').selectAll().where('task_id', '=', taskId);
  if (kind) q = q.where('kind', '=', kind);
  return q.orderBy('id').execute();
}

async function reaperTotals(o: Orch) {
  return (
    await sql<{ dead_owner: number; known_outcome: number; max_running: number; lease_reclaims: number }>`
      SELECT coalesce(sum(reaped_dead_owner), 0)::int AS dead_owner, coalesce(sum(reaped_known_outcome), 0)::int AS known_outcome,
             coalesce(sum(reaped_max_running), 0)::int AS max_running, coalesce(sum(lease_reclaims), 0)::int AS lease_reclaims
      FROM reaper_state`.execute(o.rt.svc.db)
  ).rows[0]!;
}

/** Backends of this database waiting on a row lock (optionally of one application). */
async function lockWaiters(o: Orch, app?: string): Promise<number> {
  return count(
    o,
    sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND wait_event_type = 'Lock' AND (${app ?? null}::text IS NULL OR application_name = ${app ?? null})`,
  );
}

async function pgClient(o: Orch): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: o.url, application_name: 'orch-test-holder' });
  c.on('error', () => {}); // terminated on purpose in some cases
  await c.connect();
  return c;
}

function ok(r: TickReport): TickReport {
  expect(r.errors).toEqual([]);
  return r;
}

async function ticks(r: Reaper, n: number): Promise<TickReport[]> {
  const out: TickReport[] = [];
  for (let i = 0; i < n; i++) out.push(ok(await r.tick()));
  return out;
}

/** Process state from /proc: null when gone; 'Z' zombies count as dead for callers. */
async function procState(pid: number): Promise<string | null> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]!;
  } catch {
    return null;
  }
}

describe('Tier 2: known outcome and the finalize grace', () => {
  it('a live worker finalizing inside the grace is never reaped, even once it looks dead; after the grace the gate decides', async () => {
    const o = await orchWith({ ORCH_REAPER_FINALIZE_GRACE_S: '2.5', ORCH_REAPER_DEAD_TICKS: '2' });
    await fakeWorker(o, { id: 'w-fin', host: o.config.hostId, pid: process.pid });
    const pass = await runningJob(o, 'w-fin', 'with artefact');
    const fail = await runningJob(o, 'w-fin', 'without artefact');
    await agentExited(o, pass.job);
    await agentExited(o, fail.job, { artefact: null });
    const reaper = await o.reaper();

    // Inside the grace with a healthy owner: untouched.
    await heartbeatWorker(o.rt.svc.db, 'w-fin');
    const before = [await footprint(o, pass.task.id), await footprint(o, fail.task.id)];
    for (const r of await ticks(reaper, 3)) expect(r).toMatchObject({ leader: true, dead_owner: 0, known_outcome: 0, max_running: 0 });
    expect([await footprint(o, pass.task.id), await footprint(o, fail.task.id)]).toEqual(before);

    // Still inside the grace, the owner now looks dead (stale heartbeat) for more than DEAD_TICKS ticks: still untouched.
    await setHeartbeatAge(o, 'w-fin', 3600);
    for (const r of await ticks(reaper, 4)) expect(r).toMatchObject({ dead_owner: 0, known_outcome: 0 });
    expect([await footprint(o, pass.task.id), await footprint(o, fail.task.id)]).toEqual(before);
    const exitAge = (await sql<{ s: number }>`SELECT max(extract(epoch FROM now() - finished_at))::float8 AS s FROM agent_runs`.execute(o.rt.svc.db)).rows[0]!.s;
    expect(exitAge).toBeLessThan(2.5); // the ticks above really were inside the grace

    // After the grace: finalized by the reaper through the gate.
    await sleep((2.5 - exitAge) * 1000 + 100);
    const r = ok(await reaper.tick());
    expect(r.known_outcome).toBe(2);
    expect(r.dead_owner).toBe(0);

    const passJobs = await listTaskJobs(o.rt.svc.db, pass.task.id);
    expect(passJobs.map((j) => [j.stage, j.status, j.attempt])).toEqual([
      ['analysis', 'done', 1],
      ['implementation', 'queued', 1],
    ]);
    expect((await getTask(o.rt.svc.db, pass.task.id))!.stage).toBe('implementation');
    const doneEvent = (await events(o, pass.task.id, 'job_done'))[0]!;
    expect(doneEvent.actor).toBe(`reaper:${reaper.id}`);
    expect(await dispatchTokensFor(o, passJobs[1]!.id)).toBe(1);

    const failJobs = await listTaskJobs(o.rt.svc.db, fail.task.id);
    expect(failJobs.map((j) => [j.stage, j.status, j.attempt, j.reason])).toEqual([
      ['analysis', 'failed', 1, 'no_analysis_artefact'],
      ['analysis', 'queued', 2, null],
    ]);
    expect((await getTask(o.rt.svc.db, fail.task.id))!.stage).toBe('analysis');
    expect(await events(o, fail.task.id, 'retry_scheduled')).toHaveLength(1);

    expect(await reaperTotals(o)).toMatchObject({ known_outcome: 2, dead_owner: 0 });
    // Nothing more happens on later ticks.
    const after = [await footprint(o, pass.task.id), await footprint(o, fail.task.id)];
    await ticks(reaper, 2);
    expect([await footprint(o, pass.task.id), await footprint(o, fail.task.id)]).toEqual(after);
  });
});

describe('claim-before-act', () => {
  it('the reaper that loses the flip between its read and its act writes nothing at all', async () => {
    const o = await orchWith({ ORCH_REAPER_FINALIZE_GRACE_S: '0' });
    await fakeWorker(o, { id: 'w1', host: 'elsewhere' });
    const { task, job } = await runningJob(o, 'w1');
    await agentExited(o, job);
    const reaper = await o.reaper();

    // Hold the task row: the reaper reads the job (running), evaluates the gate, then blocks on lockTask.
    const holder = await pgClient(o);
    await holder.query('BEGIN');
    await holder.query('SELECT id FROM tasks WHERE id = $1 FOR UPDATE', [task.id]);
    const tick = reaper.tick();
    await waitFor(async () => (await lockWaiters(o, 'orch-test-reaper')) > 0, 10_000, 'reaper blocked on the task row');

    // Someone else (the worker) wins the flip meanwhile.
    const mine = await flipRunningJob(o.rt.svc.db, job.id, 'failed', { reason: 'flipped_by_test' });
    expect(mine?.status).toBe('failed');
    const before = await footprint(o, task.id);
    await holder.query('COMMIT');
    await holder.end();

    const r = ok(await tick);
    expect(r.known_outcome).toBe(0);
    expect(await footprint(o, task.id)).toEqual(before);
    expect((await getJob(o.rt.svc.db, job.id))!.reason).toBe('flipped_by_test');
    expect((await events(o, task.id)).filter((e) => e.actor.startsWith('reaper:'))).toEqual([]);
  });

  it('N concurrent finalizers: exactly one finalizes; the others lose and write nothing', async () => {
    const o = await orchWith();
    await fakeWorker(o, { id: 'w1', host: 'elsewhere' });
    const { task, job } = await runningJob(o, 'w1');
    await agentExited(o, job);

    // All ten read the job as running and evaluate the gate, then queue up on the task row.
    const holder = await pgClient(o);
    await holder.query('BEGIN');
    await holder.query('SELECT id FROM tasks WHERE id = $1 FOR UPDATE', [task.id]);
    const N = 10;
    const all = Promise.all(Array.from({ length: N }, (_, i) => finalizeJob(o.rt.svc, job.id, `racer-${i}`)));
    await waitFor(async () => (await lockWaiters(o)) >= N, 15_000, `${N} finalizers blocked on the task row`);
    await holder.query('COMMIT');
    await holder.end();
    const results = await all;

    expect(results.filter((r) => r.kind === 'finalized')).toHaveLength(1);
    expect(results.filter((r) => r.kind === 'lost')).toHaveLength(N - 1);
    const jobs = await listTaskJobs(o.rt.svc.db, task.id);
    expect(jobs.map((j) => [j.stage, j.status])).toEqual([
      ['analysis', 'done'],
      ['implementation', 'queued'],
    ]);
    expect(await events(o, task.id, 'stage_changed')).toHaveLength(1);
    expect(await events(o, task.id, 'job_done')).toHaveLength(1);
    expect(await dispatchTokensFor(o, jobs[1]!.id)).toBe(1);
    expect((await getTask(o.rt.svc.db, task.id))!.stage).toBe('implementation');

    // Already advanced: a late finalizer (or abort) is idempotent and writes nothing.
    const before = await footprint(o, task.id);
    expect(await finalizeJob(o.rt.svc, job.id, 'late')).toEqual({ kind: 'not_running' });
    expect(await abortJob(o.rt.svc, job.id, 'late', { reason: 'dead_owner' })).toEqual({ kind: 'lost' });
    expect(await footprint(o, task.id)).toEqual(before);
  });

  it('N concurrent finalizers without any orchestration: still exactly one winner and one next job', async () => {
    const o = await orchWith();
    await fakeWorker(o, { id: 'w1', host: 'elsewhere' });
    const { task, job } = await runningJob(o, 'w1');
    await agentExited(o, job);
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => finalizeJob(o.rt.svc, job.id, `racer-${i}`)));
    const winner = results.findIndex((r) => r.kind === 'finalized');
    expect(results.filter((r) => r.kind === 'finalized')).toHaveLength(1);
    // the winner acted and nobody else did: the one job_done event is the winner's
    expect((await events(o, task.id, 'job_done')).map((e) => e.actor)).toEqual([`racer-${winner}`]);
    const jobs = await listTaskJobs(o.rt.svc.db, task.id);
    expect(jobs.map((j) => [j.stage, j.status])).toEqual([
      ['analysis', 'done'],
      ['implementation', 'queued'],
    ]);
    expect(await events(o, task.id, 'stage_changed')).toHaveLength(1);
    expect(await dispatchTokensFor(o, jobs[1]!.id)).toBe(1);
  });
});

describe('leadership and Tier 1', () => {
  it('two reapers racing: one leader per tick; a dead-owner job is failed once and requeued once; the survivor takes over', async () => {
    const o = await orchWith({ ORCH_REAPER_DEAD_TICKS: '2' });
    await fakeWorker(o, { id: 'w-dead', host: 'elsewhere', hbAgeS: 3600 });
    const { task, job } = await runningJob(o, 'w-dead');
    const a = await o.reaper({ ORCH_HOST_ID: 'ra' });
    const b = await o.reaper({ ORCH_HOST_ID: 'rb' });
    expect(a.id).not.toBe(b.id);

    let leaderId: string | null = null;
    let reaped = 0;
    for (let i = 0; i < 6; i++) {
      const [ra, rb] = await Promise.all([a.tick(), b.tick()]);
      ok(ra);
      ok(rb);
      expect([ra.leader, rb.leader].filter(Boolean)).toHaveLength(1);
      const id = ra.leader ? a.id : b.id;
      leaderId ??= id;
      expect(id).toBe(leaderId); // leadership is sticky while the leader lives
      expect((ra.leader ? rb : ra).dead_owner).toBe(0); // a follower never acts
      reaped += ra.dead_owner + rb.dead_owner;
    }
    expect(reaped).toBe(1);
    const jobs = await listTaskJobs(o.rt.svc.db, task.id);
    expect(jobs.map((j) => [j.id === job.id, j.status, j.attempt, j.reason])).toEqual([
      [true, 'failed', 1, 'dead_owner'],
      [false, 'queued', 2, null],
    ]);
    expect(await events(o, task.id, 'job_failed')).toHaveLength(1);
    expect(await events(o, task.id, 'retry_scheduled')).toHaveLength(1);
    expect((await reaperTotals(o)).dead_owner).toBe(1);

    // The leader goes away: the other one leads on its next tick.
    const [leader, follower] = leaderId === a.id ? [a, b] : [b, a];
    await leader.stop();
    expect(ok(await follower.tick()).leader).toBe(true);
  });

  it('the leader loses its session (backend terminated): exactly one reaper leads on the next ticks, without errors', async () => {
    const o = await orchWith();
    const a = await o.reaper({ ORCH_HOST_ID: 'ra' });
    const b = await o.reaper({ ORCH_HOST_ID: 'rb' });
    expect(ok(await a.tick()).leader).toBe(true);
    expect(ok(await b.tick()).leader).toBe(false);
    await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'orch-reaper-leader'`.execute(o.rt.svc.db);
    await sleep(100);
    for (let i = 0; i < 4; i++) {
      const [ra, rb] = await Promise.all([a.tick(), b.tick()]);
      expect([ra.leader, rb.leader].filter(Boolean)).toHaveLength(1);
      ok(ra);
      ok(rb);
    }
    // a follower keeps no connection open per tick
    const leaders = await count(
      o,
      sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'orch-reaper-leader'`,
    );
    expect(leaders).toBe(1);
  });

  it('a dead-owner streak survives a reaper restart; a live owner on another host is never suspected', async () => {
    const o = await orchWith({ ORCH_REAPER_DEAD_TICKS: '2' });
    const host = o.config.hostId;
    // J1: owner on this host whose pid is gone (heartbeat fresh: only the pid check can see it).
    await fakeWorker(o, { id: 'w-gone', host, pid: deadPid() });
    // J2: owner on another host, alive now, dies between the two reapers (stale heartbeat).
    await fakeWorker(o, { id: 'w-late', host: 'elsewhere' });
    // J3: owner on another host with a pid that does not exist here, heartbeat kept fresh.
    await fakeWorker(o, { id: 'w-far', host: 'elsewhere', pid: deadPid() });
    const j1 = await runningJob(o, 'w-gone', 'one');
    const j2 = await runningJob(o, 'w-late', 'two');
    const j3 = await runningJob(o, 'w-far', 'three');
    const fresh = async () => {
      await heartbeatWorker(o.rt.svc.db, 'w-gone');
      await heartbeatWorker(o.rt.svc.db, 'w-far');
    };
    const streaks = async () =>
      Object.fromEntries((await o.rt.svc.db.selectFrom('reaper_streaks').selectAll().execute()).map((s) => [s.job_id, s.ticks]));

    await fresh();
    await heartbeatWorker(o.rt.svc.db, 'w-late');
    const a = await o.reaper();
    expect(ok(await a.tick())).toMatchObject({ leader: true, dead_owner: 0 });
    expect(await streaks()).toEqual({ [j1.job.id]: 1 });
    await a.stop();

    await setHeartbeatAge(o, 'w-late', 3600);
    await fresh();
    const b = await o.reaper();
    expect(ok(await b.tick())).toMatchObject({ leader: true, dead_owner: 1 });
    expect((await getJob(o.rt.svc.db, j1.job.id))!).toMatchObject({ status: 'failed', reason: 'dead_owner' });
    expect((await getJob(o.rt.svc.db, j2.job.id))!.status).toBe('running'); // first dead tick for J2
    expect(await streaks()).toEqual({ [j2.job.id]: 1 });

    await fresh();
    expect(ok(await b.tick()).dead_owner).toBe(1);
    expect((await getJob(o.rt.svc.db, j2.job.id))!).toMatchObject({ status: 'failed', reason: 'dead_owner' });
    for (let i = 0; i < 3; i++) {
      await fresh();
      ok(await b.tick());
    }
    expect((await getJob(o.rt.svc.db, j3.job.id))!.status).toBe('running');
    expect(await streaks()).toEqual({});
    for (const { task } of [j1, j2]) {
      expect((await listTaskJobs(o.rt.svc.db, task.id)).map((j) => [j.status, j.attempt])).toEqual([
        ['failed', 1],
        ['queued', 2],
      ]);
    }
  });

  it('a heartbeat that comes back resets the streak', async () => {
    const o = await orchWith({ ORCH_REAPER_DEAD_TICKS: '2' });
    await fakeWorker(o, { id: 'w-flaky', host: 'elsewhere', hbAgeS: 3600 });
    const { job } = await runningJob(o, 'w-flaky');
    const r = await o.reaper();
    ok(await r.tick()); // streak 1
    await heartbeatWorker(o.rt.svc.db, 'w-flaky');
    ok(await r.tick()); // alive: streak reset
    await setHeartbeatAge(o, 'w-flaky', 3600);
    expect(ok(await r.tick()).dead_owner).toBe(0); // streak 1 again, not 2
    expect((await getJob(o.rt.svc.db, job.id))!.status).toBe('running');
    expect(ok(await r.tick()).dead_owner).toBe(1);
  });
});

describe('Tier 3 and zombies, with a real worker', () => {
  it('max running: the job is failed, the agent group (ignoring SIGTERM) is dead within STOP_GRACE + one poll, a retry exists', async () => {
    const o = await orchWith({
      ORCH_AGENT: 'command',
      ORCH_AGENT_CMD: 'trap "" TERM; while :; do sleep 0.1; done',
      ORCH_REAPER_MAX_RUNNING_S: '1',
      ORCH_STOP_GRACE_S: '1',
      ORCH_CANCEL_POLL_S: '0.2',
      ORCH_RETRY_BACKOFF_BASE_S: '60', // the retry waits: no second hanging agent to shut down
    });
    await o.worker();
    // The reaper on another host: its janitor cannot kill this host's agents, only the worker can.
    const reaper = await o.reaper({ ORCH_HOST_ID: 'reaper-host' });
    const task = await createTask(o.rt.svc, { project: 'p', title: 'hangs forever' }, 'test');
    const run = await waitFor(
      () => o.rt.svc.db.selectFrom('agent_runs').selectAll().where('pid', 'is not', null).executeTakeFirst(),
      20_000,
      'agent started',
    );
    const pid = run.pid!;
    expect(await groupMembers(pid)).not.toEqual([]);

    let report: TickReport | null = null;
    const t0 = await waitFor(async () => {
      report = ok(await reaper.tick());
      return report.max_running > 0 ? Date.now() : null;
    }, 10_000, 'tier 3');
    expect(report!.max_running).toBe(1);
    const failed = (await getJob(o.rt.svc.db, run.job_id))!;
    expect(failed).toMatchObject({ status: 'failed', reason: 'max_running', task_id: task.id });

    const bound = (1 + 0.2) * 1000;
    const gone = await waitFor(async () => {
      const s = await procState(pid);
      return (s === null || s === 'Z') && (await groupMembers(pid)).length === 0 ? Date.now() : null;
    }, 10_000, 'agent group dead');
    expect(gone - t0).toBeLessThanOrEqual(bound + 1000); // slack for scheduling on a busy 2-core box

    const jobs = await listTaskJobs(o.rt.svc.db, task.id);
    expect(jobs).toHaveLength(2);
    expect(jobs[1]).toMatchObject({ stage: 'analysis', attempt: 2, status: 'queued' });
    expect(jobs[1]!.run_after.getTime()).toBeGreaterThan(failed.finished_at!.getTime() + 50_000); // backoff 60·2^0 s
    expect((await reaperTotals(o)).max_running).toBe(1);
  });

  it('a zombie holding the only fleet slot stops blocking another project within the detection bound', async () => {
    const env = { ORCH_MAX_CONCURRENCY: '1', ORCH_HEARTBEAT_TIMEOUT_S: '2', ORCH_REAPER_INTERVAL_S: '0.3', ORCH_REAPER_DEAD_TICKS: '2' };
    const o = await orchWith(env, { max_concurrency: 1 });
    await o.addProject({ slug: 'b', repo: await bareRepo(o.dir, 'repo-b'), max_concurrency: 1 });
    // Project A's job is claimed by a worker that dies right now (its last heartbeat is now).
    await fakeWorker(o, { id: 'w-zombie', host: 'gone-host' });
    const zombie = await runningJob(o, 'w-zombie', 'zombie', 'p');
    await heartbeatWorker(o.rt.svc.db, 'w-zombie');
    const taskB = await createTask(o.rt.svc, { project: 'b', title: 'must not wait forever' }, 'test');

    await o.worker();
    const reaper = await o.reaper();
    reaper.start();
    const done = await waitFor(async () => {
      const t = await getTask(o.rt.svc.db, taskB.id);
      return t?.stage === 'done' ? t : null;
    }, 40_000, 'task B done');
    expect(done.merged_sha).toMatch(/^[0-9a-f]{40}$/);

    const z = (await getJob(o.rt.svc.db, zombie.job.id))!;
    expect(z).toMatchObject({ status: 'failed', reason: 'dead_owner' });
    const lastBeat = (await o.rt.svc.db.selectFrom('workers').select('heartbeat_at').where('id', '=', 'w-zombie').executeTakeFirstOrThrow()).heartbeat_at;
    const detectS = (z.finished_at!.getTime() - lastBeat.getTime()) / 1000;
    const boundS = 2 + (2 + 2) * 0.3;
    expect(detectS).toBeGreaterThan(2); // not before the heartbeat went stale
    // + the ticks' own duration: on a 2-core box running the suite's other files in parallel
    // (the STOP storm among them) ticks of 0.3 s stretch; 4.34 s was seen against a 4.2 s limit
    expect(detectS).toBeLessThanOrEqual(boundS + 2);

    // B really was held back by the zombie (fleet cap 1), and every job of B ran after the reap.
    const bJobs = await listTaskJobs(o.rt.svc.db, taskB.id);
    expect(bJobs.map((j) => j.status)).toEqual(['done', 'done', 'done', 'done']);
    for (const j of bJobs) expect(j.started_at!.getTime()).toBeGreaterThanOrEqual(z.finished_at!.getTime());
    // The zombie's task was requeued and is not left behind.
    expect((await listTaskJobs(o.rt.svc.db, zombie.task.id))[1]).toMatchObject({ attempt: 2 });
  });
});

describe('merge leases', () => {
  async function holdMergeLease(o: Orch, jobId: number): Promise<pg.Client> {
    const c = await pgClient(o);
    expect(await tryMergeLock(c as unknown as pg.PoolClient, o.project.id)).toBe(true);
    await recordLease(c as unknown as pg.PoolClient, { projectId: o.project.id, jobId, workerId: 'ghost' });
    return c;
  }
  async function backendPid(c: pg.Client): Promise<number> {
    return (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  }
  async function mergeBlocked(o: Orch, taskId: number): Promise<Job> {
    const job = await waitFor(
      async () => (await listTaskJobs(o.rt.svc.db, taskId)).find((j) => j.stage === 'merge' && j.status === 'running'),
      30_000,
      'merge job running',
    );
    await sleep(800);
    expect((await getJob(o.rt.svc.db, job.id))!.status).toBe('running');
    expect((await getTask(o.rt.svc.db, taskId))!.merged_sha).toBeNull();
    return job;
  }
  const isDone = (o: Orch, id: number) => async () => ((await getTask(o.rt.svc.db, id))?.stage === 'done' ? true : null);

  it('the holder dies mid-merge (session ends): the next merge proceeds, without any reaper', async () => {
    const o = await orchWith();
    const task = await createTask(o.rt.svc, { project: 'p', title: 'merge after a crash' }, 'test');
    const holder = await holdMergeLease(o, (await listTaskJobs(o.rt.svc.db, task.id))[0]!.id);
    const pid = await backendPid(holder);
    await o.worker();
    await mergeBlocked(o, task.id);

    await sql`SELECT pg_terminate_backend(${pid})`.execute(o.rt.svc.db);
    await waitFor(isDone(o, task.id), 15_000, 'task done');
    expect((await getTask(o.rt.svc.db, task.id))!.merged_sha).toMatch(/^[0-9a-f]{40}$/);
    expect(await o.rt.svc.db.selectFrom('merge_leases').selectAll().execute()).toEqual([]);
    expect(await o.rt.svc.db.selectFrom('reaper_state').selectAll().execute()).toEqual([]);
  });

  it('a live holder past ORCH_MERGE_LEASE_TTL_S: the reaper terminates its backend, the merge proceeds, the reclaim is counted', async () => {
    const o = await orchWith({ ORCH_MERGE_LEASE_TTL_S: '1' });
    const task = await createTask(o.rt.svc, { project: 'p', title: 'merge after a stuck holder' }, 'test');
    const holder = await holdMergeLease(o, (await listTaskJobs(o.rt.svc.db, task.id))[0]!.id);
    const pid = await backendPid(holder);
    await o.worker();
    await mergeBlocked(o, task.id);

    const reaper = await o.reaper();
    const r = ok(await reaper.tick());
    expect(r.lease_reclaims).toBe(1);
    await waitFor(async () => (await count(o, sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${pid}`)) === 0, 5_000, 'holder backend gone');
    await expect(holder.query('SELECT 1')).rejects.toThrow();
    await waitFor(isDone(o, task.id), 15_000, 'task done');
    expect((await reaperTotals(o)).lease_reclaims).toBe(1);
  });

  it('a lease row whose holder is gone is removed (and only when reclaim is enabled)', async () => {
    const o = await orchWith();
    await fakeWorker(o, { id: 'w1', host: 'elsewhere' });
    const { job } = await runningJob(o, 'w1');
    const holder = await holdMergeLease(o, job.id);
    await holder.end();
    await heartbeatWorker(o.rt.svc.db, 'w1');

    const off = await o.reaper({ ORCH_LEASE_RECLAIM_ENABLED: 'false' });
    expect(ok(await off.tick())).toMatchObject({ leader: true, lease_reclaims: 0 });
    expect(await o.rt.svc.db.selectFrom('merge_leases').selectAll().execute()).toHaveLength(1);
    await off.stop();

    const on = await o.reaper();
    expect(ok(await on.tick())).toMatchObject({ leader: true, lease_reclaims: 1 });
    expect(await o.rt.svc.db.selectFrom('merge_leases').selectAll().execute()).toEqual([]);
    expect(ok(await on.tick()).lease_reclaims).toBe(0);
  });

  it('a lease row left by a live connection that no longer holds the lock is removed, but that connection is not killed', async () => {
    const o = await orchWith();
    await fakeWorker(o, { id: 'w1', host: 'elsewhere' });
    const { job } = await runningJob(o, 'w1');
    // A pooled connection: it merged, released the lock, failed to clear its row, and went back to work.
    const pooled = await holdMergeLease(o, job.id);
    await pooled.query('SELECT pg_advisory_unlock_all()');
    await heartbeatWorker(o.rt.svc.db, 'w1');

    const reaper = await o.reaper();
    expect(ok(await reaper.tick())).toMatchObject({ leader: true, lease_reclaims: 1 });
    expect(await o.rt.svc.db.selectFrom('merge_leases').selectAll().execute()).toEqual([]);
    await sleep(200);
    expect((await pooled.query<{ n: number }>('SELECT 1 AS n')).rows[0]!.n).toBe(1);
    await pooled.end();
  });
});

describe('janitor, kill switch, GET /queue', () => {
  it('janitor: worktrees and run dirs of done and cancelled tasks are removed on every reaper (leader or not); live ones are kept', async () => {
    const o = await orchWith();
    const root = o.config.worktreeRoot;
    const mk = async (title: string, stage?: 'done' | 'cancelled') => {
      const t = await createTask(o.rt.svc, { project: 'p', title }, 'test');
      if (stage) await sql`UPDATE tasks SET stage = ${stage}, cancelled_at = ${stage === 'cancelled' ? sql`now()` : null} WHERE id = ${t.id}`.execute(o.rt.svc.db);
      for (const d of [path.join(root, 'p', 'worktrees', String(t.id)), path.join(root, 'p', 'runs', String(t.id))]) {
        await fs.mkdir(d, { recursive: true });
        await fs.writeFile(path.join(d, 'file.txt'), 'x');
      }
      return t;
    };
    const exists = (id: number, kind = 'worktrees') => fs.access(path.join(root, 'p', kind, String(id))).then(() => true, () => false);
    const done = await mk('done', 'done');
    const cancelled = await mk('cancelled', 'cancelled');
    const live = await mk('live');
    // run dirs left without a worktree (the worktree went first, e.g. the worker's own cleanup)
    const runsOnly = await mk('runs only', 'done');
    await fs.rm(path.join(root, 'p', 'worktrees', String(runsOnly.id)), { recursive: true });
    await fs.mkdir(path.join(root, 'p', 'worktrees', 'not-a-task'), { recursive: true });

    const leader = await o.reaper();
    expect(ok(await leader.tick()).leader).toBe(true);
    expect([await exists(done.id), await exists(cancelled.id), await exists(live.id)]).toEqual([false, false, true]);
    expect([await exists(done.id, 'runs'), await exists(cancelled.id, 'runs'), await exists(live.id, 'runs')]).toEqual([false, false, true]);
    expect(await exists(runsOnly.id, 'runs')).toBe(false);
    expect(await fs.access(path.join(root, 'p', 'worktrees', 'not-a-task')).then(() => true, () => false)).toBe(true);

    const later = await mk('done later', 'done');
    const follower = await o.reaper({ ORCH_HOST_ID: 'other' });
    expect(ok(await follower.tick()).leader).toBe(false);
    expect([await exists(later.id), await exists(live.id)]).toEqual([false, true]);
  });

  it('janitor on a worker-only host: a worktree left by a task that finished on another host is removed by the next worker there', async () => {
    const o = await orchWith();
    const rootB = path.join(o.dir, 'worktrees-h2');
    const hostB = { ORCH_HOST_ID: 'h2', ORCH_WORKTREE_ROOT: rootB, ORCH_WORKER_SLOTS: '1', ORCH_DEMO_DELAY_MS: '300' };
    const b = await o.worker({ env: hostB });
    const t = await createTask(o.rt.svc, { project: 'p', title: 'starts on h2, ends on h1' }, 'test');
    const wtB = path.join(rootB, 'p', 'worktrees', String(t.id));
    const exists = (d: string) => fs.access(d).then(() => true, () => false);
    await waitFor(() => exists(wtB), 10_000, 'the first stage running on h2');
    await b.stop(); // graceful: the running stage finishes, the task stays live, h2 keeps its worktree

    await o.worker({ env: { ORCH_HOST_ID: 'h1' } });
    await waitFor(async () => (await getTask(o.rt.svc.db, t.id))!.stage === 'done', 20_000, 'the task done on h1');
    expect((await listTaskJobs(o.rt.svc.db, t.id)).some((j) => j.host === 'h2')).toBe(true);
    expect(await exists(wtB)).toBe(true); // nobody on h2 has looked yet
    const runsB = path.join(rootB, 'p', 'runs', String(t.id));
    expect(await exists(runsB)).toBe(true);

    await o.worker({ env: hostB }); // a worker, and no reaper, on h2
    await waitFor(async () => !(await exists(wtB)) && !(await exists(runsB)), 5_000, 'the h2 worktree and run dirs removed by the h2 worker');
  });

  it('orphan sweep: starts from the processes that carry ORCH_JOB_ID; kills only an agent group recorded on this host for a job no longer running', async () => {
    const o = await orchWith();
    await fakeWorker(o, { id: 'w-orph', host: 'test-host' });
    const agent = (jobId: number) => {
      // an agent group whose leader obeys TERM but whose child ignores everything but KILL
      const c = spawn('sh', ['-c', "trap '' TERM; sleep 60 & wait"], { detached: true, stdio: 'ignore', env: { ...process.env, ORCH_JOB_ID: String(jobId) } });
      c.unref();
      spawned.push(c.pid!);
      return c.pid!;
    };
    const finished = async (job: Job) => sql`UPDATE jobs SET status = 'failed', finished_at = now() WHERE id = ${job.id}`.execute(o.rt.svc.db);

    // 1. the orphan: recorded on this host, its job failed meanwhile → killed, children included
    const a = await runningJob(o, 'w-orph', 'orphan');
    const orphanPid = agent(a.job.id);
    await startAgentRun(o.rt.svc.db, { jobId: a.job.id, agent: 'command', host: 'test-host', pid: orphanPid });
    await finished(a.job);
    // 2. same job id in its environment, but not the recorded group (another deployment's agent)
    const strangerPid = agent(a.job.id);
    // 3. the agent of a job that is still running
    const b = await runningJob(o, 'w-orph', 'live');
    const livePid = agent(b.job.id);
    await startAgentRun(o.rt.svc.db, { jobId: b.job.id, agent: 'command', host: 'test-host', pid: livePid });
    // 4. recorded for another host
    const c = await runningJob(o, 'w-orph', 'elsewhere');
    const otherHostPid = agent(c.job.id);
    await startAgentRun(o.rt.svc.db, { jobId: c.job.id, agent: 'command', host: 'elsewhere', pid: otherHostPid });
    await finished(c.job);
    await waitFor(async () => (await Promise.all([orphanPid, strangerPid, livePid, otherHostPid].map(groupMembers))).every((m) => m.length === 2), 5_000, 'agent trees up');

    expect(await killOrphanAgents(o.rt.svc.db, 'test-host')).toBe(1);
    await waitFor(async () => (await groupMembers(orphanPid)).length === 0, 5_000, 'the orphan tree gone');
    for (const pid of [strangerPid, livePid, otherHostPid]) expect((await groupMembers(pid)).length, `group ${pid}`).toBe(2);
    expect(await killOrphanAgents(o.rt.svc.db, 'test-host')).toBe(0);
  });

  it('ORCH_REAPER_ENABLED=false: start() does nothing; the same setup with it enabled reaps', async () => {
    const o = await orchWith({ ORCH_REAPER_INTERVAL_S: '0.2', ORCH_REAPER_DEAD_TICKS: '1' });
    await fakeWorker(o, { id: 'w-dead', host: 'elsewhere', hbAgeS: 3600 });
    const { job } = await runningJob(o, 'w-dead');
    const off = await o.reaper({ ORCH_REAPER_ENABLED: 'false' });
    off.start();
    await sleep(1200);
    expect(await o.rt.svc.db.selectFrom('reaper_state').selectAll().execute()).toEqual([]);
    expect((await getJob(o.rt.svc.db, job.id))!.status).toBe('running');
    await off.stop();

    const on = await o.reaper();
    on.start();
    await waitFor(async () => ((await getJob(o.rt.svc.db, job.id))!.status === 'failed' ? true : null), 5_000, 'reaped by the enabled reaper');
    // the tick records its state after its units: wait for the end of the tick that reaped
    await waitFor(async () => (await o.rt.svc.db.selectFrom('reaper_state').selectAll().execute()).length === 1, 5_000, 'the reaper state row');
  });

  it('GET /queue: the reaper block (leader, counters, staleness) and finished_age_s per running job', async () => {
    const o = await orchWith({ ORCH_REAPER_DEAD_TICKS: '1' });
    await fakeWorker(o, { id: 'w-live', host: 'elsewhere' });
    await fakeWorker(o, { id: 'w-dead', host: 'elsewhere', hbAgeS: 3600 });
    const finishing = await runningJob(o, 'w-live', 'agent finished');
    const busy = await runningJob(o, 'w-live', 'agent busy');
    const dead = await runningJob(o, 'w-dead', 'owner dead');
    await agentExited(o, finishing.job);
    await sql`UPDATE agent_runs SET finished_at = now() - interval '42 seconds' WHERE job_id = ${finishing.job.id}`.execute(o.rt.svc.db);
    await startAgentRun(o.rt.svc.db, { jobId: busy.job.id, agent: 'command', host: 'elsewhere', pid: 4242 });

    const reaper = await o.reaper({ ORCH_HOST_ID: 'reaper-host' });
    expect(ok(await reaper.tick()).dead_owner).toBe(1);
    await heartbeatWorker(o.rt.svc.db, 'w-live');

    const { db, boss, config, log } = o.rt.svc;
    const app = createApp({ db, boss, config, log });
    const get = async () => {
      const res = await app.request('/queue');
      expect(res.status).toBe(200);
      return (await res.json()) as any;
    };
    const q = await get();
    expect(q.reaper).toMatchObject({
      enabled: true,
      leader: `reaper-host:${process.pid}`,
      interval_s: config.reaper.intervalS,
      reaped: { dead_owner: 1, known_outcome: 0, max_running: 0 },
      lease_reclaims: 0,
      last_error: null,
    });
    expect(Date.now() - new Date(q.reaper.last_tick_at).getTime()).toBeLessThan(5_000);
    expect(q.jobs.counts).toMatchObject({ running: 2, failed: 1, queued: 1 });
    const byId = new Map<number, any>(q.jobs.running.map((j: any) => [j.id, j]));
    expect([...byId.keys()].sort()).toEqual([finishing.job.id, busy.job.id].sort());
    expect(byId.get(finishing.job.id).finished_age_s).toBeGreaterThanOrEqual(42);
    expect(byId.get(finishing.job.id).finished_age_s).toBeLessThan(50);
    expect(byId.get(busy.job.id).finished_age_s).toBeNull();
    expect(byId.get(busy.job.id)).toMatchObject({ task_id: busy.task.id, stage: 'analysis', attempt: 1, worker_id: 'w-live', host: 'elsewhere' });

    // A leader whose ticks stopped is no leader any more.
    await sql`UPDATE reaper_state SET last_tick_at = now() - interval '1 hour'`.execute(o.rt.svc.db);
    expect((await get()).reaper.leader).toBeNull();
    // An error of a tick unit shows up as last_error.
    await sql`UPDATE reaper_state SET last_error = 'boom', last_error_at = now()`.execute(o.rt.svc.db);
    expect((await get()).reaper.last_error).toBe('boom');
  });
});
