import type { DbOrTx } from '../db/client.ts';
import type { Job } from '../db/types.ts';
import { insertQueuedJob } from '../db/queries/jobs.ts';
import { sendDispatch, type Boss } from '../queue.ts';
import type { WorkStage } from '../stages.ts';

/**
 * Insert a queued job and its wake token, in the caller's transaction. `preferredHost`: the host
 * that ran the task's previous job and holds its worktree (stage affinity, ORCH_AFFINITY_WAIT_MS);
 * the wake names it, so workers of other hosts look again once the wait is over.
 */
export async function enqueueJob(
  tx: DbOrTx,
  boss: Boss,
  j: { taskId: number; stage: WorkStage; attempt: number; delayS?: number; preferredHost?: string | null },
): Promise<Job> {
  const job = await insertQueuedJob(tx, j);
  const startAfter = j.delayS && j.delayS > 0 ? new Date(Date.now() + j.delayS * 1000) : undefined;
  await sendDispatch(boss, tx, { jobId: job.id, reason: 'enqueued', startAfter, preferredHost: job.preferred_host });
  return job;
}
