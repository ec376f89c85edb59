/**
 * The tracker's background loops, run by `orch reaper` and `orch up`: the outbox deliverer
 * (every ORCH_OUTBOX_INTERVAL_S) and the Plane reconciliation poll (every ORCH_PLANE_RECONCILE_S,
 * 0 = off). Both are safe to run in several processes at once (SKIP LOCKED claims; content
 * dedupe and idempotent intake). Without Plane configured there is nothing to do.
 */
import { reconcilePlane } from '@orch/shared/intake/reconcile';
import type { Logger } from '@orch/shared/runtime/logger';
import type { Runtime } from '@orch/shared/runtime/process-runtime';
import { createTracker } from '@orch/shared/tracker/index';
import type { PlaneTracker } from '@orch/shared/tracker/plane';
import { createOutboxDeliverer } from '@orch/shared/tracker/outbox-deliverer';

export interface TrackerLoops {
  tracker: PlaneTracker | null;
  stop(): Promise<void>;
}

export function startTrackerLoops(rt: Pick<Runtime, 'svc'>, log: Logger, tracker: PlaneTracker | null = createTracker(rt.svc.config)): TrackerLoops {
  const cfg = rt.svc.config;
  if (!tracker || !cfg.plane.api) return { tracker: null, stop: async () => {} };
  const deliverer = createOutboxDeliverer({ db: rt.svc.db, tracker, log: log.child({ loop: 'outbox' }), secrets: [cfg.plane.api.apiKey] });
  deliverer.start(cfg.tracker.outboxIntervalS);

  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let pass: Promise<unknown> | null = null;
  const intervalS = cfg.tracker.reconcileS;
  const reconcileLog = log.child({ loop: 'plane-reconcile' });
  const schedule = (delayS: number) => {
    if (stopped || intervalS <= 0) return;
    timer = setTimeout(() => {
      timer = null;
      pass = reconcilePlane({ db: rt.svc.db, boss: rt.svc.boss, config: cfg, log: reconcileLog }, tracker)
        .then((r) => {
          if (r.errors > 0 || Object.keys(r.outcomes).length > 0) reconcileLog.info(r, 'plane reconcile pass');
        })
        .catch((err: unknown) => reconcileLog.error({ err }, 'plane reconcile pass failed'))
        .finally(() => {
          pass = null;
          schedule(intervalS);
        });
    }, delayS * 1000);
  };
  schedule(0);
  log.info({ outboxIntervalS: cfg.tracker.outboxIntervalS, reconcileS: intervalS }, 'tracker loops started (plane)');

  return {
    tracker,
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = null;
      await deliverer.stop();
      if (pass) await pass;
    },
  };
}
