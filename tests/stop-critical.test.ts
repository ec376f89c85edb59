/**
 * STOP around irreversible steps and other tasks (ARCHITECTURE §5 step 6, §9 "STOP details",
 * §2 serial gate/dependencies): a STOP during the merge call or the deploy command waits for
 * the step and records its true outcome, then cancels; a protected branch is left alone and the
 * base branch is never rewritten; a cancelled task releases the serial gate and its dependents.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { completeCancel, requestCancel } from '@orch/shared/cancel';
import { git } from '@orch/shared/host/git';
import { createTask } from '@orch/shared/pipeline/tasks';
import { branchesOf, startOrch, tempDir, waitFor, type Orch } from './support/harness.ts';
import { startFakeGitea, type FakeGitea } from './fakes/fake-gitea.ts';
import { agentControl, apiOf, eventsOf, jobsOf, runsOf, sleep, taskRow, waitRunningAgent, waitStage } from './support/stop-helpers.ts';

let orch: Orch | undefined;
let gitea: FakeGitea | undefined;
afterEach(async () => {
  await orch?.close();
  await gitea?.close();
  orch = undefined;
  gitea = undefined;
});

const exists = (p: string) => fs.access(p).then(() => true, () => false);
const sha = async (bare: string, ref: string) => (await git(['rev-parse', ref], { cwd: bare })).stdout.trim();
const isAncestor = async (bare: string, a: string, b: string) =>
  (await git(['merge-base', '--is-ancestor', a, b], { cwd: bare, allowFail: true })).exitCode === 0;

describe('STOP in the critical window', () => {
  it('TC-06: STOP during the merge call → deferred; merge job done with merged_sha, then task cancelled, no deploy job', async () => {
    const ctl = await agentControl();
    orch = await startOrch({ env: ctl.env, project: { deploy_cmd: 'echo deployed' } });
    // Hold the merge's push to main for 2 s (the forge's merge call is the critical window).
    const mark = path.join(ctl.ctrl, 'merging');
    const hook = path.join(orch.repo, 'hooks', 'pre-receive');
    await fs.writeFile(hook, `#!/bin/sh\nwhile read old new ref; do\n  if [ "$ref" = refs/heads/main ]; then touch '${mark}'; sleep 2; fi\ndone\nexit 0\n`);
    await fs.chmod(hook, 0o755);
    const mainBefore = await sha(orch.repo, 'main');

    const t = await createTask(orch.rt.svc, { project: 'p', title: 'Stop during merge' }, 'test');
    await orch.worker();
    (await orch.reaper()).start();
    await waitFor(() => exists(mark), 30_000, 'merge push in progress');
    expect((await taskRow(orch, t.id)).critical_started_at).toBeInstanceOf(Date);

    const t0 = Date.now();
    expect((await requestCancel(orch.rt.svc, t.id, 'test')).status).toBe('requested');
    expect(await completeCancel(orch.rt.svc, t.id, 'test')).toBe('deferred');
    const q = await apiOf(orch).get('/queue');
    expect(q.body.stop.deferred).toContain(t.id);

    const c = await waitStage(orch, t.id, 'cancelled', 20_000);
    latencies.push(`TC-06 STOP→cancel complete during a 2 s merge push: ${Date.now() - t0} ms`);
    expect(c.merged_sha).toMatch(/^[0-9a-f]{40}$/);
    expect(c.critical_started_at).toBeNull();
    const jobs = await jobsOf(orch, t.id);
    expect(jobs.map((j) => [j.stage, j.status])).toEqual([
      ['analysis', 'done'],
      ['implementation', 'done'],
      ['review', 'done'],
      ['merge', 'done'],
    ]);
    // the merge really landed, fast-forward of the old base (no rewrite)
    const mainAfter = await sha(orch.repo, 'main');
    expect(mainAfter).toBe(c.merged_sha);
    expect(await isAncestor(orch.repo, mainBefore, mainAfter)).toBe(true);
    const kinds = (await eventsOf(orch, t.id)).map((e) => e.kind);
    expect(kinds).toContain('pr_merged');
    expect(kinds).toContain('cancelled');
    await sleep(600);
    expect((await jobsOf(orch, t.id)).some((j) => j.stage === 'deploy')).toBe(false);
    expect((await taskRow(orch, t.id)).stage).toBe('cancelled');
    expect(await branchesOf(orch.repo)).toEqual(['main']);
  });

  it('TC-07: STOP during deploy → the deploy command finishes, its run is recorded with exit code 0, then cancelled; no later stage', async () => {
    const ctl = await agentControl();
    orch = await startOrch({ env: ctl.env, project: { deploy_cmd: 'sleep 2; echo deployed' } });
    const t = await createTask(orch.rt.svc, { project: 'p', title: 'Stop during deploy' }, 'test');
    await orch.worker();
    (await orch.reaper()).start();
    const { job } = await waitRunningAgent(orch, t.id, 'deploy', 1, 30_000);
    expect((await taskRow(orch, t.id)).critical_started_at).toBeInstanceOf(Date);

    const t0 = Date.now();
    await requestCancel(orch.rt.svc, t.id, 'test');
    expect(await completeCancel(orch.rt.svc, t.id, 'test')).toBe('deferred');
    const c = await waitStage(orch, t.id, 'cancelled', 20_000);
    latencies.push(`TC-07 STOP→cancel complete during a 2 s deploy: ${Date.now() - t0} ms`);
    const run = (await runsOf(orch, t.id)).find((r) => r.job_id === job.id)!;
    expect(run.agent).toBe('deploy');
    expect(run.exit_code).toBe(0);
    expect(run.signal).toBeNull();
    expect(run.log_tail).toContain('deployed');
    expect(run.finished_at!.getTime()).toBeLessThanOrEqual(c.cancelled_at!.getTime());
    const jobs = await jobsOf(orch, t.id);
    expect(jobs.at(-1)).toMatchObject({ stage: 'deploy', status: 'done' });
    const stageChanges = (await eventsOf(orch, t.id)).filter((e) => e.kind === 'stage_changed').map((e) => (e.data as { to: string }).to);
    expect(stageChanges).not.toContain('done');
    await sleep(500);
    expect((await taskRow(orch, t.id)).stage).toBe('cancelled');
    expect(await jobsOf(orch, t.id)).toHaveLength(jobs.length);
  });
});

describe('STOP and the forge', () => {
  it('TC-13: protected feature branch (Gitea) → branch_delete_refused, cancel completes, base untouched, no force-push', async () => {
    const ctl = await agentControl();
    await ctl.mode('implementation', 'tree');
    const root = await tempDir('orch-stop-gitea-');
    gitea = await startFakeGitea({ reposRoot: root, token: 'tok-stop' });
    const bare = await gitea.createRepo('acme', 'r');
    orch = await startOrch({ env: { ...ctl.env, GITEA_BASE_URL: gitea.url, GITEA_TOKEN: 'tok-stop' } });
    await orch.addProject({ slug: 'g', repo: bare, gitea: 'acme/r' });
    const mainBefore = await sha(bare, 'main');

    const t = await createTask(orch.rt.svc, { project: 'g', title: 'Protected branch' }, 'test');
    await orch.worker();
    (await orch.reaper()).start();
    await waitRunningAgent(orch, t.id, 'implementation', 4);
    const featureBefore = await sha(bare, t.branch!);
    gitea.protectBranch('acme', 'r', t.branch!);
    gitea.protectBranch('acme', 'r', 'main');

    await requestCancel(orch.rt.svc, t.id, 'test');
    await waitStage(orch, t.id, 'cancelled');
    const events = await eventsOf(orch, t.id);
    const refused = events.filter((e) => e.kind === 'branch_delete_refused');
    // (≥ 1: the owner worker and the reaper may both reach the delete step; see report)
    expect(refused.length).toBeGreaterThanOrEqual(1);
    for (const e of refused) expect(e.data).toMatchObject({ branch: t.branch });
    expect(events.map((e) => e.kind)).not.toContain('cancel_error');
    // the protected branch is left as it was; main did not move; main was never asked to go
    expect(await sha(bare, t.branch!)).toBe(featureBefore);
    expect(await sha(bare, 'main')).toBe(mainBefore);
    expect(gitea.requests.filter((r) => r.method === 'DELETE' && /\/branches\/main$/.test(r.path))).toEqual([]);
    expect(gitea.requests.filter((r) => r.method === 'DELETE' && r.path.includes('/branches/')).length).toBeGreaterThanOrEqual(1);
  });
});

describe('a cancelled task releases what it was holding', () => {
  it('SG-01: serial project — the older task cancelled → the younger one proceeds to done', async () => {
    const ctl = await agentControl();
    orch = await startOrch({ env: ctl.env, project: { serial: true } });
    const a = await createTask(orch.rt.svc, { project: 'p', title: 'Older' }, 'test');
    const b = await createTask(orch.rt.svc, { project: 'p', title: 'Younger' }, 'test');
    await ctl.mode(`${a.id}-analysis`, 'tree');
    await orch.worker();
    (await orch.reaper()).start();

    await waitRunningAgent(orch, a.id, 'analysis', 4);
    await waitFor(async () => (await taskRow(orch!, b.id)).waiting_for === 'serial', 20_000, 'younger waits for the serial gate');
    expect((await taskRow(orch, b.id)).stage).toBe('analysis');

    await requestCancel(orch.rt.svc, a.id, 'test');
    await waitStage(orch, a.id, 'cancelled');
    const done = await waitStage(orch, b.id, 'done', 30_000);
    expect(done.merged_sha).toMatch(/^[0-9a-f]{40}$/);
  });

  it('DP-01: dependencies — a cancelled dependency releases its dependent, which runs to done', async () => {
    const ctl = await agentControl();
    orch = await startOrch({ env: ctl.env });
    const a = await createTask(orch.rt.svc, { project: 'p', title: 'Dependency' }, 'test');
    const b = await createTask(orch.rt.svc, { project: 'p', title: 'Dependent', dependsOn: [a.id] }, 'test');
    await ctl.mode(`${a.id}-analysis`, 'tree');
    expect(b.waiting_for).toBe('dependencies');
    expect(await jobsOf(orch, b.id)).toEqual([]);
    await orch.worker();
    (await orch.reaper()).start();

    await waitRunningAgent(orch, a.id, 'analysis', 4);
    await sleep(300);
    expect(await jobsOf(orch, b.id)).toEqual([]);
    await requestCancel(orch.rt.svc, a.id, 'test');
    await waitStage(orch, a.id, 'cancelled');
    const done = await waitStage(orch, b.id, 'done', 30_000);
    expect(done.waiting_for).toBeNull();
    expect((await eventsOf(orch, b.id)).map((e) => e.kind)).toContain('dependencies_met');
  });
});

const latencies: string[] = [];
afterEach(() => {
  if (latencies.length) console.log(`[stop] ${latencies.splice(0).join('; ')}`);
});
