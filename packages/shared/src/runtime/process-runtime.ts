/** Wiring a process: database, pg-boss, forge resolver, logger → Services. */
import type { Config } from './config.ts';
import { createDb } from '../db/client.ts';
import { createForgeResolver } from '../forge/index.ts';
import type { Logger } from './logger.ts';
import { createBoss, startBoss } from '../queue.ts';
import type { Services } from './services.ts';

export interface Runtime {
  svc: Services;
  connectionString: string;
  close(): Promise<void>;
}

export async function openRuntime(
  config: Config,
  connectionString: string,
  log: Logger,
  opts: { applicationName: string; poolMax?: number; superviseBoss?: boolean },
): Promise<Runtime> {
  const handle = createDb(connectionString, { max: opts.poolMax ?? 10, applicationName: opts.applicationName });
  const boss = createBoss(connectionString, { supervise: opts.superviseBoss ?? false });
  boss.on('error', (err: Error) => log.warn({ err }, 'pg-boss error'));
  await startBoss(boss);
  const svc: Services = { db: handle.db, pool: handle.pool, boss, config, log, forgeFor: createForgeResolver(handle.db, config) };
  return {
    svc,
    connectionString,
    close: async () => {
      await boss.stop({ graceful: false, timeout: 2000 }).catch(() => {});
      await handle.close();
    },
  };
}
