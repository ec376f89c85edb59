/**
 * The migration list, in order. Kysely's Migrator gets them from here rather than from the
 * file system so the list is explicit and the same in every process.
 */
import type { Migration } from 'kysely/migration';
import * as initial from './20261125T0001_initial.ts';
import * as views from './20261125T0002_views.ts';
import * as periodicIndexes from './20261125T0003_periodic_indexes.ts';
import * as planeGiteaToday from './20261203T0001_plane_gitea_today.ts';
import * as agentFailures from './20261203T0004_agent_failures.ts';
import * as sandbox from './20261203T0005_sandbox.ts';
import * as flatClaims from './20261203T0006_flat_claims.ts';

export const migrations: Record<string, Migration> = {
  '20261125T0001_initial': initial,
  '20261125T0002_views': views,
  '20261125T0003_periodic_indexes': periodicIndexes,
  '20261203T0001_plane_gitea_today': planeGiteaToday,
  '20261203T0004_agent_failures': agentFailures,
  '20261203T0005_sandbox': sandbox,
  '20261203T0006_flat_claims': flatClaims,
};
