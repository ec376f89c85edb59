/**
 * claim-scale (issue 18): what one `claimNextJob` costs as the backlog grows. A project capped at
 * `max_concurrency = 1` with its one slot taken holds N queued jobs, all due and all older than
 * the one queued job of a second project with free slots; the claim must skip the whole capped
 * queue. Measured at N = 1 000, 10 000 and 100 000, with the claimable job and without it (then
 * nothing is claimable and the claim answers null), and again with 1 000 000 finished jobs in
 * the history. Each claim that takes the job is undone (back to queued) before the next one, so
 * every sample sees the same table. Beside it, the empty claim transaction (BEGIN, the fleet
 * claim lock, COMMIT): the claim's cost over that floor is what the lock is held for beyond its
 * round trips; and four claimers at once, whose claims queue on that lock, so their rate bounds
 * how long each holds it. Figures only; the bench also checks that the right job was claimed.
 */
import { createDb } from '../packages/shared/src/db/client.ts';
import { claimNextJob, type Claimer } from '../packages/shared/src/db/queries/jobs.ts';
import { takeClaimLock } from '../packages/shared/src/db/queries/advisory-locks.ts';
import { registerWorker } from '../packages/shared/src/db/queries/workers.ts';
import { createBenchDatabase, fmt, nowMs, summary, type Section } from './support.ts';

const SCALES = [1_000, 10_000, 100_000];
const HISTORY = 1_000_000;
/** samples per row: as many as fit in the budget, at least MIN */
const BUDGET_MS = 3_000;
const MIN = 20;
const MAX = 300;
const CONTENDERS = 4;
const CONTENDED_MS = 3_000;

export async function benchClaimScale(): Promise<Section[]> {
  const bench = await createBenchDatabase();
  const h = createDb(bench.url, { max: 2, applicationName: 'orch-bench-claim-scale' });
  const { db, pool } = h;
  try {
    const q = async <R extends object = Record<string, unknown>>(text: string, values: unknown[] = []) => (await pool.query<R>(text, values)).rows;
    // the same bench measures the schema before migration 0006 (no project on the job row)
    const jobHasProject = (await q(`SELECT 1 FROM information_schema.columns WHERE table_name = 'jobs' AND column_name = 'project_id'`)).length > 0;
    // the bench vacuums before each row itself; autovacuum waking in the middle of one is noise
    await q('ALTER TABLE jobs SET (autovacuum_enabled = off)');
    await q('ALTER TABLE tasks SET (autovacuum_enabled = off)');
    const [cap] = await q<{ id: number }>(`INSERT INTO projects (slug, repo_url, max_concurrency) VALUES ('capped', 'bench', 1) RETURNING id`);
    const [free] = await q<{ id: number }>(`INSERT INTO projects (slug, repo_url, max_concurrency) VALUES ('free', 'bench', 10) RETURNING id`);
    await registerWorker(db, { id: 'bench-w', host: 'bench-host', pid: process.pid, slots: 100 });
    const claimer: Claimer = { workerId: 'bench-w', host: 'bench-host', pid: process.pid, maxConcurrency: 100 };

    /** `n` tasks of `project`, one job each, in the given status; queued ones are due and ordered by id */
    const addJobs = async (project: number, n: number, status: 'queued' | 'running' | 'done', stage = 'analysis', perTask = 1) => {
      const running = status === 'running';
      const finished = status === 'done';
      const rows = await q<{ id: number }>(
        `WITH t AS (
           INSERT INTO tasks (project_id, title, stage)
           SELECT $1, 'bench ' || g, $4 FROM generate_series(1, $2::int) g RETURNING id
         )
         INSERT INTO jobs (task_id, stage, status, run_after, worker_id, started_at, heartbeat_at, finished_at${jobHasProject ? ', project_id' : ''})
         SELECT t.id, 'analysis', $3, now() - interval '2 hours' + t.id * interval '1 microsecond',
                ${running ? `'bench-w', now(), now()` : finished ? `NULL, now() - interval '3 hours', NULL` : 'NULL, NULL, NULL'},
                ${finished ? `now() - interval '3 hours'` : 'NULL'}${jobHasProject ? ', $1' : ''}
         FROM t CROSS JOIN generate_series(1, $5::int)
         RETURNING id`,
        [project, n, status, stage, perTask],
      );
      return rows.map((r) => r.id);
    };

    await addJobs(cap!.id, 1, 'running'); // the capped project's one slot is taken
    const [claimable] = await q<{ id: number }>(
      `WITH t AS (INSERT INTO tasks (project_id, title) VALUES ($1, 'claimable') RETURNING id)
       INSERT INTO jobs (task_id, stage, run_after${jobHasProject ? ', project_id' : ''}) SELECT id, 'analysis', now() - interval '1 minute'${jobHasProject ? ', $1' : ''} FROM t RETURNING id`,
      [free!.id],
    );
    const setClaimable = (on: boolean) =>
      q(
        on
          ? `UPDATE jobs SET status = 'queued', finished_at = NULL, worker_id = NULL, host = NULL, pid = NULL, started_at = NULL, heartbeat_at = NULL WHERE id = $1`
          : `UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = $1`,
        [claimable!.id],
      );

    const measure = async (expect: number | null): Promise<{ ms: number[]; wrong: number }> => {
      const ms: number[] = [];
      let wrong = 0;
      const started = nowMs();
      for (let i = 0; i < 3; i++) await claimOnce(); // warm the plan cache and the buffers
      ms.length = 0;
      wrong = 0;
      while (ms.length < MAX && (ms.length < MIN || nowMs() - started < BUDGET_MS)) await claimOnce();
      return { ms, wrong };
      async function claimOnce() {
        const t0 = nowMs();
        const job = await claimNextJob(db, claimer);
        ms.push(nowMs() - t0);
        if ((job?.id ?? null) !== expect) wrong++;
        if (job) await setClaimable(true);
      }
    };

    const floor: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t0 = nowMs();
      await db.transaction().execute((tx) => takeClaimLock(tx));
      floor.push(nowMs() - t0);
    }

    const rows: string[][] = [];
    const row = async (queued: number, history: number) => {
      await q('VACUUM ANALYZE jobs');
      await q('VACUUM ANALYZE tasks');
      for (const withJob of [true, false]) {
        await setClaimable(withJob);
        const r = await measure(withJob ? claimable!.id : null);
        const s = summary(r.ms);
        rows.push([queued.toLocaleString('en-US'), history.toLocaleString('en-US'), withJob ? 'yes' : 'no', String(s.n), fmt(s.p50, 2), fmt(s.p99, 2), fmt(s.max, 2), r.wrong ? `${r.wrong} WRONG` : 'ok']);
        process.stderr.write(`[claim-scale] ${rows.at(-1)!.join(' | ')}\n`);
      }
    };

    /** CONTENDERS claimers at once for CONTENDED_MS, nothing claimable: the claims serialize on the lock */
    const contended = async (): Promise<{ perS: number; usPerClaim: number }> => {
      await setClaimable(false);
      const c = createDb(bench.url, { max: CONTENDERS, applicationName: 'orch-bench-claim-contended' });
      try {
        let n = 0;
        const t0 = nowMs();
        await Promise.all(
          Array.from({ length: CONTENDERS }, async () => {
            while (nowMs() - t0 < CONTENDED_MS) {
              await claimNextJob(c.db, claimer);
              n++;
            }
          }),
        );
        const wall = nowMs() - t0;
        return { perS: (n / wall) * 1000, usPerClaim: (wall * 1000) / n };
      } finally {
        await c.close();
      }
    };

    let queued = 0;
    for (const n of SCALES) {
      await addJobs(cap!.id, n - queued, 'queued');
      queued = n;
      await row(queued, 0);
    }
    const busy = await contended();
    // a long history: finished jobs of finished tasks, ten per task
    await addJobs(cap!.id, HISTORY / 10, 'done', 'done', 10);
    await row(queued, HISTORY);

    const f = summary(floor);
    return [
      {
        title: 'claim scale: one claim behind a capped project',
        notes: [
          `a project with max_concurrency = 1 and its slot taken holds the queued jobs, all ahead of the one job of a project with free slots ("claimable"); without it nothing is claimable`,
          `job on the row: ${jobHasProject ? 'yes (migration 0006)' : 'no (schema before migration 0006)'}`,
          `floor, the empty claim transaction (BEGIN, claim lock, COMMIT): p50 ${fmt(f.p50, 2)} ms, p99 ${fmt(f.p99, 2)} ms; the claim's excess over it is the statement, which runs under the lock`,
          'claim = `claimNextJob` as a worker calls it (its whole transaction, round trips included), one connection, no other load',
          `${CONTENDERS} claimers at once at ${queued.toLocaleString('en-US')} queued, nothing claimable: ${fmt(busy.perS, 0)} claims/s, one per ${fmt(busy.usPerClaim, 0)} µs — an upper bound of how long each holds the fleet claim lock, since they queue on it`,
        ],
        header: ['queued behind the cap', 'finished jobs', 'claimable', 'n', 'p50 ms', 'p99 ms', 'max ms', 'claimed'],
        rows,
      },
    ];
  } finally {
    await h.close();
    await bench.drop();
  }
}
