/**
 * Git on this host: a bare mirror per project (a host-local cache of the remote) and one
 * worktree per task. The remote feature branch is the truth between stages; a worktree is
 * rebuilt from it for every job. Never force-pushes.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';

class GitError extends Error {
  readonly args: string[];
  readonly stderr: string;
  readonly exitCode: number | undefined;
  constructor(args: string[], stderr: string, exitCode: number | undefined) {
    super(`git ${args.join(' ')} failed (${exitCode}): ${stderr.trim().split('\n').slice(-3).join(' | ')}`);
    this.name = 'GitError';
    this.args = args;
    this.stderr = stderr;
    this.exitCode = exitCode;
  }
}

const GIT_ENV = {
  GIT_TERMINAL_PROMPT: '0',
  GIT_AUTHOR_NAME: 'orch',
  GIT_AUTHOR_EMAIL: 'orch@localhost',
  GIT_COMMITTER_NAME: 'orch',
  GIT_COMMITTER_EMAIL: 'orch@localhost',
};

export async function git(args: string[], opts: { cwd?: string; allowFail?: boolean } = {}): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  const r = await execa('git', args, { cwd: opts.cwd, reject: false, env: GIT_ENV, stdin: 'ignore' });
  const exitCode = r.exitCode ?? -1;
  if (exitCode !== 0 && !opts.allowFail) throw new GitError(args, String(r.stderr ?? ''), exitCode);
  return { stdout: String(r.stdout ?? '').trim(), stderr: String(r.stderr ?? ''), exitCode };
}

/** Serializes git operations on one repository within this process (ref and index locks). */
const locks = new Map<string, Promise<unknown>>();
function withRepoLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = locks.get(key) ?? Promise.resolve();
  const run = prev.then(fn, fn);
  const settled = run.then(
    () => undefined,
    () => undefined,
  );
  locks.set(key, settled);
  void settled.then(() => {
    if (locks.get(key) === settled) locks.delete(key);
  });
  return run;
}

export interface ProjectRepo {
  /** bare mirror of the remote, on this host */
  mirror: string;
  remoteUrl: string;
}

/**
 * A bare repository at `dir` unless one is there: built aside (`setup` configures it) and
 * renamed into place, so several processes of one host racing here never see a half-made
 * repository, and never fight over its config lock (a plain `git init` on a shared path does).
 */
export async function createBareRepo(dir: string, setup?: (staging: string) => Promise<void>): Promise<void> {
  const inPlace = () => fs.access(path.join(dir, 'config')).then(() => true, () => false);
  if (await inPlace()) return;
  await fs.mkdir(path.dirname(dir), { recursive: true });
  const staging = await fs.mkdtemp(`${dir}.new-`);
  try {
    await git(['init', '--bare', '--quiet', staging]);
    await setup?.(staging);
    await fs.rename(staging, dir);
  } catch (err) {
    await fs.rm(staging, { recursive: true, force: true });
    // lost the race to another process: its repository is in place
    if (!(await inPlace())) throw err;
  }
}

/** Create (first time) and fetch the host-local mirror of a project's remote. */
export async function syncMirror(root: string, projectSlug: string, remoteUrl: string): Promise<ProjectRepo> {
  const mirror = path.join(root, projectSlug, 'mirror.git');
  return withRepoLock(mirror, async () => {
    const config = await fs.readFile(path.join(mirror, 'config'), 'utf8').catch(() => null);
    if (config === null) {
      await createBareRepo(mirror, async (staging) => {
        await git(['remote', 'add', 'origin', remoteUrl], { cwd: staging });
        await git(['config', 'remote.origin.fetch', '+refs/heads/*:refs/remotes/origin/*'], { cwd: staging });
        await git(['config', 'user.name', 'orch'], { cwd: staging });
        await git(['config', 'user.email', 'orch@localhost'], { cwd: staging });
      });
    } else if (!config.includes(`url = ${remoteUrl}\n`)) {
      await git(['remote', 'set-url', 'origin', remoteUrl], { cwd: mirror });
    }
    // Another process on this host may be fetching into the same mirror: ref locks are retried.
    for (let i = 0; ; i++) {
      try {
        await git(['fetch', '--quiet', '--prune', 'origin'], { cwd: mirror });
        break;
      } catch (err) {
        if (i >= 5 || !/lock/i.test((err as Error).message)) throw err;
        await new Promise((r) => setTimeout(r, 100 * (i + 1)));
      }
    }
    return { mirror, remoteUrl };
  });
}

async function remoteBranchSha(repo: ProjectRepo, branch: string): Promise<string | null> {
  const r = await git(['rev-parse', '--verify', '--quiet', `refs/remotes/origin/${branch}`], { cwd: repo.mirror, allowFail: true });
  return r.exitCode === 0 && r.stdout ? r.stdout : null;
}

/** Commits on `branch` not on `base` (both as last fetched from the remote). */
export async function commitsAhead(repo: ProjectRepo, branch: string, base: string): Promise<number> {
  const r = await git(['rev-list', '--count', `refs/remotes/origin/${base}..refs/remotes/origin/${branch}`], {
    cwd: repo.mirror,
    allowFail: true,
  });
  return r.exitCode === 0 ? Number(r.stdout) : 0;
}

/**
 * Files that conflict when `branch` is merged with `base` (both as last fetched), computed in the
 * mirror without a worktree (`git merge-tree --write-tree`, git ≥ 2.38). [] when they merge
 * cleanly or when this git cannot tell.
 */
export async function conflictingFiles(repo: ProjectRepo, branch: string, base: string): Promise<string[]> {
  const r = await git(['merge-tree', '--write-tree', '--name-only', '--no-messages', `refs/remotes/origin/${base}`, `refs/remotes/origin/${branch}`], {
    cwd: repo.mirror,
    allowFail: true,
  });
  if (r.exitCode !== 1) return [];
  return [...new Set(r.stdout.split('\n').slice(1).map((l) => l.trim()).filter(Boolean))];
}

export function worktreePath(root: string, projectSlug: string, taskId: number): string {
  return path.join(root, projectSlug, 'worktrees', String(taskId));
}

/**
 * A fresh worktree for a task at the remote feature branch (or at base when the branch does
 * not exist yet), with the feature branch checked out. Any previous worktree is discarded.
 */
export async function prepareWorktree(
  repo: ProjectRepo,
  dir: string,
  opts: { branch: string; base: string; startAt?: 'branch' | 'base'; detach?: boolean },
): Promise<{ dir: string; from: string }> {
  return withRepoLock(repo.mirror, async () => {
    const exists = await fs.access(dir).then(() => true, () => false);
    if (exists) await removeWorktreeUnlocked(repo, dir);
    const remoteBranch = await remoteBranchSha(repo, opts.branch);
    const from =
      opts.startAt !== 'base' && remoteBranch ? `refs/remotes/origin/${opts.branch}` : `refs/remotes/origin/${opts.base}`;
    await fs.mkdir(path.dirname(dir), { recursive: true });
    const how = opts.detach ? ['--detach'] : ['-B', opts.branch];
    // -f: a worktree whose directory vanished (crash, janitor) may still be registered
    await git(['worktree', 'add', '--quiet', '-f', ...how, dir, from], { cwd: repo.mirror });
    return { dir, from };
  });
}

async function removeWorktreeUnlocked(repo: ProjectRepo, dir: string): Promise<void> {
  await git(['worktree', 'remove', '--force', dir], { cwd: repo.mirror, allowFail: true });
  await fs.rm(dir, { recursive: true, force: true });
  await git(['worktree', 'prune'], { cwd: repo.mirror, allowFail: true });
}

/** Remove a task's worktree (idempotent). */
async function removeWorktree(repo: ProjectRepo | null, dir: string): Promise<void> {
  if (!repo) {
    await fs.rm(dir, { recursive: true, force: true });
    return;
  }
  await withRepoLock(repo.mirror, () => removeWorktreeUnlocked(repo, dir));
}

/** Push the worktree's HEAD to the remote feature branch (fast-forward only; never forced). */
export async function pushBranch(dir: string, branch: string): Promise<string> {
  await git(['push', '--quiet', 'origin', `HEAD:refs/heads/${branch}`], { cwd: dir });
  return (await git(['rev-parse', 'HEAD'], { cwd: dir })).stdout;
}

/** Remove a task's worktree on this host, and prune it from the project's mirror if there is one. */
export async function removeTaskWorktree(root: string, projectSlug: string, taskId: number): Promise<void> {
  const dir = worktreePath(root, projectSlug, taskId);
  const mirror = path.join(root, projectSlug, 'mirror.git');
  let hasMirror = true;
  try {
    await fs.access(path.join(mirror, 'HEAD'));
  } catch {
    hasMirror = false;
  }
  await removeWorktree(hasMirror ? { mirror, remoteUrl: '' } : null, dir);
  if (!hasMirror) return;
  // and the task's local branch in the mirror (a cache that would otherwise grow forever)
  await withRepoLock(mirror, async () => {
    const refs = await git(['for-each-ref', '--format=%(refname)', `refs/heads/orch/${taskId}-*`], { cwd: mirror, allowFail: true });
    for (const ref of refs.stdout.split('\n').filter(Boolean)) await git(['update-ref', '-d', ref], { cwd: mirror, allowFail: true });
  });
}
