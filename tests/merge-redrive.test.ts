/**
 * A merge re-driven after its worker died between the forge's push to base and the record of it
 * (ARCHITECTURE §4 "Merge": idempotent on re-drive, `pr_already_merged`). The merge push is held in
 * a `post-receive` hook of the bare repository — base has already moved when it runs — and the
 * worker is SIGKILLed there; a second worker process takes the requeued job. Base must move once:
 * the retry finds the PR's head already on base and records that merge, instead of merging base
 * into the feature branch and the branch into base a second time.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { releaseMergeLock, tryMergeLock } from '@orch/shared/db/queries/advisory-locks';
import { git } from '@orch/shared/host/git';
import { createGiteaForge } from '@orch/shared/forge/gitea';
import { createLocalForge } from '@orch/shared/forge/local';
import type { Forge } from '@orch/shared/forge/types';
import { createTask } from '@orch/shared/pipeline/tasks';
import { branchesOf, startOrch, tempDir, waitFor, type Orch } from './support/harness.ts';
import { eventsOf, jobsOf, taskRow, waitStage } from './support/stop-helpers.ts';
import { startFakeGitea, type FakeGitea } from './fakes/fake-gitea.ts';

let orch: Orch | undefined;
let gitea: FakeGitea | undefined;
let release: (() => Promise<void>) | undefined;
afterEach(async () => {
  await release?.(); // never leave a hook (and the git push waiting on it) behind
  await orch?.close();
  await gitea?.close();
  orch = gitea = release = undefined;
});

const exists = (p: string) => fs.access(p).then(() => true, () => false);
const firstParents = async (bare: string, ref: string) => (await git(['rev-list', '--first-parent', ref], { cwd: bare })).stdout.split('\n');

/**
 * A post-receive hook that, on the first update of `main`, marks `held` and waits (≤ 60 s) for
 * `go`: the ref is already updated, the pusher is still waiting for the push to finish.
 */
async function holdFirstBasePush(bare: string) {
  const ctl = await tempDir('orch-redrive-hook-');
  const held = path.join(ctl, 'held');
  const go = path.join(ctl, 'go');
  const done = path.join(ctl, 'hook-done');
  const hook = path.join(bare, 'hooks', 'post-receive');
  await fs.writeFile(
    hook,
    `#!/bin/sh
while read old new ref; do
  if [ "$ref" = refs/heads/main ] && [ ! -e '${held}' ]; then
    touch '${held}'
    i=0; while [ ! -e '${go}' ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
    touch '${done}'
  fi
done
exit 0
`,
  );
  await fs.chmod(hook, 0o755);
  return {
    held: () => exists(held),
    async release() {
      await fs.writeFile(go, '');
      if (await exists(held)) await waitFor(() => exists(done), 10_000, 'hook finished');
    },
  };
}

describe('merge re-drive after the worker died inside the merge push', () => {
  it('local forge: the retry records the merge that happened (pr_already_merged); base moves once', async () => {
    orch = await startOrch();
    const o = orch;
    const hook = await holdFirstBasePush(o.repo);
    release = hook.release;
    const before = await firstParents(o.repo, 'main');

    const t = await createTask(o.rt.svc, { project: 'p', title: 'Merge once' }, 'test');
    const first = o.spawn(['worker']);
    await waitFor(hook.held, 60_000, 'merge push to main held by the hook');
    // base has moved (post-receive runs after the ref update); the worker has recorded nothing
    expect(await firstParents(o.repo, 'main')).toHaveLength(before.length + 1);
    expect((await taskRow(o, t.id)).merged_sha).toBeNull();
    first.kill('SIGKILL');
    await first;
    await hook.release(); // the orphaned `git push` completes; nobody records it

    const second = o.spawn(['worker']);
    const reaper = o.spawn(['reaper']);
    const done = await waitStage(o, t.id, 'done', 60_000);

    const after = await firstParents(o.repo, 'main');
    expect(after, 'base moved exactly once').toHaveLength(before.length + 1);
    expect(after.slice(1)).toEqual(before);
    expect(done.merged_sha).toBe(after[0]);
    const log = (await git(['log', '--format=%s', 'main'], { cwd: o.repo })).stdout;
    expect(log).not.toMatch(/^Merge main into /m);
    expect(log.match(/^Merge orch\//gm)).toHaveLength(1);

    const events = await eventsOf(o, t.id);
    const already = events.filter((e) => e.kind === 'pr_already_merged');
    expect(already).toHaveLength(1);
    expect(already[0]!.data).toMatchObject({ sha: after[0] });
    expect(events.map((e) => e.kind)).not.toContain('pr_merged');
    expect(events.map((e) => e.kind)).not.toContain('branch_updated');
    const merges = (await jobsOf(o, t.id)).filter((j) => j.stage === 'merge');
    expect(merges.map((j) => j.status)).toEqual(['failed', 'done']);
    await waitFor(async () => (await branchesOf(o.repo)).join() === 'main', 10_000, 'feature branch deleted');

    second.kill('SIGTERM');
    reaper.kill('SIGTERM');
    expect((await Promise.all([second, reaper])).map((r) => r.exitCode)).toEqual([0, 0]);
  }, 120_000);

  it('Gitea: a PR whose head reached base outside the merge call is recorded as merged; base does not move again', async () => {
    const root = await tempDir('orch-redrive-gitea-');
    gitea = await startFakeGitea({ reposRoot: root, token: 'tok-redrive' });
    const bare = await gitea.createRepo('acme', 'r');
    orch = await startOrch({ env: { GITEA_BASE_URL: gitea.url, GITEA_TOKEN: 'tok-redrive' } });
    const o = orch;
    const project = await o.addProject({ slug: 'g', repo: bare, gitea: 'acme/r' });

    // Hold the project's merge lock so the merge job waits before it looks at anything; merge the
    // feature branch into main by hand meanwhile (Gitea keeps such a PR open unless its
    // "autodetect manual merge" is on), then let the job go.
    const lock = await o.rt.svc.pool.connect();
    let locked = false;
    try {
      expect(await tryMergeLock(lock, project.id)).toBe(true);
      locked = true;
      const t = await createTask(o.rt.svc, { project: 'g', title: 'Merged by hand' }, 'test');
      const worker = o.spawn(['worker']);
      await waitFor(async () => (await jobsOf(o, t.id)).some((j) => j.stage === 'merge' && j.status === 'running'), 60_000, 'merge job waiting for the lock');
      const branch = (await taskRow(o, t.id)).branch!;
      const clone = await tempDir('orch-redrive-clone-');
      await git(['clone', '--quiet', bare, clone]);
      await git(['-c', 'user.name=op', '-c', 'user.email=op@example.invalid', 'merge', '--no-ff', '-m', 'merged by hand', `origin/${branch}`], { cwd: clone });
      await git(['push', '--quiet', 'origin', 'main'], { cwd: clone });
      const byHand = (await git(['rev-parse', 'HEAD'], { cwd: clone })).stdout;
      await fs.rm(clone, { recursive: true, force: true });
      const before = await firstParents(bare, 'main');
      await releaseMergeLock(lock, project.id);
      locked = false;

      const done = await waitStage(o, t.id, 'done', 60_000);
      expect(await firstParents(bare, 'main'), 'base did not move again').toEqual(before);
      expect(done.merged_sha).toBe(byHand);
      const events = await eventsOf(o, t.id);
      expect(events.filter((e) => e.kind === 'pr_already_merged').map((e) => e.data)).toEqual([expect.objectContaining({ sha: byHand })]);
      expect(events.map((e) => e.kind)).not.toContain('branch_updated');
      expect(gitea!.requests.filter((r) => r.method === 'POST' && /\/pulls\/\d+\/(update|merge)$/.test(r.path))).toEqual([]);
      worker.kill('SIGTERM');
      expect((await worker).exitCode).toBe(0);
    } finally {
      if (locked) await releaseMergeLock(lock, project.id).catch(() => {});
      lock.release();
    }
  }, 120_000);
});

describe('Forge.mergedOnBase: is the pull request\'s head already contained in base?', () => {
  /** A clone of `bare` to make commits and merges by hand. */
  async function handRepo(bare: string) {
    const dir = await tempDir('orch-mob-');
    await git(['clone', '--quiet', bare, dir]);
    const run = (args: string[]) => git(['-c', 'user.name=t', '-c', 'user.email=t@example.invalid', ...args], { cwd: dir });
    return {
      async branch(name: string, file: string): Promise<string> {
        await run(['checkout', '--quiet', '-B', name, 'origin/main']);
        await fs.writeFile(path.join(dir, file), `${file}\n`);
        await run(['add', file]);
        await run(['commit', '--quiet', '-m', file]);
        await run(['push', '--quiet', 'origin', `HEAD:refs/heads/${name}`]);
        return (await run(['rev-parse', 'HEAD'])).stdout;
      },
      /** merge `name` into main (--no-ff, or a fast-forward) and push main; returns main's tip */
      async mergeIntoMain(name: string, ff = false): Promise<string> {
        await run(['fetch', '--quiet', 'origin']);
        await run(['checkout', '--quiet', '-B', 'main', 'origin/main']);
        await run(['merge', '--quiet', ff ? '--ff-only' : '--no-ff', '-m', `merge ${name}`, `origin/${name}`]);
        await run(['push', '--quiet', 'origin', 'main']);
        return (await run(['rev-parse', 'HEAD'])).stdout;
      },
      close: () => fs.rm(dir, { recursive: true, force: true }),
    };
  }

  async function cases(forge: Forge, bare: string, opts: { ffAnswer: 'head' | 'tip' }) {
    const hand = await handRepo(bare);
    try {
      const open = (head: string) => forge.ensurePullRequest({ head, base: 'main', title: head, body: '' });
      await hand.branch('orch/1-open', 'open.txt');
      const pr1 = await open('orch/1-open');
      expect(await forge.mergedOnBase(pr1), 'open, not on base').toBeNull();

      await hand.branch('orch/2-by-hand', 'by-hand.txt');
      const pr2 = await open('orch/2-by-hand');
      const merge = await hand.mergeIntoMain('orch/2-by-hand');
      expect(await forge.mergedOnBase((await forge.getPullRequest(pr2.number))!), 'merged by hand: its merge commit').toBe(merge);
      // the first PR is still not on base, although base moved
      expect(await forge.mergedOnBase((await forge.getPullRequest(pr1.number))!)).toBeNull();

      const head3 = await hand.branch('orch/3-ff', 'ff.txt');
      const pr3 = await open('orch/3-ff');
      const tip = await hand.mergeIntoMain('orch/3-ff', true);
      expect(tip).toBe(head3);
      expect(await forge.mergedOnBase((await forge.getPullRequest(pr3.number))!), 'fast-forwarded').toBe(opts.ffAnswer === 'head' ? head3 : tip);
      return { pr1, pr2 };
    } finally {
      await hand.close();
    }
  }

  it('local forge: null when not on base; the merge commit (or head, fast-forwarded) when on it; the PR is marked merged', async () => {
    orch = await startOrch();
    const o = orch;
    const forge = createLocalForge({ db: o.rt.svc.db, projectId: o.project.id, remoteUrl: o.repo, baseBranch: 'main', scratchRoot: path.join(o.dir, 'scratch') });
    const { pr1, pr2 } = await cases(forge, o.repo, { ffAnswer: 'head' });
    expect((await forge.getPullRequest(pr1.number))!.state).toBe('open');
    expect(await forge.getPullRequest(pr2.number)).toMatchObject({ state: 'merged', mergedSha: expect.stringMatching(/^[0-9a-f]{40}$/) });
    expect(await forge.mergePullRequest((await forge.getPullRequest(pr2.number))!, { headSha: 'x', message: 'm' })).toMatchObject({ kind: 'already_merged' });
  });

  it('Gitea: null when not on base, or a branch is gone; base\'s tip when head is on base; the merge commit of a merged PR', async () => {
    const root = await tempDir('orch-mob-gitea-');
    gitea = await startFakeGitea({ reposRoot: root, token: 'tok-mob' });
    const bare = await gitea.createRepo('acme', 'm');
    const forge = createGiteaForge({ baseUrl: gitea.url, token: 'tok-mob', owner: 'acme', repo: 'm', baseBranch: 'main', remoteUrl: bare, retryDelayMs: 10 });
    const { pr1 } = await cases(forge, bare, { ffAnswer: 'tip' });
    const merged = await forge.mergePullRequest(pr1, { headSha: pr1.headSha!, message: 'merge 1' });
    expect(merged.kind).toBe('merged');
    expect(await forge.mergedOnBase((await forge.getPullRequest(pr1.number))!)).toBe((merged as { sha: string }).sha);
    expect(await forge.mergedOnBase({ ...pr1, state: 'open', head: 'orch/9-gone', mergedSha: null })).toBeNull();
  });
});
