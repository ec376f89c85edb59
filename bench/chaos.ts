/**
 * `node bench/chaos.ts [--tasks 100] [--minutes 12] [--no-pg-restart]` — chaos run (issue 8),
 * not part of CI.
 *
 * Real processes: 3 workers with distinct host ids (`orch worker`, ORCH_HOST_ID h1..h3, each its
 * own worktree root), the API (`orch api`) and 2 reapers (`orch reaper`, on h1 and h2), all on a
 * fresh database of this machine's Postgres. Tasks are created through the API (retried when the
 * API is down; a lost response is checked against the database, never re-posted blindly), over
 * three projects, with agents of varied behaviour keyed by task id: fast, slow, failing on the
 * first attempt, lazy (exit 0 without the work) on the first attempt; ~10% of tasks get a STOP.
 *
 * While they run: random SIGKILL of workers (restarted under the same host id), SIGSTOP of a
 * worker (SIGCONT seconds later), SIGKILL of the reaper leader and of the API (restarted), and one
 * Postgres restart in the middle (`pg_ctlcluster --skip-systemctl-redirect 15 main restart`) —
 * the processes must reconnect by themselves; one that exits is recorded as a finding (with its
 * last log lines) and restarted, as a supervisor would.
 *
 * Sampled all along: two running jobs of one task, the fleet cap, base branches moving only
 * forward. At the end: every task terminal; duplicate advances, duplicate enqueues, surviving
 * agent processes, leaked worktrees and run dirs, leaked branches — all expected 0; p50/p99 task latency.
 * Prints a table and writes it to bench/results/chaos.md.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createDb } from '../packages/shared/src/db/client.ts';
import { git } from '../packages/shared/src/host/git.ts';
import { addProject } from '../packages/shared/src/pipeline/projects.ts';
import { taskIdsWithFiles } from '../packages/shared/src/host/task-files.ts';
import { CLI, NODE_FLAGS, ROOT, bareRepo, createBenchDatabase, fmt, percentile, remoteBranches, sleep, table } from './support.ts';

// ---------------------------------------------------------------------------------------------
// arguments

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const TASKS = arg('tasks', 100);
const MINUTES = arg('minutes', 12);
const PG_RESTART = !process.argv.includes('--no-pg-restart');
const PG_CLUSTER = process.env.BENCH_PG_CLUSTER ?? '15 main';
const HOSTS = ['h1', 'h2', 'h3'] as const;
const PROJECTS = ['p', 'q', 'r'] as const;
const FLEET_CAP = 9;
const GOOD_AGENT = path.join(ROOT, 'tests', 'fixtures', 'agents', 'good-agent.sh');

/** Behaviour by task id: 0 fast, 1 slow, 2 fails its first implementation attempt, 3 lazy first analysis, 4 medium. */
const AGENT = [
  'case $((ORCH_TASK_ID % 5)) in',
  '  0) export ORCH_AGENT_SLEEP=0.1 ;;',
  '  1) export ORCH_AGENT_SLEEP=3 ;;',
  '  2) if [ "$ORCH_ATTEMPT" = 1 ] && [ "$ORCH_STAGE" = implementation ]; then sleep 0.5; exit 1; fi ;;',
  '  3) if [ "$ORCH_ATTEMPT" = 1 ]; then export LAZY_STAGE=analysis; fi ;;',
  '  4) export ORCH_AGENT_SLEEP=1 ;;',
  'esac',
  `sh ${GOOD_AGENT}`,
].join('\n');

// ---------------------------------------------------------------------------------------------
// processes

interface Proc {
  name: string;
  role: 'worker' | 'reaper' | 'api';
  env: Record<string, string>;
  child: ChildProcess | null;
  log: string;
  /** set when we kill it on purpose, so its exit is not a finding */
  expectExit: boolean;
  stoppedUntil: number;
  unexpectedExits: Array<{ at: string; code: number | null; signal: string | null; tail: string }>;
}

const procs: Proc[] = [];
const counters = { workerKills: 0, workerStops: 0, reaperKills: 0, apiKills: 0, pgRestarts: 0, unexpectedExits: 0, tasksStopped: 0 };
/** Every HTTP answer the API gave (task creation, STOP, /healthz probes); a refused connection is not an answer. */
const apiAnswers = { total: 0, s5xx: 0, examples: [] as string[] };
function answered(what: string, status: number): void {
  apiAnswers.total++;
  if (status >= 500) {
    apiAnswers.s5xx++;
    if (apiAnswers.examples.length < 5) apiAnswers.examples.push(`${what} → ${status}`);
  }
}

function startProc(p: Proc): void {
  const fd = fs.openSync(p.log, 'a');
  fs.writeSync(fd, `\n==== start ${new Date().toISOString()} ====\n`);
  const child = spawn(process.execPath, [...NODE_FLAGS, CLI, p.role], { env: p.env, stdio: ['ignore', fd, fd], cwd: os.tmpdir() });
  fs.closeSync(fd);
  p.child = child;
  p.expectExit = false;
  child.on('exit', (code, signal) => {
    if (p.child !== child) return;
    p.child = null;
    if (p.expectExit || shuttingDown) return;
    const tail = fs.readFileSync(p.log, 'utf8').split('\n').slice(-15).join('\n');
    p.unexpectedExits.push({ at: new Date().toISOString(), code, signal, tail });
    counters.unexpectedExits++;
    note(`!! ${p.name} exited by itself (code ${code}, signal ${signal}); restarting as a supervisor would`);
    setTimeout(() => startProc(p), 1000);
  });
}

function sig(p: Proc, s: NodeJS.Signals): boolean {
  if (!p.child?.pid) return false;
  try {
    process.kill(p.child.pid, s);
    return true;
  } catch {
    return false;
  }
}

async function killAndRestart(p: Proc, downMs: number): Promise<void> {
  if (!p.child) return;
  p.expectExit = true;
  sig(p, 'SIGCONT');
  sig(p, 'SIGKILL');
  await sleep(downMs);
  if (!shuttingDown) startProc(p);
}

let shuttingDown = false;
const notes: string[] = [];
const t0 = Date.now();
function note(s: string): void {
  const line = `[${((Date.now() - t0) / 1000).toFixed(1)}s] ${s}`;
  notes.push(line);
  process.stderr.write(line + '\n');
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<boolean> {
  const database = await createBenchDatabase();
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'orch-chaos-'));
  const logs = path.join(dir, 'logs');
  await fsp.mkdir(logs);
  note(`database ${new URL(database.url).pathname.slice(1)}, dir ${dir}`);
  const h = createDb(database.url, { max: 4, applicationName: 'orch-chaos-bench' });
  h.pool.on('error', () => {}); // idle clients die with the Postgres restart: expected here
  const q = async <T extends Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> => {
    for (let i = 0; ; i++) {
      try {
        return (await h.pool.query(text, params)).rows as T[];
      } catch (err) {
        if (i > 60) throw err;
        await sleep(500); // the bench itself rides out the Postgres restart
      }
    }
  };

  const repos: Record<string, string> = {};
  for (const slug of PROJECTS) {
    repos[slug] = await bareRepo(dir, `repo-${slug}`);
    await addProject(h.db, { slug, repo: repos[slug], base: 'main', max_concurrency: 4 });
  }
  const initialMain: Record<string, string> = {};
  for (const slug of PROJECTS) initialMain[slug] = (await git(['rev-parse', 'main'], { cwd: repos[slug] })).stdout.trim();

  const port = 20000 + Math.floor(Math.random() * 20000);
  const base: Record<string, string> = {
    ...Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined)),
    DATABASE_URL: database.url,
    ORCH_HOME: path.join(dir, 'home'),
    ORCH_AGENT: 'command',
    ORCH_AGENT_CMD: AGENT,
    ORCH_API_PORT: String(port),
    ORCH_MAX_CONCURRENCY: String(FLEET_CAP),
    ORCH_WORKER_SLOTS: '4',
    ORCH_JOB_MAX_ATTEMPTS: '12', // kills spend attempts; the run must end with every task terminal
    ORCH_HEARTBEAT_INTERVAL_S: '0.5',
    ORCH_HEARTBEAT_TIMEOUT_S: '4',
    ORCH_REAPER_INTERVAL_S: '0.5',
    ORCH_REAPER_DEAD_TICKS: '2',
    ORCH_REAPER_FINALIZE_GRACE_S: '5',
    ORCH_REAPER_MAX_RUNNING_S: '300',
    ORCH_RETRY_BACKOFF_BASE_S: '0.5',
    ORCH_STOP_GRACE_S: '1',
    ORCH_CANCEL_POLL_S: '0.5',
    ORCH_DISPATCH_POLL_S: '1',
    ORCH_WORKER_SHUTDOWN_S: '3',
    ORCH_MERGE_LEASE_TTL_S: '60',
    ORCH_LOG_LEVEL: 'info',
    GIT_AUTHOR_NAME: 'chaos',
    GIT_AUTHOR_EMAIL: 'chaos@localhost',
    GIT_COMMITTER_NAME: 'chaos',
    GIT_COMMITTER_EMAIL: 'chaos@localhost',
  };
  delete base.NODE_OPTIONS;
  const wtRoot = (host: string) => path.join(dir, `worktrees-${host}`);
  const mk = (name: string, role: Proc['role'], env: Record<string, string>): Proc => ({
    name,
    role,
    env: { ...base, ...env },
    child: null,
    log: path.join(logs, `${name}.log`),
    expectExit: false,
    stoppedUntil: 0,
    unexpectedExits: [],
  });
  for (const host of HOSTS) procs.push(mk(`worker-${host}`, 'worker', { ORCH_HOST_ID: host, ORCH_WORKTREE_ROOT: wtRoot(host) }));
  procs.push(mk('api', 'api', { ORCH_HOST_ID: 'api', ORCH_WORKTREE_ROOT: path.join(dir, 'worktrees-api') }));
  procs.push(mk('reaper-h1', 'reaper', { ORCH_HOST_ID: 'h1', ORCH_WORKTREE_ROOT: wtRoot('h1') }));
  procs.push(mk('reaper-h2', 'reaper', { ORCH_HOST_ID: 'h2', ORCH_WORKTREE_ROOT: wtRoot('h2') }));
  for (const p of procs) startProc(p);
  const byName = (n: string) => procs.find((p) => p.name === n)!;
  const api = `http://127.0.0.1:${port}`;

  // --------------------------------------------------------------------------------------------
  // task creation through the API, at a trickle, riding out API kills

  const created: number[] = [];
  const createTasks = (async () => {
    for (let i = 0; i < TASKS; i++) {
      const title = `chaos task ${i}`;
      for (;;) {
        try {
          const r = await fetch(`${api}/tasks`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ project: PROJECTS[i % 3], title }),
            signal: AbortSignal.timeout(5000),
          });
          answered('POST /tasks', r.status);
          if (r.status === 201) {
            created.push(((await r.json()) as { task: { id: number } }).task.id);
            break;
          }
        } catch {
          /* API down, or the response was lost */
        }
        const row = await q<{ id: number }>('SELECT id FROM tasks WHERE title = $1', [title]);
        if (row.length) {
          created.push(row[0]!.id);
          break;
        }
        await sleep(300);
      }
      await sleep(150);
    }
  })();

  // --------------------------------------------------------------------------------------------
  // continuous sampling

  const violations: string[] = [];
  let maxRunning = 0;
  const mainSeen: Record<string, string> = { ...initialMain };
  let sampling = true;
  const sampler = (async () => {
    let n = 0;
    while (sampling) {
      try {
        const two = await h.pool.query(`SELECT task_id FROM jobs WHERE status = 'running' GROUP BY task_id HAVING count(*) > 1`);
        if (two.rows.length) violations.push(`two running jobs: ${JSON.stringify(two.rows)}`);
        const live = await h.pool.query(`SELECT task_id FROM jobs WHERE status IN ('queued','running') GROUP BY task_id HAVING count(*) > 1`);
        if (live.rows.length) violations.push(`two live jobs: ${JSON.stringify(live.rows)}`);
        const r = await h.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM jobs WHERE status = 'running'`);
        maxRunning = Math.max(maxRunning, r.rows[0]!.n);
        if (++n % 10 === 0) {
          for (const slug of PROJECTS) {
            const now = (await git(['rev-parse', 'main'], { cwd: repos[slug]! })).stdout.trim();
            if (now !== mainSeen[slug]) {
              const fwd = await git(['merge-base', '--is-ancestor', mainSeen[slug]!, now], { cwd: repos[slug]!, allowFail: true });
              if (fwd.exitCode !== 0) violations.push(`${slug}: main moved backwards/sideways ${mainSeen[slug]} → ${now}`);
              mainSeen[slug] = now;
            }
          }
        }
      } catch {
        /* Postgres restarting */
      }
      await sleep(300);
    }
  })();

  // /healthz every 250 ms: the answers must never be 5xx, and they stay fast while the API is up
  const healthz: number[] = [];
  const prober = (async () => {
    while (sampling) {
      const t = performance.now();
      try {
        const r = await fetch(`${api}/healthz`, { signal: AbortSignal.timeout(2000) });
        await r.arrayBuffer();
        answered('GET /healthz', r.status);
        if (r.ok) healthz.push(performance.now() - t);
      } catch {
        /* API down (killed, restarting) */
      }
      await sleep(250);
    }
  })();

  // --------------------------------------------------------------------------------------------
  // chaos

  const terminalCount = async () =>
    (await q<{ n: number; total: number }>(`SELECT count(*) FILTER (WHERE stage IN ('done','cancelled'))::int AS n, count(*)::int AS total FROM tasks`))[0]!;
  const deadline = Date.now() + MINUTES * 60_000;
  let pgRestarted = !PG_RESTART;
  let pgRestartAt: number | null = null;
  const stopTargets = new Set<number>();
  let round = 0;
  while (Date.now() < deadline) {
    const { n, total } = await terminalCount();
    if (created.length === TASKS && n === TASKS && total === TASKS) break;
    // STOP ~10% of the tasks at random moments
    if (created.length && Math.random() < 0.5 && stopTargets.size < Math.ceil(TASKS / 10)) {
      const id = created[Math.floor(Math.random() * created.length)]!;
      if (!stopTargets.has(id)) {
        stopTargets.add(id);
        fetch(`${api}/tasks/${id}/stop`, { method: 'POST', signal: AbortSignal.timeout(5000) })
          .then((r) => {
            answered(`POST /tasks/${id}/stop`, r.status);
            return r.ok ? counters.tasksStopped++ : stopTargets.delete(id);
          })
          .catch(() => stopTargets.delete(id));
      }
    }
    // the Postgres restart, in the middle
    if (!pgRestarted && (n >= TASKS * 0.35 || Date.now() - t0 > 120_000)) {
      pgRestarted = true;
      note(`restarting Postgres (pg_ctlcluster ${PG_CLUSTER} restart) with ${n}/${TASKS} tasks terminal`);
      pgRestartAt = Date.now();
      try {
        execFileSync('pg_ctlcluster', ['--skip-systemctl-redirect', ...PG_CLUSTER.split(' '), 'restart'], { stdio: 'inherit' });
        counters.pgRestarts++;
        note(`Postgres back after ${Date.now() - pgRestartAt} ms`);
      } catch (err) {
        note(`Postgres restart failed: ${(err as Error).message}`);
      }
      await sleep(2000);
      continue;
    }
    // the first rounds go through every kind of fault once, then at random
    const FIRST = [0.1, 0.7, 0.85, 0.5, 0.1];
    const roll = round < FIRST.length ? FIRST[round]! : Math.random();
    round++;
    const workers = procs.filter((p) => p.role === 'worker' && p.child && p.stoppedUntil < Date.now());
    if (roll < 0.45 && workers.length) {
      const w = workers[Math.floor(Math.random() * workers.length)]!;
      counters.workerKills++;
      note(`SIGKILL ${w.name}`);
      await killAndRestart(w, 300 + Math.random() * 2000);
    } else if (roll < 0.65 && workers.length) {
      const w = workers[Math.floor(Math.random() * workers.length)]!;
      const forMs = 3000 + Math.random() * 6000;
      if (sig(w, 'SIGSTOP')) {
        counters.workerStops++;
        w.stoppedUntil = Date.now() + forMs;
        note(`SIGSTOP ${w.name} for ${(forMs / 1000).toFixed(1)} s`);
        setTimeout(() => sig(w, 'SIGCONT'), forMs);
      }
    } else if (roll < 0.8) {
      const leader = await q<{ id: string; pid: number }>(`SELECT id, pid FROM reaper_state WHERE is_leader ORDER BY last_tick_at DESC NULLS LAST LIMIT 1`);
      const p = procs.find((x) => x.role === 'reaper' && x.child?.pid === leader[0]?.pid) ?? procs.find((x) => x.role === 'reaper' && x.child)!;
      counters.reaperKills++;
      note(`SIGKILL ${p.name}${leader[0]?.pid === p.child?.pid ? ' (the leader)' : ''}`);
      await killAndRestart(p, 500 + Math.random() * 3000);
    } else if (roll < 0.9) {
      counters.apiKills++;
      note('SIGKILL api');
      await killAndRestart(byName('api'), 500 + Math.random() * 2000);
    }
    await sleep(1500 + Math.random() * 2500);
  }
  await createTasks;
  note('chaos over: waiting for every task to be terminal');
  // let everything settle (SIGCONT anyone still stopped)
  for (const p of procs) sig(p, 'SIGCONT');
  const settleUntil = Date.now() + 5 * 60_000;
  for (;;) {
    const { n } = await terminalCount();
    if (n === TASKS || Date.now() > settleUntil) break;
    await sleep(1000);
  }
  // orphan and worktree sweeps (every 10 s on workers) and janitor/branch sweeps (every reaper tick)
  await sleep(15_000);

  // --------------------------------------------------------------------------------------------
  // figures

  const figures = await collect();
  sampling = false;
  await sampler;
  await prober;

  async function collect() {
    const { n: terminal } = await terminalCount();
    const nonTerminal = await q<{ id: number; stage: string; blocked_reason: string | null }>(
      `SELECT id, stage, blocked_reason FROM tasks WHERE stage NOT IN ('done','cancelled') ORDER BY id`,
    );
    const dupAdv = await q<{ n: number }>(`
      SELECT coalesce(sum(c - 1), 0)::int AS n FROM (
        SELECT task_id, data->>'from' AS f, count(*) AS c FROM task_events WHERE kind = 'stage_changed' GROUP BY 1, 2) x WHERE c > 1`);
    const advWithoutJob = await q<{ n: number }>(`
      SELECT count(*)::int AS n FROM task_events e LEFT JOIN jobs j ON j.id = e.job_id
      WHERE e.kind = 'stage_changed' AND e.reason IS DISTINCT FROM 'serial_gate_opened'
        AND (j.id IS NULL OR j.status <> 'done' OR j.stage <> e.data->>'from')`);
    // a stage attempt enqueued twice, except the documented same-attempt requeue after worker_shutdown
    const dupEnq = await q<{ n: number }>(`
      SELECT count(*)::int AS n FROM jobs j
      WHERE EXISTS (SELECT 1 FROM jobs o WHERE o.task_id = j.task_id AND o.stage = j.stage AND o.attempt = j.attempt AND o.id < j.id
                      AND o.reason IS DISTINCT FROM 'worker_shutdown')
        AND NOT EXISTS (SELECT 1 FROM task_events e WHERE e.task_id = j.task_id AND e.kind = 'sent_back')`);
    const liveOnTerminal = await q<{ n: number }>(`
      SELECT count(*)::int AS n FROM jobs j JOIN tasks t ON t.id = j.task_id WHERE t.stage IN ('done','cancelled') AND j.status IN ('queued','running')`);
    const lat = await q<{ ms: number }>(`
      SELECT extract(epoch FROM coalesce(t.cancelled_at, (SELECT max(e.created_at) FROM task_events e WHERE e.task_id = t.id AND e.kind = 'stage_changed' AND e.data->>'to' = 'done')) - t.created_at) * 1000 AS ms
      FROM tasks t WHERE t.stage IN ('done','cancelled')`);
    const survivors = await scanSurvivors(dir);
    let leakedWorktrees = 0;
    const leakDetail: string[] = [];
    const terminalIds = new Set((await q<{ id: number }>(`SELECT id FROM tasks WHERE stage IN ('done','cancelled')`)).map((r) => Number(r.id)));
    for (const host of HOSTS) {
      for (const slug of PROJECTS) {
        // a worktree or a run dir of a terminal task
        const leaked = (await taskIdsWithFiles(wtRoot(host), slug)).filter((id) => terminalIds.has(id)).sort((a, b) => a - b);
        if (leaked.length) leakDetail.push(`${host}/${slug}: ${leaked.join(',')}`);
        leakedWorktrees += leaked.length;
      }
    }
    let leakedBranches = 0;
    let forwardOnly = true;
    const merged = await q<{ n: number }>(`SELECT count(*)::int AS n FROM tasks WHERE merged_sha IS NOT NULL`);
    for (const slug of PROJECTS) {
      leakedBranches += (await remoteBranches(repos[slug]!)).filter((b) => b !== 'main').length;
      const chain = (await git(['rev-list', '--first-parent', 'main'], { cwd: repos[slug]! })).stdout.split('\n');
      if (!chain.includes(initialMain[slug]!)) forwardOnly = false;
    }
    const mergedNotOnMain: number[] = [];
    for (const t of await q<{ id: number; sha: string; slug: string }>(
      `SELECT t.id, t.merged_sha AS sha, p.slug FROM tasks t JOIN projects p ON p.id = t.project_id WHERE t.merged_sha IS NOT NULL`,
    )) {
      const anc = await git(['merge-base', '--is-ancestor', t.sha, 'main'], { cwd: repos[t.slug]!, allowFail: true });
      if (anc.exitCode !== 0) mergedNotOnMain.push(t.id);
    }
    const reaped = await q<{ d: number; k: number; m: number; c: number }>(
      `SELECT coalesce(sum(reaped_dead_owner),0)::int AS d, coalesce(sum(reaped_known_outcome),0)::int AS k,
              coalesce(sum(reaped_max_running),0)::int AS m, coalesce(sum(cancels_completed),0)::int AS c FROM reaper_state`,
    );
    const stages = await q<{ stage: string; n: number }>(`SELECT stage, count(*)::int AS n FROM tasks GROUP BY stage ORDER BY stage`);
    const jobs = await q<{ status: string; n: number }>(`SELECT status, count(*)::int AS n FROM jobs GROUP BY status ORDER BY status`);
    return {
      terminal,
      nonTerminal,
      dupAdv: dupAdv[0]!.n,
      advWithoutJob: advWithoutJob[0]!.n,
      dupEnq: dupEnq[0]!.n,
      liveOnTerminal: liveOnTerminal[0]!.n,
      latencies: lat.map((r) => Number(r.ms)),
      survivors,
      leakedWorktrees,
      leakDetail,
      leakedBranches,
      forwardOnly,
      merged: merged[0]!.n,
      mergedNotOnMain,
      reaped: reaped[0]!,
      stages,
      jobs,
    };
  }

  // --------------------------------------------------------------------------------------------
  // shutdown, then the survivors once more (a graceful stop must leave nothing behind)

  shuttingDown = true;
  for (const p of procs) {
    sig(p, 'SIGCONT');
    p.expectExit = true;
    sig(p, 'SIGTERM');
  }
  const until = Date.now() + 20_000;
  while (procs.some((p) => p.child) && Date.now() < until) await sleep(200);
  for (const p of procs) sig(p, 'SIGKILL');
  await sleep(500);
  const survivorsAfterShutdown = await scanSurvivors(dir);

  // reconnect evidence: log lines after the Postgres restart
  const reconnect: string[] = [];
  for (const p of procs) {
    const text = fs.readFileSync(p.log, 'utf8');
    const errors = text.split('\n').filter((l) => /"level":(50|60)/.test(l)).length;
    reconnect.push(`${p.name}: ${p.unexpectedExits.length} unexpected exit(s), ${errors} error lines in its log`);
    for (const e of p.unexpectedExits) reconnect.push(`  ${p.name} exited at ${e.at} (code ${e.code}, signal ${e.signal}); last lines:\n${e.tail.split('\n').map((l) => '    ' + l.slice(0, 300)).join('\n')}`);
  }

  const f = figures;
  const rows: string[][] = [
    ['tasks (terminal / total)', `${f.terminal} / ${TASKS}`, `${TASKS} / ${TASKS}`],
    ['tasks by stage', f.stages.map((s) => `${s.stage} ${s.n}`).join(', '), ''],
    ['jobs by status', f.jobs.map((s) => `${s.status} ${s.n}`).join(', '), ''],
    ['STOPs requested (API)', String(counters.tasksStopped), ''],
    ['worker SIGKILLs', String(counters.workerKills), ''],
    ['worker SIGSTOP/SIGCONT', String(counters.workerStops), ''],
    ['reaper SIGKILLs (leader when known)', String(counters.reaperKills), ''],
    ['API SIGKILLs', String(counters.apiKills), ''],
    ['Postgres restarts', String(counters.pgRestarts), ''],
    ['processes that exited by themselves', String(counters.unexpectedExits), '0'],
    ['reaped: dead owner / known outcome / max running', `${f.reaped.d} / ${f.reaped.k} / ${f.reaped.m}`, ''],
    ['duplicate advances', String(f.dupAdv), '0'],
    ['advances without their done job', String(f.advWithoutJob), '0'],
    ['duplicate enqueues', String(f.dupEnq), '0'],
    ['two running/live jobs of a task (sampled)', String(violations.filter((v) => v.startsWith('two')).length), '0'],
    ['max running jobs (fleet cap)', `${maxRunning} (${FLEET_CAP})`, `≤ ${FLEET_CAP}`],
    ['live jobs of terminal tasks', String(f.liveOnTerminal), '0'],
    ['surviving agent processes (before shutdown)', String(f.survivors.length), '0'],
    ['surviving agent processes (after shutdown)', String(survivorsAfterShutdown.length), '0'],
    ['leaked worktrees or run dirs on hosts with a reaper (h1, h2)', String(f.leakDetail.filter((l) => !l.startsWith('h3/')).reduce((n, l) => n + l.split(': ')[1]!.split(',').length, 0)), '0'],
    ['leaked worktrees or run dirs on the worker-only host h3', String(f.leakDetail.filter((l) => l.startsWith('h3/')).reduce((n, l) => n + l.split(': ')[1]!.split(',').length, 0)), '0'],
    ['leaked feature branches', String(f.leakedBranches), '0'],
    ['merged tasks / merged_sha not on main', `${f.merged} / ${f.mergedNotOnMain.length}`, '– / 0'],
    ['base branches only moved forward (first-parent)', f.forwardOnly && !violations.some((v) => v.includes('main moved')) ? 'yes' : 'NO', 'yes'],
    ['API answers / 5xx (task creation, STOP, /healthz)', `${apiAnswers.total} / ${apiAnswers.s5xx}`, '– / 0'],
    ['/healthz p50 / p99 (ms, while the API was up)', `${fmt(percentile(healthz, 50))} / ${fmt(percentile(healthz, 99))}`, ''],
    ['task latency p50 / p99 (s)', `${fmt(percentile(f.latencies, 50) / 1000)} / ${fmt(percentile(f.latencies, 99) / 1000)}`, ''],
    ['wall time (s)', fmt((Date.now() - t0) / 1000), ''],
  ];
  // A row with an expectation must meet it; any miss makes the run exit non-zero.
  const misses = rows.filter(([, value, expected]) => {
    if (!expected) return false;
    if (expected === '– / 0') return value.split(' / ')[1] !== '0';
    if (expected.startsWith('≤')) return Number(value.split(' ')[0]) > Number(expected.slice(1));
    return value !== expected;
  });
  const out = [
    `# chaos — ${new Date().toISOString()}`,
    '',
    `\`node bench/chaos.ts --tasks ${TASKS}\` on ${os.hostname()} (${os.cpus().length} CPUs), Postgres restart: ${PG_RESTART ? 'yes' : 'no'}`,
    '',
    table(['figure', 'value', 'expected'], rows),
    '',
    ...(f.nonTerminal.length ? ['Non-terminal tasks:', ...f.nonTerminal.map((t) => `- ${t.id} ${t.stage} ${t.blocked_reason ?? ''}`), ''] : []),
    ...(f.leakDetail.length ? ['Leaked task files (worktree or run dirs):', ...f.leakDetail.map((l) => `- ${l}`), ''] : []),
    ...(f.survivors.length || survivorsAfterShutdown.length
      ? ['Survivors:', ...[...f.survivors, ...survivorsAfterShutdown].map((s) => `- pid ${s.pid} job ${s.job}: ${s.cmd}`), '']
      : []),
    ...(apiAnswers.examples.length ? ['5xx answers:', ...apiAnswers.examples.map((e) => `- ${e}`), ''] : []),
    ...(violations.length ? ['Violations:', ...violations.slice(0, 20).map((v) => `- ${v}`), ''] : []),
    'Processes:',
    ...reconnect.map((l) => `- ${l}`),
    '',
    // a failed run keeps its database and logs: they are what the next person needs
    process.env.BENCH_KEEP || misses.length ? `Logs: ${logs} (kept)` : 'Logs: removed at exit (BENCH_KEEP=1 keeps them and the database)',
    '',
    misses.length ? `chaos: FAIL (${misses.map(([figure]) => figure).join('; ')})` : 'chaos: PASS (every expectation met)',
    '',
  ].join('\n');
  process.stdout.write(out);
  await fsp.mkdir(path.join(ROOT, 'bench', 'results'), { recursive: true });
  await fsp.writeFile(path.join(ROOT, 'bench', 'results', 'chaos.md'), out + '\nTimeline:\n' + notes.map((n) => `    ${n}`).join('\n') + '\n');
  await h.close();
  if (!process.env.BENCH_KEEP && misses.length === 0) {
    await database.drop();
    await fsp.rm(dir, { recursive: true, force: true });
  }
  return misses.length === 0;
}

/** Live processes with ORCH_JOB_ID in their environment that belong to this run's directory. */
async function scanSurvivors(marker: string): Promise<Array<{ pid: number; job: string; cmd: string }>> {
  const out: Array<{ pid: number; job: string; cmd: string }> = [];
  for (const name of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await fsp.readFile(`/proc/${name}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
      if (state === 'Z' || state === 'X') continue;
      const env = await fsp.readFile(`/proc/${name}/environ`, 'utf8');
      if (!env.includes(marker)) continue;
      const job = env.split('\0').find((kv) => kv.startsWith('ORCH_JOB_ID='));
      if (!job) continue;
      out.push({ pid: Number(name), job: job.slice(12), cmd: (await fsp.readFile(`/proc/${name}/cmdline`, 'utf8')).replace(/\0/g, ' ').slice(0, 200) });
    } catch {
      /* gone */
    }
  }
  return out;
}

process.on('unhandledRejection', (err) => note(`bench: unhandled rejection: ${(err as Error)?.message ?? String(err)}`));
main().then(
  (passed) => process.exit(passed ? 0 : 2),
  (err) => {
    process.stderr.write(`chaos failed: ${(err as Error).stack ?? String(err)}\n`);
    for (const p of procs) {
      p.expectExit = true;
      sig(p, 'SIGCONT');
      sig(p, 'SIGKILL');
    }
    process.exit(1);
  },
);
