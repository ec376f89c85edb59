/**
 * The Gitea forge: gitea-js against a Gitea server (API v1). Status codes follow
 * go-gitea/gitea routers/api/v1/repo/{pull,branch}.go:
 * - create PR: 201; 409 when an unmerged PR already exists for the same head/base;
 * - merge: 200; 405 when already merged (message ""), or not in a mergeable state (conflict,
 *   or Gitea's background conflict check still running: "Please try again later"), or not
 *   allowed; 409 when the merge itself conflicts (body = ErrMergeConflicts struct, no
 *   `message`), the head moved ("head out of date"), base moved ("merge push out of date"), or a
 *   pre-receive hook / protection refused the push ("PushRejected with remote message: …" or
 *   "PushRejected without remote error message", `git.IsErrPushRejected`) — that last one is its
 *   own result, not retried as out of date;
 * - update (merge base into head): 200; 409 on conflict; 422 when the PR is merged or closed;
 * - delete branch: 204; 404 missing; 403 protected or default;
 * - compare (routers/api/v1/repo/compare.go): `?files=false&verification=false` skip the
 *   per-commit file lists and signature checks (both default to true, both undocumented, so
 *   gitea-js's `repoCompareDiff` cannot pass them: we call `api.request` with a query).
 *
 * Every request carries `Authorization: token <TOKEN>`, has its own timeout, and is retried with
 * exponential backoff on network errors and 5xx only (never 4xx). Retrying a non-idempotent
 * call is safe here because each one is idempotent at the forge level: a re-sent create answers
 * 409 (→ the existing PR), a re-sent merge answers 405 (→ `already_merged`).
 */
import { giteaApi } from 'gitea-js';
import type { Compare, PullRequest as GiteaPullRequest } from 'gitea-js';
import type { BranchInfo, DeleteBranchResult, Forge, MergeResult, PullRequest, UpdateBranchResult } from './types.ts';

export interface GiteaForgeOptions {
  baseUrl: string;
  token: string;
  owner: string;
  repo: string;
  baseBranch: string;
  /** defaults to `${baseUrl}/${owner}/${repo}.git` */
  remoteUrl?: string;
  /** per request (per attempt), default 15 s */
  timeoutMs?: number;
  /** extra attempts on network errors and 5xx, default 3 */
  retries?: number;
  /** first backoff delay, doubled per attempt (capped at 5 s), default 250 ms */
  retryDelayMs?: number;
  /**
   * How long a merge refused with "not in a mergeable state" waits for Gitea's asynchronous
   * conflict check to settle before it is reported as a conflict. Right after a push (or an
   * update of the branch) Gitea reports `mergeable: false` while it re-checks. Default 20 s.
   */
  mergeableWaitMs?: number;
  fetch?: typeof fetch;
}

/** A Gitea answer outside what the calling method handles (including 401 for a bad token). */
export class GiteaError extends Error {
  readonly status: number;
  constructor(op: string, status: number, detail: string) {
    const hint = status === 401 ? ': Gitea rejected the token (check the Gitea API token)' : '';
    super(`gitea ${op} failed with HTTP ${status}${hint}${detail ? ` — ${detail}` : ''}`);
    this.name = 'GiteaError';
    this.status = status;
  }
}

export interface Answer<T> {
  status: number;
  data: T | null;
  /** the parsed error body, when JSON */
  error: unknown;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function errorMessage(body: unknown): string {
  // a non-JSON (often empty) error body leaves gitea-js's parse error here: not a message
  if (body instanceof Error) return '';
  if (body && typeof body === 'object' && 'message' in body && typeof body.message === 'string') return body.message;
  return '';
}

/**
 * The server's words in a PushRejected answer: "PushRejected with remote message: <the hook's
 * remote: lines>" → those lines; "PushRejected without remote error message" → "".
 */
export function pushRejectedMessage(msg: string): string {
  const m = /^PushRejected with remote message:\s*([\s\S]*)$/i.exec(msg.trim());
  return m ? m[1]!.trim() : '';
}

/** Branch names go into the URL path as is (gitea-js does not encode); Gitea routes `/branches/*`. */
function pathSegment(name: string): string {
  return name.split('/').map(encodeURIComponent).join('/');
}

export interface GiteaClientOptions {
  baseUrl: string;
  token: string;
  /** per request (per attempt) */
  timeoutMs: number;
  /** extra attempts on network errors and 5xx */
  retries: number;
  retryDelayMs: number;
  fetch?: typeof fetch;
}

/**
 * gitea-js with orch's auth, timeout and retries under it (gitea-js only builds the request and
 * parses JSON), and `call`, which turns a thrown non-2xx Response into a plain answer.
 */
export function giteaClient(opts: GiteaClientOptions) {
  const baseUrl = opts.baseUrl.replace(/\/+$/, '');
  const { token, timeoutMs, retries, retryDelayMs } = opts;
  const doFetch = opts.fetch ?? globalThis.fetch;

  const customFetch: typeof fetch = async (input, init) => {
    const headers = new Headers(init?.headers);
    headers.set('Authorization', `token ${token}`);
    headers.set('Accept', 'application/json');
    const what = `${init?.method ?? 'GET'} ${String(input)}`;
    for (let attempt = 0; ; attempt++) {
      const timeout = AbortSignal.timeout(timeoutMs);
      const signal = init?.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
      let res: Response;
      try {
        res = await doFetch(input, { ...init, headers, signal });
      } catch (err) {
        if (attempt >= retries) {
          const reason = err instanceof Error ? err.message : String(err);
          throw new Error(`gitea ${what} failed after ${attempt + 1} attempt(s): ${reason}`, { cause: err });
        }
        await sleep(Math.min(retryDelayMs * 2 ** attempt, 5_000));
        continue;
      }
      if (res.status < 500 || attempt >= retries) return res;
      await res.body?.cancel();
      await sleep(Math.min(retryDelayMs * 2 ** attempt, 5_000));
    }
  };

  const api = giteaApi(baseUrl, { customFetch });

  /** Await a gitea-js call, turning its thrown non-2xx Response into a plain answer (401 throws). */
  async function call<T>(op: string, p: Promise<{ status: number; data: T }>): Promise<Answer<T>> {
    try {
      const res = await p;
      return { status: res.status, data: res.data, error: null };
    } catch (e) {
      if (e instanceof Response) {
        const answer = { status: e.status, data: null, error: (e as Response & { error: unknown }).error };
        if (answer.status === 401) throw new GiteaError(op, 401, errorMessage(answer.error));
        return answer;
      }
      throw e;
    }
  }

  return { baseUrl, api, call };
}

export function createGiteaForge(opts: GiteaForgeOptions): Forge {
  const { owner, repo, baseBranch } = opts;
  const mergeableWaitMs = opts.mergeableWaitMs ?? 20_000;
  const { baseUrl, api, call } = giteaClient({
    baseUrl: opts.baseUrl,
    token: opts.token,
    timeoutMs: opts.timeoutMs ?? 15_000,
    retries: opts.retries ?? 3,
    retryDelayMs: opts.retryDelayMs ?? 250,
    ...(opts.fetch ? { fetch: opts.fetch } : {}),
  });
  const r = api.repos;

  function unexpected(op: string, a: Answer<unknown>): never {
    throw new GiteaError(op, a.status, errorMessage(a.error));
  }

  function toPr(p: GiteaPullRequest): PullRequest {
    return {
      number: p.number ?? 0,
      state: p.merged ? 'merged' : p.state === 'closed' ? 'closed' : 'open',
      head: p.head?.ref ?? '',
      base: p.base?.ref ?? '',
      headSha: p.head?.sha ?? null,
      mergedSha: p.merged ? (p.merge_commit_sha ?? null) : null,
      url: p.html_url ?? null,
    };
  }

  async function readPr(number: number): Promise<GiteaPullRequest | null> {
    const a = await call(`get pull request #${number}`, r.repoGetPullRequest(owner, repo, number));
    if (a.status === 200 && a.data) return a.data;
    if (a.status === 404) return null;
    return unexpected(`get pull request #${number}`, a);
  }

  async function branchSha(name: string): Promise<string | null> {
    const a = await call(`get branch ${name}`, r.repoGetBranch(owner, repo, pathSegment(name)));
    if (a.status === 200) return a.data?.commit?.id ?? null;
    if (a.status === 404) return null;
    return unexpected(`get branch ${name}`, a);
  }

  async function isMerged(number: number): Promise<boolean> {
    const a = await call(`is-merged #${number}`, r.repoPullRequestIsMerged(owner, repo, number));
    if (a.status === 204) return true;
    if (a.status === 404) return false;
    return unexpected(`is-merged #${number}`, a);
  }

  async function findOpen(head: string, base: string): Promise<GiteaPullRequest | null> {
    const limit = 50;
    for (let page = 1; ; page++) {
      const a = await call('list pull requests', r.repoListPullRequests(owner, repo, { state: 'open', page, limit }));
      if (a.status !== 200) return unexpected('list pull requests', a);
      const prs = a.data ?? [];
      const hit = prs.find((p) => p.head?.ref === head && p.base?.ref === base);
      if (hit) return hit;
      if (prs.length < limit) return null;
    }
  }

  /** Merged PR → already_merged with its merge commit (read back from the PR). */
  async function alreadyMerged(number: number): Promise<MergeResult> {
    const pr = await readPr(number);
    return { kind: 'already_merged', sha: pr?.merge_commit_sha ?? null };
  }

  /**
   * Gitea answers 405 both for a real conflict and while its background check runs (both show
   * `mergeable: false`); poll until the flag turns true or the wait is over.
   */
  async function waitMergeable(number: number): Promise<boolean> {
    const deadline = Date.now() + mergeableWaitMs;
    for (;;) {
      const pr = await readPr(number);
      if (pr?.mergeable) return true;
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await sleep(Math.min(1_000, left));
    }
  }

  async function merge(pr: PullRequest, headSha: string, message: string, checkingRetry: boolean): Promise<MergeResult> {
    const op = `merge pull request #${pr.number}`;
    const a = await call(
      op,
      r.repoMergePullRequest(owner, repo, pr.number, { Do: 'merge', head_commit_id: headSha, MergeMessageField: message }),
    );
    if (a.status === 200) {
      const merged = await readPr(pr.number);
      // merge_commit_sha is set by the merge; the base tip is the same commit right after it
      const sha = merged?.merge_commit_sha ?? (await branchSha(pr.base));
      if (!sha) throw new GiteaError(op, 200, 'merged, but no merge commit could be read back');
      return { kind: 'merged', sha };
    }
    if (a.status === 405) {
      if (await isMerged(pr.number)) return alreadyMerged(pr.number);
      const msg = errorMessage(a.error);
      const current = await readPr(pr.number);
      if (current?.mergeable !== false || /work in progress/i.test(msg)) {
        return { kind: 'not_mergeable', message: msg || 'Gitea refused the merge (405)' };
      }
      if (checkingRetry && (await waitMergeable(pr.number))) return merge(pr, headSha, message, false);
      return { kind: 'conflict', message: `pull request #${pr.number} is not mergeable: ${msg || 'conflict with base'}` };
    }
    if (a.status === 409) {
      const msg = errorMessage(a.error);
      if (/^PushRejected/i.test(msg)) return { kind: 'push_rejected', message: pushRejectedMessage(msg) };
      // "head out of date" / "merge push out of date": retry after updating; a conflict answers
      // with the ErrMergeConflicts struct (no message)
      if (/out of date/i.test(msg)) return { kind: 'out_of_date', message: msg };
      const current = await readPr(pr.number);
      if (!msg || current?.mergeable === false) return { kind: 'conflict', message: msg || `pull request #${pr.number} conflicts with ${pr.base}` };
      return { kind: 'out_of_date', message: msg };
    }
    if (a.status === 404) {
      const current = await readPr(pr.number);
      if (current?.state === 'closed') return { kind: 'not_mergeable', message: `pull request #${pr.number} is closed` };
    }
    return unexpected(op, a);
  }

  return {
    kind: 'gitea',
    remoteUrl: opts.remoteUrl ?? `${baseUrl}/${owner}/${repo}.git`,

    async branch(name: string): Promise<BranchInfo> {
      const sha = await branchSha(name);
      return { exists: sha !== null, sha };
    },

    async ensurePullRequest(input) {
      const op = `create pull request ${input.head} → ${input.base}`;
      const a = await call(
        op,
        r.repoCreatePullRequest(owner, repo, { head: input.head, base: input.base, title: input.title, body: input.body }),
      );
      if (a.status === 201 && a.data) return toPr(a.data);
      if (a.status === 409) {
        const open = await findOpen(input.head, input.base);
        if (open) return toPr(open);
        throw new GiteaError(op, 409, `${errorMessage(a.error)} (and no open pull request matches)`);
      }
      return unexpected(op, a);
    },

    async getPullRequest(number: number) {
      const p = await readPr(number);
      return p ? toPr(p) : null;
    },

    /**
     * Contained: the compare API `base...head` (commits on head that base lacks) lists none. Gitea
     * does not name the commit that brought head in, so the answer is the PR's merge commit when
     * Gitea marked it merged, else base's tip.
     */
    async mergedOnBase(pr: PullRequest): Promise<string | null> {
      if (pr.state === 'merged' && pr.mergedSha) return pr.mergedSha;
      const op = `compare ${pr.base}...${pr.head}`;
      const cmp = await call(op, r.repoCompareDiff(owner, repo, `${pathSegment(pr.base)}...${pathSegment(pr.head)}`));
      if (cmp.status === 404) return null; // a branch is gone
      if (cmp.status !== 200) return unexpected(op, cmp);
      if ((cmp.data?.total_commits ?? cmp.data?.commits?.length ?? 0) > 0) return null;
      return branchSha(pr.base);
    },

    /**
     * "Behind" is decided with the compare API (`head...base`: commits on base that head lacks),
     * computed synchronously from git, rather than from the PR's `merge_base`, which Gitea
     * refreshes asynchronously.
     */
    async updateBranch(pr: PullRequest): Promise<UpdateBranchResult> {
      const cmp = await call(
        'compare',
        api.request<Compare>({
          path: `/repos/${owner}/${repo}/compare/${pathSegment(pr.head)}...${pathSegment(pr.base)}`,
          method: 'GET',
          secure: true,
          format: 'json',
          query: { files: false, verification: false },
        }),
      );
      if (cmp.status !== 200) return unexpected(`compare ${pr.head}...${pr.base}`, cmp);
      if ((cmp.data?.total_commits ?? cmp.data?.commits?.length ?? 0) === 0) return { kind: 'up_to_date' };

      const op = `update pull request #${pr.number}`;
      const a = await call(op, r.repoUpdatePullRequest(owner, repo, pr.number, { style: 'merge' }));
      if (a.status === 200) {
        const sha = await branchSha(pr.head);
        if (!sha) throw new GiteaError(op, 200, `branch ${pr.head} is gone after the update`);
        return { kind: 'updated', sha };
      }
      if (a.status === 409) return { kind: 'conflict', message: errorMessage(a.error) || `${pr.head} conflicts with ${pr.base}` };
      // 422: merged (or closed) meanwhile — a re-drive: nothing to update, the merge reports it
      if (a.status === 422 && (await isMerged(pr.number))) return { kind: 'up_to_date' };
      return unexpected(op, a);
    },

    mergePullRequest(pr: PullRequest, o: { headSha: string; message: string }): Promise<MergeResult> {
      return merge(pr, o.headSha, o.message, true);
    },

    async deleteBranch(name: string): Promise<DeleteBranchResult> {
      if (name === baseBranch) return 'protected';
      const op = `delete branch ${name}`;
      const a = await call(op, r.repoDeleteBranch(owner, repo, pathSegment(name)));
      if (a.status === 204) return 'deleted';
      if (a.status === 404) return 'gone';
      if (a.status === 403) return 'protected';
      return unexpected(op, a);
    },
  };
}
