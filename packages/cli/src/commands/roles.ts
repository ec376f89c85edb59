/** `orch api`, `orch worker`, `orch reaper`: one role each, until SIGTERM/SIGINT. */
import { serveUntilSignal } from '../context.ts';
import { PORT_OPTION, type CommandSpec } from '../registry.ts';
import { ROLES, type RoleName } from '../roles.ts';

function roleCommand(role: RoleName, spec: Omit<CommandSpec, 'run'>): CommandSpec {
  const r = ROLES[role];
  return {
    ...spec,
    run: ({ values }) =>
      serveUntilSignal(r.name, { superviseBoss: r.superviseBoss }, (rt, log) => r.start(rt, log, { port: values.port ? Number(values.port) : undefined })),
  };
}

export const apiCommand = roleCommand('api', {
  summary: 'HTTP API: Plane webhook, REST, dashboard (/), /metrics, API reference (/docs)',
  details: 'Intake only: it verifies, records and enqueues; it never runs agents.',
  usage: ['api [--port N]'],
  options: { port: PORT_OPTION },
});

export const workerCommand = roleCommand('worker', {
  summary: 'claims jobs and runs agents in git worktrees; run as many as you like',
  usage: ['worker'],
});

export const reaperCommand = roleCommand('reaper', {
  summary: 'liveness daemon: zombies, stale merge leases, janitor, tracker loops',
  details: 'Run several for HA: one leader acts per tick; every reaper cleans its own host.',
  usage: ['reaper'],
});
