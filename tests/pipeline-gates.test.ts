/**
 * The gate decides, not the exit code: an agent that exits 0 without doing the work does not
 * advance; tests that fail keep a task in implementation; two tasks merging at once both land.
 */
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getTask } from '@orch/shared/db/queries/tasks';
import { createTask, retryTask } from '@orch/shared/pipeline/tasks';
import { git } from '@orch/shared/host/git';
import { branchesOf, filesOnBranch, startOrch, waitFor, type Orch } from './support/harness.ts';
import { agentCmd } from './support/agents.ts';

let orch: Orch | undefined;
afterEach(async () => {
  await orch?.close();
  orch = undefined;
});

const blocked = (o: Orch, id: number) => waitFor(async () => {
  const t = await getTask(o.rt.svc.db, id);
  return t?.blocked_at ? t : null;
}, 30_000, `task ${id} blocked`);

describe('quality gates', () => {
  it('an agent that exits 0 without writing its analysis never advances; attempts run out, the task is blocked', async () => {
    orch = await startOrch({ env: { ORCH_AGENT: 'command', ORCH_AGENT_CMD: agentCmd({ LAZY_STAGE: 'analysis' }) } });
    await orch.worker();
    const task = await createTask(orch.rt.svc, { project: 'p', title: 'lazy' }, 'test');
    const t = await blocked(orch, task.id);
    expect(t.stage).toBe('analysis');
    expect(t.blocked_reason).toBe('attempts_exhausted: no_analysis_artefact — analysis gate: the agent exited 0 but wrote no analysis ($ORCH_ARTEFACT_DIR/analysis.md is missing or empty).');
    const jobs = await listTaskJobs(orch.rt.svc.db, task.id);
    expect(jobs.map((j) => [j.stage, j.attempt, j.status, j.reason])).toEqual([
      ['analysis', 1, 'failed', 'no_analysis_artefact'],
      ['analysis', 2, 'failed', 'no_analysis_artefact'],
      ['analysis', 3, 'failed', 'no_analysis_artefact'],
    ]);
    // the operator's retry is the deliberate way on
    await retryTask(orch.rt.svc, task.id, 'test');
    expect((await listTaskJobs(orch.rt.svc.db, task.id)).filter((j) => j.status === 'queued' || j.status === 'running')).toHaveLength(1);
  });

  it('an implementation with no commits fails its gate (exit 0 is not enough)', async () => {
    orch = await startOrch({ env: { ORCH_AGENT: 'command', ORCH_AGENT_CMD: agentCmd({ LAZY_STAGE: 'implementation' }), ORCH_JOB_MAX_ATTEMPTS: '2' } });
    await orch.worker();
    const task = await createTask(orch.rt.svc, { project: 'p', title: 'no commits' }, 'test');
    const t = await blocked(orch, task.id);
    expect(t.stage).toBe('implementation');
    expect(t.blocked_reason).toContain('no_commits_ahead_of_base');
    expect(await branchesOf(orch.repo)).toContain(t.branch); // pushed at the end of analysis, even without commits
  });

  it('the project test command must pass in the worktree', async () => {
    orch = await startOrch({ env: { ORCH_AGENT: 'command', ORCH_AGENT_CMD: agentCmd(), ORCH_JOB_MAX_ATTEMPTS: '1' }, project: { test_cmd: 'test -f work/never-there' } });
    await orch.worker();
    const task = await createTask(orch.rt.svc, { project: 'p', title: 'tests fail' }, 'test');
    const t = await blocked(orch, task.id);
    expect(t.stage).toBe('implementation');
    const jobs = await listTaskJobs(orch.rt.svc.db, task.id);
    expect(jobs.at(-1)!.test_exit_code).not.toBe(0);
    expect(jobs.at(-1)!.reason).toMatch(/^tests_failed_exit_/);
  });

  it('a test command that outlasts the finalize grace is part of the step: the reaper leaves the job to its worker', async () => {
    orch = await startOrch({
      // The test command runs 2.5× the grace past the agent's exit: a reaper that counted the grace
      // from the agent's exit would finalize the job while its tests run. After the tests the
      // worker still pushes and opens the PR, which must fit in the grace even on a loaded box.
      env: { ORCH_AGENT: 'command', ORCH_AGENT_CMD: agentCmd(), ORCH_REAPER_FINALIZE_GRACE_S: '2', ORCH_REAPER_INTERVAL_S: '0.1' },
      project: { test_cmd: 'sleep 5' },
    });
    await orch.worker();
    const reaper = await orch.reaper();
    reaper.start();
    const task = await createTask(orch.rt.svc, { project: 'p', title: 'slow tests' }, 'test');
    await waitFor(async () => (await getTask(orch!.rt.svc.db, task.id))?.stage === 'done', 40_000, 'done');
    const impl = (await listTaskJobs(orch.rt.svc.db, task.id)).filter((j) => j.stage === 'implementation');
    expect(impl.map((j) => j.status)).toEqual(['done']);
    expect(impl[0]!.test_exit_code).toBe(0);
    const byReaper = await sql<{ n: number }>`SELECT count(*)::int AS n FROM task_events WHERE task_id = ${task.id} AND actor LIKE 'reaper:%' AND kind LIKE 'job_%'`.execute(orch.rt.svc.db);
    expect(byReaper.rows[0]!.n).toBe(0);
  });

  it('review REQUEST_CHANGES sends the task back, bounded by ORCH_MAX_REVIEW_ROUNDS', async () => {
    orch = await startOrch({ env: { ORCH_AGENT: 'command', ORCH_AGENT_CMD: agentCmd({ REVIEW_VERDICT: 'REQUEST_CHANGES' }), ORCH_MAX_REVIEW_ROUNDS: '1' } });
    await orch.worker();
    const task = await createTask(orch.rt.svc, { project: 'p', title: 'picky review' }, 'test');
    const t = await blocked(orch, task.id);
    expect(t.blocked_reason).toBe('review_rounds_exhausted');
    const jobs = await listTaskJobs(orch.rt.svc.db, task.id);
    expect(jobs.map((j) => `${j.stage}:${j.status}`)).toEqual([
      'analysis:done',
      'implementation:done',
      'review:done',
      'implementation:done',
      'review:done',
    ]);
  });
});

describe('merges', () => {
  it('five tasks merging in one project at once are serialized and all land on base', async () => {
    orch = await startOrch({ env: { ORCH_MAX_CONCURRENCY: '8', ORCH_WORKER_SLOTS: '5' }, project: { max_concurrency: 8 } });
    await Promise.all([orch.worker(), orch.worker()]);
    const ids: number[] = [];
    for (let i = 0; i < 5; i++) ids.push((await createTask(orch.rt.svc, { project: 'p', title: `m${i}` }, 'test')).id);
    await waitFor(async () => {
      const r = await sql<{ n: number }>`SELECT count(*)::int AS n FROM tasks WHERE stage = 'done'`.execute(orch!.rt.svc.db);
      return r.rows[0]!.n === 5;
    }, 60_000, 'all merged');
    const files = await filesOnBranch(orch.repo, 'main');
    for (const id of ids) expect(files).toContain(`orch-demo/task-${id}.md`);
    // base history only moved forward: every merge commit is on main's first-parent chain
    const merges = await git(['rev-list', '--merges', '--first-parent', 'main'], { cwd: orch.repo });
    expect(merges.stdout.split('\n').filter(Boolean)).toHaveLength(5);
    for (const id of ids) expect((await getTask(orch.rt.svc.db, id))!.merged_sha).toBeTruthy();
    // the feature branch goes right after the task reaches done
    await waitFor(async () => (await branchesOf(orch!.repo)).join() === 'main', 10_000, 'feature branches deleted');
    const leases = await sql<{ n: number }>`SELECT count(*)::int AS n FROM merge_leases`.execute(orch.rt.svc.db);
    expect(leases.rows[0]!.n).toBe(0);
  });
});
