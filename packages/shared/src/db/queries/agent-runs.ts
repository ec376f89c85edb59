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

/**
 * Of the given jobs (the job ids found in live processes' environments), those that are no
 * longer running, with the agent pid recorded for them on this host. Bounded by the live
 * processes, not by history.
 */
export async function agentPidsOfFinishedJobs(db: DbOrTx, host: string, jobIds: number[]): Promise<Array<{ job_id: number; pid: number }>> {
  if (jobIds.length === 0) return [];
  const r = await sql<{ job_id: number; pid: number }>`
    SELECT r.job_id, r.pid FROM agent_runs r JOIN jobs j ON j.id = r.job_id
    WHERE r.job_id = ANY(${jobIds}::bigint[]) AND r.host = ${host} AND r.pid IS NOT NULL AND j.status <> 'running'
  `.execute(db);
  return r.rows.map((row) => ({ job_id: Number(row.job_id), pid: Number(row.pid) }));
}
