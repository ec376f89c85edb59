/**
 * What `GET /metrics` reports, read from Postgres at scrape time: any api instance answers the
 * fleet's truth, and a restart loses nothing. Counters are sums over rows that are never deleted
 * (jobs, agent_runs, tasks, webhook_deliveries, reaper_state), so they only go up.
 */
import { sql, type RawBuilder } from 'kysely';
import type { DbOrTx } from '../client.ts';
import { stageIsLive } from './terminal.ts';

export interface LabelledCount {
  labels: Record<string, string>;
  value: number;
}

/** A histogram per label set: `buckets[i]` counts observations ≤ `bounds[i]` (cumulative). */
export interface HistogramRow {
  labels: Record<string, string>;
  buckets: number[];
  count: number;
  sum: number;
}

export async function jobsByStatusAndStage(db: DbOrTx): Promise<LabelledCount[]> {
  const r = await sql<{ status: string; stage: string; n: number }>`
    SELECT status, stage, count(*)::int AS n FROM jobs GROUP BY status, stage ORDER BY status, stage
  `.execute(db);
  return r.rows.map((x) => ({ labels: { status: x.status, stage: x.stage }, value: x.n }));
}

export async function tasksByStage(db: DbOrTx): Promise<LabelledCount[]> {
  const r = await sql<{ stage: string; n: number }>`
    SELECT stage, count(*)::int AS n FROM tasks GROUP BY stage ORDER BY stage
  `.execute(db);
  return r.rows.map((x) => ({ labels: { stage: x.stage }, value: x.n }));
}

/** Queued jobs: all of them, and those whose backoff has passed (claimable now). */
export async function queueDepth(db: DbOrTx): Promise<{ queued: number; ready: number; blocked_tasks: number }> {
  const r = await sql<{ queued: number; ready: number; blocked_tasks: number }>`
    SELECT count(*)::int AS queued,
           count(*) FILTER (WHERE run_after <= now())::int AS ready,
           (SELECT count(*)::int FROM tasks WHERE blocked_at IS NOT NULL AND ${stageIsLive('stage')}) AS blocked_tasks
    FROM jobs WHERE status = 'queued'
  `.execute(db);
  return r.rows[0]!;
}

export async function workerCounts(db: DbOrTx, staleAfterS: number): Promise<{ alive: number; stale: number }> {
  const r = await sql<{ alive: number; stale: number }>`
    SELECT count(*) FILTER (WHERE heartbeat_at >= now() - make_interval(secs => ${staleAfterS}))::int AS alive,
           count(*) FILTER (WHERE heartbeat_at < now() - make_interval(secs => ${staleAfterS}))::int AS stale
    FROM workers WHERE stopped_at IS NULL
  `.execute(db);
  return r.rows[0]!;
}

/** Cumulative buckets of `value` per `label` over the rows of `source` (columns: label, value). */
async function histogram(db: DbOrTx, source: RawBuilder<unknown>, bounds: readonly number[], labelName: string | null): Promise<HistogramRow[]> {
  // idx = how many bounds lie below the value = the first bucket whose bound is ≥ the value
  const r = await sql<{ label: string; idx: number; n: number; total: number }>`
    WITH src AS (${source}),
         b AS (SELECT ${sql.val([...bounds])}::float8[] AS bounds)
    SELECT s.label, (SELECT count(*) FROM unnest(b.bounds) AS x WHERE x < s.value)::int AS idx,
           count(*)::int AS n, sum(s.value)::float8 AS total
    FROM src s CROSS JOIN b
    GROUP BY 1, 2
  `.execute(db);
  const byLabel = new Map<string, HistogramRow>();
  for (const row of r.rows) {
    let h = byLabel.get(row.label);
    if (!h) {
      h = { labels: labelName ? { [labelName]: row.label } : {}, buckets: bounds.map(() => 0), count: 0, sum: 0 };
      byLabel.set(row.label, h);
    }
    // an observation in bucket idx is ≤ every bound from idx on
    for (let i = row.idx; i < bounds.length; i++) h.buckets[i]! += row.n;
    h.count += row.n;
    h.sum += row.total;
  }
  return [...byLabel.values()].sort((a, b) => JSON.stringify(a.labels).localeCompare(JSON.stringify(b.labels)));
}

/** Claim time − run_after of every job a worker has claimed, by stage. */
export function dispatchLatency(db: DbOrTx, bounds: readonly number[]): Promise<HistogramRow[]> {
  return histogram(
    db,
    sql`SELECT stage AS label, greatest(0, extract(epoch FROM started_at - run_after))::float8 AS value
        FROM jobs WHERE started_at IS NOT NULL`,
    bounds,
    'stage',
  );
}

/** finished − started of every finished job that ran, by stage. */
export function stageDuration(db: DbOrTx, bounds: readonly number[]): Promise<HistogramRow[]> {
  return histogram(
    db,
    sql`SELECT stage AS label, greatest(0, extract(epoch FROM finished_at - started_at))::float8 AS value
        FROM jobs WHERE started_at IS NOT NULL AND finished_at IS NOT NULL`,
    bounds,
    'stage',
  );
}

/** cancelled_at − cancel_requested_at of every cancelled task. */
export function stopLatency(db: DbOrTx, bounds: readonly number[]): Promise<HistogramRow[]> {
  return histogram(
    db,
    sql`SELECT '' AS label, greatest(0, extract(epoch FROM cancelled_at - cancel_requested_at))::float8 AS value
        FROM tasks WHERE cancelled_at IS NOT NULL AND cancel_requested_at IS NOT NULL`,
    bounds,
    null,
  );
}

export async function agentTotals(
  db: DbOrTx,
): Promise<Array<{ agent: string; runs: number; cost_usd: number; tokens_in: number; tokens_out: number }>> {
  const r = await sql<{ agent: string; runs: number; cost_usd: number; tokens_in: number; tokens_out: number }>`
    SELECT agent, count(*)::int AS runs, coalesce(sum(cost_usd), 0)::float8 AS cost_usd,
           coalesce(sum(tokens_in), 0)::float8 AS tokens_in, coalesce(sum(tokens_out), 0)::float8 AS tokens_out
    FROM agent_runs GROUP BY agent ORDER BY agent
  `.execute(db);
  return r.rows;
}

/** Reaper actions summed over every reaper process that ever ticked. */
export async function reaperTotals(
  db: DbOrTx,
): Promise<{ dead_owner: number; known_outcome: number; max_running: number; lease_reclaim: number; cancel_completed: number }> {
  const r = await sql<{ dead_owner: number; known_outcome: number; max_running: number; lease_reclaim: number; cancel_completed: number }>`
    SELECT coalesce(sum(reaped_dead_owner), 0)::float8 AS dead_owner,
           coalesce(sum(reaped_known_outcome), 0)::float8 AS known_outcome,
           coalesce(sum(reaped_max_running), 0)::float8 AS max_running,
           coalesce(sum(lease_reclaims), 0)::float8 AS lease_reclaim,
           coalesce(sum(cancels_completed), 0)::float8 AS cancel_completed
    FROM reaper_state
  `.execute(db);
  return r.rows[0]!;
}

/** STOP bookkeeping: cancelled tasks, cancels waiting (pending / deferred by a critical window). */
export async function stopCounts(db: DbOrTx): Promise<{ cancelled: number; pending: number; deferred: number }> {
  const r = await sql<{ cancelled: number; pending: number; deferred: number }>`
    SELECT count(*) FILTER (WHERE stage = 'cancelled')::int AS cancelled,
           count(*) FILTER (WHERE cancel_requested_at IS NOT NULL AND cancelled_at IS NULL
                            AND ${stageIsLive('stage')} AND critical_started_at IS NULL)::int AS pending,
           count(*) FILTER (WHERE cancel_requested_at IS NOT NULL AND cancelled_at IS NULL
                            AND ${stageIsLive('stage')} AND critical_started_at IS NOT NULL)::int AS deferred
    FROM tasks
  `.execute(db);
  return r.rows[0]!;
}

export async function webhookOutcomes(db: DbOrTx): Promise<LabelledCount[]> {
  const r = await sql<{ outcome: string; n: number }>`
    SELECT outcome, count(*)::int AS n FROM webhook_deliveries GROUP BY outcome ORDER BY outcome
  `.execute(db);
  return r.rows.map((x) => ({ labels: { outcome: x.outcome }, value: x.n }));
}

export async function mergeLeasesHeld(db: DbOrTx): Promise<number> {
  const r = await sql<{ n: number }>`SELECT count(*)::int AS n FROM merge_leases`.execute(db);
  return r.rows[0]!.n;
}
