/**
 * The outbox and the tracker's background loops, run by `orch reaper` and `orch up`:
 * - the Plane outbox deliverer and the Gitea outbox deliverer (every ORCH_OUTBOX_INTERVAL_S; one
 *   per target, so Plane's rate limit never holds up Gitea);
 * - the Plane reconciliation poll (every ORCH_PLANE_RECONCILE_S, 0 = off), one pass per Plane
 *   project per interval for the whole fleet.
 * All are safe to run in several processes at once (SKIP LOCKED claims, a claimed pass per
 * interval, dedupe by meaning, idempotent intake), and every Plane request of every process
 * spends from one budget per API key kept in Postgres. Without Plane or Gitea configured, that
 * target's loops do not run.
 */
import { reconcilePlane } from '@orch/shared/intake/reconcile';
import { createGiteaReporter, giteaOutboxChannel } from '@orch/shared/forge/gitea-reports';
import type { Logger } from '@orch/shared/runtime/logger';
import type { Runtime } from '@orch/shared/runtime/process-runtime';
import { createTracker } from '@orch/shared/tracker/index';
import type { PlaneTracker } from '@orch/shared/tracker/plane';
import { createOutboxDeliverer, type OutboxDeliverer } from '@orch/shared/tracker/outbox-deliverer';
import { planeOutboxChannel } from '@orch/shared/tracker/plane-outbox';

export interface TrackerLoops {
  tracker: PlaneTracker | null;
  stop(): Promise<void>;
}

export function startTrackerLoops(
  rt: Pick<Runtime, 'svc'>,
  log: Logger,
  tracker: PlaneTracker | null = createTracker(rt.svc.config, { db: rt.svc.db, log: log.child({ loop: 'plane' }) }),
): TrackerLoops {
  const cfg = rt.svc.config;
  const deliverers: OutboxDeliverer[] = [];
  if (cfg.gitea) {
    const gitea = createOutboxDeliverer({
      db: rt.svc.db,
      channel: giteaOutboxChannel(createGiteaReporter({ baseUrl: cfg.gitea.baseUrl, token: cfg.gitea.token })),
      log: log.child({ loop: 'outbox', target: 'gitea' }),
      secrets: [cfg.gitea.token],
    });
    gitea.start(cfg.tracker.outboxIntervalS);
    deliverers.push(gitea);
  }
  const plane = tracker && cfg.plane.api ? tracker : null;
  if (plane) {
    const d = createOutboxDeliverer({ db: rt.svc.db, channel: planeOutboxChannel(plane), log: log.child({ loop: 'outbox', target: 'plane' }), secrets: [cfg.plane.api!.apiKey] });
    d.start(cfg.tracker.outboxIntervalS);
    deliverers.push(d);
  }

  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let pass: Promise<unknown> | null = null;
  const intervalS = cfg.tracker.reconcileS;
  const reconcileLog = log.child({ loop: 'plane-reconcile' });
  const who = `${cfg.hostId}:${process.pid}`;
  const schedule = (delayS: number) => {
    if (stopped || intervalS <= 0 || !plane) return;
    timer = setTimeout(() => {
      timer = null;
      pass = reconcilePlane({ db: rt.svc.db, boss: rt.svc.boss, config: cfg, log: reconcileLog }, plane, { who, intervalS })
        .then((r) => {
          if (r.errors > 0 || r.stoppedBy || Object.keys(r.outcomes).some((k) => k !== 'duplicate')) reconcileLog.info(r, 'plane reconcile pass');
          else reconcileLog.debug(r, 'plane reconcile pass');
        })
        .catch((err: unknown) => reconcileLog.error({ err }, 'plane reconcile pass failed'))
        .finally(() => {
          pass = null;
          schedule(intervalS);
        });
    }, delayS * 1000);
  };
  schedule(0);
  if (deliverers.length || plane) {
    log.info({ outboxIntervalS: cfg.tracker.outboxIntervalS, reconcileS: plane ? intervalS : 0, plane: Boolean(plane), gitea: Boolean(cfg.gitea) }, 'outbox and tracker loops started');
  }

  return {
    tracker: plane,
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = null;
      await Promise.all(deliverers.map((d) => d.stop()));
      if (pass) await pass;
    },
  };
}
