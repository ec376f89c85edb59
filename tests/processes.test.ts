/**
 * The happy path across separate processes (api, worker, reaper), the way an operator runs
 * orch; and `orch migrate` idempotent; /readyz failing while migrations are pending.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '@orch/api/app';
import { createDb } from '@orch/shared/db/client';
import { branchesOf, filesOnBranch, freePort, startOrch, waitFor, withDatabase, type Orch } from './support/harness.ts';
import { inject } from 'vitest';

describe('separate processes', () => {
  let orch: Orch;
  beforeAll(async () => {
    orch = await startOrch();
  });
  afterAll(async () => orch?.close());

  it('api + worker + reaper processes take a task from POST /tasks to done, and stop cleanly on SIGTERM', async () => {
    const port = await freePort();
    const api = orch.spawn(['api', '--port', String(port)]);
    const worker = orch.spawn(['worker'], { ORCH_HOST_ID: 'host-a' });
    const reaper = orch.spawn(['reaper'], { ORCH_HOST_ID: 'host-b' });
    const base = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${base}/readyz`).catch(() => null))?.ok, 20_000, 'api ready');
    const res = await fetch(`${base}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ project: 'p', title: 'across processes' }) });
    expect(res.status).toBe(201);
    const { task } = (await res.json()) as { task: { id: number } };
    const detail = await waitFor(async () => {
      const d = (await (await fetch(`${base}/tasks/${task.id}`)).json()) as { task: { stage: string }; jobs: Array<{ stage: string; status: string; host: string }> };
      return d.task.stage === 'done' ? d : null;
    }, 40_000, 'task done');
    expect(detail.jobs.map((j) => j.status)).toEqual(['done', 'done', 'done', 'done']);
    expect(new Set(detail.jobs.map((j) => j.host))).toEqual(new Set(['host-a']));
    expect(await filesOnBranch(orch.repo, 'main')).toContain(`orch-demo/task-${task.id}.md`);
    // the feature branch goes right after the task reaches done
    await waitFor(async () => (await branchesOf(orch!.repo)).join() === 'main', 10_000, 'feature branches deleted');
    const queue = (await (await fetch(`${base}/queue`)).json()) as { workers: Array<{ host: string }>; reaper: { leader: string | null } };
    expect(queue.workers.map((w) => w.host)).toContain('host-a');
    await waitFor(async () => {
      const q = (await (await fetch(`${base}/queue`)).json()) as { reaper: { leader: string | null } };
      return q.reaper.leader?.startsWith('host-b:');
    }, 10_000, 'reaper leader visible');

    for (const p of [worker, reaper, api]) p.kill('SIGTERM');
    const results = await Promise.all([worker, reaper, api]);
    expect(results.map((r) => r.exitCode)).toEqual([0, 0, 0]);
  });
});

/** An empty (unmigrated) database for one test, dropped afterwards. */
async function withEmptyDatabase(prefix: string, fn: (url: string) => Promise<void>): Promise<void> {
  const admin = inject('pgAdminUrl');
  const name = `${prefix}_${process.pid}_${Date.now()}`;
  const c = new pg.Client({ connectionString: admin });
  await c.connect();
  await c.query(`CREATE DATABASE ${name}`);
  try {
    await fn(withDatabase(admin, name));
  } finally {
    await c.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, [name]);
    await c.query(`DROP DATABASE IF EXISTS ${name}`);
    await c.end();
  }
}

describe('migrations', () => {
  it('orch migrate is idempotent; /readyz is 503 while migrations are pending', async () => {
    await withEmptyDatabase('orch_empty', async (url) => {
      const h = createDb(url, { max: 2 });
      const { silentLogger } = await import('@orch/shared/runtime/logger');
      const { loadConfig } = await import('@orch/shared/runtime/config');
      const app = createApp({ db: h.db, boss: null as never, config: loadConfig({}), log: silentLogger });
      const notReady = await app.request('/readyz');
      expect(notReady.status).toBe(503);
      expect(((await notReady.json()) as { error: { message: string } }).error.message).toContain('migrations pending');
      const { execa } = await import('execa');
      const { CLI } = await import('./support/harness.ts');
      const first = await execa(process.execPath, [CLI, 'migrate'], { env: { DATABASE_URL: url }, reject: false });
      expect(first.exitCode).toBe(0);
      expect(first.stdout).toContain('applied: 20261125T0001_initial');
      const second = await execa(process.execPath, [CLI, 'migrate'], { env: { DATABASE_URL: url }, reject: false });
      expect(second.exitCode).toBe(0);
      expect(second.stdout).toContain('schema is current');
      expect((await app.request('/readyz')).status).toBe(200);
      await h.close();
    });
  });

  it("every migration's down undoes its up: latest → step by step to none → latest again", async () => {
    await withEmptyDatabase('orch_down', async (url) => {
      const h = createDb(url, { max: 2 });
      const objects = async () =>
        (
          await h.pool.query<{ name: string }>(
            `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'i') AND c.relname NOT LIKE 'kysely_%' ORDER BY 1`,
          )
        ).rows.map((r) => r.name);
      try {
        const { createMigrator, migrateToLatest } = await import('@orch/shared/db/migrate');
        const { migrations } = await import('@orch/migrations');
        expect((await migrateToLatest(h.db)).error).toBeNull();
        const full = await objects();
        expect(full).toEqual(expect.arrayContaining(['jobs', 'tasks', 'v_running_jobs', 'artefacts_job']));
        const migrator = createMigrator(h.db);
        for (let left = Object.keys(migrations).length; left > 0; left--) {
          const r = await migrator.migrateDown();
          expect(r.error, String(r.error)).toBeUndefined();
          expect(r.results?.[0]?.status).toBe('Success');
        }
        expect(await objects()).toEqual([]);
        expect((await migrateToLatest(h.db)).applied).toEqual(Object.keys(migrations));
        expect(await objects()).toEqual(full);
      } finally {
        await h.close();
      }
    });
  });

  it('a command against an unreachable database exits non-zero with a hint', async () => {
    const { execa } = await import('execa');
    const { CLI } = await import('./support/harness.ts');
    const r = await execa(process.execPath, [CLI, 'status'], { env: { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' }, reject: false });
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain('cannot reach the database');
    expect(r.stderr).toContain('hint');
  });
});
