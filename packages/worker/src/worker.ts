/**
 * The worker: consumes dispatch tokens while it has free slots, claims jobs, runs them, and
 * keeps them honest — heartbeats (worker row and running jobs), a cancel watch (LISTEN plus a
 * poll every ORCH_CANCEL_POLL_S), and a graceful shutdown (stop claiming, let running jobs
 * finish up to ORCH_WORKER_SHUTDOWN_S, then stop their agents and release them as
 * `failed/worker_shutdown`, requeued with the same attempt), and this host's janitor (orphan
 * agents every 10 s, worktrees of terminal tasks at start and every 10 s, so a host without a
 * reaper stays clean too). Every background unit of work is never-raise: log, count, continue.
 */
import { randomUUID } from 'node:crypto';
import type { AgentAdapter } from '@orch/shared/agents/types';
import { completeCancel } from '@orch/shared/cancel';
import { claimNextJob, heartbeatJobs, watchJobs } from '@orch/shared/db/queries/jobs';
import { pendingCancels } from '@orch/shared/db/queries/tasks';
import { heartbeatWorker, markWorkerStopped, registerWorker } from '@orch/shared/db/queries/workers';
import type { Logger } from '@orch/shared/runtime/logger';
import { CANCEL_CHANNEL, DISPATCH_CHANNEL, DISPATCH_QUEUE, dispatchPreferredHost } from '@orch/shared/queue';
import type { Services } from '@orch/shared/runtime/services';
import { killOrphanAgents } from '@orch/shared/host/orphans';
import { sweepWorktrees } from '@orch/shared/host/janitor';
import { describeIsolation, detectIsolation, isolationView, type Isolation } from '@orch/shared/host/isolation';
import { sweepJobCgroups } from '@orch/shared/host/limits';
import { stepEnv } from '@orch/shared/runtime/config';
import { listen, type Listener } from './listener.ts';
import { RunningJob } from './job-handle.ts';
import { runJob } from './run-job.ts';

export interface WorkerOptions {
  svc: Services;
  agent: AgentAdapter;
  connectionString: string;
  log: Logger;
  id?: string;
  /** found at start when not given (host/isolation.ts detectIsolation) */
  isolation?: Isolation;
}

export interface WorkerStats {
  claimed: number;
  finished: number;
  errors: number;
}

export interface OrchWorker {
  readonly id: string;
  readonly stats: WorkerStats;
  start(): Promise<void>;
  /** graceful stop (see module doc); resolves when every job is finished or released */
  stop(): Promise<void>;
  running(): number[];
  /** one pass of the dispatch loop (exposed for tests) */
  drain(): Promise<void>;
  checkCancels(): Promise<void>;
  /** one pass of the worktree janitor on this host (runs at start and every 10 s) */
  janitor(): Promise<number>;
  /** what it runs steps with, once started */
  isolation(): Isolation | null;
}

export function createWorker(opts: WorkerOptions): OrchWorker {
  const { svc, agent } = opts;
  const cfg = svc.config;
  const id = opts.id ?? `${cfg.hostId}-${process.pid}-${randomUUID().slice(0, 8)}`;
  const log = opts.log.child({ workerId: id });
  const running = new Map<number, { rj: RunningJob; done: Promise<void> }>();
  const stats: WorkerStats = { claimed: 0, finished: 0, errors: 0 };
  const timers: NodeJS.Timeout[] = [];
  let listener: Listener | null = null;
  let stopping = false;
  let draining: Promise<void> | null = null;
  let drainAgain = false;
  let isolation: Isolation | null = opts.isolation ?? null;
  let affinityTimer: NodeJS.Timeout | null = null;
  let affinityDue = 0;

  const never = (what: string) => (err: unknown) => {
    stats.errors++;
    log.error({ err }, `${what} failed`);
  };

  function launch(rj: RunningJob): void {
    stats.claimed++;
    const done = runJob({ svc, agent, workerId: id, log, isolation: isolation! }, rj)
      .catch(never('job'))
      .finally(() => {
        running.delete(rj.job.id);
        stats.finished++;
        if (!stopping) void drain();
      });
    running.set(rj.job.id, { rj, done });
  }

  /** Claim until slots are full or nothing is claimable; concurrent calls coalesce. */
  function drain(): Promise<void> {
    if (draining) {
      drainAgain = true;
      return draining;
    }
    draining = (async () => {
      do {
        drainAgain = false;
        while (!stopping && isolation && running.size < cfg.workerSlots) {
          // One token per claim, so tokens we cannot use stay for other workers.
          const tokens = await svc.boss.fetch(DISPATCH_QUEUE, { batchSize: 1 });
          const job = await claimNextJob(svc.db, { workerId: id, host: cfg.hostId, pid: process.pid, maxConcurrency: cfg.maxConcurrency, affinityWaitMs: cfg.affinityWaitMs });
          if (job) launch(new RunningJob(job, cfg.stop.graceS)); // start first: the token can wait
          if (tokens?.length) await svc.boss.complete(DISPATCH_QUEUE, tokens.map((t) => t.id));
          if (!job) {
            // Nothing is claimable fleet-wide right now, so due tokens are stale: retire them
            // (whatever unblocks work later sends a new token and a NOTIFY).
            if (tokens?.length) {
              const stale = await svc.boss.fetch(DISPATCH_QUEUE, { batchSize: 100 });
              if (stale?.length) await svc.boss.complete(DISPATCH_QUEUE, stale.map((t) => t.id));
            }
            break;
          }
        }
      } while (drainAgain && !stopping);
    })()
      .catch(never('drain'))
      .finally(() => {
        draining = null;
      });
    return draining;
  }

  /**
   * A wake for a job that prefers another host (stage affinity): that host may claim it at once,
   * this one only once ORCH_AFFINITY_WAIT_MS is over, so look then (one timer for all such wakes).
   */
  function wake(payload: string): void {
    const preferred = dispatchPreferredHost(payload);
    if (preferred === null || preferred === cfg.hostId || cfg.affinityWaitMs === 0) {
      void drain();
      return;
    }
    if (stopping) return;
    affinityDue = Date.now() + cfg.affinityWaitMs + 5; // + a margin: the wait is measured by the database clock
    if (!affinityTimer) armAffinityTimer();
  }

  function armAffinityTimer(): void {
    affinityTimer = setTimeout(() => {
      affinityTimer = null;
      if (stopping) return;
      void drain();
      if (Date.now() < affinityDue) armAffinityTimer(); // a later wake is still waiting
    }, Math.max(0, affinityDue - Date.now()));
    affinityTimer.unref();
  }

  /** Stop jobs whose task is being cancelled or whose row was flipped by someone else. */
  async function checkCancels(): Promise<void> {
    const ids = [...running.keys()];
    for (const w of await watchJobs(svc.db, ids)) {
      const entry = running.get(w.id);
      if (!entry) continue;
      if (w.status !== 'running') void entry.rj.requestStop('job_flipped');
      else if (w.cancel_requested) void entry.rj.requestStop('cancel');
    }
  }

  /** Complete cancels of tasks that have no job running here (any worker may; all steps are CAS). */
  async function completeForeignCancels(taskIds?: number[]): Promise<void> {
    // Not gated by ORCH_STOP_STATUS_ENABLED: the switch closes the entry points; a cancel
    // requested before it was turned off must still complete (claims skip that task).
    const mine = new Set([...running.values()].map((e) => e.rj.job.task_id));
    const ids = taskIds ?? (await pendingCancels(svc.db)).map((t) => t.id);
    for (const taskId of ids) {
      if (mine.has(taskId)) continue;
      await completeCancel(svc, taskId, `worker:${id}`).catch(never('cancel'));
    }
  }

  async function heartbeat(): Promise<void> {
    await heartbeatWorker(svc.db, id);
    await heartbeatJobs(svc.db, id, [...running.keys()]);
  }

  function every(seconds: number, fn: () => Promise<unknown>, what: string): void {
    let busy = false;
    const t = setInterval(() => {
      if (busy) return;
      busy = true;
      fn()
        .catch(never(what))
        .finally(() => {
          busy = false;
        });
    }, seconds * 1000);
    timers.push(t);
  }

  async function janitor(): Promise<number> {
    const n = await sweepWorktrees(svc.db, cfg.worktreeRoot);
    if (n) log.info({ worktreesRemoved: n }, 'janitor');
    const cgroups = isolation ? sweepJobCgroups(isolation.limits, new Set(running.keys())) : 0;
    if (cgroups) log.info({ cgroupsRemoved: cgroups }, 'janitor');
    return n;
  }

  return {
    id,
    stats,
    janitor,
    isolation: () => isolation,
    running: () => [...running.keys()],
    drain,
    checkCancels,

    async start() {
      // throws SandboxUnavailableError (ORCH_AGENT_SANDBOX=bwrap on a host where it does not work)
      isolation ??= await detectIsolation(cfg, stepEnv([]).PATH);
      await registerWorker(svc.db, { id, host: cfg.hostId, pid: process.pid, slots: cfg.workerSlots, isolation: isolationView(isolation) });
      log.info({ host: cfg.hostId, slots: cfg.workerSlots, agent: agent.name, isolation: describeIsolation(isolation) }, 'worker started');
      if (isolation.warning) log.warn(isolation.warning);
      listener = listen(
        opts.connectionString,
        [DISPATCH_CHANNEL, CANCEL_CHANNEL],
        (channel, payload) => {
          if (channel === DISPATCH_CHANNEL) wake(payload);
          else if (channel === CANCEL_CHANNEL) {
            void checkCancels().catch(never('cancel watch'));
            if (/^\d+$/.test(payload)) void completeForeignCancels([Number(payload)]);
          }
        },
        () => {
          void drain();
          void checkCancels().catch(never('cancel watch'));
        },
        log,
      );
      every(cfg.heartbeat.intervalS, heartbeat, 'heartbeat');
      every(cfg.stop.pollS, checkCancels, 'cancel watch');
      every(cfg.dispatchPollS, () => drain(), 'dispatch poll');
      every(Math.max(cfg.stop.pollS * 5, 5), () => completeForeignCancels(), 'cancel sweep');
      // Agents a crashed worker of this host left behind (their jobs were reaped meanwhile).
      const orphans = async () => {
        const n = await killOrphanAgents(svc.db, cfg.hostId);
        if (n) log.warn({ killed: n }, 'killed orphan agent processes');
      };
      every(10, orphans, 'orphan sweep');
      void orphans().catch(never('orphan sweep'));
      // Worktrees of tasks that ended elsewhere (finished on another host, cancelled by the
      // reaper): this host must clean them even when it runs no reaper.
      every(10, janitor, 'worktree sweep');
      void janitor().catch(never('worktree sweep'));
      void drain();
    },

    async stop() {
      if (stopping) return;
      stopping = true;
      log.info({ running: running.size, graceS: cfg.workerShutdownS }, 'worker stopping: no new claims');
      if (draining) await draining;
      const all = () => Promise.all([...running.values()].map((e) => e.done));
      const graceful = await Promise.race([
        all().then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), cfg.workerShutdownS * 1000).unref()),
      ]);
      if (!graceful) {
        log.warn({ running: running.size }, 'shutdown grace over: stopping agents and releasing jobs');
        await Promise.all([...running.values()].map((e) => e.rj.requestStop('worker_shutdown')));
        await all();
      }
      for (const t of timers) clearInterval(t);
      if (affinityTimer) clearTimeout(affinityTimer);
      await listener?.close();
      await markWorkerStopped(svc.db, id).catch(never('mark stopped'));
      log.info(stats, 'worker stopped');
    },
  };
}
