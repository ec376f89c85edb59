/**
 * STOP storm (issue 8): a burst of 50 concurrent STOPs (25 tasks, each stopped twice at once)
 * while agents run with child process trees, then STOPs aimed at flow tasks at the moment they
 * run an agent, sit in a merge (a slow pre-receive hook on the bare repo makes the forge's merge
 * call, the critical window, last 1 s) or a deploy (`sleep 1`), or are done; 3 in-process
 * workers and a reaper loop. Afterwards: no surviving process of this test's jobs (a /proc scan
 * of environ for ORCH_JOB_ID), every task terminal, every requested cancel completed (deferred
 * ones too), merges recorded truthfully (merged_sha on main ⇔ the task's file on main; merge job
 * done), no queued/running job left, no feature branch left.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { requestCancel } from '@orch/shared/cancel';
import { git } from '@orch/shared/host/git';
import { createTask } from '@orch/shared/pipeline/tasks';
import { bareRepo, branchesOf, startOrch, waitFor, type Orch } from './support/harness.ts';
import { agentControl, sleep } from './support/stop-helpers.ts';

const PROJECTS = ['p', 'q', 'r'] as const;
const TREE_TASKS = 25; // agents with child trees, stopped (twice each, all at once) while running or queued
const FLOW_TASKS = 22; // tasks flowing to merge/deploy, stopped at random moments
let orch: Orch | undefined;

afterAll(async () => {
  await orch?.close();
});

/** Live processes whose environment carries ORCH_JOB_ID and mentions this test's directory. */
async function survivors(marker: string): Promise<Array<{ pid: number; job: string; cmd: string }>> {
  const out: Array<{ pid: number; job: string; cmd: string }> = [];
  for (const name of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await fs.readFile(`/proc/${name}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
      if (state === 'Z' || state === 'X') continue;
      const env = await fs.readFile(`/proc/${name}/environ`, 'utf8');
      if (!env.includes(marker)) continue;
      const job = env.split('\0').find((kv) => kv.startsWith('ORCH_JOB_ID='));
      if (!job) continue;
      const cmd = (await fs.readFile(`/proc/${name}/cmdline`, 'utf8')).replace(/\0/g, ' ').trim();
      out.push({ pid: Number(name), job: job.slice('ORCH_JOB_ID='.length), cmd });
    } catch {
      /* gone or not ours */
    }
  }
  return out;
}

const slowHook = (sleepS: number) =>
  `#!/bin/sh\nwhile read old new ref; do\n  if [ "$ref" = refs/heads/main ]; then sleep ${sleepS}; fi\ndone\nexit 0\n`;

describe('STOP storm', () => {
  it('50 concurrent STOPs, then STOPs during runs, merges and deploys: 0 survivors, all terminal, cancels complete, merges truthful', async () => {
    const t0 = Date.now();
    const ctl = await agentControl();
    orch = await startOrch({
      env: { ...ctl.env, ORCH_MAX_CONCURRENCY: '12', ORCH_WORKER_SLOTS: '4', ORCH_STOP_GRACE_S: '1' },
      project: { deploy_cmd: 'sleep 1', max_concurrency: 12 },
    });
    const s = orch.rt.svc;
    const repos: Record<string, string> = { p: orch.repo };
    for (const slug of PROJECTS.slice(1)) {
      repos[slug] = await bareRepo(orch.dir, `repo-${slug}`);
      await orch.addProject({ slug, repo: repos[slug], deploy_cmd: 'sleep 1', max_concurrency: 12 });
    }
    for (const repo of Object.values(repos)) {
      const hook = path.join(repo, 'hooks', 'pre-receive');
      await fs.writeFile(hook, slowHook(1));
      await fs.chmod(hook, 0o755);
    }
    const mainBefore: Record<string, string> = {};
    for (const [slug, repo] of Object.entries(repos)) mainBefore[slug] = (await git(['rev-parse', 'main'], { cwd: repo })).stdout.trim();

    // Tree tasks: the implementation agent spawns a grandchild tree and sleeps 30 s.
    const treeIds: number[] = [];
    const flowIds: number[] = [];
    for (let i = 0; i < TREE_TASKS; i++) {
      const t = await createTask(s, { project: PROJECTS[i % 3], title: `tree ${i}` }, 'test');
      await ctl.mode(`${t.id}-implementation`, 'tree');
      treeIds.push(t.id);
    }
    for (let i = 0; i < FLOW_TASKS; i++) {
      const t = await createTask(s, { project: PROJECTS[i % 3], title: `flow ${i}` }, 'test');
      // a little slowness spreads the flow tasks over every stage when the STOPs land
      await ctl.mode(`${t.id}-analysis`, `slow ${(0.1 + (i % 5) * 0.2).toFixed(1)}`);
      flowIds.push(t.id);
    }
    const all = [...treeIds, ...flowIds];

    await Promise.all([orch.worker(), orch.worker(), orch.worker()]);
    const reaper = await orch.reaper();
    reaper.start();

    // Wait until most tree agents run with their child trees, then fire the STOPs in bursts.
    await waitFor(async () => {
      const r = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM jobs j JOIN agent_runs a ON a.job_id = j.id
        WHERE j.stage = 'implementation' AND j.status = 'running' AND a.pid IS NOT NULL AND j.task_id = ANY(${treeIds})`.execute(s.db);
      return r.rows[0]!.n >= Math.min(8, TREE_TASKS);
    }, 30_000, 'tree agents running');
    const tTrees = Date.now() - t0;

    const requested = new Map<number, string>();
    const stop = async (id: number) => {
      const r = await requestCancel(s, id, 'storm');
      if (!requested.has(id) || r.status === 'requested') requested.set(id, r.status);
    };
    // burst 1: every tree task twice, all at once (running agents with trees, and queued jobs)
    const burst1 = [...treeIds, ...treeIds];
    const tBurst = Date.now();
    await Promise.all(burst1.map(stop));
    const burstMs = Date.now() - tBurst;
    // Then each flow task is stopped when it reaches its target: a running analysis,
    // implementation or review job, the merge push or the deploy command (critical windows), or
    // after it is done. Tasks reaching their target together are stopped in one concurrent burst.
    const TARGETS = ['analysis', 'implementation', 'review', 'merge', 'deploy', 'merge', 'deploy', 'done'] as const;
    const target = new Map(flowIds.map((id, i) => [id, TARGETS[i % TARGETS.length]!]));
    const pending = new Set(flowIds);
    const landed: Record<string, number> = {};
    const deadline = Date.now() + 35_000;
    while (pending.size) {
      const rows = (await sql<{ id: number; stage: string; critical: boolean; running: string | null }>`
        SELECT t.id, t.stage, t.critical_started_at IS NOT NULL AS critical,
               (SELECT j.stage FROM jobs j WHERE j.task_id = t.id AND j.status = 'running' LIMIT 1) AS running
        FROM tasks t WHERE t.id = ANY(${[...pending]})`.execute(s.db)).rows;
      const burst: number[] = [];
      for (const r of rows) {
        const want = target.get(r.id)!;
        const hit =
          Date.now() > deadline ||
          r.stage === 'done' || r.stage === 'cancelled' ||
          (want === 'merge' || want === 'deploy' ? r.critical && r.running === want : r.running === want);
        if (hit) {
          burst.push(r.id);
          const where = r.stage === 'done' ? 'done' : r.critical ? `${r.running}(critical)` : (r.running ?? `queued:${r.stage}`);
          landed[where] = (landed[where] ?? 0) + 1;
        }
      }
      for (const id of burst) pending.delete(id);
      await Promise.all([...burst, ...burst].map(stop)); // each STOP twice, concurrently
      await sleep(40);
    }
    const totalStops = burst1.length + FLOW_TASKS * 2;
    const tFlow = Date.now() - t0;

    // Every task terminal.
    await waitFor(async () => {
      const r = await sql<{ n: number }>`SELECT count(*)::int AS n FROM tasks WHERE stage NOT IN ('done','cancelled')`.execute(s.db);
      return r.rows[0]!.n === 0;
    }, 40_000, 'every task terminal');

    const tasks = (await sql<{ id: number; stage: string; cancel_requested_at: Date | null; cancelled_at: Date | null; merged_sha: string | null; critical_started_at: Date | null; project: string }>`
      SELECT t.id, t.stage, t.cancel_requested_at, t.cancelled_at, t.merged_sha, t.critical_started_at, p.slug AS project
      FROM tasks t JOIN projects p ON p.id = t.project_id ORDER BY t.id`.execute(s.db)).rows;
    expect(tasks.map((t) => t.id).sort((a, b) => a - b)).toEqual([...all].sort((a, b) => a - b));
    for (const t of tasks) {
      expect(['done', 'cancelled'], `task ${t.id}`).toContain(t.stage);
      expect(t.critical_started_at, `task ${t.id} left in a critical window`).toBeNull();
      // a requested cancel completed, unless the task was already done when STOP came
      if (t.cancel_requested_at) expect(t.stage, `task ${t.id}: cancel requested → cancelled`).toBe('cancelled');
      if (t.stage === 'done') expect(requested.get(t.id), `task ${t.id} done`).toBe('already_done');
      if (t.stage === 'cancelled') expect(t.cancelled_at).toBeInstanceOf(Date);
    }
    for (const id of treeIds) expect(tasks.find((t) => t.id === id)!.stage).toBe('cancelled');

    // No live job, and nothing ran after a cancel completed.
    const live = await sql<{ id: number }>`SELECT id FROM jobs WHERE status IN ('queued','running')`.execute(s.db);
    expect(live.rows).toEqual([]);
    const late = await sql<{ id: number }>`
      SELECT j.id FROM jobs j JOIN tasks t ON t.id = j.task_id WHERE t.cancelled_at IS NOT NULL AND j.started_at > t.cancelled_at`.execute(s.db);
    expect(late.rows).toEqual([]);

    // Merges recorded truthfully: merged_sha ⇔ the task's commit is on main; merge job done.
    let merged = 0;
    let cancelledAfterMerge = 0;
    for (const t of tasks) {
      const repo = repos[t.project]!;
      const onMain = (await git(['cat-file', '-e', `main:stop-task-${t.id}.txt`], { cwd: repo, allowFail: true })).exitCode === 0;
      if (t.merged_sha) {
        merged++;
        if (t.stage === 'cancelled') cancelledAfterMerge++;
        const anc = await git(['merge-base', '--is-ancestor', t.merged_sha, 'main'], { cwd: repo, allowFail: true });
        expect(anc.exitCode, `task ${t.id}: merged_sha on main`).toBe(0);
        const mj = await sql<{ status: string }>`SELECT status FROM jobs WHERE task_id = ${t.id} AND stage = 'merge' AND status = 'done'`.execute(s.db);
        expect(mj.rows.length, `task ${t.id}: a done merge job`).toBe(1);
      }
      expect(onMain, `task ${t.id}: on main iff merged_sha (merged_sha=${t.merged_sha}, stage=${t.stage})`).toBe(t.merged_sha !== null);
      if (t.stage === 'done') expect(t.merged_sha).not.toBeNull();
    }
    // base branches only moved forward
    for (const [slug, repo] of Object.entries(repos)) {
      const anc = await git(['merge-base', '--is-ancestor', mainBefore[slug]!, 'main'], { cwd: repo, allowFail: true });
      expect(anc.exitCode).toBe(0);
    }
    // deploy runs recorded truthfully: a done deploy job has a run with an exit code
    const deploys = await sql<{ task_id: number; status: string; exit_code: number | null }>`
      SELECT j.task_id, j.status, a.exit_code FROM jobs j LEFT JOIN agent_runs a ON a.job_id = j.id
      WHERE j.stage = 'deploy' AND j.status = 'done'`.execute(s.db);
    for (const d of deploys.rows) expect(d.exit_code, `deploy of task ${d.task_id}`).toBe(0);

    // 0 survivors: no process of this test's jobs is alive (give the last SIGKILL one poll)
    const marker = orch.dir;
    const left = await waitFor(async () => ((await survivors(marker)).length === 0 ? [] : null), 5_000, 'no surviving agent process').catch(async () => survivors(marker));
    expect(left).toEqual([]);

    // feature branches gone (the cancel deletes them; the reaper sweeps those of done tasks)
    for (const repo of Object.values(repos)) await waitFor(async () => (await branchesOf(repo)).join() === 'main', 15_000, `branches of ${repo}`);

    const deferred = await sql<{ n: number }>`
      SELECT count(DISTINCT t.id)::int AS n FROM tasks t JOIN jobs j ON j.task_id = t.id
      WHERE t.stage = 'cancelled' AND j.stage IN ('merge','deploy') AND j.status = 'done'`.execute(s.db);
    console.log(
      `stop storm: ${all.length} tasks, ${totalStops} STOP calls (${burst1.length} concurrent in ${burstMs} ms), ${tasks.filter((t) => t.stage === 'cancelled').length} cancelled, ` +
        `${tasks.filter((t) => t.stage === 'done').length} done, ${merged} merged (${cancelledAfterMerge} cancelled after their merge), ` +
        `${deferred.rows[0]!.n} cancels completed after a critical step, STOPs landed in ${JSON.stringify(landed)}, ${Date.now() - t0} ms (trees running at ${tTrees} ms, last flow STOP at ${tFlow} ms)`,
    );
  }, 150_000);
});
