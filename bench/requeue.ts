/**
 * requeue (issue 4): SIGKILL a worker process (`orch worker`, separate process) while its agent
 * (`sleep 60`) runs, with an `orch reaper` process running, all reaper/heartbeat settings at
 * their defaults (heartbeat timeout 10 s, reaper interval 5 s, dead ticks 2) → time until a new
 * queued job row for that task exists. Kills run in parallel batches of 5 (ORCH_WORKER_SLOTS=1:
 * one job per worker). Beside it, one batch with the reaper on another ORCH_HOST_ID (no pid
 * check: heartbeat staleness only), and pg-boss's own rescue of an active job whose worker
 * process died (queue heartbeatSeconds 10, supervisor every 5 s), measured the same way.
 * Times are kill → row observed by a 50 ms poll (both systems alike).
 */
import path from 'node:path';
import { requestCancel } from '../packages/shared/src/cancel.ts';
import { createTask } from '../packages/shared/src/pipeline/tasks.ts';
import { createDb } from '../packages/shared/src/db/client.ts';
import { PgBoss, execa } from './deps.ts';
import { CLI, NODE_FLAGS, LATENCY_HEADER, ROOT, createBenchDatabase, latencyRow, nowMs, sleep, startBenchOrch, waitFor, type BenchOrch, type Section } from './support.ts';

type Child = ReturnType<typeof execa>;

export function spawnOrch(orch: BenchOrch, role: string, extra: Record<string, string> = {}): Child {
  const child = execa(process.execPath, [...NODE_FLAGS, CLI, role], {
    env: { ...orch.env, ...extra },
    extendEnv: true,
    reject: false,
    stdin: 'ignore',
    stdout: 'ignore',
    stderr: 'ignore',
  });
  child.catch(() => {});
  return child;
}

export async function stopChild(c: Child, signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<void> {
  let exited = false;
  const done = c.then(
    () => void (exited = true),
    () => void (exited = true),
  );
  await Promise.race([done, sleep(0)]);
  if (exited) return;
  c.kill(signal);
  await Promise.race([done, sleep(timeoutMs)]);
  if (!exited) {
    c.kill('SIGKILL');
    await done;
  }
}

/** One batch: `n` workers, `n` tasks, all agents running, SIGKILL every worker → ms until requeued. */
export async function orchBatch(orch: BenchOrch, n: number, batch: number): Promise<number[]> {
  const { pool } = orch.rt.svc;
  const workers = Array.from({ length: n }, () => spawnOrch(orch, 'worker'));
  const pids = workers.map((w) => w.pid!);
  await waitFor(
    async () =>
      (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM workers WHERE pid = ANY($1) AND stopped_at IS NULL`, [pids])).rows[0]!.n === n,
    30_000,
    'workers registered',
    50,
  );
  const tasks: number[] = [];
  for (let i = 0; i < n; i++) tasks.push((await createTask(orch.rt.svc, { project: 'p', title: `requeue ${batch}.${i}` }, 'bench')).id);
  const running = await waitFor(
    async () => {
      const r = await pool.query<{ task_id: number; job_id: number; worker_pid: number; agent_pid: number }>(
        `SELECT j.task_id, j.id AS job_id, j.pid AS worker_pid, r.pid AS agent_pid
         FROM jobs j JOIN agent_runs r ON r.job_id = j.id
         WHERE j.task_id = ANY($1) AND j.status = 'running' AND r.pid IS NOT NULL`,
        [tasks],
      );
      return r.rows.length === n ? r.rows : null;
    },
    30_000,
    'agents running',
    50,
  );
  await sleep(500); // a heartbeat or two after the agent started
  const killedAt = new Map<number, number>();
  for (const row of running) {
    const w = workers.find((c) => c.pid === row.worker_pid)!;
    w.kill('SIGKILL');
    killedAt.set(row.task_id, nowMs());
  }
  const found = new Map<number, number>();
  await waitFor(
    async () => {
      const r = await pool.query<{ task_id: number }>(
        `SELECT DISTINCT task_id FROM jobs WHERE task_id = ANY($1) AND status = 'queued' AND id > ALL($2::bigint[])`,
        [tasks, running.map((x) => x.job_id)],
      );
      const t = nowMs();
      for (const { task_id } of r.rows) if (!found.has(task_id)) found.set(task_id, t - killedAt.get(task_id)!);
      return found.size === n;
    },
    90_000,
    'requeued jobs',
    50,
  );
  // clean up: orphaned agents, and the requeued jobs must not feed the next batch
  for (const row of running) {
    try {
      process.kill(-row.agent_pid, 'SIGKILL');
    } catch {
      /* already gone (the janitor kills orphans too) */
    }
  }
  for (const t of tasks) await requestCancel(orch.rt.svc, t, 'bench', 'bench_cleanup');
  await Promise.all(workers.map((w) => w.then(() => undefined, () => undefined)));
  return [...found.values()];
}

async function orchRequeue(kills: number, batchSize: number): Promise<{ sameHost: number[]; otherHost: number[]; workerErrors: string[] }> {
  const orch = await startBenchOrch({
    ORCH_AGENT: 'command',
    ORCH_AGENT_CMD: 'sleep 60',
    ORCH_WORKER_SLOTS: '1',
    ORCH_MAX_CONCURRENCY: '64',
    ORCH_LOG_LEVEL: 'warn',
  });
  const sameHost: number[] = [];
  const otherHost: number[] = [];
  const workerErrors: string[] = [];
  let reaper = spawnOrch(orch, 'reaper');
  try {
    for (let b = 0; b * batchSize < kills; b++) sameHost.push(...(await orchBatch(orch, Math.min(batchSize, kills - b * batchSize), b)));
    await stopChild(reaper);
    reaper = spawnOrch(orch, 'reaper', { ORCH_HOST_ID: 'bench-other-host' });
    otherHost.push(...(await orchBatch(orch, batchSize, 99)));
    const errs = await orch.rt.svc.pool.query<{ reason: string; error: string | null }>(
      `SELECT reason, error FROM jobs WHERE status = 'failed' AND reason NOT IN ('dead_owner')`,
    );
    workerErrors.push(...errs.rows.map((e) => `${e.reason}: ${(e.error ?? '').slice(0, 160)}`));
  } finally {
    await stopChild(reaper);
    await orch.close();
  }
  return { sameHost, otherHost, workerErrors };
}

const QUEUE = 'bench-rescue';

export async function bossRescue(kills: number, batchSize: number): Promise<number[]> {
  const db = await createBenchDatabase();
  // the surviving instance's supervisor does the rescue; every 5 s like orch's reaper
  const boss = new PgBoss({
    connectionString: db.url,
    schema: 'pgboss',
    useListenNotify: true,
    supervise: true,
    superviseIntervalSeconds: 5,
    monitorIntervalSeconds: 5,
    schedule: false,
    max: 3,
  });
  boss.on('error', () => {});
  const h = createDb(db.url, { max: 1, applicationName: 'bench-rescue' });
  const out: number[] = [];
  try {
    await boss.start();
    await boss.createQueue(QUEUE, { notify: true, heartbeatSeconds: 10, expireInSeconds: 3600, retryLimit: 1, retryDelay: 0 });
    for (let b = 0; b * batchSize < kills; b++) {
      const n = Math.min(batchSize, kills - b * batchSize);
      const started = new Map<string, { child: Child; sleepPid: number }>();
      const children: Child[] = [];
      const ready: Promise<void>[] = [];
      for (let i = 0; i < n; i++) {
        const c = execa(process.execPath, [path.join(ROOT, 'bench', 'pgboss-child.ts'), db.url, QUEUE], { reject: false, stdin: 'ignore', buffer: false });
        c.catch(() => {});
        children.push(c);
        let err = '';
        c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
        ready.push(
          new Promise<void>((resolve, reject) => {
            void c.then((r) => reject(new Error(`pg-boss child exited before ready (${r.exitCode ?? r.signal}): ${err.slice(-500)}`)));
            let buf = '';
            c.stdout!.on('data', (d: Buffer) => {
              buf += d.toString();
              let nl;
              while ((nl = buf.indexOf('\n')) !== -1) {
                const line = buf.slice(0, nl);
                buf = buf.slice(nl + 1);
                if (line === 'ready') resolve();
                const m = /^started (\S+) (\d+)$/.exec(line);
                if (m) started.set(m[1]!, { child: c, sleepPid: Number(m[2]) });
              }
            });
          }),
        );
      }
      await Promise.all(ready);
      const ids: string[] = [];
      for (let i = 0; i < n; i++) ids.push((await boss.send(QUEUE, { b, i }))!);
      await waitFor(async () => ids.every((id) => started.has(id)), 30_000, 'pg-boss jobs active', 20);
      // one job per child (batchSize 1, one handler loop): every child is busy
      await sleep(500);
      const killedAt = new Map<string, number>();
      for (const id of ids) {
        started.get(id)!.child.kill('SIGKILL');
        killedAt.set(id, nowMs());
      }
      const found = new Map<string, number>();
      await waitFor(
        async () => {
          const r = await h.pool.query<{ id: string }>(`SELECT id FROM pgboss.job WHERE id = ANY($1::uuid[]) AND state IN ('retry', 'created')`, [ids]);
          const t = nowMs();
          for (const { id } of r.rows) if (!found.has(id)) found.set(id, t - killedAt.get(id)!);
          return found.size === n;
        },
        120_000,
        'pg-boss rescue',
        50,
      );
      out.push(...found.values());
      for (const { sleepPid } of started.values()) {
        try {
          process.kill(sleepPid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await h.pool.query(`DELETE FROM pgboss.job WHERE id = ANY($1::uuid[])`, [ids]); // not picked up by the next batch
      await Promise.all(children.map((c) => c.then(() => undefined, () => undefined)));
    }
  } finally {
    await boss.stop({ graceful: false, timeout: 2000, close: true }).catch(() => {});
    await h.close();
    await db.drop();
  }
  return out;
}

export async function benchRequeue(opts: { kills?: number; batchSize?: number; bossKills?: number } = {}): Promise<Section[]> {
  const kills = opts.kills ?? 20;
  const batchSize = opts.batchSize ?? 5;
  const orch = await orchRequeue(kills, batchSize);
  const boss = await bossRescue(opts.bossKills ?? 10, batchSize);
  return [
    {
      title: 'requeue — worker SIGKILLed mid-job → new queued job row for the task (ms)',
      header: LATENCY_HEADER,
      rows: [
        latencyRow('**orch, reaper on the same host (pid check)**', orch.sameHost, 'p99 < 15000'),
        latencyRow('orch, reaper on another host id (heartbeat only)', orch.otherHost, ''),
        latencyRow('bare pg-boss rescue (heartbeatSeconds 10, supervise 5 s)', boss, ''),
      ],
      notes: [
        'orch: `orch worker` processes (ORCH_AGENT_CMD=`sleep 60`, ORCH_WORKER_SLOTS=1, ORCH_MAX_CONCURRENCY=64) and one `orch reaper` process; heartbeat interval 2 s / timeout 10 s, reaper interval 5 s, dead ticks 2, retry backoff 10 s (defaults). The requeued row exists at once; it becomes claimable after the backoff.',
        `kills in parallel batches of ${batchSize}; time = SIGKILL → the new queued row seen by a 50 ms poll.`,
        'same host: Tier 1 sees the worker pid gone on its next tick and acts on the 2nd consecutive tick (expected 5–10 s). Other host: the heartbeat must first be 10 s stale (last beat ≤ 2 s before the kill), then 2 ticks (expected ~13–23 s).',
        `jobs failed by something other than the reaper during the run: ${orch.workerErrors.length}${orch.workerErrors.length ? ` — ${[...new Set(orch.workerErrors)].slice(0, 3).map((e) => `\`${e}\``).join('; ')}` : ''}.`,
        'bare pg-boss: child processes run work() with the handler running `sleep 60`; the queue has heartbeatSeconds 10 (refresh every 5 s), retryLimit 1; the surviving instance supervises every 5 s (pg-boss default 60 s); time = kill → job back in `retry`/`created`.',
      ],
    },
  ];
}
