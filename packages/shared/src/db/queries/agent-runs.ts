import { sql } from 'kysely';
import type { DbOrTx } from '../client.ts';
import type { CostSource } from '../../agents/monitor.ts';
import type { TranscriptEntry } from '../../agents/transcript.ts';
import type { FailureClass } from '../../pipeline/failures.ts';
import type { AgentRun } from '../types.ts';

export async function startAgentRun(
  db: DbOrTx,
  r: { jobId: number; agent: string; host: string; pid: number | null; resumedSessionId?: string | null },
): Promise<AgentRun> {
  return db
    .insertInto('agent_runs')
    .values({ job_id: r.jobId, agent: r.agent, host: r.host, pid: r.pid, resumed_session_id: r.resumedSessionId ?? null })
    .returningAll()
    .executeTakeFirstOrThrow();
}

/**
 * A resumed run whose session was gone exited before doing anything: its row is taken over by
 * the fresh run that replaces it (one run per job), before that exit was ever recorded.
 */
export async function restartAgentRun(db: DbOrTx, runId: number, pid: number | null): Promise<void> {
  await db
    .updateTable('agent_runs')
    .set({ pid, resumed_session_id: null, session_id: null, transcript: '[]', started_at: sql`now()` })
    .where('id', '=', runId)
    .where('exit_code', 'is', null)
    .execute();
}

/** While the agent runs: its transcript so far and its session (for `orch logs --follow` and the dashboard). */
export async function recordRunProgress(db: DbOrTx, runId: number, p: { sessionId: string | null; transcript: TranscriptEntry[] }): Promise<void> {
  await db
    .updateTable('agent_runs')
    .set({ session_id: p.sessionId, transcript: JSON.stringify(p.transcript) })
    .where('id', '=', runId)
    .where('exit_code', 'is', null)
    .execute();
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
    sessionId?: string | null;
    lastMessage?: string | null;
    failureCode?: string | null;
    failureClass?: FailureClass | null;
    costSource?: CostSource | null;
    transcript?: TranscriptEntry[];
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
      session_id: r.sessionId ?? null,
      last_message: r.lastMessage ?? null,
      failure_code: r.failureCode ?? null,
      failure_class: r.failureClass ?? null,
      cost_source: r.costSource ?? null,
      transcript: JSON.stringify(r.transcript ?? []),
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

export interface ResumableSession {
  sessionId: string;
  /** what the session's earlier runs reported, summed: its counters are cumulative */
  baseline: { costUsd: number; tokensIn: number; tokensOut: number };
}

/**
 * The session of the latest run of this task's stage, if that run was on this host, by this agent,
 * and recorded one — with what every run of that session reported so far (a resumed session's cost and tokens
 * are cumulative, so the next run subtracts them).
 */
export async function resumableSession(
  db: DbOrTx,
  q: { taskId: number; stage: string; host: string; agent: string; beforeJobId: number },
): Promise<ResumableSession | null> {
  const r = await sql<{ session_id: string; cost: string | null; tin: string | null; tout: string | null }>`
    WITH last AS (
      SELECT r.session_id, r.host, r.agent FROM agent_runs r JOIN jobs j ON j.id = r.job_id
      WHERE j.task_id = ${q.taskId} AND j.stage = ${q.stage} AND j.id < ${q.beforeJobId} AND r.finished_at IS NOT NULL
      ORDER BY r.id DESC LIMIT 1
    )
    SELECT last.session_id, sum(r.cost_usd) AS cost, sum(r.tokens_in) AS tin, sum(r.tokens_out) AS tout
    FROM last JOIN agent_runs r ON r.session_id = last.session_id
    JOIN jobs j ON j.id = r.job_id AND j.task_id = ${q.taskId}
    WHERE last.session_id IS NOT NULL AND last.host = ${q.host} AND last.agent = ${q.agent}
    GROUP BY last.session_id
  `.execute(db);
  const row = r.rows[0];
  if (!row) return null;
  return { sessionId: row.session_id, baseline: { costUsd: Number(row.cost ?? 0), tokensIn: Number(row.tin ?? 0), tokensOut: Number(row.tout ?? 0) } };
}
