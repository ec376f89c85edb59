/**
 * The merge step: one merge per project at a time, under a session advisory lock held by a
 * dedicated connection of this worker (it dies with the session, so a crashed worker never
 * keeps it). Idempotent on re-drive: a merged PR, or one whose head is already contained in
 * base (the merge landed but was never recorded), is recorded as merged (`pr_already_merged`)
 * before any branch update; an up-to-date branch skips the update. Never force-pushes; base only
 * moves through the forge's merge. The merge call itself is the critical window: a cancel waits
 * for it.
 */
import { releaseMergeLock, tryMergeLock } from '@orch/shared/db/queries/advisory-locks';
import { appendEvent } from '@orch/shared/db/queries/events';
import { clearLease, recordLease } from '@orch/shared/db/queries/merge-leases';
import { latestStageArtefact } from '@orch/shared/db/queries/artefacts';
import { enterCriticalWindow, getTask, leaveCriticalWindow, recordMergedSha } from '@orch/shared/db/queries/tasks';
import { pullRequestBody, recordPullRequest } from '@orch/shared/pipeline/forge-report';
import type { PullRequest } from '@orch/shared/forge/types';
import type { MergeConflict } from '@orch/shared/gates/index';
import { conflictingFiles, syncMirror, type ProjectRepo } from '@orch/shared/host/git';
import type { Logger } from '@orch/shared/runtime/logger';
import { StepStopped, type Step, type StepInput } from '../job-handle.ts';

const LOCK_POLL_MS = 200;
const MAX_OUT_OF_DATE_RETRIES = 3;

/** The job's reason for a merge whose push the server refused (prefix `push_rejected:`). */
function pushRejectedReason(forgeKind: 'local' | 'gitea', message: string): string {
  const server = forgeKind === 'gitea' ? 'the Gitea server' : 'the git server';
  const detail = message.trim() ? `: ${message.trim()}` : ' (it gave no message)';
  return `push_rejected: ${server} rejected the merge push (a hook or branch protection)${detail}`.slice(0, 1000);
}

export const mergeStep: Step = async (ctx, rj, s) => {
  const { svc, workerId } = ctx;
  const { project, forge, log } = s;
  const job = rj.job;
  const actor = `worker:${workerId}`;
  const client = await svc.pool.connect();
  let locked = false;
  try {
    while (!(await tryMergeLock(client, project.id))) {
      rj.checkpoint();
      await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
    }
    locked = true;
    await recordLease(client, { projectId: project.id, jobId: job.id, workerId });
    log.info('merge lease acquired');

    for (let round = 0; ; round++) {
      rj.checkpoint();
      const task = (await getTask(svc.db, job.task_id))!;
      if (task.merged_sha) return { criticalStepRan: true };
      let pr: PullRequest | null = task.pr_number !== null ? await forge.getPullRequest(task.pr_number) : null;
      if (!pr || pr.state === 'closed') {
        pr = await forge.ensurePullRequest({ head: task.branch!, base: project.base_branch, title: task.title, body: pullRequestBody(task, svc.config.api), taskId: task.id });
        const analysis = await latestStageArtefact(svc.db, task.id, 'analysis');
        await recordPullRequest(svc.db, svc.config.api, task, project, pr, { stage: job.stage, sha: pr.headSha, analysis: analysis?.content });
      }
      if (pr.state === 'merged') {
        await recordMergedSha(svc.db, task.id, pr.mergedSha);
        await appendEvent(svc.db, { taskId: task.id, jobId: job.id, kind: 'pr_already_merged', actor, data: { pr: pr.number, sha: pr.mergedSha } });
        return { criticalStepRan: true };
      }

      // Before any branch update: a head already on base was merged — by a worker that died after
      // the forge's push, before recording it, or by hand. Updating it would merge it twice.
      const onBase = await forge.mergedOnBase(pr);
      if (onBase) {
        await recordMergedSha(svc.db, task.id, onBase);
        await appendEvent(svc.db, {
          taskId: task.id,
          jobId: job.id,
          kind: 'pr_already_merged',
          actor,
          reason: 'head_on_base',
          data: { pr: pr.number, sha: onBase },
        });
        log.info({ sha: onBase, pr: pr.number }, 'pull request head already on base: recorded as merged');
        return { criticalStepRan: true };
      }

      const upd = await forge.updateBranch(pr);
      if (upd.kind === 'conflict') return { report: { mergeConflict: await describeConflict(svc.config.worktreeRoot, s, pr, upd.message, log) } };
      if (upd.kind === 'updated') {
        await appendEvent(svc.db, { taskId: task.id, jobId: job.id, kind: 'branch_updated', actor, data: { sha: upd.sha } });
        pr = (await forge.getPullRequest(pr.number))!;
      }
      if (!pr.headSha) return {};
      rj.checkpoint();

      rj.critical = true;
      if (!(await enterCriticalWindow(svc.db, task.id))) {
        rj.critical = false;
        throw new StepStopped('cancel');
      }
      let result;
      try {
        result = await forge.mergePullRequest(pr, { headSha: pr.headSha, message: `Merge ${pr.head} (orch task ${task.id}): ${task.title}` });
      } catch (err) {
        // Unknown outcome: leave the window; the gate reads the forge's truth.
        await leaveCriticalWindow(svc.db, task.id);
        rj.critical = false;
        throw err;
      }
      if (result.kind === 'merged' || result.kind === 'already_merged') {
        await leaveCriticalWindow(svc.db, task.id, { mergedSha: result.sha });
        rj.critical = false;
        await appendEvent(svc.db, {
          taskId: task.id,
          jobId: job.id,
          kind: result.kind === 'merged' ? 'pr_merged' : 'pr_already_merged',
          actor,
          data: { pr: pr.number, sha: result.sha },
        });
        log.info({ sha: result.sha, pr: pr.number }, 'merged');
        return { criticalStepRan: true };
      }
      await leaveCriticalWindow(svc.db, task.id);
      rj.critical = false;
      if (result.kind === 'conflict') return { report: { mergeConflict: await describeConflict(svc.config.worktreeRoot, s, pr, result.message, log) } };
      if (result.kind === 'push_rejected') {
        // A hook or branch protection refused the push to base: updating the branch and trying
        // again would be refused the same way. The job fails with the server's words.
        const reason = pushRejectedReason(forge.kind, result.message);
        await appendEvent(svc.db, { taskId: task.id, jobId: job.id, kind: 'merge_refused', actor, reason: 'push_rejected', data: { message: result.message } });
        log.warn({ message: result.message }, 'merge push rejected by the server');
        return { report: { mergeRefused: reason } };
      }
      if (result.kind === 'out_of_date' && round < MAX_OUT_OF_DATE_RETRIES) {
        log.info({ message: result.message }, 'merge out of date; updating and retrying');
        continue;
      }
      await appendEvent(svc.db, { taskId: task.id, jobId: job.id, kind: 'merge_refused', actor, reason: result.kind, data: { message: result.message } });
      return { report: { mergeRefused: `${result.kind}: ${result.message}` } };
    }
  } finally {
    if (locked) {
      await clearLease(client, project.id, job.id).catch(() => {});
      await releaseMergeLock(client, project.id).catch(() => {});
    }
    client.release();
  }
};

/** The conflict with the files it touches, for the next implementation's prompt (the mirror is re-fetched first). */
async function describeConflict(root: string, s: StepInput, pr: PullRequest, message: string, log: Logger): Promise<MergeConflict> {
  let files: string[] = [];
  try {
    const repo: ProjectRepo = await syncMirror(root, s.project.slug, s.forge.remoteUrl);
    files = await conflictingFiles(repo, pr.head, pr.base);
  } catch (err) {
    log.warn({ err }, 'could not list the conflicting files');
  }
  return { message, files, base: pr.base, head: pr.head };
}
