import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGiteaForge } from '@orch/shared/forge/gitea';
import { createGiteaReporter } from '@orch/shared/forge/gitea-reports';
import type { GiteaForgeOptions } from '@orch/shared/forge/gitea';
import type { Forge } from '@orch/shared/forge/types';
import { startFakeGitea } from './fakes/fake-gitea.ts';
import type { FakeGitea } from './fakes/fake-gitea.ts';

const TOKEN = 'gitea-token-0123456789';
const OWNER = 'acme';

let root: string;
let gitea: FakeGitea;
let repoCount = 0;

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'orch-gitea-forge-'));
  gitea = await startFakeGitea({ reposRoot: path.join(root, 'repos'), token: TOKEN });
});

afterAll(async () => {
  await gitea?.close();
  if (root) await fs.rm(root, { recursive: true, force: true });
});

const GIT_ENV = { GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@t', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@t' };
async function git(args: string[], cwd: string): Promise<string> {
  return String((await execa('git', args, { cwd, env: GIT_ENV, stdin: 'ignore' })).stdout).trim();
}

/** A fresh repository on the fake, a working clone of it, and a forge on it. */
async function setup(extra: Partial<GiteaForgeOptions> = {}) {
  const name = `repo-${++repoCount}`;
  const bare = await gitea.createRepo(OWNER, name);
  const work = path.join(root, `work-${name}`);
  await execa('git', ['clone', '--quiet', bare, work]);
  const forge = createGiteaForge({ baseUrl: gitea.url, token: TOKEN, owner: OWNER, repo: name, baseBranch: 'main', retryDelayMs: 10, mergeableWaitMs: 50, ...extra });

  /** Commit `content` to `file` on `branch` (created from origin/`from`), push; returns the sha. */
  async function commit(branch: string, file: string, content: string, from = 'main'): Promise<string> {
    await git(['fetch', '--quiet', 'origin'], work);
    const exists = (await execa('git', ['rev-parse', '--verify', '--quiet', `origin/${branch}`], { cwd: work, reject: false })).exitCode === 0;
    await git(['checkout', '--quiet', '-B', branch, exists ? `origin/${branch}` : `origin/${from}`], work);
    await fs.writeFile(path.join(work, file), content);
    await git(['add', file], work);
    await git(['commit', '--quiet', '-m', `${branch}: ${file}`], work);
    await git(['push', '--quiet', 'origin', `HEAD:refs/heads/${branch}`], work);
    return git(['rev-parse', 'HEAD'], work);
  }
  const sha = (ref: string) => git(['rev-parse', ref], bare);
  const open = (head: string) => forge.ensurePullRequest({ head, base: 'main', title: `PR ${head}`, body: 'body' });
  return { name, bare, work, forge, commit, sha, open };
}

const since = (n: number) => gitea.requests.slice(n).map((r) => `${r.method} ${r.status}`);

describe('gitea forge', () => {
  it('reports its kind and a default remote url', async () => {
    const { forge, name } = await setup();
    expect(forge.kind).toBe('gitea');
    expect(forge.remoteUrl).toBe(`${gitea.url}/${OWNER}/${name}.git`);
    expect(createGiteaForge({ baseUrl: gitea.url, token: TOKEN, owner: OWNER, repo: name, baseBranch: 'main', remoteUrl: '/x.git' }).remoteUrl).toBe('/x.git');
  });

  it('reads branches: existing with its sha, missing (slashes in names work)', async () => {
    const { forge, commit } = await setup();
    const sha = await commit('orch/task-1', 'a.txt', 'a\n');
    expect(await forge.branch('orch/task-1')).toEqual({ exists: true, sha });
    expect(await forge.branch('orch/nope')).toEqual({ exists: false, sha: null });
  });

  it('creates a pull request, and creating it again returns the same one (409 path)', async () => {
    const { forge, commit, open } = await setup();
    const head = await commit('orch/task-1', 'a.txt', 'a\n');
    const pr = await open('orch/task-1');
    expect(pr).toMatchObject({ number: 1, state: 'open', head: 'orch/task-1', base: 'main', headSha: head, mergedSha: null });
    expect(pr.url).toMatch(/\/pulls\/1$/);

    const n = gitea.requests.length;
    const again = await open('orch/task-1');
    expect(again).toEqual(pr);
    expect(since(n)).toEqual(['POST 409', 'GET 200']);
    expect(await forge.getPullRequest(pr.number)).toEqual(pr);
    expect(await forge.getPullRequest(999)).toBeNull();
  });

  it('merges: base gets a merge commit, the PR is merged; merging again → already_merged', async () => {
    const { forge, commit, open, sha, bare } = await setup();
    const baseBefore = await sha('main');
    const head = await commit('orch/task-1', 'a.txt', 'a\n');
    const pr = await open('orch/task-1');

    const res = await forge.mergePullRequest(pr, { headSha: head, message: 'orch: task 1' });
    expect(res.kind).toBe('merged');
    const merged = (res as { sha: string }).sha;
    expect(await sha('main')).toBe(merged);
    expect(await sha(`${merged}^1`)).toBe(baseBefore);
    expect(await sha(`${merged}^2`)).toBe(head);
    expect(await git(['log', '-1', '--format=%B', merged], bare)).toContain('orch: task 1');
    expect(await forge.getPullRequest(pr.number)).toMatchObject({ state: 'merged', mergedSha: merged, headSha: head });

    const n = gitea.requests.length;
    expect(await forge.mergePullRequest(pr, { headSha: head, message: 'orch: task 1' })).toEqual({ kind: 'already_merged', sha: merged });
    expect(since(n).slice(0, 2)).toEqual(['POST 405', 'GET 204']);
    expect(await sha('main')).toBe(merged);
  });

  it('two branches editing the same line: the first merges, the second → conflict', async () => {
    const { forge, commit, open, sha } = await setup();
    const a = await commit('orch/a', 'README.md', 'from a\n');
    const b = await commit('orch/b', 'README.md', 'from b\n');
    const prA = await open('orch/a');
    const prB = await open('orch/b');
    expect((await forge.mergePullRequest(prA, { headSha: a, message: 'a' })).kind).toBe('merged');
    const baseAfterA = await sha('main');

    const res = await forge.mergePullRequest(prB, { headSha: b, message: 'b' });
    expect(res.kind).toBe('conflict');
    expect(await sha('main')).toBe(baseAfterA);
    expect(await forge.getPullRequest(prB.number)).toMatchObject({ state: 'open' });

    // and updating it cannot help either: conflict, head untouched
    expect((await forge.updateBranch(prB)).kind).toBe('conflict');
    expect(await sha('orch/b')).toBe(b);
  });

  it('a stale head sha → out_of_date, base untouched; the fresh sha merges', async () => {
    const { forge, commit, open, sha } = await setup();
    const first = await commit('orch/task-1', 'a.txt', 'a\n');
    const pr = await open('orch/task-1');
    const second = await commit('orch/task-1', 'a.txt', 'a2\n');
    const baseBefore = await sha('main');

    const res = await forge.mergePullRequest(pr, { headSha: first, message: 'm' });
    expect(res).toEqual({ kind: 'out_of_date', message: 'head out of date' });
    expect(await sha('main')).toBe(baseBefore);

    const ok = await forge.mergePullRequest(pr, { headSha: second, message: 'm' });
    expect(ok.kind).toBe('merged');
    expect(await sha(`main^2`)).toBe(second);
  });

  it('updates a branch that is behind (merge of base, no force-push), then merges it', async () => {
    const { forge, commit, open, sha } = await setup();
    const x = await commit('orch/x', 'x.txt', 'x\n');
    const y = await commit('orch/y', 'y.txt', 'y\n');
    const prX = await open('orch/x');
    const prY = await open('orch/y');
    expect((await forge.mergePullRequest(prY, { headSha: y, message: 'y' })).kind).toBe('merged');

    const res = await forge.updateBranch(prX);
    expect(res.kind).toBe('updated');
    const updated = (res as { sha: string }).sha;
    expect(updated).not.toBe(x);
    expect(await sha('orch/x')).toBe(updated);
    // base merged into head, old head kept as first parent: a fast-forward of the branch
    expect(await sha(`${updated}^1`)).toBe(x);
    expect(await sha(`${updated}^2`)).toBe(await sha('main'));

    const merged = await forge.mergePullRequest(prX, { headSha: updated, message: 'x' });
    expect(merged.kind).toBe('merged');
    expect(await sha('main')).toBe((merged as { sha: string }).sha);
  });

  it('a branch not behind base → up_to_date, without calling update', async () => {
    const { forge, commit, open, sha } = await setup();
    const head = await commit('orch/task-1', 'a.txt', 'a\n');
    const pr = await open('orch/task-1');
    const n = gitea.requests.length;
    expect(await forge.updateBranch(pr)).toEqual({ kind: 'up_to_date' });
    expect(gitea.requests.slice(n).some((r) => r.path.endsWith('/update'))).toBe(false);
    expect(await sha('orch/task-1')).toBe(head);
  });

  it('update after the PR was merged (re-drive) → up_to_date', async () => {
    const { forge, commit, open } = await setup();
    const head = await commit('orch/task-1', 'a.txt', 'a\n');
    const pr = await open('orch/task-1');
    await forge.mergePullRequest(pr, { headSha: head, message: 'm' });
    expect(await forge.updateBranch(pr)).toEqual({ kind: 'up_to_date' });
  });

  it('deletes branches: 204 deleted, 404 gone, 403 protected, base refused without a request', async () => {
    const { forge, commit, sha, bare } = await setup();
    await commit('orch/task-1', 'a.txt', 'a\n');
    await commit('release', 'r.txt', 'r\n');
    gitea.protectBranch(OWNER, path.basename(bare, '.git'), 'release');

    expect(await forge.deleteBranch('orch/task-1')).toBe('deleted');
    expect((await forge.branch('orch/task-1')).exists).toBe(false);
    expect(await forge.deleteBranch('orch/task-1')).toBe('gone');
    expect(await forge.deleteBranch('release')).toBe('protected');
    expect((await forge.branch('release')).exists).toBe(true);

    const n = gitea.requests.length;
    const main = await sha('main');
    expect(await forge.deleteBranch('main')).toBe('protected');
    expect(gitea.requests.length).toBe(n);
    expect(await sha('main')).toBe(main);
  });

  it('retries a 5xx once and succeeds', async () => {
    const { forge } = await setup();
    const n = gitea.requests.length;
    gitea.failNext(1, 502);
    expect((await forge.branch('main')).exists).toBe(true);
    expect(since(n)).toEqual(['GET 502', 'GET 200']);
  });

  it('gives up on a persistent 5xx after the configured retries', async () => {
    const { forge } = await setup({ retries: 2 });
    const n = gitea.requests.length;
    gitea.failNext(5, 503);
    await expect(forge.getPullRequest(1)).rejects.toThrow(/HTTP 503/);
    expect(since(n)).toEqual(['GET 503', 'GET 503', 'GET 503']);
    gitea.failNext(0, 500);
  });

  it('never retries a 4xx', async () => {
    const { forge } = await setup();
    const n = gitea.requests.length;
    gitea.failNext(1, 422);
    await expect(forge.getPullRequest(1)).rejects.toThrow(/HTTP 422/);
    expect(since(n)).toEqual(['GET 422']);
  });

  it('retries network errors, and times out a request that hangs', async () => {
    let calls = 0;
    const flaky: typeof fetch = (input, init) => (++calls === 1 ? Promise.reject(new TypeError('fetch failed')) : fetch(input, init));
    const { forge } = await setup({ fetch: flaky });
    expect((await forge.branch('main')).exists).toBe(true);
    expect(calls).toBe(2);

    let hung = 0;
    const hang: typeof fetch = (_input, init) =>
      new Promise((_resolve, reject) => {
        hung++;
        init?.signal?.addEventListener('abort', () => reject(init.signal?.reason));
      });
    const slow = createGiteaForge({ baseUrl: gitea.url, token: TOKEN, owner: OWNER, repo: 'any', baseBranch: 'main', fetch: hang, timeoutMs: 50, retries: 1, retryDelayMs: 1 });
    await expect(slow.branch('main')).rejects.toThrow(/failed after 2 attempt/);
    expect(hung).toBe(2);
  });

  it('a wrong token fails with a clear message', async () => {
    const { name } = await setup();
    const bad = createGiteaForge({ baseUrl: gitea.url, token: 'wrong', owner: OWNER, repo: name, baseBranch: 'main' });
    await expect(bad.branch('main')).rejects.toThrow(/HTTP 401.*token/);
    await expect(bad.ensurePullRequest({ head: 'x', base: 'main', title: 't', body: '' })).rejects.toThrow(/401/);
  });
});

/**
 * Real Gitea states the fake does not reach on its own (its `mergeable` is always fresh):
 * answers are rewritten on the way back, the rest goes to the fake.
 */
function intercepting(rewrite: (method: string, url: string) => Response | 'notMergeable' | null): typeof fetch {
  return async (input, init) => {
    const r = rewrite(init?.method ?? 'GET', String(input));
    if (r instanceof Response) return r;
    const res = await fetch(input, init);
    if (r !== 'notMergeable') return res;
    const json = (await res.json()) as Record<string, unknown>;
    return new Response(JSON.stringify({ ...json, mergeable: false }), { status: res.status, headers: res.headers });
  };
}
const jsonAnswer = (status: number, body: unknown) => new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });

describe('gitea forge: states only a real Gitea shows', () => {
  it('405 while Gitea is still checking (mergeable false, then true) → waits, merges', async () => {
    let mergeCalls = 0;
    let prReads = 0;
    const fetchFn = intercepting((method, url) => {
      if (method === 'POST' && url.endsWith('/merge') && ++mergeCalls === 1) return jsonAnswer(405, { message: 'Please try again later', url: '' });
      if (method === 'GET' && /\/pulls\/\d+$/.test(url) && mergeCalls === 1 && ++prReads <= 1) return 'notMergeable';
      return null;
    });
    const { forge, commit, open, sha } = await setup({ fetch: fetchFn, mergeableWaitMs: 3_000 });
    const head = await commit('orch/task-1', 'a.txt', 'a\n');
    const pr = await open('orch/task-1');
    const res = await forge.mergePullRequest(pr, { headSha: head, message: 'm' });
    expect(res.kind).toBe('merged');
    expect(mergeCalls).toBe(2);
    expect(await sha('main')).toBe((res as { sha: string }).sha);
  });

  it('409 with Gitea\'s merge-conflict body (no message) → conflict', async () => {
    const fetchFn = intercepting((method, url) =>
      method === 'POST' && url.endsWith('/merge') ? jsonAnswer(409, { Style: 'merge', StdOut: '', StdErr: 'CONFLICT (content)', Err: {} }) : null,
    );
    const { forge, commit, open } = await setup({ fetch: fetchFn });
    const head = await commit('orch/task-1', 'a.txt', 'a\n');
    const pr = await open('orch/task-1');
    expect((await forge.mergePullRequest(pr, { headSha: head, message: 'm' })).kind).toBe('conflict');
  });

  it('405 for a reason other than mergeability (permission) → not_mergeable', async () => {
    const fetchFn = intercepting((method, url) =>
      method === 'POST' && url.endsWith('/merge') ? jsonAnswer(405, { message: 'User not allowed to merge PR', url: '' }) : null,
    );
    const { forge, commit, open } = await setup({ fetch: fetchFn });
    const head = await commit('orch/task-1', 'a.txt', 'a\n');
    const pr = await open('orch/task-1');
    expect(await forge.mergePullRequest(pr, { headSha: head, message: 'm' })).toEqual({ kind: 'not_mergeable', message: 'User not allowed to merge PR' });
  });
});

describe('gitea forge: sends what Gitea expects', () => {
  it('uses `Authorization: token …` and the merge body of the brief', async () => {
    const seen: Array<{ url: string; method: string; auth: string | null; body: string | null }> = [];
    const spy: typeof fetch = async (input, init) => {
      seen.push({ url: String(input), method: init?.method ?? 'GET', auth: new Headers(init?.headers).get('authorization'), body: (init?.body as string | null) ?? null });
      return fetch(input, init);
    };
    const { commit, open, name } = await setup();
    const forge: Forge = createGiteaForge({ baseUrl: `${gitea.url}/`, token: TOKEN, owner: OWNER, repo: name, baseBranch: 'main', fetch: spy });
    const head = await commit('orch/task-1', 'a.txt', 'a\n');
    const pr = await open('orch/task-1');
    await forge.mergePullRequest(pr, { headSha: head, message: 'msg' });
    const merge = seen.find((s) => s.method === 'POST' && s.url.endsWith(`/api/v1/repos/${OWNER}/${name}/pulls/${pr.number}/merge`));
    expect(merge?.auth).toBe(`token ${TOKEN}`);
    expect(JSON.parse(merge?.body ?? '{}')).toEqual({ Do: 'merge', head_commit_id: head, MergeMessageField: 'msg' });
  });
});

describe('gitea forge: as Gitea is today', () => {
  it('compare asks for no per-commit file lists and no signature checks (files=false&verification=false)', async () => {
    const { forge, commit, open } = await setup();
    await commit('orch/x', 'x.txt', 'x\n');
    await commit('orch/y', 'y.txt', 'y\n');
    const prX = await open('orch/x');
    await forge.mergePullRequest(prX, { headSha: (await forge.branch('orch/x')).sha!, message: 'x' });
    const prY = await open('orch/y');
    const n = gitea.requests.length;
    expect((await forge.updateBranch(prY)).kind).toBe('updated');
    const cmp = gitea.requests.slice(n).find((r) => r.path.includes('/compare/'))!;
    expect(new URLSearchParams(cmp.query).get('files')).toBe('false');
    expect(new URLSearchParams(cmp.query).get('verification')).toBe('false');
  });

  it('a merge push refused by a pre-receive hook → push_rejected with the server\'s words, base untouched, not out_of_date', async () => {
    const { forge, commit, open, sha, name } = await setup();
    const head = await commit('orch/task-1', 'a.txt', 'a\n');
    const pr = await open('orch/task-1');
    const base = await sha('main');
    await gitea.rejectPushes(OWNER, name, 'main', 'main is frozen for the release');
    const res = await forge.mergePullRequest(pr, { headSha: head, message: 'm' });
    expect(res).toEqual({ kind: 'push_rejected', message: 'main is frozen for the release' });
    expect(await sha('main')).toBe(base);
    const merges = gitea.requests.filter((r) => r.method === 'POST' && r.path.endsWith(`/repos/${OWNER}/${name}/pulls/${pr.number}/merge`));
    expect(merges.map((r) => r.status)).toEqual([409]);
  });

  it('a hook that says nothing → push_rejected with an empty message', async () => {
    const { forge, commit, open, name } = await setup();
    const head = await commit('orch/task-1', 'a.txt', 'a\n');
    const pr = await open('orch/task-1');
    await gitea.rejectPushes(OWNER, name, 'main', '');
    expect(await forge.mergePullRequest(pr, { headSha: head, message: 'm' })).toEqual({ kind: 'push_rejected', message: '' });
  });
});

describe('gitea reporter (PR comments, commit statuses)', () => {
  it('posts a comment (201) and a status (201, read back as `status`); the combined state follows', async () => {
    const { commit, open, name } = await setup();
    const head = await commit('orch/task-1', 'a.txt', 'a\n');
    const pr = await open('orch/task-1');
    const reporter = createGiteaReporter({ baseUrl: gitea.url, token: TOKEN });
    await reporter.comment({ owner: OWNER, repo: name, pr: pr.number, body: '**orch: analysis**\n\ntext' });
    expect(gitea.comments(OWNER, name, pr.number).map((c) => c.body)).toEqual(['**orch: analysis**\n\ntext']);
    await reporter.setStatus({ owner: OWNER, repo: name, pr: pr.number, sha: head, context: 'orch/review', state: 'pending', description: 'review running', targetUrl: 'http://orch.test/#task=1' });
    await reporter.setStatus({ owner: OWNER, repo: name, pr: pr.number, sha: head, context: 'orch/review', state: 'success', description: 'review approved', targetUrl: null });
    expect(gitea.statuses(OWNER, name, head)).toEqual([
      { context: 'orch/review', state: 'pending', description: 'review running', target_url: 'http://orch.test/#task=1' },
      { context: 'orch/review', state: 'success', description: 'review approved', target_url: '' },
    ]);
    const combined = (await (await fetch(`${gitea.url}/api/v1/repos/${OWNER}/${name}/commits/${head}/status`, { headers: { authorization: `token ${TOKEN}` } })).json()) as { state: string; total_count: number };
    expect(combined).toMatchObject({ state: 'success', total_count: 1 });
    expect(gitea.requests.filter((r) => r.method === 'POST' && /\/(comments|statuses\/)/.test(r.path)).map((r) => r.status)).toEqual([201, 201, 201]);
  });

  it('Gitea\'s errors fail the call (the outbox retries): an unknown PR index or sha is a 500, an empty body a 422', async () => {
    const { commit, name } = await setup();
    const head = await commit('orch/task-1', 'a.txt', 'a\n');
    const reporter = createGiteaReporter({ baseUrl: gitea.url, token: TOKEN });
    await expect(reporter.comment({ owner: OWNER, repo: name, pr: 99, body: 'x' })).rejects.toThrow(/HTTP 500/);
    await expect(reporter.setStatus({ owner: OWNER, repo: name, pr: 1, sha: 'f'.repeat(40), context: 'orch/x', state: 'success', description: '', targetUrl: null })).rejects.toThrow(/HTTP 500/);
    expect(gitea.statuses(OWNER, name, head)).toEqual([]);
    const bad = createGiteaReporter({ baseUrl: gitea.url, token: 'wrong' });
    await expect(bad.comment({ owner: OWNER, repo: name, pr: 1, body: 'x' })).rejects.toThrow(/401.*token/);
  });
});
