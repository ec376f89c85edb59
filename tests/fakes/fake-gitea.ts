/**
 * A faithful-enough fake of the part of Gitea's REST API v1 that the Gitea forge uses, backed by
 * real bare git repositories (merges are real `git merge --no-ff` in a scratch clone, pushed
 * back without force, like Gitea's own temporary-repo merge).
 *
 * Modelled on go-gitea/gitea routers/api/v1/repo/{pull,branch,repo}.go and
 * services/pull/check.go; JSON field names from gitea-js's generated types:
 * - POST   /repos/{o}/{r}/pulls                 201 | 409 unmerged PR exists | 404 unknown branch | 422
 * - GET    /repos/{o}/{r}/pulls?state&page&limit 200 (newest first, X-Total-Count)
 * - GET    /repos/{o}/{r}/pulls/{n}             200 | 404
 * - GET    /repos/{o}/{r}/pulls/{n}/merge       204 merged | 404 not merged
 * - POST   /repos/{o}/{r}/pulls/{n}/merge       200 | 405 merged (message "") / not mergeable
 *          ("Please try again later") | 404 closed | 409 "head out of date" / merge conflict
 *          (ErrMergeConflicts struct, no message) / "merge push out of date"
 * - POST   /repos/{o}/{r}/pulls/{n}/update      200 | 409 conflict | 422 merged or closed
 * - GET    /repos/{o}/{r}/branches/{branch}     200 | 404
 * - DELETE /repos/{o}/{r}/branches/{branch}     204 | 404 | 403 default or protected
 * - GET    /repos/{o}/{r}/compare/{base}...{head} 200 {total_commits, commits} | 404 (compare.go:
 *          `files` and `verification` default to true; with true each commit carries `files`)
 * - GET    /repos/{o}/{r}                       200 | 404
 * - POST   /repos/{o}/{r}/issues/{n}/comments   201 Comment | 422 empty body | 500 unknown index
 *          (issue_comment.go `CreateIssueComment`: `ctx.Error(500, "GetIssueByIndex", err)`, the
 *          message empty in production for non-admins); GET lists them (200)
 * - POST   /repos/{o}/{r}/statuses/{sha}        201 CommitStatus (state in `status`) | 500 unknown
 *          sha (status.go `NewCommitStatus` → `CreateCommitStatus`: "GetCommit[sha]")
 * - GET    /repos/{o}/{r}/commits/{ref}/status  200 CombinedStatus: the worst of the latest status
 *          per context (error < failure < warning < pending < success); none: `{state: ""}`
 * - merge's push refused by a pre-receive hook (git: "! [remote rejected]"): 409 "PushRejected
 *          with remote message: <the remote: lines>" / "PushRejected without remote error
 *          message" (pull.go, `git.IsErrPushRejected`); base moved ("non-fast-forward"): 409
 *          "merge push out of date" (`git.IsErrPushOutOfDate`)
 *
 * Deviations, on purpose: every request needs the token (`Authorization: token|Bearer <t>`),
 * else 401 (real Gitea lets anonymous users read public repos); `mergeable` is computed on each
 * read with `git merge-tree` (real Gitea computes it asynchronously, so it can lag); git itself
 * is not served over HTTP: `clone_url` is the bare repository's path.
 */
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';

export interface FakeGitea {
  url: string;
  close(): Promise<void>;
  /** Create a bare repository with one commit on the default branch (`main`); returns its path. */
  createRepo(owner: string, repo: string, opts?: { defaultBranch?: string }): Promise<string>;
  protectBranch(owner: string, repo: string, branch: string): void;
  /** install a pre-receive hook that refuses pushes to `branch`, printing `message` (empty: says nothing) */
  rejectPushes(owner: string, repo: string, branch: string, message: string): Promise<void>;
  /** the comments of an issue or pull request, oldest first */
  comments(owner: string, repo: string, index: number): Array<{ id: number; body: string }>;
  /** every status posted on a sha, oldest first */
  statuses(owner: string, repo: string, sha: string): Array<{ context: string; state: string; description: string; target_url: string }>;
  requests: Array<{ method: string; path: string; query: string; status: number }>;
  /** The next `n` requests (those whose path matches `match`, if given) answer `status` without doing anything. */
  failNext(n: number, status: number, match?: RegExp): void;
}

interface FakePull {
  id: number;
  number: number;
  title: string;
  body: string;
  head: string;
  base: string;
  state: 'open' | 'closed';
  merged: boolean;
  mergedAt: string | null;
  mergeCommitSha: string | null;
  /** the head sha as last seen (kept once merged/closed, like Gitea's refs/pull/N/head) */
  headSha: string | null;
  createdAt: string;
  updatedAt: string;
}

interface FakeRepo {
  id: number;
  owner: string;
  name: string;
  bare: string;
  defaultBranch: string;
  protected: Set<string>;
  pulls: FakePull[];
  nextIndex: number;
  /** serializes the git writes on this repository */
  lock: Promise<unknown>;
  comments: Map<number, Array<{ id: number; body: string; created_at: string }>>;
  statuses: Map<string, Array<{ id: number; context: string; state: string; description: string; target_url: string; created_at: string }>>;
}

class HttpAnswer {
  readonly status: number;
  readonly body: unknown;
  constructor(status: number, body?: unknown) {
    this.status = status;
    this.body = body;
  }
}

const GIT_ENV = {
  GIT_TERMINAL_PROMPT: '0',
  GIT_AUTHOR_NAME: 'Fake Gitea',
  GIT_AUTHOR_EMAIL: 'gitea@fake.invalid',
  GIT_COMMITTER_NAME: 'Fake Gitea',
  GIT_COMMITTER_EMAIL: 'gitea@fake.invalid',
};

async function git(args: string[], cwd?: string, allowFail = false): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  const r = await execa('git', args, { cwd, env: GIT_ENV, reject: false, stdin: 'ignore' });
  const out = { stdout: String(r.stdout ?? '').trim(), stderr: String(r.stderr ?? '').trim(), exitCode: r.exitCode ?? -1 };
  if (out.exitCode !== 0 && !allowFail) throw new Error(`fake-gitea: git ${args.join(' ')} failed: ${out.stderr}`);
  return out;
}

async function refSha(bare: string, branch: string): Promise<string | null> {
  const r = await git(['rev-parse', '--verify', '--quiet', `refs/heads/${branch}^{commit}`], bare, true);
  return r.exitCode === 0 ? r.stdout : null;
}

/** A scratch clone with `branch` checked out, removed afterwards. */
async function inClone<T>(bare: string, branch: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'fake-gitea-'));
  try {
    await git(['clone', '--quiet', '--no-tags', '--branch', branch, bare, dir]);
    return await fn(dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/**
 * Merge `from` (a remote-tracking ref) into the checked-out branch and push it back (no force).
 * A refused push is told apart as Gitea's modules/git/error.go does: "! [remote rejected]" (a hook)
 * is ErrPushRejected, with the `remote:` lines as its message (`GenerateMessage`); anything else
 * (non-fast-forward) is ErrPushOutOfDate.
 */
async function mergeAndPush(
  dir: string,
  from: string,
  into: string,
  message: string,
): Promise<{ kind: 'ok' } | { kind: 'conflict' } | { kind: 'out_of_date' } | { kind: 'rejected'; remote: string }> {
  const m = await git(['merge', '--no-ff', '--no-edit', '-m', message, from], dir, true);
  if (m.exitCode !== 0) return { kind: 'conflict' };
  const p = await git(['push', 'origin', `HEAD:refs/heads/${into}`], dir, true);
  if (p.exitCode === 0) return { kind: 'ok' };
  if (/\[remote rejected\]/.test(p.stderr)) {
    const remote = p.stderr
      .split('\n')
      .filter((l) => l.startsWith('remote:'))
      .map((l) => l.slice('remote:'.length).trim())
      .filter(Boolean)
      .join('\n');
    return { kind: 'rejected', remote };
  }
  return { kind: 'out_of_date' };
}

export async function startFakeGitea(opts: { reposRoot: string; token: string }): Promise<FakeGitea> {
  const repos = new Map<string, FakeRepo>();
  const requests: FakeGitea['requests'] = [];
  const failure: { remaining: number; status: number; match: RegExp | null } = { remaining: 0, status: 500, match: null };
  let nextRepoId = 1;
  let nextPullId = 1;
  let nextCommentId = 1;
  let url = '';

  const apiError = (status: number, message: string) => new HttpAnswer(status, { message, url: `${url}/api/swagger` });
  const notFound = () => apiError(404, "The target couldn't be found.");

  function withLock<T>(repo: FakeRepo, fn: () => Promise<T>): Promise<T> {
    const run = repo.lock.then(fn, fn);
    repo.lock = run.catch(() => undefined);
    return run;
  }

  function userJson(login: string) {
    return { id: 1, login, login_name: '', full_name: '', email: `${login}@fake.invalid`, username: login };
  }

  function repoJson(repo: FakeRepo) {
    return {
      id: repo.id,
      name: repo.name,
      full_name: `${repo.owner}/${repo.name}`,
      owner: userJson(repo.owner),
      default_branch: repo.defaultBranch,
      html_url: `${url}/${repo.owner}/${repo.name}`,
      clone_url: repo.bare,
      private: false,
      empty: false,
      archived: false,
    };
  }

  async function pullJson(repo: FakeRepo, pr: FakePull) {
    const baseSha = await refSha(repo.bare, pr.base);
    if (pr.state === 'open') pr.headSha = (await refSha(repo.bare, pr.head)) ?? pr.headSha;
    let mergeable = false;
    let mergeBase: string | null = null;
    if (pr.state === 'open' && baseSha && pr.headSha) {
      mergeBase = (await git(['merge-base', baseSha, pr.headSha], repo.bare, true)).stdout || null;
      // exit 0: merges cleanly, 1: conflicts (git >= 2.38)
      mergeable = (await git(['merge-tree', '--write-tree', '--no-messages', baseSha, pr.headSha], repo.bare, true)).exitCode === 0;
    }
    const branchInfo = (ref: string, sha: string | null) => ({ label: ref, ref, sha, repo_id: repo.id, repo: repoJson(repo) });
    const htmlUrl = `${url}/${repo.owner}/${repo.name}/pulls/${pr.number}`;
    return {
      id: pr.id,
      number: pr.number,
      url: htmlUrl,
      html_url: htmlUrl,
      diff_url: `${htmlUrl}.diff`,
      patch_url: `${htmlUrl}.patch`,
      user: userJson(repo.owner),
      title: pr.title,
      body: pr.body,
      state: pr.state,
      draft: false,
      is_locked: false,
      comments: 0,
      mergeable,
      merged: pr.merged,
      merged_at: pr.mergedAt,
      merge_commit_sha: pr.mergeCommitSha,
      merged_by: pr.merged ? userJson(repo.owner) : null,
      merge_base: mergeBase,
      base: branchInfo(pr.base, baseSha),
      head: branchInfo(pr.head, pr.headSha),
      created_at: pr.createdAt,
      updated_at: pr.updatedAt,
      closed_at: pr.state === 'closed' ? pr.updatedAt : null,
    };
  }

  async function branchJson(repo: FakeRepo, name: string, sha: string) {
    const log = await git(['log', '-1', '--format=%B%x00%an%x00%ae%x00%cI', sha], repo.bare);
    const [message = '', author = '', email = '', timestamp = ''] = log.stdout.split('\0');
    const isProtected = repo.protected.has(name);
    return {
      name,
      commit: {
        id: sha,
        message: message.trim(),
        url: `${url}/${repo.owner}/${repo.name}/commit/${sha}`,
        author: { name: author, email, username: '' },
        committer: { name: author, email, username: '' },
        timestamp,
      },
      protected: isProtected,
      user_can_push: !isProtected,
      user_can_merge: true,
      effective_branch_protection_name: isProtected ? name : '',
      enable_status_check: false,
      required_approvals: 0,
      status_check_contexts: [],
    };
  }

  function findPull(repo: FakeRepo, n: string): FakePull {
    const pr = repo.pulls.find((p) => p.number === Number(n));
    if (!pr) throw notFound();
    return pr;
  }

  async function createPull(repo: FakeRepo, body: Record<string, unknown>): Promise<HttpAnswer> {
    const head = String(body.head ?? '');
    const base = String(body.base ?? '');
    const title = String(body.title ?? '');
    if (!title) return apiError(422, 'Title: Required');
    if (head === base) return apiError(422, 'Invalid PullRequest: There are no changes between the head and the base');
    if (!(await refSha(repo.bare, base)) || !(await refSha(repo.bare, head))) return notFound();
    const existing = repo.pulls.find((p) => p.state === 'open' && !p.merged && p.head === head && p.base === base);
    if (existing) {
      return apiError(
        409,
        `pull request already exists for these targets [id: ${existing.id}, issue_id: ${existing.number}, head_repo_id: ${repo.id}, base_repo_id: ${repo.id}, head_branch: ${head}, base_branch: ${base}]`,
      );
    }
    const now = new Date().toISOString();
    const pr: FakePull = {
      id: nextPullId++,
      number: repo.nextIndex++,
      title,
      body: String(body.body ?? ''),
      head,
      base,
      state: 'open',
      merged: false,
      mergedAt: null,
      mergeCommitSha: null,
      headSha: await refSha(repo.bare, head),
      createdAt: now,
      updatedAt: now,
    };
    repo.pulls.push(pr);
    return new HttpAnswer(201, await pullJson(repo, pr));
  }

  async function mergePull(repo: FakeRepo, pr: FakePull, body: Record<string, unknown>): Promise<HttpAnswer> {
    // CheckPullMergeable, in Gitea's order
    if (pr.merged) return apiError(405, '');
    if (pr.state === 'closed') return notFound();
    const json = await pullJson(repo, pr);
    if (!json.mergeable) return apiError(405, 'Please try again later');
    const style = String(body.Do ?? 'merge');
    if (style !== 'merge') return apiError(405, `${style} is not allowed an allowed merge style for this repository`);
    const expected = typeof body.head_commit_id === 'string' ? body.head_commit_id : '';
    if (expected && expected !== pr.headSha) return apiError(409, 'head out of date');

    const title = String(body.MergeTitleField ?? '').trim() || `Merge pull request '${pr.title}' (#${pr.number}) from ${pr.head} into ${pr.base}`;
    const extra = String(body.MergeMessageField ?? '').trim();
    const message = extra ? `${title}\n\n${extra}` : title;
    return inClone(repo.bare, pr.base, async (dir) => {
      const headNow = (await git(['rev-parse', `origin/${pr.head}`], dir)).stdout;
      if (expected && headNow !== expected) return apiError(409, 'head out of date');
      const r = await mergeAndPush(dir, `origin/${pr.head}`, pr.base, message);
      if (r.kind === 'conflict') return new HttpAnswer(409, { Style: 'merge', StdOut: '', StdErr: 'CONFLICT', Err: {} });
      if (r.kind === 'rejected') return apiError(409, r.remote ? `PushRejected with remote message: ${r.remote}` : 'PushRejected without remote error message');
      if (r.kind === 'out_of_date') return apiError(409, 'merge push out of date');
      const now = new Date().toISOString();
      pr.merged = true;
      pr.state = 'closed';
      pr.mergedAt = now;
      pr.updatedAt = now;
      pr.headSha = headNow;
      pr.mergeCommitSha = (await git(['rev-parse', 'HEAD'], dir)).stdout;
      return new HttpAnswer(200);
    });
  }

  async function updatePull(repo: FakeRepo, pr: FakePull): Promise<HttpAnswer> {
    if (pr.merged || pr.state === 'closed') return apiError(422, '');
    const message = `Merge branch '${pr.base}' into ${pr.head}`;
    return inClone(repo.bare, pr.head, async (dir) => {
      // already up to date: git makes no commit and the push is a no-op (Gitea answers 200 too)
      const r = await mergeAndPush(dir, `origin/${pr.base}`, pr.head, message);
      if (r.kind === 'conflict') return apiError(409, 'merge failed because of conflict');
      if (r.kind !== 'ok') return apiError(500, '');
      pr.updatedAt = new Date().toISOString();
      return new HttpAnswer(200);
    });
  }

  async function route(method: string, u: URL, body: Record<string, unknown>): Promise<HttpAnswer> {
    const m = /^\/api\/v1\/repos\/([^/]+)\/([^/]+)(?:\/(.*))?$/.exec(u.pathname);
    if (!m) return notFound();
    const repo = repos.get(`${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}`);
    if (!repo) return notFound();
    const rest = m[3] ?? '';
    const decodePath = (p: string) => p.split('/').map(decodeURIComponent).join('/');
    let sub: RegExpExecArray | null;

    if (rest === '' && method === 'GET') return new HttpAnswer(200, repoJson(repo));

    if ((sub = /^branches\/(.+)$/.exec(rest))) {
      const name = decodePath(sub[1]!);
      const sha = await refSha(repo.bare, name);
      if (method === 'GET') return sha ? new HttpAnswer(200, await branchJson(repo, name, sha)) : notFound();
      if (method === 'DELETE') {
        return withLock(repo, async () => {
          if (!(await refSha(repo.bare, name))) return apiError(404, `branch does not exist [name: ${name}]`);
          if (name === repo.defaultBranch) return apiError(403, 'can not delete default branch');
          if (repo.protected.has(name)) return apiError(403, 'branch protected');
          await git(['update-ref', '-d', `refs/heads/${name}`], repo.bare);
          return new HttpAnswer(204);
        });
      }
    }

    if (rest === 'pulls' && method === 'GET') {
      const state = u.searchParams.get('state') || 'open';
      const page = Math.max(1, Number(u.searchParams.get('page')) || 1);
      const limit = Math.min(50, Math.max(1, Number(u.searchParams.get('limit')) || 30));
      const all = repo.pulls.filter((p) => state === 'all' || p.state === state).sort((a, b) => b.number - a.number);
      const items = await Promise.all(all.slice((page - 1) * limit, page * limit).map((p) => pullJson(repo, p)));
      return new HttpAnswer(200, items);
    }
    if (rest === 'pulls' && method === 'POST') return withLock(repo, () => createPull(repo, body));

    if ((sub = /^pulls\/(\d+)$/.exec(rest)) && method === 'GET') return new HttpAnswer(200, await pullJson(repo, findPull(repo, sub[1]!)));

    if ((sub = /^pulls\/(\d+)\/merge$/.exec(rest))) {
      const pr = findPull(repo, sub[1]!);
      if (method === 'GET') return new HttpAnswer(pr.merged ? 204 : 404);
      if (method === 'POST') return withLock(repo, () => mergePull(repo, pr, body));
    }

    if ((sub = /^pulls\/(\d+)\/update$/.exec(rest)) && method === 'POST') {
      const pr = findPull(repo, sub[1]!);
      return withLock(repo, () => updatePull(repo, pr));
    }

    if ((sub = /^compare\/(.+)$/.exec(rest)) && method === 'GET') {
      const [base, head] = decodePath(sub[1]!).split('...');
      const baseSha = base ? await refSha(repo.bare, base) : null;
      const headSha = head ? await refSha(repo.bare, head) : null;
      if (!baseSha || !headSha) return notFound();
      // commits reachable from head but not from base (i.e. since their merge base)
      const out = (await git(['rev-list', '--reverse', `${baseSha}..${headSha}`], repo.bare)).stdout;
      const shas = out ? out.split('\n') : [];
      // compare.go: `files := ctx.FormString("files") == "" || ctx.FormBool("files")`
      const files = u.searchParams.get('files') === null || u.searchParams.get('files') === 'true';
      const commits = await Promise.all(
        shas.map(async (sha) => ({
          sha,
          url: `${url}/api/v1/repos/${repo.owner}/${repo.name}/git/commits/${sha}`,
          html_url: `${url}/${repo.owner}/${repo.name}/commit/${sha}`,
          ...(files ? { files: (await git(['show', '--name-only', '--format=', sha], repo.bare)).stdout.split('\n').filter(Boolean).map((filename) => ({ filename, status: 'modified' })) } : {}),
        })),
      );
      return new HttpAnswer(200, { total_commits: commits.length, commits });
    }

    if ((sub = /^issues\/(\d+)\/comments$/.exec(rest))) {
      const index = Number(sub[1]);
      // PR conversation comments are issue comments: a PR's index is an issue index
      const known = repo.pulls.some((p) => p.number === index);
      if (!known) return apiError(500, '');
      const list = repo.comments.get(index) ?? [];
      if (method === 'GET') return new HttpAnswer(200, list.map((c) => commentJson(repo, index, c)));
      if (method === 'POST') {
        if (typeof body.body !== 'string' || body.body === '') return apiError(422, '[Body]: Required');
        const c = { id: nextCommentId++, body: body.body, created_at: new Date().toISOString() };
        repo.comments.set(index, [...list, c]);
        return new HttpAnswer(201, commentJson(repo, index, c));
      }
    }

    if ((sub = /^statuses\/([^/]+)$/.exec(rest)) && method === 'POST') {
      const given = sub[1]!;
      const r = await git(['rev-parse', '--verify', '--quiet', `${given}^{commit}`], repo.bare, true);
      if (r.exitCode !== 0) return apiError(500, '');
      const sha = r.stdout;
      const list = repo.statuses.get(sha) ?? [];
      const st = {
        id: list.length + 1,
        context: String(body.context ?? '').trim(),
        state: String(body.state ?? ''),
        description: String(body.description ?? '').trim(),
        target_url: String(body.target_url ?? '').trim(),
        created_at: new Date().toISOString(),
      };
      repo.statuses.set(sha, [...list, st]);
      return new HttpAnswer(201, statusJson(repo, sha, st));
    }

    if ((sub = /^commits\/([^/]+)\/status$/.exec(rest)) && method === 'GET') {
      const r = await git(['rev-parse', '--verify', '--quiet', `${decodeURIComponent(sub[1]!)}^{commit}`], repo.bare, true);
      if (r.exitCode !== 0) return notFound();
      const sha = r.stdout;
      const latest = new Map<string, { id: number; context: string; state: string; description: string; target_url: string; created_at: string }>();
      for (const st of repo.statuses.get(sha) ?? []) latest.set(st.context, st);
      if (latest.size === 0) return new HttpAnswer(200, { state: '', sha: '', total_count: 0, statuses: null });
      const rank: Record<string, number> = { error: 0, failure: 1, warning: 2, pending: 3, success: 4 };
      const known = [...latest.values()].filter((s) => s.state in rank);
      const state = known.reduce((w, s) => (rank[s.state]! < rank[w]! ? s.state : w), 'success');
      return new HttpAnswer(200, { state, sha, total_count: latest.size, statuses: [...latest.values()].map((s) => statusJson(repo, sha, s)) });
    }

    return method === 'GET' || method === 'DELETE' || method === 'POST' ? notFound() : apiError(405, 'method not allowed');
  }

  function commentJson(repo: FakeRepo, index: number, c: { id: number; body: string; created_at: string }) {
    const htmlUrl = `${url}/${repo.owner}/${repo.name}/pulls/${index}`;
    return {
      id: c.id,
      html_url: `${htmlUrl}#issuecomment-${c.id}`,
      pull_request_url: htmlUrl,
      issue_url: '',
      user: userJson(repo.owner),
      original_author: '',
      original_author_id: 0,
      body: c.body,
      assets: [],
      created_at: c.created_at,
      updated_at: c.created_at,
    };
  }

  /** structs.CommitStatus: the state is named `status` */
  function statusJson(repo: FakeRepo, sha: string, s: { id: number; context: string; state: string; description: string; target_url: string; created_at: string }) {
    return {
      id: s.id,
      status: s.state,
      target_url: s.target_url,
      description: s.description,
      url: `${url}/api/v1/repos/${repo.owner}/${repo.name}/statuses/${sha}`,
      context: s.context,
      creator: userJson(repo.owner),
      created_at: s.created_at,
      updated_at: s.created_at,
    };
  }

  function authorized(req: http.IncomingMessage, u: URL): boolean {
    const header = req.headers.authorization ?? '';
    const m = /^(?:token|bearer)\s+(.+)$/i.exec(header);
    const given = m?.[1] ?? u.searchParams.get('token') ?? u.searchParams.get('access_token');
    return given === opts.token;
  }

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const method = req.method ?? 'GET';
      const u = new URL(req.url ?? '/', url);
      const reply = (a: HttpAnswer) => {
        requests.push({ method, path: u.pathname, query: u.search, status: a.status });
        const text = a.body === undefined ? '' : JSON.stringify(a.body);
        res.writeHead(a.status, text ? { 'content-type': 'application/json;charset=utf-8' } : {});
        res.end(text);
      };
      void (async () => {
        if (failure.remaining > 0 && (!failure.match || failure.match.test(u.pathname))) {
          failure.remaining--;
          return reply(apiError(failure.status, 'injected failure'));
        }
        if (!authorized(req, u)) return reply(apiError(401, 'user does not exist [uid: 0, name: ]'));
        let body: Record<string, unknown> = {};
        const raw = Buffer.concat(chunks).toString('utf8');
        if (raw) {
          try {
            body = JSON.parse(raw) as Record<string, unknown>;
          } catch {
            return reply(apiError(400, 'invalid JSON body'));
          }
        }
        reply(await route(method, u, body));
      })().catch((err: unknown) => {
        if (err instanceof HttpAnswer) return reply(err);
        reply(apiError(500, err instanceof Error ? err.message : String(err)));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    requests,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
    async createRepo(owner, name, o = {}) {
      const defaultBranch = o.defaultBranch ?? 'main';
      const bare = path.join(opts.reposRoot, owner, `${name}.git`);
      await fs.mkdir(path.dirname(bare), { recursive: true });
      await git(['init', '--quiet', '--bare', '--initial-branch', defaultBranch, bare]);
      const seed = await fs.mkdtemp(path.join(os.tmpdir(), 'fake-gitea-seed-'));
      try {
        await git(['init', '--quiet', '--initial-branch', defaultBranch, seed]);
        await fs.writeFile(path.join(seed, 'README.md'), `# ${name}\n`);
        await git(['add', 'README.md'], seed);
        await git(['commit', '--quiet', '-m', 'Initial commit'], seed);
        await git(['push', '--quiet', bare, `HEAD:refs/heads/${defaultBranch}`], seed);
      } finally {
        await fs.rm(seed, { recursive: true, force: true });
      }
      repos.set(`${owner}/${name}`, {
        id: nextRepoId++,
        owner,
        name,
        bare,
        defaultBranch,
        protected: new Set(),
        pulls: [],
        nextIndex: 1,
        lock: Promise.resolve(),
        comments: new Map(),
        statuses: new Map(),
      });
      return bare;
    },
    protectBranch(owner, name, branch) {
      const repo = repos.get(`${owner}/${name}`);
      if (!repo) throw new Error(`fake-gitea: no repository ${owner}/${name}`);
      repo.protected.add(branch);
    },
    async rejectPushes(owner, name, branch, message) {
      const repo = repos.get(`${owner}/${name}`);
      if (!repo) throw new Error(`fake-gitea: no repository ${owner}/${name}`);
      const hook = path.join(repo.bare, 'hooks', 'pre-receive');
      const say = message ? `echo ${JSON.stringify(message)} >&2` : ':';
      await fs.writeFile(hook, `#!/bin/sh\nwhile read old new ref; do\n  if [ "$ref" = "refs/heads/${branch}" ]; then ${say}; exit 1; fi\ndone\nexit 0\n`, { mode: 0o755 });
    },
    comments(owner, name, index) {
      return (repos.get(`${owner}/${name}`)?.comments.get(index) ?? []).map((c) => ({ id: c.id, body: c.body }));
    },
    statuses(owner, name, sha) {
      return (repos.get(`${owner}/${name}`)?.statuses.get(sha) ?? []).map((s) => ({ context: s.context, state: s.state, description: s.description, target_url: s.target_url }));
    },
    failNext(n, status, match) {
      failure.remaining = n;
      failure.status = status;
      failure.match = match ?? null;
    },
  };
}
