/**
 * What orch shows on a Gitea pull request — comments (the analysis summary, each review) and a
 * commit status per gate on the PR head — delivered from the outbox (target `gitea`), so a Gitea
 * outage loses nothing: the rows wait and go out, in order per pull request, when it is back.
 *
 * Wire behaviour (go-gitea/gitea):
 * - routers/api/v1/repo/issue_comment.go `CreateIssueComment`: `POST /repos/{o}/{r}/issues/{index}/
 *   comments` `{body}` → 201 (a PR's index works: its conversation comments are issue comments);
 *   a nonexistent index is a 500 (`GetIssueByIndex`), a locked issue 403, an empty body 422.
 * - routers/api/v1/repo/status.go `NewCommitStatus`: `POST /repos/{o}/{r}/statuses/{sha}`
 *   `{state, target_url, description, context}` → 201; the answer names the state `status`; an
 *   unknown sha is a 500. The latest status per context wins, so re-sending one is harmless.
 * gitea-js 1.23: `repos.issueCreateComment`, `repos.repoCreateStatus`.
 *
 * No retries here (the outbox backs off); a 5xx or a network error fails the row's attempt.
 */
import type { OutboxRow } from '../db/queries/outbox.ts';
import { outboxPayload, type OutboxChannel } from '../tracker/outbox-deliverer.ts';
import { giteaClient, GiteaError, errorMessage } from './gitea.ts';

export type CommitState = 'pending' | 'success' | 'failure' | 'error';
const COMMIT_STATES: readonly CommitState[] = ['pending', 'success', 'failure', 'error'];

export interface PrRef {
  owner: string;
  repo: string;
  /** the pull request's index */
  pr: number;
}

export interface StatusInput extends PrRef {
  sha: string;
  context: string;
  state: CommitState;
  description: string;
  targetUrl: string | null;
}

export interface CommentInput extends PrRef {
  body: string;
}

export interface GiteaReporter {
  comment(c: CommentInput): Promise<void>;
  setStatus(s: StatusInput): Promise<void>;
}

export function createGiteaReporter(opts: { baseUrl: string; token: string; timeoutMs?: number; fetch?: typeof fetch }): GiteaReporter {
  const { api, call } = giteaClient({ baseUrl: opts.baseUrl, token: opts.token, timeoutMs: opts.timeoutMs ?? 10_000, retries: 0, retryDelayMs: 0, ...(opts.fetch ? { fetch: opts.fetch } : {}) });
  const r = api.repos;
  return {
    async comment(c) {
      const op = `comment on ${c.owner}/${c.repo}#${c.pr}`;
      const a = await call(op, r.issueCreateComment(c.owner, c.repo, c.pr, { body: c.body }));
      if (a.status !== 201) throw new GiteaError(op, a.status, errorMessage(a.error));
    },
    async setStatus(s) {
      const op = `status ${s.context}=${s.state} on ${s.owner}/${s.repo}@${s.sha.slice(0, 12)}`;
      const a = await call(
        op,
        r.repoCreateStatus(s.owner, s.repo, s.sha, { context: s.context, state: s.state, description: s.description, ...(s.targetUrl ? { target_url: s.targetUrl } : {}) }),
      );
      if (a.status !== 201) throw new GiteaError(op, a.status, errorMessage(a.error));
    },
  };
}

const str = (v: unknown): v is string => typeof v === 'string' && v.length > 0;

/** The call a Gitea row stands for, or why it stands for none. Pure. */
export function giteaCallOf(row: Pick<OutboxRow, 'kind' | 'payload'>): { kind: 'pr_comment'; c: CommentInput } | { kind: 'commit_status'; s: StatusInput } | string {
  const p = outboxPayload(row as OutboxRow);
  if (p === null) return 'payload is not an object';
  if (!str(p.owner) || !str(p.repo) || typeof p.pr !== 'number' || !Number.isInteger(p.pr) || p.pr <= 0) return 'payload lacks owner/repo/pr';
  const ref = { owner: p.owner, repo: p.repo, pr: p.pr };
  if (row.kind === 'pr_comment') {
    if (!str(p.body)) return 'payload has no body';
    return { kind: 'pr_comment', c: { ...ref, body: p.body } };
  }
  if (row.kind === 'commit_status') {
    if (!str(p.sha) || !str(p.context)) return 'payload lacks sha/context';
    if (typeof p.state !== 'string' || !(COMMIT_STATES as readonly string[]).includes(p.state)) return `payload has no valid state (${String(p.state)})`;
    const description = typeof p.description === 'string' ? p.description : '';
    const targetUrl = str(p.targetUrl) ? p.targetUrl : null;
    return { kind: 'commit_status', s: { ...ref, sha: p.sha, context: p.context, state: p.state as CommitState, description, targetUrl } };
  }
  return `not a Gitea kind: ${String(row.kind)}`;
}

export function giteaOutboxChannel(reporter: GiteaReporter): OutboxChannel {
  return {
    target: 'gitea',
    async deliver(row) {
      const call = giteaCallOf(row);
      if (typeof call === 'string') throw new Error(`outbox row ${row.id}: ${call}`);
      if (call.kind === 'pr_comment') await reporter.comment(call.c);
      else await reporter.setStatus(call.s);
    },
  };
}
