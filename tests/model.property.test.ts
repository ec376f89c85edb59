/**
 * Model-based property test of the jobs protocol (issue 8): random command sequences over a few
 * tasks — create, claim by several fake workers, heartbeat, agent exit (with or without the
 * artefact that passes the gate), finalize by the worker or by the reaper (Tier 2), abort as a
 * dead owner (Tier 1), STOP (request + complete, as the owner or as a bystander), worker crash
 * and restart — some of them run concurrently (Promise.all of 2–4 commands) to create races.
 * After every step the invariants are checked with SQL against the real database:
 *
 * - at most one running and at most one live (queued|running) job per task;
 * - no stage attempt enqueued twice (unique task/stage/attempt);
 * - every `stage_changed` event was caused by a done job of the `from` stage, and per task and
 *   `from` stage there are no more advances than done jobs of that stage;
 * - a task's stage is the `to` of its latest stage_changed event (analysis when none);
 * - terminal tasks have no queued/running jobs, and no job of a cancelled task was created or
 *   claimed after its cancel completed;
 * - running jobs ≤ the fleet cap and ≤ each project's cap.
 *
 * One orch (database, runtime) for the whole file; the tables are truncated between runs.
 */
import { sql } from 'kysely';
import pg from 'pg';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { completeCancel, requestCancel } from '@orch/shared/cancel';
import { recordAgentExit, startAgentRun } from '@orch/shared/db/queries/agent-runs';
import { insertArtefact } from '@orch/shared/db/queries/artefacts';
import { CLAIM_LOCK_KEY } from '@orch/shared/db/queries/advisory-locks';
import { claimNextJob, heartbeatJobs } from '@orch/shared/db/queries/jobs';
import { heartbeatWorker, markWorkerStopped, registerWorker } from '@orch/shared/db/queries/workers';
import { abortJob, finalizeJob } from '@orch/shared/pipeline/finalize';
import { createTask } from '@orch/shared/pipeline/tasks';
import { getTask } from '@orch/shared/db/queries/tasks';
import { git } from '@orch/shared/host/git';
import { startOrch, type Orch } from './support/harness.ts';

const FLEET_CAP = 3;
const PROJECTS = [
  { slug: 'p', cap: 2 },
  { slug: 'q', cap: 3 },
] as const;
const WORKERS = 3;
const RUNS = Number(process.env.MODEL_RUNS ?? 50);

type Cmd =
  | { k: 'create'; project: number }
  | { k: 'claim'; worker: number }
  | { k: 'heartbeat'; worker: number }
  | { k: 'exit'; job: number; pass: boolean; code: 0 | 1 }
  | { k: 'finalize_worker'; job: number }
  | { k: 'finalize_reaper'; job: number }
  | { k: 'abort_dead'; job: number }
  | { k: 'stop'; task: number; asOwner: boolean }
  | { k: 'complete_cancel'; task: number }
  | { k: 'crash'; worker: number; stopped: boolean }
  | { k: 'restart'; worker: number };

const pick = fc.nat({ max: 3 });
const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ k: fc.constant('create' as const), project: fc.nat({ max: PROJECTS.length - 1 }) }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('claim' as const), worker: fc.nat({ max: WORKERS - 1 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('heartbeat' as const), worker: fc.nat({ max: WORKERS - 1 }) }) },
  { weight: 5, arbitrary: fc.record({ k: fc.constant('exit' as const), job: pick, pass: fc.constantFrom(true, true, true, false), code: fc.constantFrom(0 as const, 0 as const, 0 as const, 1 as const) }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('finalize_worker' as const), job: pick }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('finalize_reaper' as const), job: pick }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('abort_dead' as const), job: pick }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('stop' as const), task: pick, asOwner: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('complete_cancel' as const), task: pick }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('crash' as const), worker: fc.nat({ max: WORKERS - 1 }), stopped: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('restart' as const), worker: fc.nat({ max: WORKERS - 1 }) }) },
);
/** A step: one command, or 2–4 commands run concurrently. */
const stepArb = fc.oneof({ weight: 3, arbitrary: cmdArb.map((c) => [c]) }, { weight: 2, arbitrary: fc.array(cmdArb, { minLength: 2, maxLength: 4 }) });

let orch: Orch;

beforeAll(async () => {
  orch = await startOrch({
    env: { ORCH_MAX_CONCURRENCY: String(FLEET_CAP), ORCH_JOB_MAX_ATTEMPTS: '2', ORCH_RETRY_BACKOFF_BASE_S: '0' },
    project: { slug: PROJECTS[0].slug, max_concurrency: PROJECTS[0].cap },
  });
  for (const p of PROJECTS.slice(1)) await orch.addProject({ slug: p.slug, max_concurrency: p.cap });
});
afterAll(async () => {
  await orch?.close();
});

/** Per-run state of the fake fleet: the current id of each worker slot. */
interface World {
  run: number;
  workerIds: string[];
  generation: number[];
  log: string[];
}

async function resetTables(): Promise<void> {
  await sql`TRUNCATE tasks, jobs, agent_runs, artefacts, task_events, task_dependencies, workers, reaper_state, reaper_streaks,
            merge_leases, outbox, pull_requests, webhook_deliveries RESTART IDENTITY CASCADE`.execute(orch.rt.svc.db);
  // task ids restart: feature branches of the previous run must not satisfy this run's gates
  const refs = (await git(['for-each-ref', '--format=%(refname)', 'refs/heads'], { cwd: orch.repo })).stdout.split('\n');
  for (const ref of refs) if (ref && ref !== 'refs/heads/main') await git(['update-ref', '-d', ref], { cwd: orch.repo });
}

async function runningJobs(): Promise<Array<{ id: number; task_id: number; stage: string; worker_id: string }>> {
  const r = await sql<{ id: number; task_id: number; stage: string; worker_id: string }>`
    SELECT id, task_id, stage, worker_id FROM jobs WHERE status = 'running' ORDER BY id`.execute(orch.rt.svc.db);
  return r.rows;
}

async function taskIds(): Promise<number[]> {
  const r = await sql<{ id: number }>`SELECT id FROM tasks ORDER BY id`.execute(orch.rt.svc.db);
  return r.rows.map((x) => x.id);
}

const ARTEFACT: Record<string, { name: string; content: string } | undefined> = {
  analysis: { name: 'analysis.md', content: '# plan\n' },
  review: { name: 'review.md', content: 'VERDICT: APPROVE\n' },
};

/** Resolve indexes to rows before a concurrent group starts, so commands of a group may collide. */
async function resolve(cmds: Cmd[]): Promise<Array<() => Promise<unknown>>> {
  const svc = orch.rt.svc;
  const db = svc.db;
  const jobs = await runningJobs();
  const tasks = await taskIds();
  const job = (i: number) => (jobs.length ? jobs[i % jobs.length]! : null);
  const task = (i: number) => (tasks.length ? tasks[tasks.length - 1 - (i % tasks.length)]! : null);
  return cmds.map((c): (() => Promise<unknown>) => {
    switch (c.k) {
      case 'create':
        return () => createTask(svc, { project: PROJECTS[c.project]!.slug, title: `t-${c.project}` }, 'model');
      case 'claim':
        return () => claimNextJob(db, { workerId: world.workerIds[c.worker]!, host: 'model-host', pid: process.pid, maxConcurrency: FLEET_CAP });
      case 'heartbeat': {
        const w = world.workerIds[c.worker]!;
        return async () => {
          await heartbeatWorker(db, w);
          await heartbeatJobs(db, w, jobs.filter((j) => j.worker_id === w).map((j) => j.id));
        };
      }
      case 'exit': {
        const j = job(c.job);
        if (!j) return async () => {};
        return async () => {
          // a job has one agent run (agent_runs_one_per_job): a second exit of the same job is a no-op
          const run = await startAgentRun(db, { jobId: j.id, agent: 'model', host: 'model-host', pid: null }).catch((err: { code?: string }) => {
            if (err.code === '23505') return null;
            throw err;
          });
          if (!run) return;
          const a = ARTEFACT[j.stage];
          if (c.pass && j.stage === 'implementation') await commitOnBranch(j.task_id);
          if (c.pass && a) await insertArtefact(db, { taskId: j.task_id, jobId: j.id, stage: j.stage, name: a.name, content: a.content });
          await recordAgentExit(db, run.id, { exitCode: c.code, signal: null, costUsd: null, tokensIn: null, tokensOut: null, logTail: '', error: null });
        };
      }
      case 'finalize_worker': {
        const j = job(c.job);
        return j ? () => finalizeJob(svc, j.id, `worker:${j.worker_id}`) : async () => {};
      }
      case 'finalize_reaper': {
        const j = job(c.job);
        return j ? () => finalizeJob(svc, j.id, 'reaper:model') : async () => {};
      }
      case 'abort_dead': {
        const j = job(c.job);
        return j ? () => abortJob(svc, j.id, 'reaper:model', { reason: 'dead_owner' }) : async () => {};
      }
      case 'stop': {
        const t = task(c.task);
        if (t === null) return async () => {};
        const owner = jobs.find((j) => j.task_id === t)?.worker_id;
        return async () => {
          await requestCancel(svc, t, 'model');
          await completeCancel(svc, t, c.asOwner && owner ? `worker:${owner}` : 'reaper:model', c.asOwner && owner ? { ownerWorkerId: owner } : {});
        };
      }
      case 'complete_cancel': {
        const t = task(c.task);
        return t === null ? async () => {} : () => completeCancel(svc, t, 'reaper:model');
      }
      case 'crash': {
        const w = world.workerIds[c.worker]!;
        return async () => {
          await sql`UPDATE workers SET heartbeat_at = now() - interval '1 hour' WHERE id = ${w}`.execute(db);
          if (c.stopped) await markWorkerStopped(db, w);
        };
      }
      case 'restart':
        return async () => {
          world.generation[c.worker]!++;
          const id = `r${world.run}-w${c.worker}-g${world.generation[c.worker]}`;
          await registerWorker(db, { id, host: 'model-host', pid: process.pid, slots: 10 });
          world.workerIds[c.worker] = id;
        };
    }
  });
}

let world: World;

/** What a passing implementation agent leaves: its feature branch one commit ahead of base. */
async function commitOnBranch(taskId: number): Promise<void> {
  const t = await getTask(orch.rt.svc.db, taskId);
  if (!t?.branch) return;
  const tree = (await git(['rev-parse', 'main^{tree}'], { cwd: orch.repo })).stdout.trim();
  const sha = (await git(['-c', 'user.name=m', '-c', 'user.email=m@x', 'commit-tree', tree, '-p', 'main', '-m', `task ${taskId}`], { cwd: orch.repo })).stdout.trim();
  await git(['update-ref', `refs/heads/${t.branch}`, sha], { cwd: orch.repo });
}

/** Every invariant as one SQL query returning the offending rows (empty = holds). */
const INVARIANTS: Record<string, string> = {
  'at most one running job per task': `
    SELECT task_id, count(*) FROM jobs WHERE status = 'running' GROUP BY task_id HAVING count(*) > 1`,
  'at most one live job per task': `
    SELECT task_id, count(*) FROM jobs WHERE status IN ('queued','running') GROUP BY task_id HAVING count(*) > 1`,
  'no stage attempt enqueued twice': `
    SELECT task_id, stage, attempt, count(*) FROM jobs GROUP BY task_id, stage, attempt HAVING count(*) > 1`,
  'each stage_changed caused by a done job of its from-stage': `
    SELECT e.id, e.task_id, e.data, j.status, j.stage FROM task_events e LEFT JOIN jobs j ON j.id = e.job_id
    WHERE e.kind = 'stage_changed' AND (j.id IS NULL OR j.status <> 'done' OR j.stage <> e.data->>'from' OR j.task_id <> e.task_id)`,
  'advances per task and stage ≤ done jobs of that stage': `
    WITH adv AS (SELECT task_id, data->>'from' AS stage, count(*) AS n FROM task_events WHERE kind = 'stage_changed' GROUP BY 1, 2),
         done AS (SELECT task_id, stage, count(*) AS n FROM jobs WHERE status = 'done' GROUP BY 1, 2)
    SELECT adv.*, coalesce(done.n, 0) AS done_jobs FROM adv LEFT JOIN done USING (task_id, stage)
    WHERE adv.n > coalesce(done.n, 0)`,
  'task stage = latest stage_changed target': `
    SELECT t.id, t.stage, last.to_stage FROM tasks t
    LEFT JOIN LATERAL (SELECT e.data->>'to' AS to_stage FROM task_events e
                       WHERE e.task_id = t.id AND e.kind = 'stage_changed' ORDER BY e.id DESC LIMIT 1) last ON true
    WHERE t.stage <> 'cancelled' AND t.stage <> coalesce(last.to_stage, 'analysis')`,
  'terminal tasks have no live jobs': `
    SELECT t.id, t.stage, j.id AS job_id, j.status FROM tasks t JOIN jobs j ON j.task_id = t.id
    WHERE t.stage IN ('done','cancelled') AND j.status IN ('queued','running')`,
  'no job created or claimed after the cancel completed': `
    SELECT t.id, t.cancelled_at, j.id AS job_id, j.created_at, j.started_at FROM tasks t JOIN jobs j ON j.task_id = t.id
    WHERE t.cancelled_at IS NOT NULL AND (j.created_at > t.cancelled_at OR j.started_at > t.cancelled_at)`,
  // Both the cancel request and every enqueue-causing event are written under the task's row
  // lock, so event ids order them: nothing may be enqueued after the request.
  'nothing enqueued after the cancel was requested': `
    SELECT c.task_id, c.id AS cancel_event, e.id AS later_event, e.kind FROM task_events c
    JOIN task_events e ON e.task_id = c.task_id AND e.id > c.id
    WHERE c.kind = 'cancel_requested' AND e.kind IN ('stage_changed','retry_scheduled','sent_back','retried','dependencies_met')`,
  'fleet cap': `SELECT count(*) FROM jobs WHERE status = 'running' HAVING count(*) > ${FLEET_CAP}`,
  'project caps': `
    SELECT p.slug, count(*) FROM jobs j JOIN tasks t ON t.id = j.task_id JOIN projects p ON p.id = t.project_id
    WHERE j.status = 'running' GROUP BY p.slug, p.max_concurrency HAVING count(*) > p.max_concurrency`,
};

async function checkInvariants(): Promise<void> {
  for (const [name, q] of Object.entries(INVARIANTS)) {
    const r = await orch.rt.svc.pool.query(q);
    if (r.rows.length) throw new Error(`invariant violated: ${name}: ${JSON.stringify(r.rows)}\nsteps:\n${world.log.join('\n')}`);
  }
}

let runNo = 0;
const stats = { runs: 0, steps: 0, groups: 0, finalized: 0, advanced: 0, pastImplementation: 0, cancelled: 0, errors: [] as string[] };

describe('model: the jobs protocol under random interleavings', () => {
  it(`${RUNS} random runs keep every invariant`, async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 20, maxLength: 60 }), async (steps) => {
        runNo++;
        await resetTables();
        world = { run: runNo, workerIds: [], generation: [], log: [] };
        for (let w = 0; w < WORKERS; w++) {
          const id = `r${runNo}-w${w}-g0`;
          await registerWorker(orch.rt.svc.db, { id, host: 'model-host', pid: process.pid, slots: 10 });
          world.workerIds.push(id);
          world.generation.push(0);
        }
        // Always start with some tasks and claims, so the random part has something to race on.
        const prelude: Cmd[][] = [[{ k: 'create', project: 0 }], [{ k: 'create', project: 1 }], [{ k: 'claim', worker: 0 }, { k: 'claim', worker: 1 }]];
        for (const group of [...prelude, ...steps]) {
          world.log.push(JSON.stringify(group));
          const fns = await resolve(group);
          const results = await Promise.allSettled(fns.map((f) => f()));
          for (const r of results) {
            if (r.status === 'rejected') {
              const msg = (r.reason as Error)?.message ?? String(r.reason);
              // Refusals are part of the protocol (e.g. STOP of a done task is answered, not thrown);
              // anything thrown is unexpected.
              stats.errors.push(msg);
              throw new Error(`command threw: ${msg}\nsteps:\n${world.log.join('\n')}`);
            }
          }
          stats.steps++;
          if (group.length > 1) stats.groups++;
          await checkInvariants();
        }
        const r = await sql<{ done: number; adv: number; cancelled: number; impl: number }>`
          SELECT (SELECT count(*)::int FROM jobs WHERE status = 'done') AS done,
                 (SELECT count(*)::int FROM task_events WHERE kind = 'stage_changed') AS adv,
                 (SELECT count(*)::int FROM tasks WHERE stage = 'cancelled') AS cancelled,
                 (SELECT count(*)::int FROM task_events WHERE kind = 'stage_changed' AND data->>'from' = 'implementation') AS impl`.execute(orch.rt.svc.db);
        stats.runs++;
        stats.finalized += r.rows[0]!.done;
        stats.advanced += r.rows[0]!.adv;
        stats.cancelled += r.rows[0]!.cancelled;
        stats.pastImplementation += r.rows[0]!.impl;
      }),
      { numRuns: RUNS, endOnFailure: true },
    );
    // the runs really exercised the protocol
    expect(stats.runs).toBe(RUNS);
    expect(stats.advanced).toBeGreaterThan(0);
    expect(stats.cancelled).toBeGreaterThan(0);
    expect(stats.groups).toBeGreaterThan(0);
    console.log(`model: ${JSON.stringify({ ...stats, errors: stats.errors.length })}`);
  }, 120_000);
});

describe('targeted race: a claim in flight while a STOP completes', () => {
  it('completeCancel never marks a task cancelled under a job that a concurrent claim is turning running', async () => {
    await resetTables();
    world = { run: -1, workerIds: ['race-w'], generation: [0], log: [] };
    const svc = orch.rt.svc;
    await registerWorker(svc.db, { id: 'race-w', host: 'model-host', pid: process.pid, slots: 1 });
    const t = await createTask(svc, { project: 'p', title: 'race' }, 'model');
    // Play a claim on a session of our own: claimNextJob's one statement row-locks the job it
    // picks (FOR UPDATE, when the task was not being cancelled) and then turns it running; here
    // the two steps are split, with a pause between them.
    const claim = new pg.Client({ connectionString: orch.url });
    await claim.connect();
    try {
      await claim.query('BEGIN');
      await claim.query('SELECT pg_advisory_xact_lock($1)', [CLAIM_LOCK_KEY]);
      const picked = await claim.query<{ id: string }>(
        `SELECT j.id FROM jobs j JOIN tasks t ON t.id = j.task_id
         WHERE j.status = 'queued' AND t.cancel_requested_at IS NULL AND t.id = $1 FOR UPDATE OF j SKIP LOCKED`,
        [t.id],
      );
      expect(picked.rows).toHaveLength(1);
      expect((await requestCancel(svc, t.id, 'model')).status).toBe('requested');
      const completing = completeCancel(svc, t.id, 'reaper:model');
      await new Promise((r) => setTimeout(r, 300)); // completeCancel reaches its final transaction
      await claim.query(
        `UPDATE jobs SET status = 'running', worker_id = 'race-w', host = 'model-host', pid = $2, started_at = now(), heartbeat_at = now()
         WHERE id = $1 AND status = 'queued'`,
        [picked.rows[0]!.id, process.pid],
      );
      await claim.query('COMMIT');
      const outcome = await completing;
      // either the cancel saw the claim and waits for the owner, or (had the claim lost) it completed
      const bad = await orch.rt.svc.pool.query(INVARIANTS['terminal tasks have no live jobs']!);
      expect(bad.rows, `completeCancel answered ${outcome}`).toEqual([]);
      expect(outcome).toBe('wait_owner');
      // the owner stops its agent and completes the cancel: nothing left running
      expect(await completeCancel(svc, t.id, 'worker:race-w', { ownerWorkerId: 'race-w' })).toBe('completed');
      await checkInvariants();
    } finally {
      await claim.end();
    }
  });
});
