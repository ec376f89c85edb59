/**
 * Chaos: three worker processes on three hosts and one reaper process run 30 demo tasks (three
 * projects, so merges are not serialized behind one lock) while
 * workers are SIGKILLed (with their agents and git children) at random moments and restarted
 * under the same host id. Sampled continuously: a task never has two running jobs, a stage of a
 * task never has two done jobs. At the end every task is done, every stage has exactly one done
 * job, and no stage attempt was enqueued twice.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTask } from '@orch/shared/pipeline/tasks';
import type { ResultPromise } from 'execa';
import { bareRepo, startOrch, type Orch } from './support/harness.ts';

const TASKS = 30;
const MAX_KILLS = 8;
const PROJECTS = ['p', 'q', 'r'] as const;
const HOSTS = ['h1', 'h2', 'h3'] as const;
const DELAYS: Record<(typeof HOSTS)[number], string> = { h1: '100', h2: '250', h3: '400' };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** pid → ppid of every process (one /proc scan). */
async function parentMap(): Promise<Map<number, number>> {
  const m = new Map<number, number>();
  for (const name of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await fs.readFile(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      m.set(Number(name), ppid);
    } catch {
      /* gone */
    }
  }
  return m;
}

function descendants(root: number, parents: Map<number, number>): number[] {
  const out: number[] = [];
  const queue = [root];
  while (queue.length) {
    const p = queue.shift()!;
    for (const [pid, ppid] of parents) {
      if (ppid === p) {
        out.push(pid);
        queue.push(pid);
      }
    }
  }
  return out;
}

const kill = (pid: number, sig: NodeJS.Signals) => {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
};

/** SIGKILL a worker and everything it started: freeze it, collect its tree, kill groups and pids. */
async function killTree(pid: number): Promise<number> {
  kill(pid, 'SIGSTOP'); // no new children while we look
  const tree = descendants(pid, await parentMap());
  for (const child of tree) {
    kill(-child, 'SIGKILL'); // agents lead their own process group
    kill(child, 'SIGKILL');
  }
  kill(pid, 'SIGKILL');
  return tree.length;
}

describe('chaos: workers SIGKILLed at random moments', () => {
  let orch: Orch;
  // The harness's close() kills only the direct children; stop our workers with their agent trees.
  const spawned: ResultPromise[] = [];
  const stopAll = async () => {
    for (const c of spawned) if (c.pid !== undefined) await killTree(c.pid);
    await Promise.all(spawned.map((c) => Promise.resolve(c).catch(() => {})));
  };
  beforeAll(async () => {
    orch = await startOrch({
      env: {
        ORCH_HEARTBEAT_INTERVAL_S: '0.2',
        ORCH_HEARTBEAT_TIMEOUT_S: '1',
        ORCH_REAPER_INTERVAL_S: '0.3',
        ORCH_REAPER_DEAD_TICKS: '2',
        ORCH_REAPER_FINALIZE_GRACE_S: '2',
        ORCH_JOB_MAX_ATTEMPTS: '10',
        ORCH_RETRY_BACKOFF_BASE_S: '0',
        ORCH_MAX_CONCURRENCY: '12',
        ORCH_WORKER_SLOTS: '4',
        ORCH_DISPATCH_POLL_S: '0.5',
      },
      project: { max_concurrency: 12 },
    });
    // Three projects, so merges (one at a time per project) are not the whole run's bottleneck.
    for (const slug of PROJECTS.slice(1)) await orch.addProject({ slug, repo: await bareRepo(orch.dir, `repo-${slug}`), max_concurrency: 12 });
  });
  afterAll(async () => {
    await stopAll();
    await orch?.close();
  });

  it('30 tasks all reach done exactly once, with no double running and no duplicate enqueue', { timeout: 180_000 }, async () => {
    const db = orch.rt.svc.db;
    const workers = new Map<string, ResultPromise>();
    const exited = new Set<ResultPromise>(); // execa's ResultPromise exposes no exitCode: track exits ourselves
    const track = (child: ResultPromise) => {
      spawned.push(child);
      void Promise.resolve(child).finally(() => exited.add(child));
      return child;
    };
    const spawnWorker = (host: (typeof HOSTS)[number]) => {
      const child = track(orch.spawn(['worker'], {
        ORCH_HOST_ID: host,
        ORCH_WORKTREE_ROOT: path.join(orch.dir, `wt-${host}`),
        ORCH_DEMO_DELAY_MS: DELAYS[host],
      }));
      workers.set(host, child);
    };
    for (const h of HOSTS) spawnWorker(h);
    const reaper = track(orch.spawn(['reaper'], { ORCH_HOST_ID: 'hr', ORCH_WORKTREE_ROOT: path.join(orch.dir, 'wt-hr') }));

    for (let i = 0; i < TASKS; i++) await createTask(orch.rt.svc, { project: PROJECTS[i % PROJECTS.length]!, title: `chaos ${i}` }, 'test');

    // The sampler: invariants that must hold at every instant.
    const violations: string[] = [];
    let samples = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const doubleRunning = await sql<{ task_id: number; n: number }>`
          SELECT task_id, count(*)::int AS n FROM jobs WHERE status = 'running' GROUP BY task_id HAVING count(*) > 1`.execute(db);
        const doubleDone = await sql<{ task_id: number; stage: string; n: number }>`
          SELECT task_id, stage, count(*)::int AS n FROM jobs WHERE status = 'done' GROUP BY task_id, stage HAVING count(*) > 1`.execute(db);
        for (const r of doubleRunning.rows) violations.push(`task ${r.task_id}: ${r.n} running jobs`);
        for (const r of doubleDone.rows) violations.push(`task ${r.task_id} ${r.stage}: ${r.n} done jobs`);
        samples++;
        await sleep(50);
      }
    })();

    const doneCount = async () =>
      (await sql<{ n: number }>`SELECT count(*)::int AS n FROM tasks WHERE stage IN ('done', 'cancelled')`.execute(db)).rows[0]!.n;

    // Chaos until most tasks are through, then let the fleet finish.
    const started = Date.now();
    let kills = 0;
    let killedChildren = 0;
    await sleep(1500);
    while (kills < MAX_KILLS && (await doneCount()) < TASKS * 0.6 && Date.now() - started < 25_000) {
      const host = HOSTS[Math.floor(Math.random() * HOSTS.length)]!;
      const child = workers.get(host)!;
      if (child.pid !== undefined && !exited.has(child)) {
        killedChildren += await killTree(child.pid);
        await child;
        kills++;
        await sleep(Math.random() * 500);
        spawnWorker(host);
      }
      await sleep(1000 + Math.random() * 2000);
    }
    const chaosS = (Date.now() - started) / 1000;
    // the bound is for a loaded machine (the suite runs files in parallel): correctness, not speed, is asserted
    while ((await doneCount()) < TASKS && Date.now() - started < 160_000) await sleep(200);
    sampling = false;
    await sampler;
    const reaperAlive = !exited.has(reaper);
    await stopAll();
    expect(reaperAlive).toBe(true);

    expect(kills).toBeGreaterThanOrEqual(3);
    expect(samples).toBeGreaterThan(50);
    expect(violations).toEqual([]);

    const tasks = await db.selectFrom('tasks').select(['id', 'stage', 'merged_sha', 'blocked_reason']).orderBy('id').execute();
    expect(tasks).toHaveLength(TASKS);
    if (tasks.some((t) => t.stage !== 'done')) {
      const stuck = tasks.filter((t) => t.stage !== 'done').map((t) => t.id);
      const js = await sql`SELECT j.id, j.task_id, j.stage, j.status, j.attempt, j.reason, j.worker_id, j.run_after, j.started_at, j.finished_at FROM jobs j WHERE task_id = ANY(${stuck}) ORDER BY task_id, id`.execute(db);
      console.log('STUCK', JSON.stringify(tasks.filter((t) => t.stage !== 'done')), '\n', js.rows.map((r) => JSON.stringify(r)).join('\n'));
      console.log('LEASES', JSON.stringify((await sql`SELECT * FROM merge_leases`.execute(db)).rows), JSON.stringify((await sql`SELECT * FROM workers`.execute(db)).rows));
      console.log('TOKENS', JSON.stringify((await sql`SELECT state, count(*) FROM pgboss.job GROUP BY state`.execute(db)).rows));
      console.log('CRIT', JSON.stringify((await sql`SELECT id, stage, critical_started_at, pr_number, blocked_reason, waiting_for FROM tasks WHERE id = ANY(${stuck})`.execute(db)).rows));
    }
    expect(tasks.filter((t) => t.stage !== 'done')).toEqual([]);
    for (const t of tasks) expect(t.merged_sha).toMatch(/^[0-9a-f]{40}$/);

    const jobs = await db.selectFrom('jobs').select(['task_id', 'stage', 'attempt', 'status', 'reason']).execute();
    expect(jobs.filter((j) => j.status === 'running' || j.status === 'queued')).toEqual([]);
    // No send-backs with the demo agent, so each stage of each task is done exactly once.
    const done = new Map<string, number>();
    for (const j of jobs.filter((j) => j.status === 'done')) done.set(`${j.task_id}/${j.stage}`, (done.get(`${j.task_id}/${j.stage}`) ?? 0) + 1);
    for (const t of tasks) for (const s of ['analysis', 'implementation', 'review', 'merge']) expect(done.get(`${t.id}/${s}`), `${t.id}/${s}`).toBe(1);
    expect(done.size).toBe(TASKS * 4);
    // No duplicate enqueue: one job per (task, stage, attempt), except same-attempt shutdown requeues.
    const perAttempt = new Map<string, number>();
    for (const j of jobs.filter((j) => j.reason !== 'worker_shutdown')) {
      const k = `${j.task_id}/${j.stage}/${j.attempt}`;
      perAttempt.set(k, (perAttempt.get(k) ?? 0) + 1);
    }
    expect([...perAttempt].filter(([, n]) => n > 1)).toEqual([]);

    const reaped = (await sql<{ n: number }>`SELECT count(*)::int AS n FROM jobs WHERE reason = 'dead_owner'`.execute(db)).rows[0]!.n;
    const tier2 = (await sql<{ n: number }>`SELECT coalesce(sum(reaped_known_outcome), 0)::int AS n FROM reaper_state`.execute(db)).rows[0]!.n;
    console.log(
      `chaos: ${kills} kills (${killedChildren} children), ${reaped} dead_owner reaps, ${tier2} known_outcome finalizations, ` +
        `${jobs.length} jobs, ${samples} samples, chaos ${chaosS.toFixed(1)} s, total ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
  });
});
