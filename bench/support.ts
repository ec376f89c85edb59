/**
 * Benchmark support: a database made from scratch (CREATE DATABASE, orch migrations, pg-boss
 * schema) and dropped at the end, a bare git repository, in-process workers, a few stats
 * helpers and markdown tables. Benchmarks print figures; they never assert on time.
 *
 * The bench directory is not a workspace package, so orch modules are imported by relative
 * path and third-party modules through `deps.ts` (the copies @orch/shared resolves).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, type Config } from '../packages/shared/src/runtime/config.ts';
import { createDb } from '../packages/shared/src/db/client.ts';
import { migrateToLatest } from '../packages/shared/src/db/migrate.ts';
import { createBoss, startBoss } from '../packages/shared/src/queue.ts';
import { openRuntime, type Runtime } from '../packages/shared/src/runtime/process-runtime.ts';
import { addProject } from '../packages/shared/src/pipeline/projects.ts';
import { silentLogger } from '../packages/shared/src/runtime/logger.ts';
import { git } from '../packages/shared/src/host/git.ts';
import { createCommandAdapter } from '../packages/shared/src/agents/index.ts';
import { createWorker, type OrchWorker } from '../packages/worker/src/worker.ts';
import type { Project } from '../packages/shared/src/db/types.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const CLI = path.join(ROOT, 'packages', 'cli', 'src', 'main.ts');
/** The Node flags `./orch` and the deploy files run orch's processes with (see `./orch`). */
export const NODE_FLAGS = ['--max-semi-space-size=16'];
export const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** wall clock in ms with sub-ms resolution (comparable with `date +%s%N` on this host) */
export const nowMs = () => performance.timeOrigin + performance.now();

export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

async function adminQuery(sqlText: string): Promise<void> {
  const h = createDb(ADMIN_URL, { max: 1, applicationName: 'orch-bench-admin' });
  try {
    await h.pool.query(sqlText);
  } finally {
    await h.close();
  }
}

/** CREATE DATABASE + orch migrations + pg-boss schema; returns the URL and a dropper. */
export async function createBenchDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `orch_bench_${randomBytes(4).toString('hex')}`;
  await adminQuery(`CREATE DATABASE ${name}`);
  const url = withDatabase(ADMIN_URL, name);
  const h = createDb(url, { max: 2, applicationName: 'orch-bench-migrate' });
  const m = await migrateToLatest(h.db);
  await h.close();
  if (m.error) throw new Error(`migration failed: ${m.error}`);
  const boss = createBoss(url, { supervise: false });
  await startBoss(boss);
  await boss.stop({ graceful: false, timeout: 1000, close: true });
  return {
    url,
    async drop() {
      await adminQuery(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${name}' AND pid <> pg_backend_pid()`).catch(() => {});
      await adminQuery(`DROP DATABASE IF EXISTS ${name}`).catch((err) => console.error(`could not drop ${name}: ${(err as Error).message}`));
    },
  };
}

/** A bare repository with one commit on `main`. */
export async function bareRepo(dir: string, name = 'repo'): Promise<string> {
  const bare = path.join(dir, `${name}.git`);
  await git(['init', '--bare', '--quiet', '--initial-branch=main', bare]);
  const seed = path.join(dir, `${name}-seed`);
  await git(['init', '--quiet', '--initial-branch=main', seed]);
  await fs.writeFile(path.join(seed, 'README.md'), '# bench repo\n');
  await git(['add', '.'], { cwd: seed });
  await git(['-c', 'user.name=bench', '-c', 'user.email=bench@localhost', 'commit', '--quiet', '-m', 'initial'], { cwd: seed });
  await git(['push', '--quiet', bare, 'main'], { cwd: seed });
  await fs.rm(seed, { recursive: true, force: true });
  return bare;
}

export async function remoteBranches(bare: string): Promise<string[]> {
  const r = await git(['for-each-ref', '--format=%(refname:short)', 'refs/heads'], { cwd: bare });
  return r.stdout ? r.stdout.split('\n').sort() : [];
}

export interface BenchOrch {
  url: string;
  dir: string;
  repo: string;
  env: Record<string, string>;
  config: Config;
  rt: Runtime;
  project: Project;
  /** an in-process worker with its own runtime (pool + pg-boss); started unless `start: false` */
  worker(extraEnv?: Record<string, string>, opts?: { start?: boolean }): Promise<OrchWorker>;
  close(): Promise<void>;
}

/** A fresh database, a bare repo, a project `p`, and the bench's own runtime. */
export async function startBenchOrch(env: Record<string, string>, project: { max_concurrency?: number } = {}): Promise<BenchOrch> {
  const db = await createBenchDatabase();
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'orch-bench-'));
  const repo = await bareRepo(dir);
  const fullEnv: Record<string, string> = {
    ORCH_HOME: path.join(dir, 'home'),
    ORCH_WORKTREE_ROOT: path.join(dir, 'worktrees'),
    ORCH_LOG_LEVEL: 'silent',
    ...env,
    DATABASE_URL: db.url,
  };
  const config = loadConfig(fullEnv);
  const rt = await openRuntime(config, db.url, silentLogger, { applicationName: 'orch-bench', poolMax: 10 });
  const proj = await addProject(rt.svc.db, { slug: 'p', repo, base: 'main', max_concurrency: project.max_concurrency ?? 100 });
  const closers: Array<() => Promise<void>> = [];
  return {
    url: db.url,
    dir,
    repo,
    env: fullEnv,
    config,
    rt,
    project: proj,
    async worker(extraEnv = {}, wopts = {}) {
      const wcfg = loadConfig({ ...fullEnv, ...extraEnv });
      const wrt = await openRuntime(wcfg, db.url, silentLogger, { applicationName: 'orch-bench-worker', poolMax: 10 });
      const w = createWorker({ svc: wrt.svc, agent: createCommandAdapter(wcfg.agent.command!), connectionString: db.url, log: silentLogger });
      if (wopts.start !== false) await w.start();
      closers.push(async () => {
        await w.stop();
        await wrt.close();
      });
      return w;
    },
    async close() {
      for (const c of closers.reverse()) await c().catch((err) => console.error(`close: ${(err as Error).message}`));
      await rt.close();
      await db.drop();
      await fs.rm(dir, { recursive: true, force: true }).catch(() => {});
    },
  };
}

/** Poll until `fn` returns a truthy value; throws after timeoutMs. */
export async function waitFor<T>(fn: () => Promise<T | null | undefined | false>, timeoutMs = 30_000, what = 'condition', everyMs = 20): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------------------------------------
// stats and output

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  // nearest-rank
  const rank = Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length)));
  return s[rank - 1]!;
}

export function summary(values: number[]): { n: number; p50: number; p90: number; p99: number; max: number; mean: number } {
  return {
    n: values.length,
    p50: percentile(values, 50),
    p90: percentile(values, 90),
    p99: percentile(values, 99),
    max: values.length ? Math.max(...values) : NaN,
    mean: values.length ? values.reduce((a, b) => a + b, 0) / values.length : NaN,
  };
}

export const fmt = (v: number, digits = 1) => (Number.isFinite(v) ? v.toFixed(digits) : '–');

export interface Section {
  title: string;
  /** free text lines printed under the title */
  notes: string[];
  header: string[];
  rows: string[][];
}

export function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

export function renderSection(s: Section): string {
  return [`## ${s.title}`, '', table(s.header, s.rows), '', ...s.notes.map((n) => `- ${n}`), ''].join('\n');
}

/** A row of latency figures in ms: n, p50, p90, p99, max. */
export function latencyRow(label: string, values: number[], target = ''): string[] {
  const s = summary(values);
  return [label, String(s.n), fmt(s.p50), fmt(s.p90), fmt(s.p99), fmt(s.max), target];
}
export const LATENCY_HEADER = ['measure (ms)', 'n', 'p50', 'p90', 'p99', 'max', 'target'];
