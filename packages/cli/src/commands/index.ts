/** Every `orch` command, in the groups `orch --help` shows. */
import { buildRegistry } from '../registry.ts';
import { configCommand } from './config.ts';
import { doctorCommand } from './doctor.ts';
import { migrateCommand } from './migrate.ts';
import { logsCommand, statusCommand, stopCommand } from './operate.ts';
import { projectCommand } from './project.ts';
import { dbCommand, psqlCommand } from './psql.ts';
import { apiCommand, reaperCommand, workerCommand } from './roles.ts';
import { taskCommand, tasksCommand } from './task.ts';
import { upCommand } from './up.ts';

const registry = buildRegistry([
  { title: 'processes', specs: { up: upCommand, api: apiCommand, worker: workerCommand, reaper: reaperCommand, migrate: migrateCommand } },
  {
    title: 'operations',
    specs: { project: projectCommand, task: taskCommand, tasks: tasksCommand, stop: stopCommand, status: statusCommand, logs: logsCommand, psql: psqlCommand, db: dbCommand, config: configCommand, doctor: doctorCommand },
  },
]);

export const { commands, usage } = registry;
