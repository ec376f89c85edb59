/** What the pipeline functions need from the process that calls them. */
import type pg from 'pg';
import type { Db } from '../db/client.ts';
import type { Config } from './config.ts';
import type { Logger } from './logger.ts';
import type { Boss } from '../queue.ts';
import type { Forge } from '../forge/types.ts';
import type { Project } from '../db/types.ts';

export interface Services {
  db: Db;
  /** raw pool: sessions that must outlive a statement (the merge lease's advisory lock) */
  pool: pg.Pool;
  boss: Boss;
  config: Config;
  log: Logger;
  forgeFor(project: Project): Forge;
}
