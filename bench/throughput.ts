/**
 * throughput: no-op stage jobs per second, orch with 1 and 4 in-process workers (each its own
 * runtime, ORCH_WORKER_SLOTS=1, so N workers = N concurrent jobs) vs bare pg-boss running the
 * same no-op process (`sh -c true` via execa) from a work() handler, with NOTIFY on (both
 * switches) — same machine, same run. Workers start idle; the producer enqueues a burst of jobs
 * one transaction each; the figure is jobs / (first enqueue → last job finished).
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
    const ws = [];
    for (let i = 0; i < workers; i++) ws.push(await orch.worker());
    const finished = () => ws.reduce((a, w) => a + w.stats.finished, 0);
    // warm-up: the host mirror is created on the first job
    for (let i = 0; i < workers; i++) await createTask(orch.rt.svc, { project: 'p', title: `warm ${i}` }, 'bench');
    await waitFor(async () => finished() >= workers, 60_000, 'warm-up jobs', 10);
    await sleep(300);
    const base = finished();
    const t0 = nowMs();
    for (let i = 0; i < jobs; i++) await createTask(orch.rt.svc, { project: 'p', title: `tp ${i}` }, 'bench');
    const enq = nowMs() - t0;
    await waitFor(async () => finished() >= base + jobs, 300_000, 'throughput jobs', 5);
    const seconds = (nowMs() - t0) / 1000;
    return { system: 'orch', workers, jobs, seconds, enqueueSeconds: enq / 1000 };
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
    let done = 0;
    for (let i = 0; i < workers; i++) {
      const b = await mk();
      await b.work(QUEUE, { batchSize: 1, localConcurrency: 1, burstWhenReadyExceeds: 1 }, async () => {
        await execa('sh', ['-c', 'true'], { stdin: 'ignore' });
        done++;
      });
    }
    // warm-up
    for (let i = 0; i < workers; i++) await producer.send(QUEUE, { warm: i });
    await waitFor(async () => done >= workers, 60_000, 'pg-boss warm-up', 10);
    await sleep(300);
    const { pool } = createDb(db.url, { max: 1, applicationName: 'bench-count' });
    const completed = async () =>
      (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state = 'completed'`, [QUEUE])).rows[0]!.n;
    const base = await completed();
    const t0 = nowMs();
    for (let i = 0; i < jobs; i++) await producer.send(QUEUE, { i });
    const enq = nowMs() - t0;
    await waitFor(async () => (await completed()) >= base + jobs, 120_000, 'pg-boss jobs', 5);
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
  const [b1, b4] = opts.bossJobs ?? [300, 600];
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
    fmt(r.enqueueSeconds, 2),
    fmt(rate(r), 1),
    r.system === 'orch' ? `${fmt((100 * rate(r)) / rate(boss(r.workers)), 1)} %` : '–',
    r.system === 'orch' ? '≥ 50 %' : '',
  ]);
  return [
    {
      title: 'throughput — no-op stage jobs/s, orch vs bare pg-boss (same no-op process)',
      header: ['system', 'workers', 'jobs', 'wall s', 'enqueue s', 'jobs/s', 'orch / pg-boss', 'target'],
      rows,
      notes: [
        'orch: in-process workers, each its own runtime (pool + pg-boss), ORCH_WORKER_SLOTS=1, agent `true` (ORCH_AGENT=command); each job is a full analysis-stage attempt: claim, mirror fetch, worktree, spawn, push, gate (fails: no artefact), finalize (task blocked, ORCH_JOB_MAX_ATTEMPTS=1).',
        'bare pg-boss: one PgBoss instance per worker (useListenNotify + queue notify), work() batchSize 1, localConcurrency 1, burstWhenReadyExceeds 1 (queue stats/cache refreshed every 1 s: without a burst rule a batch-1 worker sleeps the 30 s NOTIFY backstop after each job once the NOTIFYs stop, and the backlog stalls); the handler runs `sh -c true` via execa and returns (pg-boss completes the job).',
        'wall s = first enqueue → last job finished; enqueue s = time the producer took to send the burst (one transaction per job, same process).',
        'in-process orch workers share one event loop and the per-mirror git lock of git.ts (withRepoLock), as workers in one process would in production.',
      ],
    },
  ];
}
