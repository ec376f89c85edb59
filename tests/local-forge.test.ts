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
import { bareRepo, branchesOf, tempDir } from './support/harness.ts';

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
