/**
 * The reaper: a liveness daemon. Any number may run; one leader acts per tick (a session
 * advisory lock on a dedicated connection — if the leader dies, its session ends, the lock is
 * free, and another reaper takes over on its next tick). Each unit of work is never-raise.
 * Its only mutating write on jobs is the atomic terminal flip `WHERE status = 'running'`.
 */
import pg from 'pg';
import { completeCancel } from '@orch/shared/cancel';
import { tryLeaderLock } from '@orch/shared/db/queries/advisory-locks';
import { runningJobFacts } from '@orch/shared/db/queries/jobs';
import { listLeases, reclaimLease } from '@orch/shared/db/queries/merge-leases';
import { getProject } from '@orch/shared/db/queries/projects';
import { clearStreaks, saveReaperState, setStreak, type ReaperCounters } from '@orch/shared/db/queries/reaper-state';
import { branchesToSweep, leaveCriticalWindow, orphanedCriticalWindows, pendingCancels, projectsWithSerialWaiters } from '@orch/shared/db/queries/tasks';
import { appendEvent } from '@orch/shared/db/queries/events';
import type { Logger } from '@orch/shared/runtime/logger';
import { abortJob, finalizeJob } from '@orch/shared/pipeline/finalize';
import { promoteDependents, promoteSerial } from '@orch/shared/pipeline/apply';
import { removeFeatureBranch } from '@orch/shared/pipeline/branches';
import { processAlive } from '@orch/shared/host/process-group';
import { decideTier, leaseIsStale } from '@orch/shared/reaper/tiers';
import type { Services } from '@orch/shared/runtime/services';
import { killOrphanAgents } from '@orch/shared/host/orphans';
import { sweepWorktrees } from '@orch/shared/host/janitor';

export interface TickReport extends ReaperCounters {
  leader: boolean;
  errors: string[];
}

export interface Reaper {
  readonly id: string;
  tick(): Promise<TickReport>;
  start(): void;
  stop(): Promise<void>;
}

export function createReaper(opts: { svc: Services; connectionString: string; log: Logger }): Reaper {
  const { svc } = opts;
  const cfg = svc.config;
  const id = `${cfg.hostId}:${process.pid}`;
  const actor = `reaper:${id}`;
  const log = opts.log.child({ reaper: id });
  let leaderClient: pg.Client | null = null;
  let timer: NodeJS.Timeout | null = null;
  let ticking: Promise<TickReport> | null = null;
  let stopped = false;

  async function ensureLeader(): Promise<boolean> {
    if (leaderClient) {
      try {
        await leaderClient.query('SELECT 1');
        return true;
      } catch {
        leaderClient.end().catch(() => {});
        leaderClient = null;
      }
    }
    const c = new pg.Client({ connectionString: opts.connectionString, application_name: 'orch-reaper-leader' });
    c.on('error', () => {
      if (leaderClient === c) leaderClient = null;
    });
    await c.connect();
    let ok = false;
    try {
      ok = await tryLeaderLock(c);
    } finally {
      // a follower (or a failed attempt) must not keep a connection per tick
      if (!ok) await c.end().catch(() => {});
    }
    if (!ok) return false;
    leaderClient = c;
    log.info('reaper is leader');
    return true;
  }

  async function runTick(): Promise<TickReport> {
    const report: TickReport = { leader: false, errors: [], dead_owner: 0, known_outcome: 0, max_running: 0, lease_reclaims: 0, cancels_completed: 0 };
    const unit = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        const msg = `${what}: ${(err as Error)?.message ?? String(err)}`;
        report.errors.push(msg);
        log.error({ err, unit: what }, 'reaper unit failed');
      }
    };

    await unit('leader', async () => {
      report.leader = await ensureLeader();
    });
    if (report.leader) {
      await unit('tiers', () => tiers(report, unit));
      // pending cancels complete even with STOP disabled: the switch only closes the entry points
      await unit('cancels', () => cancels(report, unit));
      await unit('critical windows', () => criticalWindows(unit));
      if (cfg.reaper.leaseReclaimEnabled) await unit('merge leases', () => leases(report, unit));
      await unit('promotions', () => promotions(unit));
      await unit('branch sweep', async () => {
        // Feature branches of finished tasks whose deletion was never recorded (e.g. a task
        // finalized by Tier 2, or a worker that died right after the merge).
        for (const t of await branchesToSweep(svc.db)) {
          const project = await getProject(svc.db, t.project_id);
          if (project) await unit(`branch ${t.branch}`, () => removeFeatureBranch(svc, t, project, actor));
        }
      });
    }
    // The janitor works on this host's files and processes: every reaper runs it.
    await unit('janitor', async () => {
      const removed = await sweepWorktrees(svc.db, cfg.worktreeRoot);
      const killed = await killOrphanAgents(svc.db, cfg.hostId);
      if (removed || killed) log.info({ worktreesRemoved: removed, orphansKilled: killed }, 'janitor');
    });
    await unit('state', () =>
      saveReaperState(svc.db, {
        id,
        host: cfg.hostId,
        pid: process.pid,
        isLeader: report.leader,
        intervalS: cfg.reaper.intervalS,
        add: report,
        error: report.errors.length ? report.errors.join('; ').slice(0, 2000) : null,
      }),
    );
    return report;
  }

  type Unit = (what: string, fn: () => Promise<unknown>) => Promise<void>;

  async function tiers(report: TickReport, unit: Unit): Promise<void> {
    const rows = await runningJobFacts(svc.db);
    const suspects: number[] = [];
    for (const row of rows) {
      await unit(`job ${row.id}`, async () => {
        const sameHost = row.owner_host === cfg.hostId;
        const decision = decideTier(
          {
            ownerHeartbeatAgeS: row.owner_hb_age_s,
            ownerStopped: row.owner_stopped,
            ownerSameHost: sameHost,
            ownerPidAlive: sameHost && row.owner_pid !== null ? processAlive(row.owner_pid) : null,
            runningForS: row.running_for_s,
            exitRecordedAgoS: row.exit_age_s,
            streak: row.streak,
          },
          {
            heartbeatTimeoutS: cfg.heartbeat.timeoutS,
            deadTicks: cfg.reaper.deadTicks,
            maxRunningS: cfg.reaper.maxRunningS,
            finalizeGraceS: cfg.reaper.finalizeGraceS,
          },
        );
        const jlog = log.child({ jobId: row.id, taskId: row.task_id, stage: row.stage });
        switch (decision.action) {
          case 'suspect':
            suspects.push(row.id);
            await setStreak(svc.db, row.id, decision.streak);
            return;
          case 'dead_owner': {
            const r = await abortJob(svc, row.id, actor, { reason: 'dead_owner' });
            if (r.kind === 'aborted') {
              report.dead_owner++;
              jlog.warn({ worker: row.worker_id }, 'tier 1: dead owner, job failed');
            }
            return;
          }
          case 'known_outcome': {
            const r = await finalizeJob(svc, row.id, actor);
            if (r.kind === 'finalized') {
              report.known_outcome++;
              jlog.warn({ verdict: r.verdict }, 'tier 2: known outcome, finalized by the reaper');
            }
            return;
          }
          case 'max_running': {
            const r = await abortJob(svc, row.id, actor, { reason: 'max_running' });
            if (r.kind === 'aborted') {
              report.max_running++;
              jlog.warn({ runningForS: row.running_for_s }, 'tier 3: max running, job failed');
            }
            return;
          }
          default:
            return;
        }
      });
    }
    await clearStreaks(svc.db, suspects);
  }

  async function cancels(report: TickReport, unit: Unit): Promise<void> {
    for (const task of await pendingCancels(svc.db)) {
      await unit(`cancel ${task.id}`, async () => {
        try {
          if ((await completeCancel(svc, task.id, actor)) === 'completed') report.cancels_completed++;
        } catch (err) {
          await appendEvent(svc.db, { taskId: task.id, kind: 'cancel_error', actor, reason: String((err as Error).message).slice(0, 500) }).catch(() => {});
          throw err;
        }
      });
    }
  }

  async function criticalWindows(unit: Unit): Promise<void> {
    for (const t of await orphanedCriticalWindows(svc.db)) {
      await unit(`critical window ${t.id}`, async () => {
        const project = (await getProject(svc.db, t.project_id))!;
        const pr = t.pr_number !== null ? await svc.forgeFor(project).getPullRequest(t.pr_number) : null;
        const mergedSha = pr?.state === 'merged' ? pr.mergedSha : undefined;
        await leaveCriticalWindow(svc.db, t.id, mergedSha ? { mergedSha } : {});
        await appendEvent(svc.db, { taskId: t.id, kind: 'critical_window_closed', actor, reason: 'owner_gone', data: { merged_sha: mergedSha ?? null } });
      });
    }
  }

  async function leases(report: TickReport, unit: Unit): Promise<void> {
    for (const l of await listLeases(svc.db)) {
      if (!leaseIsStale(l, cfg.reaper.mergeLeaseTtlS)) continue;
      await unit(`lease ${l.project}`, async () => {
        // One statement: the row goes only if it is still this lease, and the backend is
        // terminated only while it still holds the merge lock (a pooled connection that let
        // go of the lock may be doing other work by now: never kill it).
        const r = await reclaimLease(svc.db, l);
        if (r.removed) {
          report.lease_reclaims++;
          log.warn({ project: l.project, jobId: l.job_id, backendPid: l.backend_pid, ageS: l.age_s, terminated: r.terminated }, 'stale merge lease reclaimed');
        }
      });
    }
  }

  async function promotions(unit: Unit): Promise<void> {
    for (const projectId of await projectsWithSerialWaiters(svc.db)) {
      await unit(`serial ${projectId}`, () => svc.db.transaction().execute((tx) => promoteSerial(tx, svc.boss, projectId, actor)));
    }
    await unit('dependencies', () => svc.db.transaction().execute((tx) => promoteDependents(tx, svc.boss, actor)));
  }

  function tick(): Promise<TickReport> {
    if (!ticking) ticking = runTick().finally(() => (ticking = null));
    return ticking;
  }

  return {
    id,
    tick,
    start() {
      if (!cfg.reaper.enabled) {
        log.info('reaper disabled (ORCH_REAPER_ENABLED=false)');
        return;
      }
      log.info({ intervalS: cfg.reaper.intervalS }, 'reaper started');
      const loop = () => {
        if (stopped) return;
        timer = setTimeout(() => void tick().finally(loop), cfg.reaper.intervalS * 1000);
      };
      void tick().finally(loop);
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = null;
      if (ticking) await ticking.catch(() => {});
      if (leaderClient) await leaderClient.end().catch(() => {});
      leaderClient = null;
    },
  };
}
