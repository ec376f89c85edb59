/**
 * `node bench/soak.ts [minutes=30] [--inflight 6] [--every 30] [--warmup S]` — soak run
 * (issue 8), not CI.
 *
 * A worker process (`orch worker`, with the command agent running bench/agents/soak-agent.sh,
 * which keeps the repository's tree the same size) and a reaper process (`orch reaper`)
 * on a fresh database run continuous no-op pipelines (analysis → implementation → review →
 * merge → done) over four projects, `--inflight` tasks at a time. Every `--every` seconds it
 * samples the RSS (/proc/<pid>/status VmRSS) and open fds (/proc/<pid>/fd) of both processes,
 * this database's Postgres connections (pg_stat_activity) and the latency of the tasks finished
 * in the window. At the end it prints the samples and the verdict (bench/soak-verdict.ts: the
 * last third of the run against the first third after warm-up; RSS and latency within +10 %,
 * no growth of fds or connections), writes them to bench/results/soak.md, and exits 2 when a
 * check fails. A process that exits by itself is reported and fails the run too.
 * BENCH_KEEP=1 keeps the database and the repositories.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createDb } from '../packages/shared/src/db/client.ts';
import { addProject } from '../packages/shared/src/pipeline/projects.ts';
import { createTask } from '../packages/shared/src/pipeline/tasks.ts';
import { createBoss, startBoss } from '../packages/shared/src/queue.ts';
import { soakVerdict, type SoakSample } from './soak-verdict.ts';
import { CLI, NODE_FLAGS, ROOT, bareRepo, createBenchDatabase, fmt, percentile, sleep, table } from './support.ts';

const positional = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && !(all[i - 1] ?? '').startsWith('--'));
const MINUTES = Number(positional[0] ?? 30);
const opt = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const INFLIGHT = opt('inflight', 6);
const EVERY_S = opt('every', 30);
const WARMUP_S = opt('warmup', Math.min(300, MINUTES * 12));
const PROJECTS = ['s1', 's2', 's3', 's4'];

interface Sample extends SoakSample {
  done: number;
  p50: number;
  p99: number;
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
const fdCount = (pid: number) => fs.readdirSync(`/proc/${pid}/fd`).length;

async function main(): Promise<boolean> {
  const database = await createBenchDatabase();
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'orch-soak-'));
  const h = createDb(database.url, { max: 3, applicationName: 'orch-soak-bench' });
  const boss = createBoss(database.url, { supervise: false });
  await startBoss(boss);
  for (const slug of PROJECTS) await addProject(h.db, { slug, repo: await bareRepo(dir, slug), base: 'main', max_concurrency: 4 });
  const dbName = new URL(database.url).pathname.slice(1);

  const env: Record<string, string> = {
    ...Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined)),
    DATABASE_URL: database.url,
    ORCH_HOME: path.join(dir, 'home'),
    ORCH_WORKTREE_ROOT: path.join(dir, 'worktrees'),
    ORCH_HOST_ID: 'soak',
    ORCH_AGENT: 'command',
    ORCH_AGENT_CMD: `sh ${JSON.stringify(path.join(ROOT, 'bench', 'agents', 'soak-agent.sh'))}`,
    ORCH_MAX_CONCURRENCY: String(INFLIGHT),
    ORCH_WORKER_SLOTS: String(INFLIGHT),
    ORCH_REAPER_INTERVAL_S: '1',
    ORCH_LOG_LEVEL: 'warn',
  };
  const exits: string[] = [];
  const start = (role: string): ChildProcess => {
    const fd = fs.openSync(path.join(dir, `${role}.log`), 'a');
    const c = spawn(process.execPath, [...NODE_FLAGS, CLI, role], { env, stdio: ['ignore', fd, fd], cwd: dir });
    fs.closeSync(fd);
    c.on('exit', (code, signal) => {
      if (!stopping) exits.push(`${role} exited by itself (code ${code}, signal ${signal})`);
    });
    return c;
  };
  let stopping = false;
  const worker = start('worker');
  const reaper = start('reaper');
  // Interrupted: take the processes down with us (the database and files stay for a look).
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      stopping = true;
      worker.kill('SIGKILL');
      reaper.kill('SIGKILL');
      process.stderr.write(`soak interrupted; left ${database.url} and ${dir}\n`);
      process.exit(130);
    });
  }
  const pids = { worker: worker.pid!, reaper: reaper.pid! };

  // continuous pipelines: keep INFLIGHT tasks live, measure created → done
  const latencies: Array<{ at: number; ms: number }> = [];
  const createdAt = new Map<number, number>();
  let n = 0;
  const t0 = Date.now();
  const end = t0 + MINUTES * 60_000;
  // Postgres without autovacuum (some CI set-ups turn it off) never vacuums or analyzes: dead
  // rows pile up and the planner has no statistics, which is not what a fleet runs on. Then the
  // soak does autovacuum's job itself, once a minute, and says so in its report.
  const autovacuum = (await h.pool.query<{ autovacuum: string }>('SHOW autovacuum')).rows[0]!.autovacuum;
  let vacuums = 0;
  const vacuumer =
    autovacuum === 'on'
      ? Promise.resolve()
      : (async () => {
          while (Date.now() < end) {
            await sleep(Math.min(60_000, Math.max(0, end - Date.now())));
            await h.pool.query('VACUUM (ANALYZE)');
            vacuums++;
          }
        })();
  const feeder = (async () => {
    while (Date.now() < end) {
      const done = await h.pool.query<{ id: string; ms: number }>(
        `SELECT t.id, extract(epoch FROM (SELECT max(e.created_at) FROM task_events e WHERE e.task_id = t.id AND e.kind = 'stage_changed' AND e.data->>'to' = 'done') - t.created_at) * 1000 AS ms
         FROM tasks t WHERE t.stage = 'done' AND t.id = ANY($1::bigint[])`,
        [[...createdAt.keys()]],
      );
      for (const r of done.rows) {
        createdAt.delete(Number(r.id));
        latencies.push({ at: Date.now(), ms: Number(r.ms) });
      }
      while (createdAt.size < INFLIGHT) {
        const t = await createTask({ db: h.db, boss }, { project: PROJECTS[n % PROJECTS.length]!, title: `soak ${n++}` }, 'soak');
        createdAt.set(t.id, Date.now());
      }
      await sleep(100);
    }
  })();

  const samples: Sample[] = [];
  const sample = async () => {
    const since = samples.length ? t0 + samples[samples.length - 1]!.atS * 1000 : t0;
    const window = latencies.filter((l) => l.at > since).map((l) => l.ms);
    const conns = await h.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1`, [dbName]);
    const s: Sample = {
      atS: Math.round((Date.now() - t0) / 1000),
      rssMb: { worker: rssMb(pids.worker), reaper: rssMb(pids.reaper) },
      fds: { worker: fdCount(pids.worker), reaper: fdCount(pids.reaper) },
      pgConns: conns.rows[0]!.n,
      done: window.length,
      p50: percentile(window, 50),
      p99: percentile(window, 99),
    };
    samples.push(s);
    process.stderr.write(
      `[${s.atS}s] rss worker ${fmt(s.rssMb.worker!)} / reaper ${fmt(s.rssMb.reaper!)} MB, fds ${s.fds.worker} / ${s.fds.reaper}, pg conns ${s.pgConns}, ${s.done} tasks done, p50 ${fmt(s.p50, 0)} ms, p99 ${fmt(s.p99, 0)} ms\n`,
    );
  };
  while (Date.now() < end) {
    await sleep(Math.min(EVERY_S * 1000, Math.max(0, end - Date.now())));
    await sample();
  }
  await feeder;
  await vacuumer;

  stopping = true;
  worker.kill('SIGTERM');
  reaper.kill('SIGTERM');
  await Promise.all([worker, reaper].map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
  await boss.stop({ graceful: false, timeout: 2000 }).catch(() => {});
  await h.close();

  const rows = samples.map((s) => [
    String(s.atS),
    fmt(s.rssMb.worker!),
    fmt(s.rssMb.reaper!),
    String(s.fds.worker),
    String(s.fds.reaper),
    String(s.pgConns),
    String(s.done),
    fmt(s.p50, 0),
    fmt(s.p99, 0),
  ]);
  const v = soakVerdict(
    samples,
    latencies.map((l) => ({ atS: (l.at - t0) / 1000, ms: l.ms })),
    { warmupS: WARMUP_S },
  );
  const ok = v.ok && exits.length === 0;
  const out = [
    `# soak — ${new Date().toISOString()}`,
    '',
    `\`node bench/soak.ts ${MINUTES}\` on ${os.hostname()} (${os.cpus().length} CPUs): ${latencies.length} no-op pipelines, ${INFLIGHT} in flight, samples every ${EVERY_S} s`,
    '',
    autovacuum === 'on'
      ? 'Postgres autovacuum: on.'
      : `Postgres autovacuum: **off** on this server; the soak ran \`VACUUM (ANALYZE)\` on its database once a minute instead (${vacuums} times).`,
    '',
    table(['t (s)', 'worker RSS (MB)', 'reaper RSS (MB)', 'worker fds', 'reaper fds', 'pg conns', 'tasks done in window', 'p50 (ms)', 'p99 (ms)'], rows),
    '',
    `Verdict: the last third (${v.windows.last[0]}–${v.windows.last[1]} s) against the first third after a ${WARMUP_S} s warm-up (${v.windows.baseline[0]}–${v.windows.baseline[1]} s):`,
    '',
    table(
      ['measure', 'baseline', 'last', 'drift', 'limit', 'ok'],
      v.checks.map((c) => [c.measure, fmt(c.baseline, 1), fmt(c.last, 1), c.drift, c.limit, c.ok ? 'yes' : 'NO']),
    ),
    '',
    `RSS slope over the steady part: ${Object.entries(v.slopes).map(([p, mbMin]) => `${p} ${mbMin >= 0 ? '+' : ''}${mbMin.toFixed(2)} MB/min`).join(', ')}.`,
    '',
    ...(exits.length ? ['Unexpected exits:', ...exits.map((e) => `- ${e}`), ''] : ['No process exited by itself.', '']),
    ok ? 'soak: PASS' : 'soak: FAIL',
    '',
  ].join('\n');
  process.stdout.write(out);
  await fsp.mkdir(path.join(ROOT, 'bench', 'results'), { recursive: true });
  await fsp.writeFile(path.join(ROOT, 'bench', 'results', 'soak.md'), out);
  if (process.env.BENCH_KEEP) process.stderr.write(`kept: ${database.url} and ${dir}\n`);
  else {
    await database.drop();
    await fsp.rm(dir, { recursive: true, force: true });
  }
  return ok;
}

main().then(
  (ok) => process.exit(ok ? 0 : 2),
  (err) => {
    process.stderr.write(`soak failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
