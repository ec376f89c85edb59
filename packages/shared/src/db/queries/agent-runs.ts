import { sql } from 'kysely';
import type { DbOrTx } from '../client.ts';
import type { AgentRun } from '../types.ts';

export async function startAgentRun(
  db: DbOrTx,
  r: { jobId: number; agent: string; host: string; pid: number | null },
): Promise<AgentRun> {
  return db
    .insertInto('agent_runs')
    .values({ job_id: r.jobId, agent: r.agent, host: r.host, pid: r.pid })
    .returningAll()
    .executeTakeFirstOrThrow();
}

/**
 * Written the moment the agent exits, before push/PR/comments: from here on the job's outcome
 * is known and only the reaper's Tier 2 (after the finalize grace) may act on it.
 */
export async function recordAgentExit(
  db: DbOrTx,
  runId: number,
  r: {
    exitCode: number;
    signal: string | null;
    costUsd: number | null;
    tokensIn: number | null;
    tokensOut: number | null;
    logTail: string;
    error: string | null;
  },
): Promise<void> {
  await db
    .updateTable('agent_runs')
    .set({
      exit_code: r.exitCode,
      signal: r.signal,
      finished_at: sql`now()`,
      cost_usd: r.costUsd,
      tokens_in: r.tokensIn,
      tokens_out: r.tokensOut,
      log_tail: r.logTail,
      error: r.error,
    })
    .where('id', '=', runId)
    .where('exit_code', 'is', null)
    .execute();
}

export async function getJobRun(db: DbOrTx, jobId: number): Promise<AgentRun | undefined> {
  return db.selectFrom('agent_runs').selectAll().where('job_id', '=', jobId).executeTakeFirst();
}

export async function listTaskRuns(db: DbOrTx, taskId: number): Promise<AgentRun[]> {
  return db
    .selectFrom('agent_runs')
    .innerJoin('jobs', 'jobs.id', 'agent_runs.job_id')
    .selectAll('agent_runs')
    .where('jobs.task_id', '=', taskId)
    .orderBy('agent_runs.id')
    .execute();
}
