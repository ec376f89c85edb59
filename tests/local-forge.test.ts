/**
 * Host-local repositories under races. Every process of a host (worker, reaper, `orch up`, and
 * the worker and reaper inside one test process) shares the worktree root, so the repositories
 * orch keeps there must come into being safely when several create them at once: the project
 * mirror and the local forge's context repository (the one `push --delete` runs from). A plain
 * `git init` on a shared path made concurrent cancels fail with "could not lock config file".
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLocalForge } from '@orch/shared/forge/local';
import { createBareRepo, git } from '@orch/shared/host/git';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getTask } from '@orch/shared/db/queries/tasks';
import { createTask } from '@orch/shared/pipeline/tasks';
import { bareRepo, branchesOf, startOrch, tempDir, waitFor } from './support/harness.ts';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true });
});
async function scratchDir(): Promise<string> {
  const d = await tempDir('orch-local-forge-');
  dirs.push(d);
  return d;
}

describe('createBareRepo', () => {
  it('12 concurrent creators of one path: all succeed, one valid bare repository, no staging left', async () => {
    const root = await scratchDir();
    const dir = path.join(root, 'shared.git');
    const results = await Promise.allSettled(
      Array.from({ length: 12 }, (_, i) => createBareRepo(dir, async (staging) => void (await git(['config', 'orch.maker', String(i)], { cwd: staging })))),
    );
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    expect((await git(['rev-parse', '--is-bare-repository'], { cwd: dir })).stdout.trim()).toBe('true');
    // exactly one maker's setup is in place, whole
    expect((await git(['config', 'orch.maker'], { cwd: dir })).stdout.trim()).toMatch(/^\d+$/);
    expect(await fs.readdir(root)).toEqual(['shared.git']);
    // and an existing repository is left alone
    await createBareRepo(dir, async () => {
      throw new Error('setup must not run for an existing repository');
    });
  });
});

describe('local forge, several instances on one scratch root', () => {
  it('concurrent branch deletions from fresh forges (worker and reaper of one host) all succeed', async () => {
    const root = await scratchDir();
    const remote = await bareRepo(root, 'remote');
    const seed = path.join(root, 'seed');
    await git(['clone', '--quiet', remote, seed]);
    const branches = Array.from({ length: 8 }, (_, i) => `orch/${i + 1}-race`);
    for (const b of branches) await git(['push', '--quiet', 'origin', `HEAD:refs/heads/${b}`], { cwd: seed });
    const scratch = path.join(root, 'scratch');
    // one forge per deletion, as separate processes each have their own
    const forges = branches.map(() => createLocalForge({ db: null as never, projectId: 1, remoteUrl: remote, baseBranch: 'main', scratchRoot: scratch }));
    const results = await Promise.all(branches.map((b, i) => forges[i]!.deleteBranch(b)));
    expect(results).toEqual(branches.map(() => 'deleted'));
    expect(await branchesOf(remote)).toEqual(['main']);
    expect(await forges[0]!.deleteBranch('main')).toBe('protected');
    expect(await forges[0]!.deleteBranch(branches[0]!)).toBe('gone');
  });
});

describe('local forge: a push to base that a hook refuses', () => {
  it('is push_rejected with the hook\'s words, not out of date: the merge job fails once, saying so', async () => {
    const orch = await startOrch({ env: { ORCH_JOB_MAX_ATTEMPTS: '1' } });
    try {
      // a pre-receive hook on the remote that refuses pushes to main
      await fs.writeFile(
        path.join(orch.repo, 'hooks', 'pre-receive'),
        '#!/bin/sh\nwhile read old new ref; do [ "$ref" = "refs/heads/main" ] && { echo "main is frozen" >&2; exit 1; }; done\nexit 0\n',
        { mode: 0o755 },
      );
      await orch.worker();
      const task = await createTask(orch.rt.svc, { project: 'p', title: 'refused by a hook' }, 'test');
      const blocked = await waitFor(async () => {
        const t = await getTask(orch.rt.svc.db, task.id);
        return t?.blocked_at ? t : null;
      }, 45_000, 'task blocked');
      expect(blocked.stage).toBe('merge');
      const merge = (await listTaskJobs(orch.rt.svc.db, task.id)).filter((j) => j.stage === 'merge');
      // one job: a refusal by the server is a configuration failure, blocked at once, in words
      expect(merge.map((j) => [j.reason, j.failure_class])).toEqual([['push_rejected', 'config']]);
      expect(merge[0]!.detail).toContain('the git server rejected the merge push (a hook or branch protection): main is frozen');
      expect(await branchesOf(orch.repo)).toContain('main');
    } finally {
      await orch.close();
    }
  });
});
