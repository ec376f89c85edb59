/**
 * Reports to the forge, so a person looking at a task's pull request in Gitea sees orch's work:
 * - a commit status per gate on the PR head (`orch/implementation`, `orch/review`, `orch/merge`,
 *   `orch/deploy`): `pending` when the stage's job starts (or when the PR it runs on is opened),
 *   `success` / `failure` when the job is finalized, `error` when it is cancelled;
 * - comments: the analysis summary when the PR is opened, and every review (verdict and text).
 * Each links to the task in the dashboard when ORCH_PUBLIC_URL is set. Written to the outbox in
 * the caller's transaction (target `gitea`, ordered per pull request), never sent inline. Only
 * Gitea projects with a pull request get any; the local forge has no one to show them to.
 */
import type { Db, DbOrTx } from '../db/client.ts';
import { getJobArtefact } from '../db/queries/artefacts.ts';
import { latestBranchSha } from '../db/queries/events.ts';
import { insertOutbox } from '../db/queries/outbox.ts';
import { setTaskPullRequest } from '../db/queries/tasks.ts';
import type { Job, Project, Task } from '../db/types.ts';
import type { CommitState } from '../forge/gitea-reports.ts';
import type { PullRequest } from '../forge/types.ts';
import type { WorkStage } from '../stages.ts';
import type { GateVerdict } from './transitions.ts';

export interface ForgeReportConfig {
  /** ORCH_PUBLIC_URL: the dashboard's base URL */
  publicUrl?: string | undefined;
}

type ReportTask = Pick<Task, 'id' | 'pr_number'>;
type ReportProject = Pick<Project, 'gitea_owner' | 'gitea_repo'>;

/** longest status description sent (Gitea stores TEXT; its UI shows one line) */
const DESCRIPTION_MAX = 140;
/** longest comment body taken from an artefact */
const COMMENT_MAX = 60_000;

function gateContext(stage: WorkStage): string {
  return `orch/${stage}`;
}

/** The task in the dashboard (`/#task=<id>` opens its drawer), or null without ORCH_PUBLIC_URL. */
export function taskUrl(publicUrl: string | undefined, taskId: number): string | null {
  return publicUrl ? `${publicUrl.replace(/\/+$/, '')}/#task=${taskId}` : null;
}

function clip(s: string, max: number): string {
  const one = s.replace(/\s+/g, ' ').trim();
  return one.length <= max ? one : `${one.slice(0, max - 1)}…`;
}

function target(task: ReportTask, project: ReportProject): { owner: string; repo: string; pr: number; orderKey: string } | null {
  if (!project.gitea_owner || !project.gitea_repo || task.pr_number === null) return null;
  return { owner: project.gitea_owner, repo: project.gitea_repo, pr: task.pr_number, orderKey: `${project.gitea_owner}/${project.gitea_repo}#${task.pr_number}` };
}

/**
 * A gate's commit status on the PR head (`sha`, else the branch head orch last pushed). Nothing
 * for a task without a Gitea pull request.
 */
async function reportGateStatus(
  tx: DbOrTx,
  cfg: ForgeReportConfig,
  task: ReportTask,
  project: ReportProject,
  s: { stage: WorkStage; state: CommitState; description: string; sha?: string | null },
): Promise<void> {
  const t = target(task, project);
  if (!t) return;
  const sha = s.sha ?? (await latestBranchSha(tx, task.id));
  if (!sha) return;
  await insertOutbox(tx, {
    taskId: task.id,
    kind: 'commit_status',
    orderKey: t.orderKey,
    payload: {
      owner: t.owner,
      repo: t.repo,
      pr: t.pr,
      sha,
      context: gateContext(s.stage),
      state: s.state,
      description: clip(s.description, DESCRIPTION_MAX),
      targetUrl: taskUrl(cfg.publicUrl, task.id),
    },
  });
}

/** A comment on the task's pull request. Nothing for a task without a Gitea pull request. */
async function reportPrComment(tx: DbOrTx, cfg: ForgeReportConfig, task: ReportTask, project: ReportProject, body: string): Promise<void> {
  const t = target(task, project);
  if (!t) return;
  const link = taskUrl(cfg.publicUrl, task.id);
  const footer = link ? `\n\n---\n[orch task ${task.id}](${link})` : `\n\n---\norch task ${task.id}`;
  await insertOutbox(tx, { taskId: task.id, kind: 'pr_comment', orderKey: t.orderKey, payload: { owner: t.owner, repo: t.repo, pr: t.pr, body: body + footer } });
}

function bounded(text: string): string {
  const t = text.trim();
  return t.length <= COMMENT_MAX ? t : `${t.slice(0, COMMENT_MAX)}\n\n… (cut at ${COMMENT_MAX} characters; the whole artefact is in orch)`;
}

/** The comment that opens a pull request's conversation: the analysis the work started from. Pure. */
export function analysisComment(analysis: string | null | undefined): string {
  if (!analysis || analysis.trim() === '') return '**orch: analysis**\n\n(no analysis artefact)';
  return `**orch: analysis**\n\n${bounded(analysis)}`;
}

/** A review as a comment: its verdict (the artefact's first line) and its text. Pure. */
export function reviewComment(review: string | null | undefined, round: number): string {
  const lines = (review ?? '').replace(/\r\n/g, '\n').split('\n');
  const first = lines[0]?.trim() ?? '';
  const m = /^VERDICT:\s*(APPROVE|REQUEST_CHANGES)\b/i.exec(first);
  const verdict = m ? m[1]!.toUpperCase() : 'none';
  const text = (m ? lines.slice(1) : lines).join('\n').trim();
  const title = `**orch: review${round > 0 ? ` (round ${round + 1})` : ''} — ${verdict === 'none' ? 'no verdict' : verdict}**`;
  return text ? `${title}\n\n${bounded(text)}` : title;
}

/** The pull request's description: the task's body and a link back to orch. Pure. */
export function pullRequestBody(task: Pick<Task, 'id' | 'body'>, cfg: ForgeReportConfig): string {
  const link = taskUrl(cfg.publicUrl, task.id);
  const footer = link ? `Opened by orch for [task ${task.id}](${link}).` : `Opened by orch for task ${task.id}.`;
  return task.body.trim() ? `${task.body.trim()}\n\n---\n${footer}` : footer;
}

/** A stage's job started: its gate is pending on the PR head. */
export async function reportJobStarted(db: DbOrTx, cfg: ForgeReportConfig, job: Pick<Job, 'stage' | 'attempt'>, task: ReportTask, project: ReportProject): Promise<void> {
  await reportGateStatus(db, cfg, task, project, { stage: job.stage, state: 'pending', description: `${job.stage} running (attempt ${job.attempt})` });
}

/**
 * A pull request was opened (or found) for the task after a push of `sha`: recorded on the task,
 * and in the same transaction, when it is new to the task, the analysis as its first comment; the
 * running stage's gate pending on the new head.
 */
export async function recordPullRequest(
  db: Db,
  cfg: ForgeReportConfig,
  task: Pick<Task, 'id' | 'pr_number'>,
  project: ReportProject,
  pr: PullRequest,
  o: { stage: WorkStage; sha: string | null; analysis: string | null | undefined },
): Promise<void> {
  // nothing to show on a local forge: just the one statement
  if (!project.gitea_owner || !project.gitea_repo) {
    await setTaskPullRequest(db, task.id, pr.number);
    return;
  }
  await db.transaction().execute(async (tx) => {
    const isNew = await setTaskPullRequest(tx, task.id, pr.number); // false: unchanged, or the task is finished
    if (!isNew && task.pr_number !== pr.number) return;
    const withPr = { id: task.id, pr_number: pr.number };
    if (isNew) await reportPrComment(tx, cfg, withPr, project, analysisComment(o.analysis));
    await reportGateStatus(tx, cfg, withPr, project, { stage: o.stage, state: 'pending', description: `${o.stage} gate being checked`, sha: o.sha ?? pr.headSha });
  });
}

const PASSED: Readonly<Record<WorkStage, string>> = {
  analysis: 'analysis done',
  implementation: 'commits ahead of base; the test command (if set) passed',
  review: 'review approved',
  merge: 'merged',
  deploy: 'deployed',
};

/**
 * The job was finalized or aborted (in the transaction that won its flip): the gate's status —
 * success, failure with the reason, error when cancelled — and for a review that reached a verdict,
 * the review as a comment.
 */
export async function reportJobFinished(
  tx: DbOrTx,
  cfg: ForgeReportConfig,
  a: { job: Pick<Job, 'id' | 'stage' | 'status' | 'reason'>; task: ReportTask & Pick<Task, 'review_rounds'>; project: ReportProject; verdict?: GateVerdict },
): Promise<void> {
  const { job, task, project, verdict } = a;
  if (!project.gitea_owner || task.pr_number === null) return;
  let state: CommitState;
  let description: string;
  if (job.status === 'cancelled') {
    state = 'error';
    description = `cancelled${job.reason ? ` (${job.reason})` : ''}`;
  } else if (verdict?.verdict === 'pass') {
    state = 'success';
    description = PASSED[job.stage];
  } else {
    state = 'failure';
    description = job.reason ?? (verdict ? verdict.reason : 'failed');
  }
  await reportGateStatus(tx, cfg, task, project, { stage: job.stage, state, description });
  if (job.stage === 'review' && verdict && verdict.verdict !== 'fail') {
    const review = await getJobArtefact(tx, job.id, 'review.md');
    await reportPrComment(tx, cfg, task, project, reviewComment(review?.content, task.review_rounds));
  }
}
