/**
 * throughput: no-op stage jobs per second, orch with 1 and 4 in-process workers (each its own
 * runtime, ORCH_WORKER_SLOTS=1, so N workers = N concurrent jobs) vs bare pg-boss running the
 * same no-op process (`sh -c true` via execa) from a work() handler, with NOTIFY on (both
 * switches) — same machine, same run. The backlog is enqueued first (one transaction per job, as
 * the producers do), then the idle workers start together; the figure is jobs / drain time.
 */
import { createTask } from '../packages/shared/src/pipeline/tasks.ts';
import { createDb } from '../packages/shared/src/db/client.ts';
import { PgBoss, execa } from './deps.ts';
import { createBenchDatabase, fmt, nowMs, sleep, startBenchOrch, waitFor, type Section } from './support.ts';

interface Run {
  system: string;
  workers: number;
  jobs: number;
  seconds: number;
  enqueueSeconds: number;
  /** mean claim → finished of a job (orch) */
  jobMs?: number;
}

async function orchRun(workers: number, jobs: number): Promise<Run> {
  const orch = await startBenchOrch({
    ORCH_AGENT: 'command',
    ORCH_AGENT_CMD: 'true',
    ORCH_WORKER_SLOTS: '1',
    ORCH_MAX_CONCURRENCY: '64',
    ORCH_JOB_MAX_ATTEMPTS: '1',
  });
  try {
    // warm-up on a worker of its own: the host mirror is created by the first job
    const warm = await orch.worker();
    await createTask(orch.rt.svc, { project: 'p', title: 'warm' }, 'bench');
    await waitFor(async () => warm.stats.finished >= 1, 60_000, 'warm-up job', 10);
    await warm.stop();
    // the backlog, then idle workers started together
    const ws: Awaited<ReturnType<typeof orch.worker>>[] = [];
    for (let i = 0; i < workers; i++) ws.push(await orch.worker({}, { start: false }));
    const e0 = nowMs();
    for (let i = 0; i < jobs; i++) await createTask(orch.rt.svc, { project: 'p', title: `tp ${i}` }, 'bench');
    const enq = nowMs() - e0;
    await sleep(2500); // same pause as pg-boss's (its queue stats must see the backlog)
    const finished = () => ws.reduce((a, w) => a + w.stats.finished, 0);
    const t0 = nowMs();
    await Promise.all(ws.map((w) => w.start()));
    await waitFor(async () => finished() >= jobs, 300_000, 'throughput jobs', 5);
    const seconds = (nowMs() - t0) / 1000;
    const r = await orch.rt.svc.pool.query<{ job_ms: number }>(
      `SELECT avg(extract(epoch FROM finished_at - started_at) * 1000)::float8 AS job_ms FROM jobs WHERE worker_id = ANY($1)`,
      [ws.map((w) => w.id)],
    );
    return { system: 'orch', workers, jobs, seconds, enqueueSeconds: enq / 1000, jobMs: r.rows[0]!.job_ms };
  } finally {
    await orch.close();
  }
}

const QUEUE = 'bench-noop';

async function bossRun(workers: number, jobs: number): Promise<Run> {
  const db = await createBenchDatabase();
  const bosses: PgBoss[] = [];
  // supervise (on the producer) keeps queue stats fresh each second; workers re-read them each
  // second and burst (fetch again at once) while the cached ready count is > 1 — without that, a
  // batch-1 worker sleeps notifyPollingIntervalSeconds (30 s) after each job once the NOTIFYs stop.
  const mk = async (supervise = false) => {
    const b = new PgBoss({
      connectionString: db.url,
      schema: 'pgboss',
      useListenNotify: true,
      supervise,
      superviseIntervalSeconds: 1,
      monitorIntervalSeconds: 1,
      queueCacheIntervalSeconds: 1,
      schedule: false,
      max: 3,
    });
    b.on('error', () => {});
    await b.start();
    bosses.push(b);
    return b;
  };
  try {
    const producer = await mk(true);
    await producer.createQueue(QUEUE, { notify: true, retryLimit: 0 });
    const ws: PgBoss[] = [];
    for (let i = 0; i < workers; i++) ws.push(await mk());
    const handler = async () => {
      await execa('sh', ['-c', 'true'], { stdin: 'ignore' });
    };
    const { pool } = createDb(db.url, { max: 1, applicationName: 'bench-count' });
    const completed = async () =>
      (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state = 'completed'`, [QUEUE])).rows[0]!.n;
    const e0 = nowMs();
    for (let i = 0; i < jobs; i++) await producer.send(QUEUE, { i });
    const enq = nowMs() - e0;
    await sleep(2500); // queue stats (1 s) and worker caches (1 s) see the backlog: the burst rule engages
    const t0 = nowMs();
    await Promise.all(ws.map((b) => b.work(QUEUE, { batchSize: 1, localConcurrency: 1, burstWhenReadyExceeds: 1 }, handler)));
    await waitFor(async () => (await completed()) >= jobs, 120_000, 'pg-boss jobs', 5);
    const seconds = (nowMs() - t0) / 1000;
    await pool.end();
    return { system: 'bare pg-boss', workers, jobs, seconds, enqueueSeconds: enq / 1000 };
  } finally {
    for (const b of bosses) await b.stop({ graceful: false, timeout: 2000, close: true }).catch(() => {});
    await db.drop();
  }
}

export async function benchThroughput(opts: { orchJobs?: [number, number]; bossJobs?: [number, number] } = {}): Promise<Section[]> {
  const [o1, o4] = opts.orchJobs ?? [60, 120];
  const [b1, b4] = opts.bossJobs ?? [400, 800];
  const runs: Run[] = [];
  runs.push(await bossRun(1, b1));
  runs.push(await orchRun(1, o1));
  runs.push(await bossRun(4, b4));
  runs.push(await orchRun(4, o4));
  const rate = (r: Run) => r.jobs / r.seconds;
  const boss = (w: number) => runs.find((r) => r.system === 'bare pg-boss' && r.workers === w)!;
  const rows = runs.map((r) => [
    r.system,
    String(r.workers),
    String(r.jobs),
    fmt(r.seconds, 2),
    fmt(r.jobs / r.enqueueSeconds, 0),
    r.jobMs !== undefined ? fmt(r.jobMs, 0) : '–',
    fmt(rate(r), 1),
    r.system === 'orch' ? `${fmt((100 * rate(r)) / rate(boss(r.workers)), 1)} %` : '–',
    r.system === 'orch' ? '≥ 50 %' : '',
  ]);
  return [
    {
      title: 'throughput — no-op stage jobs/s, orch vs bare pg-boss (same no-op process)',
      header: ['system', 'workers', 'jobs', 'drain s', 'enqueue jobs/s', 'orch job ms (claim→finished)', 'jobs/s', 'orch / pg-boss', 'target'],
      rows,
      notes: [
        'orch: in-process workers, each its own runtime (pool + pg-boss), ORCH_WORKER_SLOTS=1, agent `true` (ORCH_AGENT=command); each job is a full analysis-stage attempt: claim, mirror fetch, worktree, spawn, push, gate (fails: no artefact), finalize (task blocked, ORCH_JOB_MAX_ATTEMPTS=1).',
        'bare pg-boss: one PgBoss instance per worker (useListenNotify + queue notify), work() batchSize 1, localConcurrency 1, burstWhenReadyExceeds 1 (queue stats/cache refreshed every 1 s: without a burst rule a batch-1 worker sleeps the 30 s NOTIFY backstop after each job once the NOTIFYs stop, and the backlog stalls); the handler runs `sh -c true` via execa and returns (pg-boss completes the job).',
        'drain s = workers started (backlog already queued) → last job finished; enqueue jobs/s = rate the backlog was created at (createTask / send, one transaction each) — not part of the drain.',
        'in-process orch workers share one event loop and the per-mirror git lock of git.ts (withRepoLock), as workers in one process would in production.',
      ],
    },
  ];
}
