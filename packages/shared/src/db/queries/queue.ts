/** The `GET /queue` snapshot (and `orch status`): one read of everything an operator asks first. */
import { sql } from 'kysely';
import type { DbOrTx } from '../client.ts';
import type { JobStatus, WorkStage } from '../../stages.ts';
import { countJobsByStatus } from './jobs.ts';
import { listActiveWorkers } from './workers.ts';
import { listLeases } from './merge-leases.ts';
import { stageIsLive } from './terminal.ts';

export interface QueueSnapshot {
  jobs: {
    counts: Record<JobStatus, number>;
    running: Array<{
      id: number;
      task_id: number;
      stage: WorkStage;
      attempt: number;
      worker_id: string | null;
      host: string | null;
      pid: number | null;
      started_at: Date;
      heartbeat_at: Date | null;
      finished_age_s: number | null;
    }>;
  };
  workers: Awaited<ReturnType<typeof listActiveWorkers>>;
  /** what an operator must know first: workers whose agents run unsandboxed, one line per host */
  warnings: string[];
  reaper: {
    enabled: boolean;
    leader: string | null;
    last_tick_at: Date | null;
    interval_s: number;
    reaped: { dead_owner: number; known_outcome: number; max_running: number };
    lease_reclaims: number;
    last_error: string | null;
  };
  stop: { enabled: boolean; pending: number[]; deferred: number[]; completed_total: number; last_error: string | null };
  merge: { leases: Array<{ project: string; job_id: number; backend_pid: number; acquired_at: Date; age_s: number }> };
}

export async function queueSnapshot(
  db: DbOrTx,
  settings: { reaperEnabled: boolean; reaperIntervalS: number; stopEnabled: boolean },
): Promise<QueueSnapshot> {
  const counts = await countJobsByStatus(db);
  const running = await sql<QueueSnapshot['jobs']['running'][number]>`
    SELECT j.id, j.task_id, j.stage, j.attempt, j.worker_id, j.host, j.pid, j.started_at, j.heartbeat_at,
           CASE WHEN r.exit_code IS NOT NULL
                THEN round(extract(epoch FROM now() - r.finished_at)::numeric, 3)::float8 END AS finished_age_s
    FROM jobs j LEFT JOIN agent_runs r ON r.job_id = j.id
    WHERE j.status = 'running'
    ORDER BY j.started_at
  `.execute(db);
  const workers = await listActiveWorkers(db);
  // A leader row whose ticks stopped (the process died) is not a leader any more; its age is the
  // database's, so a host whose clock is off judges it the same as any other.
  const reaperRows = await db
    .selectFrom('reaper_state')
    .selectAll()
    .select(sql<boolean>`last_tick_at IS NOT NULL AND now() - last_tick_at < make_interval(secs => 3 * interval_s + 1)`.as('ticking'))
    .orderBy('updated_at', 'desc')
    .execute();
  const fresh = (r: (typeof reaperRows)[number]) => r.ticking;
  const leader = reaperRows.find((r) => r.is_leader && fresh(r)) ?? null;
  const sum = (k: 'reaped_dead_owner' | 'reaped_known_outcome' | 'reaped_max_running' | 'lease_reclaims') =>
    reaperRows.reduce((n, r) => n + Number(r[k]), 0);
  const lastError = reaperRows.filter((r) => r.last_error_at).sort((a, b) => b.last_error_at!.getTime() - a.last_error_at!.getTime())[0];
  const cancels = await sql<{ id: number; critical: boolean }>`
    SELECT id, critical_started_at IS NOT NULL AS critical FROM tasks
    WHERE cancel_requested_at IS NOT NULL AND cancelled_at IS NULL AND ${stageIsLive('stage')}
    ORDER BY id
  `.execute(db);
  const cancelled = await sql<{ n: number }>`SELECT count(*)::int AS n FROM tasks WHERE stage = 'cancelled'`.execute(db);
  const cancelError = await db
    .selectFrom('task_events')
    .select(['reason'])
    .where('kind', '=', 'cancel_error')
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
  const leases = await listLeases(db);
  return {
    jobs: { counts, running: running.rows },
    workers,
    warnings: [...new Set(workers.filter((w) => w.isolation?.warning).map((w) => `${w.host}: ${w.isolation!.warning}`))],
    reaper: {
      enabled: settings.reaperEnabled,
      leader: leader ? `${leader.host}:${leader.pid}` : null,
      last_tick_at: leader?.last_tick_at ?? reaperRows[0]?.last_tick_at ?? null,
      interval_s: settings.reaperIntervalS,
      reaped: { dead_owner: sum('reaped_dead_owner'), known_outcome: sum('reaped_known_outcome'), max_running: sum('reaped_max_running') },
      lease_reclaims: sum('lease_reclaims'),
      last_error: lastError?.last_error ?? null,
    },
    stop: {
      enabled: settings.stopEnabled,
      pending: cancels.rows.filter((c) => !c.critical).map((c) => c.id),
      deferred: cancels.rows.filter((c) => c.critical).map((c) => c.id),
      completed_total: cancelled.rows[0]?.n ?? 0,
      last_error: cancelError?.reason ?? null,
    },
    merge: {
      leases: leases.map((l) => ({ project: l.project, job_id: l.job_id, backend_pid: l.backend_pid, acquired_at: l.acquired_at, age_s: l.age_s })),
    },
  };
}
