/** Shared by the commands: config, database URL resolution, friendly errors. */
import pg from 'pg';
import { ConfigError, loadConfig, type Config } from '@orch/shared/runtime/config';
import { createDb, type Db } from '@orch/shared/db/client';
import { pendingMigrations } from '@orch/shared/db/migrate';
import { createLogger, type Logger } from '@orch/shared/runtime/logger';
import { openRuntime, type Runtime } from '@orch/shared/runtime/process-runtime';
import { embeddedUrl } from './embedded-postgres.ts';

export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

export function config(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.message, 2);
    throw err;
  }
}

export function logger(cfg: Config, name: string): Logger {
  return createLogger({ level: cfg.logLevel, name });
}

/** DATABASE_URL, else the embedded Postgres `orch up` started for this ORCH_HOME. */
export async function databaseUrl(cfg: Config): Promise<string> {
  if (cfg.databaseUrl) return cfg.databaseUrl;
  const url = await embeddedUrl(cfg.home);
  if (url) return url;
  throw new CliError('DATABASE_URL is not set and no `orch up` has run in ORCH_HOME (' + cfg.home + ').\nhint: set DATABASE_URL, or start everything with `./orch up`.');
}

/** The URL without its password, and the password (decoded), for PGPASSWORD. */
export function splitPassword(url: string): { dsn: string; password: string | null } {
  const u = new URL(url);
  if (!u.password) return { dsn: url, password: null };
  const password = decodeURIComponent(u.password);
  u.password = '';
  return { dsn: u.toString(), password };
}

/** The URL as `orch up` prints it: the password masked. */
export function redactedUrl(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.toString();
}

/** Fail early with a hint when the database is unreachable or its schema is behind. */
export async function checkDatabase(url: string, opts: { requireMigrated?: boolean; hint?: string } = {}): Promise<void> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  try {
    await c.connect();
  } catch (err) {
    // pg's end() never settles on a client that failed to connect: do not await it
    void c.end().catch(() => {});
    throw new CliError(`cannot reach the database: ${(err as Error).message}\nhint: ${opts.hint ?? 'is Postgres running? check DATABASE_URL'}`);
  }
  await c.end().catch(() => {});
  if (opts.requireMigrated === false) return;
  const h = createDb(url, { max: 1 });
  try {
    const pending = await pendingMigrations(h.db);
    if (pending.length) throw new CliError(`database schema is not current (${pending.length} migration(s) pending).\nhint: run \`orch migrate\``);
  } finally {
    await h.close();
  }
}

async function runtime(cfg: Config, log: Logger, applicationName: string, opts: { superviseBoss?: boolean } = {}): Promise<Runtime> {
  const url = await databaseUrl(cfg);
  await checkDatabase(url);
  return openRuntime(cfg, url, log, { applicationName, superviseBoss: opts.superviseBoss });
}

/**
 * Resolve on the first SIGTERM/SIGINT. The handlers stay installed for the whole shutdown: a
 * repeated SIGTERM must not kill a process that is still releasing its jobs. A second SIGINT
 * (Ctrl-C twice) is the operator's way to force an immediate exit.
 */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let first: NodeJS.Signals | null = null;
    const on = (s: NodeJS.Signals) => {
      if (first === null) {
        first = s;
        resolve(s);
      } else if (s === 'SIGINT') {
        process.stderr.write('orch: second interrupt, exiting now\n');
        process.exit(130);
      }
    };
    process.on('SIGTERM', on);
    process.on('SIGINT', on);
  });
}

/**
 * A long-running role (api, worker, reaper): the signal handlers first, so a signal during
 * start-up is not lost; then the runtime, the role's start, the wait for SIGTERM/SIGINT, and the
 * role's own stop before the runtime closes.
 */
export async function serveUntilSignal(
  role: string,
  opts: { superviseBoss?: boolean },
  start: (rt: Runtime, log: Logger) => Promise<() => Promise<void>>,
): Promise<number> {
  const signalled = untilSignal();
  const cfg = config();
  const log = logger(cfg, role);
  const rt = await runtime(cfg, log, role, opts);
  let stop: () => Promise<void>;
  try {
    stop = await start(rt, log);
  } catch (err) {
    await rt.close(); // a role that cannot start (a port in use) exits, rather than hang on its pool
    throw err;
  }
  await signalled;
  await stop();
  await rt.close();
  return 0;
}

/** A short-lived database handle for a command that only reads or writes rows. */
export async function withDb<T>(fn: (db: Db) => Promise<T>): Promise<T> {
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

/** A full runtime (pg-boss too) for a command that enqueues. */
export async function withRuntime<T>(fn: (rt: Runtime) => Promise<T>): Promise<T> {
  const cfg = config();
  const rt = await runtime(cfg, logger(cfg, 'orch-cli'), 'orch-cli');
  try {
    return await fn(rt);
  } finally {
    await rt.close();
  }
}
