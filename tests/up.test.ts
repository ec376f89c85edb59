/**
 * `orch up` on a fresh machine: no DATABASE_URL → embedded Postgres in ORCH_HOME, a demo
 * project on a local repo, api + worker + reaper; `orch task add` reaches done in under 30 s;
 * data survives a restart of `up`.
 */
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
