import type { Config } from '@orch/shared/runtime/config';
import type { Db } from '@orch/shared/db/client';
import type { Logger } from '@orch/shared/runtime/logger';
import type { Boss } from '@orch/shared/queue';
import type { PlaneTracker } from '@orch/shared/tracker/plane';

/** What the API needs: it records and enqueues, never runs agents. */
export interface ApiDeps {
  db: Db;
  boss: Boss;
  config: Config;
  log: Logger;
  /** the Plane client, when Plane is configured: resolves webhook state ids to names */
  tracker?: Pick<PlaneTracker, 'stateNameOf'> | null;
}
