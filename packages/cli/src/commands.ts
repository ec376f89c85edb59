import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { createApp } from '@orch/api/app';
import { serveApp } from '@orch/api/serve';
import { createAgent } from '@orch/shared/agents/index';
import { requestCancel } from '@orch/shared/cancel';
import { createDb } from '@orch/shared/db/client';
import { migrateToLatest } from '@orch/shared/db/migrate';
import { listTaskRuns } from '@orch/shared/db/queries/agent-runs';
import { listEvents } from '@orch/shared/db/queries/events';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getProjectBySlug, listProjects } from '@orch/shared/db/queries/projects';
import { queueSnapshot } from '@orch/shared/db/queries/queue';
import { getTask, listTasks } from '@orch/shared/db/queries/tasks';
import { OrchError } from '@orch/shared/errors';
import { git } from '@orch/shared/git';
import { addProject } from '@orch/shared/pipeline/projects';
import { createTask, retryTask } from '@orch/shared/pipeline/tasks';
import { createBoss, startBoss } from '@orch/shared/queue';
import { createReaper } from '@orch/reaper/reaper';
import { createWorker } from '@orch/worker/worker';
import { checkDatabase, CliError, config, databaseUrl, logger, runtime, serveUntilSignal, untilSignal } from './context.ts';
import { startEmbeddedPostgres } from './embedded-postgres.ts';
import { startTrackerLoops } from './tracker-loops.ts';
import { createTracker } from '@orch/shared/tracker/index';
import { formatStatus, formatTask, formatTasks } from './format.ts';
import { findTask, streamLogs } from './logs.ts';

type Command = (argv: string[]) => Promise<number>;

interface Spec {
  summary: string;
  usage: string;
  options?: ParseArgsConfig['options'];
  run: (args: { values: Record<string, unknown>; positionals: string[] }) => Promise<number>;
}

function command(spec: Spec): Command {
  return async (argv) => {
    let parsed;
    try {
      parsed = parseArgs({ args: argv, options: { help: { type: 'boolean', short: 'h' }, ...spec.options }, allowPositionals: true, strict: true });
    } catch (err) {
      process.stderr.write(`orch: ${(err as Error).message}\n\nusage: ${spec.usage}\n`);
      return 2;
    }
    if (parsed.values.help) {
      process.stdout.write(`${spec.summary}\n\nusage: ${spec.usage}\n${optionHelp(spec)}`);
      return 0;
    }
    try {
      return await spec.run(parsed as { values: Record<string, unknown>; positionals: string[] });
    } catch (err) {
      if (err instanceof CliError) {
        process.stderr.write(`orch: ${err.message}\n`);
        return err.exitCode;
      }
      if (err instanceof OrchError) {
        process.stderr.write(`orch: ${err.message}\n`);
        return err.code === 'not_found' ? 3 : 1;
      }
      throw err;
    }
  };
}

/** What each option means, shown by `--help` (one vocabulary across commands). */
const OPTION_HELP: Record<string, string> = {
  json: 'print the data as JSON instead of text',
  port: 'listen on this port (default: ORCH_API_PORT)',
  follow: 'keep printing new lines every second until the task is done/cancelled (Ctrl-C to quit)',
  project: 'project slug',
  stage: 'only tasks in this stage (analysis … done, cancelled)',
  body: 'task description given to the agent',
  'depends-on': 'comma-separated task ids this task waits for',
  slug: 'project slug: lowercase letters, digits, - and _',
  repo: 'git URL or path the workers can fetch and push',
  base: 'base branch (default: main)',
  gitea: 'owner/repo on Gitea (without it the forge is local)',
  'plane-project': "Plane project UUID whose issues feed this project",
  'test-cmd': 'command run (sh -c) in the worktree by the implementation gate',
  'deploy-cmd': 'command run (sh -c) by the deploy stage; without it deploy is skipped',
  serial: 'one task past analysis at a time, in creation order',
  'max-concurrency': "cap on the project's running jobs (default 2)",
};

function optionHelp(spec: Spec): string {
  const opts = Object.entries(spec.options ?? {}).map(([k, o]) => [`--${k}${o.type === 'string' ? ' <value>' : ''}`, OPTION_HELP[k] ?? ''] as const);
  opts.push(['--help', 'show this help']);
  const w = Math.max(...opts.map(([f]) => f.length));
  return `\noptions:\n${opts.map(([f, h]) => `  ${f.padEnd(w)}  ${h}`.trimEnd()).join('\n')}\n`;
}

function print(json: boolean, data: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : text());
}

async function withDb<T>(fn: (db: ReturnType<typeof createDb>['db']) => Promise<T>): Promise<T> {
  const cfg = config();
  const url = await databaseUrl(cfg);
  await checkDatabase(url);
  const h = createDb(url, { max: 2, applicationName: 'orch-cli' });
  try {
    return await fn(h.db);
  } finally {
    await h.close();
  }
}

async function withRuntime<T>(fn: (rt: Awaited<ReturnType<typeof runtime>>) => Promise<T>): Promise<T> {
  const cfg = config();
  const rt = await runtime(cfg, logger(cfg, 'orch-cli'), 'orch-cli');
  try {
    return await fn(rt);
  } finally {
    await rt.close();
  }
}

async function migrate(url: string): Promise<string[]> {
  await checkDatabase(url, { requireMigrated: false });
  const h = createDb(url, { max: 2, applicationName: 'orch-migrate' });
  try {
    const r = await migrateToLatest(h.db);
    if (r.error) throw new CliError(`migration failed: ${r.error}`);
    const boss = createBoss(url, { supervise: false });
    await startBoss(boss); // installs or migrates pg-boss's own schema
    await boss.stop({ graceful: false, timeout: 1000 });
    return r.applied;
  } finally {
    await h.close();
  }
}

// ---------------------------------------------------------------------------------------------

const migrateCmd = command({
  summary: 'Apply pending database migrations (orch schema and pg-boss). Idempotent.',
  usage: 'orch migrate',
  run: async () => {
    const cfg = config();
    const applied = await migrate(await databaseUrl(cfg));
    process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'schema is current\n');
    return 0;
  },
});

async function serveApi(rt: Awaited<ReturnType<typeof runtime>>, port: number, host: string) {
  const app = createApp({ db: rt.svc.db, boss: rt.svc.boss, config: rt.svc.config, log: rt.svc.log, tracker: createTracker(rt.svc.config) });
  return serveApp(app, port, host);
}

const apiCmd = command({
  summary:
    'Run the HTTP API: Plane webhook, REST, dashboard (/), Prometheus metrics (/metrics), API reference (/docs).\n' +
    'Intake only: it never runs agents.',
  usage: 'orch api [--port N]',
  options: { port: { type: 'string' } },
  run: ({ values }) =>
    serveUntilSignal('orch-api', {}, async (rt, log) => {
      const { api } = rt.svc.config;
      const server = await serveApi(rt, values.port ? Number(values.port) : api.port, api.host);
      log.info({ port: server.port, host: api.host }, 'api listening');
      return () => server.close();
    }),
});

const workerCmd = command({
  summary: 'Run a worker: claims jobs and runs agents in git worktrees. Run as many as you like.',
  usage: 'orch worker',
  run: () =>
    serveUntilSignal('orch-worker', {}, async (rt, log) => {
      const worker = createWorker({ svc: rt.svc, agent: await createAgent(rt.svc.config), connectionString: rt.connectionString, log });
      await worker.start();
      return () => worker.stop();
    }),
});

const reaperCmd = command({
  summary: 'Run the reaper (liveness daemon). Run several for HA: one leader acts per tick.',
  usage: 'orch reaper',
  run: () =>
    serveUntilSignal('orch-reaper', { superviseBoss: true }, async (rt, log) => {
      const reaper = createReaper({ svc: rt.svc, connectionString: rt.connectionString, log });
      reaper.start();
      const trackerLoops = startTrackerLoops(rt, log);
      return async () => {
        await trackerLoops.stop();
        await reaper.stop();
      };
    }),
});

/** A local bare repository with one commit on main: the forge of the demo project. */
async function ensureDemoRepo(home: string): Promise<string> {
  const bare = path.join(home, 'repos', 'demo.git');
  const exists = await fs.access(path.join(bare, 'HEAD')).then(() => true, () => false);
  if (exists) return bare;
  await fs.mkdir(path.dirname(bare), { recursive: true });
  await git(['init', '--bare', '--quiet', '--initial-branch=main', bare]);
  const seed = await fs.mkdtemp(path.join(path.dirname(bare), 'seed-'));
  try {
    await git(['init', '--quiet', '--initial-branch=main', seed]);
    await fs.writeFile(path.join(seed, 'README.md'), '# demo\n\nA repository for orch\'s demo agent.\n');
    await git(['add', 'README.md'], { cwd: seed });
    await git(['commit', '--quiet', '-m', 'initial commit'], { cwd: seed });
    await git(['push', '--quiet', bare, 'main'], { cwd: seed });
  } finally {
    await fs.rm(seed, { recursive: true, force: true });
  }
  return bare;
}

const upCmd = command({
  summary:
    'Run everything in one process: migrations, api, worker and reaper. Without DATABASE_URL it starts an\n' +
    'embedded Postgres in $ORCH_HOME/pgdata; without projects it creates a demo project on a local repo.',
  usage: 'orch up [--port N]',
  options: { port: { type: 'string' } },
  run: async ({ values }) => {
    const signalled = untilSignal(); // first, so a signal during start-up is not lost
    const cfg = config();
    const log = logger(cfg, 'orch');
    const say = (s: string) => process.stderr.write(`orch up: ${s}\n`);
    let stopPg = async () => {};
    let url = cfg.databaseUrl;
    if (!url) {
      say(`starting embedded Postgres (data: ${path.join(cfg.home, 'pgdata')}, port ${cfg.embeddedPgPort}) ...`);
      const pgDb = await startEmbeddedPostgres(cfg.home, cfg.embeddedPgPort, say);
      url = pgDb.url;
      stopPg = pgDb.stop;
      say(pgDb.reused ? 'embedded Postgres already running; reusing it' : 'embedded Postgres ready');
    }
    const applied = await migrate(url);
    say(applied.length ? `migrations applied: ${applied.join(', ')}` : 'schema is current');
    const rt = await (async () => {
      const { openRuntime } = await import('@orch/shared/runtime');
      return openRuntime(cfg, url!, log, { applicationName: 'orch-up', superviseBoss: true });
    })();
    if ((await listProjects(rt.svc.db)).length === 0) {
      const repo = await ensureDemoRepo(cfg.home);
      await addProject(rt.svc.db, { slug: 'demo', repo, base: 'main' });
      say(`created project "demo" on local repo ${repo}`);
    }
    const server = await serveApi(rt, values.port ? Number(values.port) : cfg.api.port, cfg.api.host);
    const worker = createWorker({ svc: rt.svc, agent: await createAgent(cfg), connectionString: url, log });
    await worker.start();
    const reaper = createReaper({ svc: rt.svc, connectionString: url, log });
    reaper.start();
    const trackerLoops = startTrackerLoops(rt, log);
    const base = `http://${cfg.api.host}:${server.port}`;
    say(`api on ${base} (queue: ${base}/queue, tasks: ${base}/tasks)`);
    say(`agent: ${cfg.agent.kind}; worktrees: ${cfg.worktreeRoot}`);
    say('add a task:  ./orch task add --project demo "Say hello"   ·   watch: ./orch status');
    const sig = await signalled;
    say(`${sig}: stopping (running jobs get ${cfg.workerShutdownS}s to finish)`);
    await worker.stop();
    await trackerLoops.stop();
    await reaper.stop();
    await server.close();
    await rt.close();
    await stopPg();
    return 0;
  },
});

const projectCmd = command({
  summary: 'Manage projects.\n  orch project add --slug S --repo <git url or path> [--base main] [--gitea owner/repo] [--plane-project ID]\n                   [--test-cmd CMD] [--deploy-cmd CMD] [--serial] [--max-concurrency N]\n  orch project list [--json]',
  usage: 'orch project add|list [options]',
  options: {
    slug: { type: 'string' },
    repo: { type: 'string' },
    base: { type: 'string' },
    gitea: { type: 'string' },
    'plane-project': { type: 'string' },
    'test-cmd': { type: 'string' },
    'deploy-cmd': { type: 'string' },
    serial: { type: 'boolean' },
    'max-concurrency': { type: 'string' },
    json: { type: 'boolean' },
  },
  run: async ({ values: v, positionals }) => {
    const sub = positionals[0];
    if (sub === 'list')
      return withDb(async (db) => {
        const projects = await listProjects(db);
        print(Boolean(v.json), { projects }, () =>
          projects.map((p) => `${p.slug}\t${p.repo_url}\tbase=${p.base_branch}${p.serial ? '\tserial' : ''}\tmax=${p.max_concurrency}\n`).join('') || 'no projects\n',
        );
        return 0;
      });
    if (sub !== 'add') throw new CliError('usage: orch project add|list (see --help)', 2);
    if (!v.slug || !v.repo) throw new CliError('project add needs --slug and --repo', 2);
    const maxConc = v['max-concurrency'] !== undefined ? Number(v['max-concurrency']) : undefined;
    if (maxConc !== undefined && !Number.isInteger(maxConc)) throw new CliError('--max-concurrency must be an integer', 2);
    return withDb(async (db) => {
      const p = await addProject(db, {
        slug: String(v.slug),
        repo: String(v.repo),
        base: v.base ? String(v.base) : undefined,
        gitea: v.gitea ? String(v.gitea) : undefined,
        plane_project: v['plane-project'] ? String(v['plane-project']) : undefined,
        test_cmd: v['test-cmd'] ? String(v['test-cmd']) : undefined,
        deploy_cmd: v['deploy-cmd'] ? String(v['deploy-cmd']) : undefined,
        serial: Boolean(v.serial),
        max_concurrency: maxConc,
      });
      print(Boolean(v.json), { project: p }, () => `project ${p.slug} added (id ${p.id})\n`);
      return 0;
    });
  },
});

const taskCmd = command({
  summary:
    'Manage tasks.\n  orch task add --project <slug> "<title>" [--body TEXT] [--depends-on ID,ID] [--json]\n  orch task show <id> [--json]\n  orch task retry <id>',
  usage: 'orch task add|show|retry ...',
  options: { project: { type: 'string' }, body: { type: 'string' }, 'depends-on': { type: 'string' }, json: { type: 'boolean' } },
  run: async ({ values: v, positionals }) => {
    const [sub, arg] = positionals;
    if (sub === 'add') {
      if (!arg) throw new CliError('task add needs a title: orch task add --project <slug> "<title>"', 2);
      const deps = v['depends-on'] ? String(v['depends-on']).split(',').map((s) => Number(s.trim())) : [];
      if (deps.some((d) => !Number.isInteger(d) || d <= 0)) throw new CliError('--depends-on takes task ids: 12,13', 2);
      return withRuntime(async (rt) => {
        let project = v.project ? String(v.project) : undefined;
        if (!project) {
          const all = await listProjects(rt.svc.db);
          if (all.length !== 1) throw new CliError('--project is required (there is not exactly one project)', 2);
          project = all[0]!.slug;
        }
        const task = await createTask(rt.svc, { project, title: arg, body: v.body ? String(v.body) : '', dependsOn: deps }, 'cli');
        print(Boolean(v.json), { task }, () => `${task.id}\n`);
        return 0;
      });
    }
    if (sub === 'show') {
      if (!arg || !/^\d+$/.test(arg)) throw new CliError('usage: orch task show <id>', 2);
      return withDb(async (db) => {
        const task = await getTask(db, Number(arg));
        if (!task) throw new OrchError('not_found', `unknown task: ${arg}`);
        const [jobs, runs, events] = await Promise.all([listTaskJobs(db, task.id), listTaskRuns(db, task.id), listEvents(db, task.id)]);
        print(Boolean(v.json), { task, jobs, runs, events }, () => formatTask(task, jobs, runs, events));
        return 0;
      });
    }
    if (sub === 'retry') {
      if (!arg || !/^\d+$/.test(arg)) throw new CliError('usage: orch task retry <id>', 2);
      return withRuntime(async (rt) => {
        const task = await retryTask(rt.svc, Number(arg), 'cli');
        process.stdout.write(`task ${task.id} requeued in ${task.stage}\n`);
        return 0;
      });
    }
    throw new CliError('usage: orch task add|show|retry (see --help)', 2);
  },
});

const tasksCmd = command({
  summary: 'List tasks (newest first).',
  usage: 'orch tasks [--project slug] [--stage stage] [--json]',
  options: { project: { type: 'string' }, stage: { type: 'string' }, json: { type: 'boolean' } },
  run: async ({ values: v }) =>
    withDb(async (db) => {
      const project = v.project ? await getProjectBySlug(db, String(v.project)) : undefined;
      if (v.project && !project) throw new OrchError('not_found', `unknown project: ${v.project}`);
      const tasks = await listTasks(db, { projectId: project?.id, stage: v.stage as never });
      print(Boolean(v.json), { tasks }, () => formatTasks(tasks));
      return 0;
    }),
});

const stopCmd = command({
  summary: 'STOP a task: cancel everything about it (agent, jobs, worktree, branch). Same as Plane\'s STOP status.',
  usage: 'orch stop <task-id|plane-issue-id> [--json]',
  options: { json: { type: 'boolean' } },
  run: async ({ values: v, positionals }) => {
    const ref = positionals[0];
    if (!ref) throw new CliError('usage: orch stop <task-id|plane-issue-id>', 2);
    return withDb(async (db) => {
      const cfg = config();
      try {
        const r = await requestCancel({ db, config: cfg }, ref, 'cli', 'stop');
        const msg: Record<typeof r.status, string> = {
          requested: `task ${r.task.id}: stop requested; the cancel completes within seconds`,
          already_requested: `task ${r.task.id}: stop already requested`,
          already_cancelled: `task ${r.task.id} is already cancelled`,
          already_done: `task ${r.task.id} is already done; nothing to stop`,
        };
        print(Boolean(v.json), { status: r.status, task: r.task }, () => `${msg[r.status]}\n`);
        return 0;
      } catch (err) {
        if (err instanceof OrchError && err.code === 'stop_disabled') throw new CliError(err.message, 4);
        throw err;
      }
    });
  },
});

const logsCmd = command({
  summary:
    "A task's log: its events and agent runs (with each run's log tail) in time order.\n" +
    'A run\'s log tail is recorded when its agent exits; --follow prints new lines as they appear.',
  usage: 'orch logs <task-id|plane-issue-id> [--follow]',
  options: { follow: { type: 'boolean', short: 'f' } },
  run: async ({ values: v, positionals }) => {
    const ref = positionals[0];
    if (!ref) throw new CliError('usage: orch logs <task-id|plane-issue-id> [--follow]', 2);
    return withDb(async (db) => {
      const task = await findTask(db, ref);
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        await streamLogs(db, task.id, { follow: Boolean(v.follow), signal: stop.signal, write: (s) => process.stdout.write(s) });
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      return 0;
    });
  },
});

const statusCmd = command({
  summary: 'The queue at a glance: job counts, running jobs, workers, reaper, cancels, merge leases.',
  usage: 'orch status [--json]',
  options: { json: { type: 'boolean' } },
  run: async ({ values: v }) =>
    withDb(async (db) => {
      const cfg = config();
      const snap = await queueSnapshot(db, { reaperEnabled: cfg.reaper.enabled, reaperIntervalS: cfg.reaper.intervalS, stopEnabled: cfg.stop.enabled });
      print(Boolean(v.json), snap, () => formatStatus(snap));
      return 0;
    }),
});

export const commands: Record<string, Command> = {
  migrate: migrateCmd,
  api: apiCmd,
  worker: workerCmd,
  reaper: reaperCmd,
  up: upCmd,
  project: projectCmd,
  task: taskCmd,
  tasks: tasksCmd,
  stop: stopCmd,
  status: statusCmd,
  logs: logsCmd,
};

export function usage(): string {
  return `orch — an orchestrator for AI coding agents, coordinated through Postgres

usage: orch <command> [options]   (orch <command> --help for details)

processes:
  up          everything in one process (embedded Postgres when DATABASE_URL is unset)
  api         HTTP API (webhooks, REST, dashboard at /, /metrics, /docs)
  worker      claims jobs and runs agents
  reaper      liveness daemon (zombies, stale merge leases, janitor)
  migrate     apply database migrations

operations:
  project     add | list
  task        add | show | retry
  tasks       list tasks
  stop        cancel a task (STOP)
  status      queue, workers, reaper, cancels, merge leases
  logs        a task's events and agent log tails (--follow)
`;
}
