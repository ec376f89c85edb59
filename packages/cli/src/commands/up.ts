/**
 * `orch up`: everything in one process — migrations, then the roles of ROLES (api, worker,
 * reaper) on one runtime. Without DATABASE_URL it starts an embedded Postgres in
 * $ORCH_HOME/pgdata; without projects it creates a demo project on a local bare repository.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { listProjects } from '@orch/shared/db/queries/projects';
import { git } from '@orch/shared/host/git';
import { addProject } from '@orch/shared/pipeline/projects';
import { openRuntime } from '@orch/shared/runtime/process-runtime';
import { config, logger, redactedUrl, untilSignal } from '../context.ts';
import { startEmbeddedPostgres } from '../embedded-postgres.ts';
import { PORT_OPTION, type CommandSpec } from '../registry.ts';
import { ROLES } from '../roles.ts';
import { migrate } from './migrate.ts';

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

export const upCommand: CommandSpec = {
  summary: 'everything in one process: migrations, api, worker and reaper',
  details:
    'Without DATABASE_URL it starts an embedded Postgres in $ORCH_HOME/pgdata; without projects it\n' +
    'creates a demo project on a local bare repository.',
  usage: ['up [--port N]'],
  options: { port: PORT_OPTION },
  run: async ({ values }) => {
    const signalled = untilSignal(); // first, so a signal during start-up is not lost
    const cfg = config();
    const log = logger(cfg, 'orch');
    const say = (s: string) => process.stderr.write(`orch up: ${s}\n`);
    let stopPg = async () => {};
    try {
      let url = cfg.databaseUrl;
      if (!url) {
        say(`starting embedded Postgres (data: ${path.join(cfg.home, 'pgdata')}, port ${cfg.embeddedPgPort}) ...`);
        const pgDb = await startEmbeddedPostgres(cfg.home, cfg.embeddedPgPort, say);
        url = pgDb.url;
        stopPg = pgDb.stop;
        say(pgDb.reused ? 'embedded Postgres already running; reusing it' : 'embedded Postgres ready');
        say(`database: ${url}   (psql on it: ./orch psql)`);
      } else {
        say(`database: ${redactedUrl(url)} (DATABASE_URL)`);
      }
      const applied = await migrate(url);
      say(applied.length ? `migrations applied: ${applied.join(', ')}` : 'schema is current');
      const rt = await openRuntime(cfg, url, log, { applicationName: 'orch-up', superviseBoss: true });
      // every role that started stops, in start order, before the runtime closes — also when a
      // later one cannot start (a port in use)
      const stops: Array<() => Promise<void>> = [];
      const stopAll = async () => {
        for (const stop of stops) await stop();
        await rt.close();
      };
      try {
        if ((await listProjects(rt.svc.db)).length === 0) {
          const repo = await ensureDemoRepo(cfg.home);
          await addProject(rt.svc.db, { slug: 'demo', repo, base: 'main' });
          say(`created project "demo" on local repo ${repo}`);
        }
        for (const role of Object.values(ROLES)) {
          stops.push(
            await role.start(rt, log, {
              port: values.port ? Number(values.port) : undefined,
              onListening: (base) => say(`api on ${base} (queue: ${base}/queue, tasks: ${base}/tasks)`),
              onIsolation: (summary, warning) => say(`agents: ${summary}${warning ? `\norch up: WARNING: ${warning}` : ''}`),
            }),
          );
        }
      } catch (err) {
        await stopAll();
        throw err;
      }
      say(`agent: ${cfg.agent.kind}; worktrees: ${cfg.worktreeRoot}`);
      say('add a task:  ./orch task add --project demo "Say hello"   ·   watch: ./orch status');
      const sig = await signalled;
      say(`${sig}: stopping (running jobs get ${cfg.workerShutdownS}s to finish)`);
      await stopAll();
      return 0;
    } finally {
      await stopPg(); // last: nothing of orch's uses the database any more
    }
  },
};
