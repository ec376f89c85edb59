/**
 * Git on this host under concurrency (issue #18, "no lock convoy"), with real git: fetches of one
 * mirror coalesce (callers that ask while one runs share the next), and task repositories of
 * different tasks are made at the same time without waiting on each other or on the mirror.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { prepareWorktree, pushBranch, syncMirror } from '@orch/shared/host/git';
import { tempDir } from './support/harness.ts';

let dir: string;
let bare: string;
beforeAll(async () => {
  dir = await tempDir('orch-git-host-');
  bare = path.join(dir, 'remote.git');
  execFileSync('git', ['init', '--quiet', '--bare', '--initial-branch=main', bare]);
  const seed = path.join(dir, 'seed');
  execFileSync('git', ['init', '--quiet', '--initial-branch=main', seed]);
  await fs.writeFile(path.join(seed, 'a.txt'), 'a\n');
  execFileSync('git', ['add', 'a.txt'], { cwd: seed });
  execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '--quiet', '-m', 'init'], { cwd: seed });
  execFileSync('git', ['push', '--quiet', bare, 'main'], { cwd: seed });
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** How many mirror fetches `fn` ran, from git's own trace (GIT_TRACE2_EVENT: one `start` event per git process). */
async function countingFetches<T>(fn: () => Promise<T>): Promise<{ result: T; fetches: number }> {
  const trace = path.join(dir, `trace-${Math.random().toString(36).slice(2)}`);
  const before = process.env.GIT_TRACE2_EVENT;
  process.env.GIT_TRACE2_EVENT = trace;
  try {
    const result = await fn();
    const text = await fs.readFile(trace, 'utf8').catch(() => '');
    const fetches = text.split('\n').filter((l) => l.includes('"event":"start"') && /"argv":\["git","fetch","--quiet","--prune","origin"\]/.test(l)).length;
    return { result, fetches };
  } finally {
    if (before === undefined) delete process.env.GIT_TRACE2_EVENT;
    else process.env.GIT_TRACE2_EVENT = before;
  }
}

describe('git on this host', () => {
  it('eight callers asking at once are served by at most two fetches of the mirror', async () => {
    const root = path.join(dir, 'root1');
    await syncMirror(root, 'p', bare); // made (and fetched once)
    const { fetches } = await countingFetches(() => Promise.all(Array.from({ length: 8 }, () => syncMirror(root, 'p', bare))));
    expect(fetches).toBeGreaterThanOrEqual(1);
    expect(fetches).toBeLessThanOrEqual(2);
    // one after they all finished runs again: it asked after the last one started
    expect((await countingFetches(() => syncMirror(root, 'p', bare))).fetches).toBe(1);
  });

  it('task repositories of four tasks made at once are each correct, and each pushes its own commit', async () => {
    const root = path.join(dir, 'root2');
    const repo = await syncMirror(root, 'p', bare);
    const ids = [1, 2, 3, 4];
    await Promise.all(ids.map((id) => prepareWorktree(repo, path.join(root, 'p', 'worktrees', String(id)), { branch: `orch/${id}-x`, base: 'main' })));
    for (const id of ids) {
      const wt = path.join(root, 'p', 'worktrees', String(id));
      await fs.writeFile(path.join(wt, `t${id}.txt`), `${id}\n`);
      execFileSync('git', ['add', '.'], { cwd: wt });
      execFileSync('git', ['commit', '--quiet', '-m', `task ${id}`], { cwd: wt });
    }
    const pushed = await Promise.all(ids.map((id) => pushBranch(repo, path.join(root, 'p', 'worktrees', String(id)), `orch/${id}-x`, id)));
    for (const [i, id] of ids.entries()) {
      expect(pushed[i]!.pushed).toBe(true);
      expect(execFileSync('git', ['--git-dir', bare, 'rev-parse', `orch/${id}-x`]).toString().trim()).toBe(pushed[i]!.sha);
      const files = execFileSync('git', ['--git-dir', bare, 'ls-tree', '--name-only', `orch/${id}-x`]).toString().trim().split('\n');
      expect(files).toEqual(['a.txt', `t${id}.txt`]);
    }
  });
});
