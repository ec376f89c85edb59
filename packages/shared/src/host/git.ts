/**
 * Git on this host: a bare mirror per project (a host-local cache of the remote) and one
 * repository per task — its working tree, where the agent edits and commits. The task's
 * repository borrows the mirror's objects read-only (`objects/info/alternates`) and has its own
 * objects, index and refs, so a sandboxed agent that commits writes nothing of the mirror's or of
 * another task's (docs/adr/0012). The remote feature branch is the truth between stages; the task
 * repository is rebuilt from it for every job. orch never runs git porcelain in a repository an
 * agent could write (its config, hooks and `commondir` are the agent's to forge): the push
 * fetches the agent's commit into the mirror and pushes from there. Never force-pushes.
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

function pathExists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
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
  const inPlace = () => pathExists(path.join(dir, 'config'));
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

/**
 * Fetches of one mirror in this process coalesce: a caller is served by the first fetch that
 * starts after it asked — while one runs, every new caller waits for the one next fetch, which
 * serves them all. N jobs starting together cost two fetches, not N in a row.
 */
const fetches = new Map<string, { running: Promise<void> | null; next: Promise<void> | null }>();
function coalesced(key: string, run: () => Promise<void>): Promise<void> {
  let state = fetches.get(key);
  if (!state) fetches.set(key, (state = { running: null, next: null }));
  const st = state;
  const start = () => (st.running = run().finally(() => (st.running = null)));
  if (!st.running) return start();
  st.next ??= st.running
    .catch(() => undefined)
    .then(() => {
      st.next = null;
      return start();
    });
  return st.next;
}

/** A git command that another process (or fetch) of this host may hold a ref lock against: retried. */
async function retryOnLock<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= 5 || !/lock/i.test((err as Error).message)) throw err;
      await new Promise((r) => setTimeout(r, 100 * (i + 1)));
    }
  }
}

/** Create (first time) and fetch the host-local mirror of a project's remote. */
export async function syncMirror(root: string, projectSlug: string, remoteUrl: string): Promise<ProjectRepo> {
  const mirror = path.join(root, projectSlug, 'mirror.git');
  await withRepoLock(mirror, async () => {
    const config = await fs.readFile(path.join(mirror, 'config'), 'utf8').catch(() => null);
    if (config === null) {
      await createBareRepo(mirror, async (staging) => {
        await git(['remote', 'add', 'origin', remoteUrl], { cwd: staging });
        await git(['config', 'remote.origin.fetch', '+refs/heads/*:refs/remotes/origin/*'], { cwd: staging });
        await git(['config', 'user.name', 'orch'], { cwd: staging });
        await git(['config', 'user.email', 'orch@localhost'], { cwd: staging });
        await git(['config', 'gc.auto', '0'], { cwd: staging });
      });
    } else {
      if (!config.includes(`url = ${remoteUrl}\n`)) await git(['remote', 'set-url', 'origin', remoteUrl], { cwd: mirror });
      // task repositories borrow its objects: no automatic gc may prune one from under them
      if (!/^\s*auto = 0$/m.test(config)) await git(['config', 'gc.auto', '0'], { cwd: mirror });
    }
  });
  // Another process on this host may be fetching into the same mirror: ref locks are retried.
  await coalesced(mirror, () => retryOnLock(() => git(['fetch', '--quiet', '--prune', 'origin'], { cwd: mirror })).then(() => undefined));
  return { mirror, remoteUrl };
}

/** A ref's sha read from its loose file (a fetch writes one; the mirror never packs, gc.auto=0), or null. */
async function looseRef(gitDir: string, ref: string): Promise<string | null> {
  const text = await fs.readFile(path.join(gitDir, ref), 'utf8').catch(() => null);
  const sha = text?.trim() ?? '';
  return /^[0-9a-f]{40}$/.test(sha) ? sha : null;
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

/** Where a task's pushed commits land in the mirror before they go to the remote. */
function taskPushRef(taskId: string): string {
  return `refs/orch/tasks/${taskId}`;
}

/**
 * A fresh repository for a task at the remote feature branch (or at base when the branch does
 * not exist yet), the feature branch checked out (or a detached HEAD). Any previous one is
 * discarded. Its objects come from the mirror through alternates, so nothing is copied: `git
 * init`, the alternates file, a fetch of two refs from the mirror (objects already there) and
 * the checkout.
 */
export async function prepareWorktree(
  repo: ProjectRepo,
  dir: string,
  opts: { branch: string; base: string; startAt?: 'branch' | 'base'; detach?: boolean },
): Promise<{ dir: string; from: string; sha: string; branchExists: boolean }> {
  // the task's own lock: it only reads the mirror, so other tasks' repositories do not wait
  return withRepoLock(dir, async () => {
    await removeWorktreeUnlocked(repo, dir);
    const remoteBranch = await remoteBranchSha(repo, opts.branch);
    const start = opts.startAt !== 'base' && remoteBranch ? opts.branch : opts.base;
    const from = `refs/remotes/origin/${start}`;
    await fs.mkdir(path.dirname(dir), { recursive: true });
    await git(['init', '--quiet', dir]);
    const gitDir = path.join(dir, '.git');
    await fs.writeFile(path.join(gitDir, 'objects', 'info', 'alternates'), `${await fs.realpath(path.join(repo.mirror, 'objects'))}\n`);
    await fs.appendFile(
      path.join(gitDir, 'config'),
      `[remote "origin"]\n\turl = ${repo.remoteUrl}\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n` +
        `[user]\n\tname = orch\n\temail = orch@localhost\n[gc]\n\tauto = 0\n[branch]\n\tautoSetupMerge = false\n`,
    );
    const refs = [...new Set([start, opts.base])].map((b) => `+refs/remotes/origin/${b}:refs/remotes/origin/${b}`);
    await git(['fetch', '--quiet', '--no-tags', repo.mirror, ...refs], { cwd: dir });
    const how = opts.detach ? ['--detach'] : ['-B', opts.branch];
    await git(['checkout', '--quiet', ...how, from], { cwd: dir });
    const sha = start === opts.branch && remoteBranch ? remoteBranch : (await git(['rev-parse', '--verify', `${from}^{commit}`], { cwd: repo.mirror })).stdout;
    return { dir, from, sha, branchExists: remoteBranch !== null };
  });
}

async function removeWorktreeUnlocked(repo: ProjectRepo, dir: string): Promise<void> {
  await fs.rm(dir, { recursive: true, force: true });
  // a task's tree made by an orch before the task repositories was a linked worktree of the mirror
  if (await pathExists(path.join(repo.mirror, 'worktrees'))) {
    await withRepoLock(repo.mirror, () => git(['worktree', 'prune'], { cwd: repo.mirror, allowFail: true }));
  }
}

/** Remove a task's worktree (idempotent). */
async function removeWorktree(repo: ProjectRepo | null, dir: string): Promise<void> {
  if (!repo) {
    await fs.rm(dir, { recursive: true, force: true });
    return;
  }
  await withRepoLock(dir, () => removeWorktreeUnlocked(repo, dir));
}

/** The task repository's git dir, refused when an agent replaced or redirected it. */
async function trustedGitDir(repo: ProjectRepo, dir: string): Promise<string> {
  const gitDir = path.join(dir, '.git');
  const st = await fs.lstat(gitDir);
  if (!st.isDirectory()) throw new Error(`${gitDir} is not the repository orch made (a ${st.isSymbolicLink() ? 'symlink' : 'file'}): refusing to push from it`);
  if (await pathExists(path.join(gitDir, 'commondir'))) throw new Error(`${gitDir} has a commondir: refusing to push from it`);
  const alternates = await fs.readFile(path.join(gitDir, 'objects', 'info', 'alternates'), 'utf8').catch(() => '');
  const expected = `${await fs.realpath(path.join(repo.mirror, 'objects'))}\n`;
  if (alternates !== expected) throw new Error(`${gitDir} borrows objects from elsewhere than its project's mirror: refusing to push from it`);
  return gitDir;
}

/**
 * Push the task repository's HEAD to the remote feature branch (fast-forward only; never
 * forced). The commit is fetched into the mirror first (git's upload-pack runs in the task
 * repository, nothing else does) and pushed from the mirror, whose config orch wrote. With
 * `unlessAt` (the remote branch's sha the repository was made at), a HEAD still there is not
 * pushed: the agent made no commit.
 */
export async function pushBranch(
  repo: ProjectRepo,
  dir: string,
  branch: string,
  taskId: number,
  opts: { unlessAt?: string } = {},
): Promise<{ sha: string; pushed: boolean }> {
  const gitDir = await trustedGitDir(repo, dir);
  const ref = taskPushRef(String(taskId));
  // the task's own lock: its ref in the mirror is its own, so other tasks' pushes do not wait
  return withRepoLock(dir, async () => {
    await retryOnLock(() => git(['fetch', '--quiet', '--no-tags', '--no-write-fetch-head', gitDir, `+HEAD:${ref}`], { cwd: repo.mirror }));
    const sha = (await looseRef(repo.mirror, ref)) ?? (await git(['rev-parse', '--verify', `${ref}^{commit}`], { cwd: repo.mirror })).stdout;
    // the branch did not move (no commit): nothing to push
    if (opts.unlessAt === sha) return { sha, pushed: false };
    // pushed to the named remote, so git moves the mirror's refs/remotes/origin/<branch> too (the
    // gates read it there)
    await git(['-c', 'core.hooksPath=/dev/null', 'push', '--quiet', '--no-verify', 'origin', `${sha}:refs/heads/${branch}`], { cwd: repo.mirror });
    return { sha, pushed: true };
  });
}

/** Remove a task's worktree on this host, and prune it from the project's mirror if there is one. */
export async function removeTaskWorktree(root: string, projectSlug: string, taskId: number): Promise<void> {
  const dir = worktreePath(root, projectSlug, taskId);
  const mirror = path.join(root, projectSlug, 'mirror.git');
  const hasMirror = await pathExists(path.join(mirror, 'HEAD'));
  await removeWorktree(hasMirror ? { mirror, remoteUrl: '' } : null, dir);
  if (!hasMirror) return;
  // and the task's local branch in the mirror (a cache that would otherwise grow forever)
  await withRepoLock(mirror, async () => {
    const refs = await git(['for-each-ref', '--format=%(refname)', `refs/heads/orch/${taskId}-*`, taskPushRef(String(taskId))], { cwd: mirror, allowFail: true });
    for (const ref of refs.stdout.split('\n').filter(Boolean)) await git(['update-ref', '-d', ref], { cwd: mirror, allowFail: true });
  });
}
