import fs from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getTask } from '@orch/shared/db/queries/tasks';
import { listEvents } from '@orch/shared/db/queries/events';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { worktreePath } from '@orch/shared/host/git';
import { createTask } from '@orch/shared/pipeline/tasks';
import { taskRunsDir } from '@orch/shared/host/task-files';
import { branchesOf, filesOnBranch, startOrch, waitFor, type Orch } from './support/harness.ts';

describe('pipeline, in-process worker and reaper', () => {
  let orch: Orch;
  beforeAll(async () => {
    orch = await startOrch();
  });
  afterAll(async () => orch?.close());

  it('runs a task analysis → implementation → review → merge → done, merged on base, branch and files gone', async () => {
    await orch.worker();
    const reaper = await orch.reaper();
    reaper.start();
    const task = await createTask(orch.rt.svc, { project: 'p', title: 'Say hello' }, 'test');
    const done = await waitFor(async () => {
      const t = await getTask(orch.rt.svc.db, task.id);
      return t?.stage === 'done' ? t : null;
    }, 30_000, 'task done');
    expect(done.merged_sha).toMatch(/^[0-9a-f]{40}$/);
    const jobs = await listTaskJobs(orch.rt.svc.db, task.id);
    expect(jobs.map((j) => [j.stage, j.status])).toEqual([
      ['analysis', 'done'],
      ['implementation', 'done'],
      ['review', 'done'],
      ['merge', 'done'],
    ]);
    expect(await filesOnBranch(orch.repo, 'main')).toContain(`orch-demo/task-${task.id}.md`);
    // pushed only what moved: the branch made by analysis, the commit of implementation; the
    // review made no commit, so nothing was pushed after it
    const pushes = await listEvents(orch.rt.svc.db, task.id).then((es) => es.filter((e) => e.kind === 'branch_pushed'));
    expect(pushes.map((e) => jobs.find((j) => j.id === e.job_id)?.stage)).toEqual(['analysis', 'implementation']);
    // the feature branch goes right after the task reaches done
    await waitFor(async () => (await branchesOf(orch!.repo)).join() === 'main', 10_000, 'feature branches deleted');
    // and the task's files on this host: its worktree and the run dirs of its four jobs
    const root = orch.config.worktreeRoot;
    const left = async () => {
      const out: string[] = [];
      for (const d of [worktreePath(root, 'p', task.id), taskRunsDir(root, 'p', task.id)]) if (await fs.access(d).then(() => true, () => false)) out.push(d);
      return out;
    };
    await waitFor(async () => (await left()).length === 0, 5_000, 'worktree and run dirs removed').catch(async () => expect(await left()).toEqual([]));
  });
});
