/**
 * The long-running roles, once: how each starts on a runtime and stops. `orch api`, `orch worker`
 * and `orch reaper` run one role each (`serveUntilSignal`); `orch up` runs all of them on one
 * runtime, in this order, and stops them in the same order — intake first, then the worker
 * (finishing or releasing its jobs), then the reaper — before the database.
 */
import type { Logger } from '@orch/shared/runtime/logger';
import type { Runtime } from '@orch/shared/runtime/process-runtime';
import { CliError } from './context.ts';

// Each role loads its own code when it starts (dynamic imports): an `orch worker` does not hold
// the API's routes and schemas, nor the reaper's tracker (its HTML converter), in memory.

export interface RoleOptions {
  /** api: the port (default ORCH_API_PORT) */
  port?: number;
  /** api: told the address it listens on */
  onListening?: (url: string) => void;
  /** worker: told what it runs steps with (sandbox, network, limits) and any warning */
  onIsolation?: (summary: string, warning: string | null) => void;
}

export interface Role {
  /** process name: logs and Postgres application_name */
  name: string;
  /** this role runs pg-boss's maintenance (one per fleet is enough; more are harmless) */
  superviseBoss: boolean;
  /** start on `rt`; resolves to the role's graceful stop */
  start(rt: Runtime, log: Logger, opts: RoleOptions): Promise<() => Promise<void>>;
}

export const ROLES = {
  api: {
    name: 'orch-api',
    superviseBoss: false,
    async start(rt, log, opts) {
      const [{ createApp }, { PortInUseError, serveApp }, { createTracker }] = await Promise.all([
        import('@orch/api/app'),
        import('@orch/api/serve'),
        import('@orch/shared/tracker/index'),
      ]);
      const { api } = rt.svc.config;
      const app = createApp({ db: rt.svc.db, boss: rt.svc.boss, config: rt.svc.config, log: rt.svc.log, tracker: createTracker(rt.svc.config, { db: rt.svc.db, log: rt.svc.log }) });
      const port = opts.port ?? api.port;
      const server = await serveApp(app, port, api.host, { bodyLimitBytes: api.bodyLimitBytes }).catch((err: Error) => {
        if (err instanceof PortInUseError) throw new CliError(`${err.message}: stop what holds it, or set ORCH_API_PORT (or --port) to a free port`);
        throw err;
      });
      log.info({ port: server.port, host: api.host }, 'api listening');
      opts.onListening?.(`http://${api.host}:${server.port}`);
      return () => server.close();
    },
  },
  worker: {
    name: 'orch-worker',
    superviseBoss: false,
    async start(rt, log, opts) {
      const [{ createWorker }, { createAgent }, { SandboxUnavailableError, describeIsolation }] = await Promise.all([
        import('@orch/worker/worker'),
        import('@orch/shared/agents/index'),
        import('@orch/shared/host/isolation'),
      ]);
      const worker = createWorker({ svc: rt.svc, agent: await createAgent(rt.svc.config), connectionString: rt.connectionString, log });
      await worker.start().catch((err: Error) => {
        if (err instanceof SandboxUnavailableError) throw new CliError(err.message);
        throw err;
      });
      const iso = worker.isolation();
      if (iso) opts.onIsolation?.(describeIsolation(iso), iso.warning);
      return () => worker.stop();
    },
  },
  reaper: {
    name: 'orch-reaper',
    superviseBoss: true,
    async start(rt, log) {
      const [{ createReaper }, { startTrackerLoops }] = await Promise.all([import('@orch/reaper/reaper'), import('./tracker-loops.ts')]);
      const reaper = createReaper({ svc: rt.svc, connectionString: rt.connectionString, log });
      reaper.start();
      const trackerLoops = startTrackerLoops(rt, log);
      return async () => {
        await trackerLoops.stop();
        await reaper.stop();
      };
    },
  },
} satisfies Record<string, Role>;

export type RoleName = keyof typeof ROLES;
