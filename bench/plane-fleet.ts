/**
 * `node bench/plane-fleet.ts [--root DIR] [--processes 3] [--minutes 3] [--projects 5] [--issues 200]
 *  [--in-start 5] [--load-every 4]` — Plane requests a fleet spends, not CI (ADR 0008).
 *
 * `--processes` real `orch reaper` processes (each runs the outbox deliverers and the Plane
 * reconciliation poll, with their default intervals) of the checkout at `--root` (default: this
 * one) run for `--minutes` against the fake Plane (tests/fakes/fake-plane.ts), which throttles the
 * key at 60 requests a minute as Plane does. Plane holds `--projects` × `--issues` work items,
 * `--in-start` of each project sitting in "To Analyse" (issues whose move orch has not yet
 * reported back). Every `--load-every` seconds a state change and a comment are written to the
 * outbox (0: none). It prints the requests per minute by kind, the 429s, and the time from an
 * outbox entry to its delivery.
 *
 * "Before" figures come from running this file against an export of an older commit:
 *   git archive <commit> | tar -x -C DIR && (cd DIR && for p in packages/*; do cp -a "$OLDPWD/$p/node_modules" "$p/"; done && ln -s "$OLDPWD/node_modules" node_modules)
 *   node bench/plane-fleet.ts --root DIR
 * The database is migrated by that checkout's own `orch migrate`, and the outbox rows are written
 * in whichever shape its schema has.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createDb } from '../packages/shared/src/db/client.ts';
import { startFakePlane } from '../tests/fakes/fake-plane.ts';
import { ADMIN_URL, NODE_FLAGS, ROOT, fmt, percentile, sleep, table, withDatabase } from './support.ts';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
}
const root = path.resolve(arg('root', ROOT));
const PROCESSES = Number(arg('processes', '3'));
const MINUTES = Number(arg('minutes', '3'));
const PROJECTS = Number(arg('projects', '5'));
const ISSUES = Number(arg('issues', '200'));
const IN_START = Number(arg('in-start', '5'));
const LOAD_EVERY_S = Number(arg('load-every', '4'));
const API_KEY = 'plane_api_bench_key';
const SLUG = 'bench';
const STATES = ['Backlog', 'To Analyse', 'In Progress', 'In Review', 'Done', 'Cancelled', 'Blocked', 'STOP'];

function run(cmd: string, args: string[], env: Record<string, string>): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${args.join(' ')} exited ${code}`))));
  });
}

async function main(): Promise<void> {
  const fake = await startFakePlane({ apiKey: API_KEY, workspaceSlug: SLUG, rateLimitPerMinute: 60 });
  const name = `orch_bench_${randomBytes(4).toString('hex')}`;
  const admin = createDb(ADMIN_URL, { max: 1 });
  await admin.pool.query(`CREATE DATABASE ${name}`);
  const url = withDatabase(ADMIN_URL, name);
  const cli = path.join(root, 'packages', 'cli', 'src', 'main.ts');
  const env: Record<string, string> = {
    DATABASE_URL: url,
    PLANE_BASE_URL: fake.url,
    PLANE_API_KEY: API_KEY,
    PLANE_WORKSPACE_SLUG: SLUG,
    PLANE_BOT_USER_ID: fake.botUserId,
    ORCH_LOG_LEVEL: 'silent',
    ORCH_HOME: path.join(os.tmpdir(), name),
  };
  const procs: ChildProcess[] = [];
  const h = createDb(url, { max: 2 });
  try {
    await run(process.execPath, [...NODE_FLAGS, cli, 'migrate'], env);
    const q = <R>(text: string, params: unknown[] = []) => h.pool.query(text, params).then((r) => r.rows as R[]);
    const hasOrderKey = (await q<{ n: number }>(`SELECT count(*)::int AS n FROM information_schema.columns WHERE table_name = 'outbox' AND column_name = 'order_key'`))[0]!.n > 0;
    const issues: Array<{ project: string; ids: string[] }> = [];
    for (let p = 0; p < PROJECTS; p++) {
      const project = randomUUID();
      fake.addProject(project, STATES);
      const ids = Array.from({ length: ISSUES }, (_, i) => fake.addIssue(project, { name: `work item ${i}`, description: `text ${i}`, stateName: i < IN_START ? 'To Analyse' : 'Backlog' }).id);
      issues.push({ project, ids });
      await q('INSERT INTO projects (slug, repo_url, plane_project_id) VALUES ($1, $2, $3)', [`p${p}`, '/nonexistent.git', project]);
    }

    const started = Date.now();
    for (let i = 0; i < PROCESSES; i++) {
      procs.push(spawn(process.execPath, [...NODE_FLAGS, cli, 'reaper'], { env: { ...process.env, ...env, ORCH_HOST_ID: `bench-${i}` }, stdio: ['ignore', 'ignore', 'inherit'] }));
    }
    const roles = ['in_progress', 'in_review', 'blocked', 'done'];
    let n = 0;
    while (Date.now() - started < MINUTES * 60_000) {
      if (LOAD_EVERY_S > 0) {
        const { project, ids } = issues[n % PROJECTS]!;
        const issueId = ids[IN_START + ((n * 7) % (ISSUES - IN_START))]!;
        for (const [kind, extra] of [['set_state', { role: roles[n % roles.length] }], ['comment', { html: `<p>bench ${n}</p>` }]] as const) {
          const payload = JSON.stringify({ projectId: project, issueId, ...extra });
          if (hasOrderKey) await q(`INSERT INTO outbox (kind, payload, target, order_key) VALUES ($1, $2::jsonb, 'plane', $3)`, [kind, payload, issueId]);
          else await q('INSERT INTO outbox (kind, payload) VALUES ($1, $2::jsonb)', [kind, payload]);
        }
        n++;
      }
      await sleep(LOAD_EVERY_S > 0 ? LOAD_EVERY_S * 1000 : 1000);
    }
    const minutes = (Date.now() - started) / 60_000;
    for (const p of procs) p.kill('SIGTERM');
    await Promise.all(procs.map((p) => new Promise((r) => (p.exitCode !== null ? r(null) : p.once('exit', r)))));

    const reqs = fake.requests.filter((r) => r.at >= started);
    const kind = (r: (typeof reqs)[number]) =>
      r.path.endsWith('/states/')
        ? 'states'
        : /\/(work-items|issues)\/$/.test(r.path)
          ? 'list'
          : r.method === 'GET'
            ? 'get one'
            : r.method === 'PATCH'
              ? 'outbox: state'
              : 'outbox: comment';
    const kinds = ['list', 'get one', 'states', 'outbox: state', 'outbox: comment'];
    const rows = kinds.map((k) => {
      const of = reqs.filter((r) => kind(r) === k);
      return [k, String(of.length), fmt(of.length / minutes), String(of.filter((r) => r.status === 429).length)];
    });
    rows.push(['all', String(reqs.length), fmt(reqs.length / minutes), String(reqs.filter((r) => r.status === 429).length)]);
    const lat = await q<{ s: number | null }>('SELECT extract(epoch FROM delivered_at - created_at)::float8 AS s FROM outbox');
    const delivered = lat.filter((r) => r.s !== null).map((r) => r.s!);
    const tasks = (await q<{ n: number }>('SELECT count(*)::int AS n FROM tasks'))[0]!.n;
    process.stdout.write(
      [
        `## Plane requests of a fleet — ${path.basename(root)} (${PROCESSES} × orch reaper, ${PROJECTS} projects × ${ISSUES} work items, ${fmt(minutes, 2)} min, Plane at 60/min)`,
        '',
        table(['request', 'n', 'per min', '429'], rows),
        '',
        `- outbox entries: ${lat.length} written, ${delivered.length} delivered; entry → delivery: p50 ${fmt(percentile(delivered, 50), 2)} s, p90 ${fmt(percentile(delivered, 90), 2)} s, max ${fmt(Math.max(...delivered, 0), 2)} s`,
        `- tasks created from the ${PROJECTS * IN_START} work items in "To Analyse": ${tasks}`,
        '',
      ].join('\n'),
    );
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    await h.close();
    await admin.pool.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
    await admin.close();
    await fake.close();
    await fs.rm(env.ORCH_HOME!, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
