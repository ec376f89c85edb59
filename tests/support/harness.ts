/**
 * Test harness: a fresh database per call (a clone of the migrated template), real git
 * repositories in a temp dir, real Services, and helpers to run workers/reapers in-process or
 * as separate `orch` processes.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { execa, type ResultPromise } from 'execa';
import { inject } from 'vitest';
import { loadConfig, type Config } from '@orch/shared/runtime/config';
import { silentLogger, createLogger, type Logger } from '@orch/shared/runtime/logger';
import { openRuntime, type Runtime } from '@orch/shared/runtime/process-runtime';
import { addProject, type ProjectInput } from '@orch/shared/pipeline/projects';
import type { Project } from '@orch/shared/db/types';
import { createWorker, type OrchWorker } from '@orch/worker/worker';
import { createReaper, type Reaper } from '@orch/reaper/reaper';
import { createDemoAdapter, createCommandAdapter } from '@orch/shared/agents/index';
import type { AgentAdapter } from '@orch/shared/agents/types';
import { git } from '@orch/shared/host/git';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = path.join(ROOT, 'packages', 'cli', 'src', 'main.ts');

export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

/** CREATE DATABASE … TEMPLATE the migrated template: a fresh, migrated database. */
export async function freshDatabase(): Promise<string> {
  const admin = inject('pgAdminUrl');
  const template = inject('templateDb');
  const name = `${template}_${randomBytes(5).toString('hex')}`;
  const c = new pg.Client({ connectionString: admin });
  await c.connect();
  try {
    for (let i = 0; ; i++) {
      try {
        await c.query(`CREATE DATABASE ${name} TEMPLATE ${template}`);
        break;
      } catch (err) {
        // "source database is being accessed by other users": two files cloning at once
        if (i > 50 || !/being accessed/.test((err as Error).message)) throw err;
        await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
      }
    }
  } finally {
    await c.end();
  }
  return withDatabase(admin, name);
}

export async function tempDir(prefix = 'orch-test-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** A bare repository with one commit on `main` (and a clone helper for assertions). */
export async function bareRepo(dir: string, name = 'repo'): Promise<string> {
  const bare = path.join(dir, `${name}.git`);
  await git(['init', '--bare', '--quiet', '--initial-branch=main', bare]);
  const seed = path.join(dir, `${name}-seed`);
  await git(['init', '--quiet', '--initial-branch=main', seed]);
  await fs.writeFile(path.join(seed, 'README.md'), '# test repo\n');
  await git(['add', '.'], { cwd: seed });
  await git(['commit', '--quiet', '-m', 'initial'], { cwd: seed });
  await git(['push', '--quiet', bare, 'main'], { cwd: seed });
  await fs.rm(seed, { recursive: true, force: true });
  return bare;
}

export async function branchesOf(bare: string): Promise<string[]> {
  const r = await git(['for-each-ref', '--format=%(refname:short)', 'refs/heads'], { cwd: bare });
  return r.stdout ? r.stdout.split('\n').sort() : [];
}

export async function filesOnBranch(bare: string, branch: string): Promise<string[]> {
  const r = await git(['ls-tree', '-r', '--name-only', branch], { cwd: bare });
  return r.stdout ? r.stdout.split('\n').sort() : [];
}

export interface Orch {
  url: string;
  dir: string;
  repo: string;
  config: Config;
  env: Record<string, string>;
  rt: Runtime;
  project: Project;
  log: Logger;
  worker(opts?: { agent?: AgentAdapter; env?: Record<string, string>; id?: string }): Promise<OrchWorker>;
  reaper(env?: Record<string, string>): Promise<Reaper>;
  addProject(input: Partial<ProjectInput> & { slug: string }): Promise<Project>;
  /** spawn `orch <args>` as a separate process with this harness's environment */
  spawn(args: string[], env?: Record<string, string>): ResultPromise;
  close(): Promise<void>;
}

const FAST_ENV: Record<string, string> = {
  ORCH_AGENT: 'demo',
  // the suite runs unsandboxed unless ORCH_TEST_SANDBOX says otherwise; the sandbox's own tests
  // (and the STOP, chaos and reaper suites' sandboxed runs) set ORCH_AGENT_SANDBOX=bwrap themselves
  ORCH_AGENT_SANDBOX: process.env.ORCH_TEST_SANDBOX ?? 'none',
  ORCH_DEMO_DELAY_MS: '20',
  ORCH_HEARTBEAT_INTERVAL_S: '0.2',
  ORCH_HEARTBEAT_TIMEOUT_S: '2',
  ORCH_CANCEL_POLL_S: '0.2',
  ORCH_DISPATCH_POLL_S: '0.5',
  ORCH_REAPER_INTERVAL_S: '0.3',
  ORCH_RETRY_BACKOFF_BASE_S: '0',
  ORCH_STOP_GRACE_S: '1',
  ORCH_WORKER_SHUTDOWN_S: '2',
  ORCH_LOG_LEVEL: process.env.ORCH_TEST_LOG ? 'debug' : 'silent',
};

export async function startOrch(opts: { env?: Record<string, string>; project?: Partial<ProjectInput> } = {}): Promise<Orch> {
  const url = await freshDatabase();
  const dir = await tempDir();
  const repo = await bareRepo(dir);
  const env: Record<string, string> = {
    ...FAST_ENV,
    ORCH_HOME: path.join(dir, 'home'),
    ORCH_WORKTREE_ROOT: path.join(dir, 'worktrees'),
    ORCH_HOST_ID: 'test-host',
    ...opts.env,
    DATABASE_URL: url,
  };
  const config = loadConfig(env);
  const log = process.env.ORCH_TEST_LOG ? createLogger({ level: 'debug', pretty: false }) : silentLogger;
  const rt = await openRuntime(config, url, log, { applicationName: 'orch-test', poolMax: 20 });
  const project = await addProject(rt.svc.db, { slug: 'p', repo, base: 'main', ...opts.project });
  const closers: Array<() => Promise<void>> = [];
  const children: ResultPromise[] = [];

  return {
    url,
    dir,
    repo,
    config,
    env,
    rt,
    project,
    log,
    async worker(o = {}) {
      const wenv = { ...env, ...o.env };
      const wcfg = loadConfig(wenv);
      const wrt = await openRuntime(wcfg, url, log, { applicationName: 'orch-test-worker', poolMax: 10 });
      const agent = o.agent ?? (wcfg.agent.kind === 'command' ? createCommandAdapter(wcfg.agent.command!) : createDemoAdapter(wcfg.agent.demoDelayMs));
      const w = createWorker({ svc: wrt.svc, agent, connectionString: url, log, id: o.id });
      await w.start();
      closers.push(async () => {
        await w.stop();
        await wrt.close();
      });
      return w;
    },
    async reaper(renv = {}) {
      const rcfg = loadConfig({ ...env, ...renv });
      const rrt = await openRuntime(rcfg, url, log, { applicationName: 'orch-test-reaper', poolMax: 5 });
      const r = createReaper({ svc: rrt.svc, connectionString: url, log });
      closers.push(async () => {
        await r.stop();
        await rrt.close();
      });
      return r;
    },
    addProject: async (input) => addProject(rt.svc.db, { repo, base: 'main', ...input }),
    spawn(args, extra = {}) {
      const child = execa(process.execPath, [CLI, ...args], {
        // not inside a git repository, as on an operator's machine: git calls must not rely on cwd
        cwd: dir,
        env: { ...env, ...extra },
        extendEnv: true,
        reject: false,
        stdin: 'ignore',
      });
      children.push(child);
      return child;
    },
    async close() {
      for (const c of children) c.kill('SIGKILL'); // no-op for those that exited
      for (const c of closers.reverse()) await c().catch(() => {});
      await rt.close();
      await fs.rm(dir, { recursive: true, force: true }).catch(() => {});
    },
  };
}

/** Poll `fn` until it returns a truthy value (or throw after `timeoutMs`). */
export async function waitFor<T>(fn: () => Promise<T | null | undefined | false>, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const start = Date.now();
  let last: unknown;
  while (Date.now() - start < timeoutMs) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
}

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}
