/**
 * `orch up` on a fresh machine: no DATABASE_URL → embedded Postgres in ORCH_HOME, a demo
 * project on a local repo, api + worker + reaper; `orch task add` reaches done in under 30 s;
 * data survives a restart of `up`.
 */
import net from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, freePort, tempDir, waitFor } from './support/harness.ts';
import fs from 'node:fs/promises';

describe('orch up', () => {
  let home = '';
  afterAll(async () => {
    if (home) await fs.rm(path.dirname(home), { recursive: true, force: true });
  });

  it('runs a demo task to done on embedded Postgres, and keeps its data across a restart', async () => {
    const dir = await tempDir('orch-up-');
    await fs.chmod(dir, 0o755); // under root, Postgres runs as the postgres user and must reach its data dir
    home = path.join(dir, 'home');
    const apiPort = await freePort();
    const env: Record<string, string> = {
      ORCH_HOME: home,
      ORCH_API_PORT: String(apiPort),
      ORCH_EMBEDDED_PG_PORT: String(await freePort()),
      ORCH_LOG_LEVEL: 'warn',
      DATABASE_URL: '',
    };
    const base = `http://127.0.0.1:${apiPort}`;
    let log = '';
    const start = () => {
      const p = execa(process.execPath, [CLI, 'up'], { env, reject: false, stdin: 'ignore' });
      p.stderr?.on('data', (d: Buffer) => (log += d.toString()));
      return p;
    };
    const ready = (what: string) =>
      waitFor(async () => (await fetch(`${base}/readyz`).catch(() => null))?.ok, 60_000, what).catch((err: Error) => {
        throw new Error(`${err.message}\n--- orch up said:\n${log}`);
      });

    let up = start();
    await ready('orch up ready');
    const t0 = Date.now();
    const add = await execa(process.execPath, [CLI, 'task', 'add', '--project', 'demo', 'Say hello'], { env, reject: false });
    expect(add.stderr).toBe('');
    expect(add.exitCode).toBe(0);
    const id = Number(add.stdout.trim());
    expect(id).toBeGreaterThan(0);
    await waitFor(async () => {
      const r = (await (await fetch(`${base}/tasks/${id}`)).json()) as { task: { stage: string } };
      return r.task.stage === 'done';
    }, 30_000, 'demo task done');
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeLessThan(30_000);

    up.kill('SIGTERM');
    const first = await up;
    expect(first.exitCode, `signal ${first.signal}\n${log}`).toBe(0);
    expect(first.stderr).toContain('embedded Postgres');
    expect(first.stderr).toContain(base);

    up = start();
    await ready('orch up ready again');
    const again = (await (await fetch(`${base}/tasks/${id}`)).json()) as { task: { stage: string; title: string } };
    expect(again.task).toMatchObject({ stage: 'done', title: 'Say hello' });
    const status = await execa(process.execPath, [CLI, 'status', '--json'], { env, reject: false });
    expect(status.exitCode).toBe(0);
    expect(JSON.parse(status.stdout).jobs.counts.done).toBe(4);
    up.kill('SIGTERM');
    expect((await up).exitCode).toBe(0);
  }, 150_000);
});

/**
 * An operator at a terminal (#15): Ctrl-C stops `orch up` without an error line — the terminal
 * sends SIGINT to the whole foreground process group, which must not reach the embedded Postgres
 * (it would shut down under the worker still marking itself stopped); `orch up` says where its
 * database is and `orch psql` opens psql on it; a port in use is one line, exit 1, and leaves no
 * Postgres running.
 */
describe('orch up at a terminal', () => {
  let dir = '';
  let home = '';
  const env: Record<string, string> = {};
  afterAll(async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  const pgRunning = () => fs.access(path.join(home, 'pgdata', 'postmaster.pid')).then(() => true, () => false);
  /** Log lines (JSON on a pipe) at warn or above, and anything that looks like an error. */
  const trouble = (out: string) =>
    out.split('\n').filter((l) => (l.startsWith('{') ? Number(/"level":(\d+)/.exec(l)?.[1]) >= 40 : /error|failed|terminating|unhandled|^\s+at /i.test(l)));

  it('Ctrl-C (SIGINT to the process group) stops api, worker, reaper and then Postgres: exit 0, no error line', async () => {
    dir = await tempDir('orch-up-tty-');
    await fs.chmod(dir, 0o755); // under root, Postgres runs as the postgres user and must reach its data dir
    home = path.join(dir, 'home');
    Object.assign(env, {
      ORCH_HOME: home,
      ORCH_API_PORT: String(await freePort()),
      ORCH_EMBEDDED_PG_PORT: String(await freePort()),
      ORCH_LOG_LEVEL: 'info',
      DATABASE_URL: '',
    });
    const base = `http://127.0.0.1:${env.ORCH_API_PORT}`;
    // its own process group, as a shell runs a foreground job
    const up = execa(process.execPath, [CLI, 'up'], { env, reject: false, stdin: 'ignore', detached: true, all: true });
    await waitFor(async () => (await fetch(`${base}/readyz`).catch(() => null))?.ok, 90_000, 'orch up ready');
    // a task through the pipeline, so the worker has claimed and finished work before the stop
    const add = await execa(process.execPath, [CLI, 'task', 'add', '--project', 'demo', 'Before Ctrl-C'], { env, reject: false });
    const id = Number(add.stdout.trim());
    await waitFor(async () => ((await (await fetch(`${base}/tasks/${id}`)).json()) as { task: { stage: string } }).task.stage === 'done', 30_000, 'task done');

    process.kill(-up.pid!, 'SIGINT');
    const r = await up;
    expect(r.exitCode, r.all).toBe(0);
    expect(trouble(String(r.all)), String(r.all)).toEqual([]);
    expect(r.all).toContain('SIGINT: stopping');
    expect(r.all).toMatch(/"msg":"worker stopped"/);
    expect(await pgRunning(), 'Postgres stopped with orch up').toBe(false);
    const pgLog = await fs.readFile(path.join(home, 'postgres.log'), 'utf8');
    expect(pgLog).toMatch(/database system is shut down\s*$/);
    // Postgres shut down once orch had closed every connection: none was cut
    expect(pgLog, pgLog).not.toMatch(/terminating connection due to administrator command/);
  }, 180_000);

  it('prints its database URL; orch psql -c runs psql on the embedded database, orch db url prints it', async () => {
    const up = execa(process.execPath, [CLI, 'up'], { env, reject: false, stdin: 'ignore', detached: true, all: true });
    let out = '';
    up.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    const base = `http://127.0.0.1:${env.ORCH_API_PORT}`;
    try {
      await waitFor(async () => (await fetch(`${base}/readyz`).catch(() => null))?.ok, 90_000, 'orch up ready');
      const url = `postgres://orch:orch@127.0.0.1:${env.ORCH_EMBEDDED_PG_PORT}/orch`;
      const said = /^orch up: database: (\S+)/m.exec(out);
      // and what its agents run in: the sandbox where bubblewrap works here, else a warning
      await waitFor(async () => /^orch up: agents: sandbox /m.test(out), 10_000, 'isolation line');
      expect(out).toMatch(/^orch up: agents: sandbox (bwrap|none \(unsandboxed\)), network on, limits: /m);
      if (/agents: sandbox none/.test(out)) expect(out).toMatch(/^orch up: WARNING: agents run unsandboxed/m);
      const db = await execa(process.execPath, [CLI, 'db', 'url'], { env, reject: false });
      expect(db.stdout).toBe(url);

      const one = await execa(process.execPath, [CLI, 'psql', '-At', '-c', 'select 1'], { env, reject: false });
      expect(one.stderr).toBe('');
      expect(one.exitCode).toBe(0);
      expect(one.stdout).toBe('1');
      const done = await execa(process.execPath, [CLI, 'psql', '-At', '-c', "select count(*) from tasks where stage = 'done'"], { env, reject: false });
      expect(done.stdout).toBe('1'); // the task of the first start: the database orch uses
      const bad = await execa(process.execPath, [CLI, 'psql', '-c', 'select nope'], { env, reject: false });
      expect(bad.exitCode).toBe(1); // psql's own exit code
      expect(bad.stderr).toContain('column "nope" does not exist');
      // no psql on PATH: one clear line, exit 127
      const missing = await execa(process.execPath, [CLI, 'psql', '-c', 'select 1'], { env: { ...env, PATH: dir }, extendEnv: true, reject: false });
      expect(missing.exitCode).toBe(127);
      expect(missing.stderr).toMatch(/^orch: psql is not installed .*postgresql-client.*\n?$/);
      expect(said?.[1], out).toBe(url);
    } finally {
      process.kill(-up.pid!, 'SIGINT');
      expect((await up).exitCode).toBe(0);
    }
  }, 180_000);

  it('a port in use: exit 1 with one line naming the port and ORCH_API_PORT; Postgres is not left running', async () => {
    const blocker = net.createServer();
    const taken = await freePort();
    await new Promise<void>((r) => blocker.listen(taken, '127.0.0.1', r));
    try {
      const r = await execa(process.execPath, [CLI, 'up'], { env: { ...env, ORCH_API_PORT: String(taken) }, reject: false, stdin: 'ignore', timeout: 120_000 });
      expect(r.exitCode, r.stderr).toBe(1);
      const last = r.stderr.trim().split('\n').at(-1)!;
      expect(last).toMatch(new RegExp(`^orch: port ${taken} .*in use.*ORCH_API_PORT`));
      expect(trouble(r.stderr.replace(last, ''))).toEqual([]);
      expect(await pgRunning()).toBe(false);
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  }, 180_000);
});
