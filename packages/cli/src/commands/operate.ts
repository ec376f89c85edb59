/** `orch stop`, `orch status`, `orch logs`: what an operator runs against a live fleet. */
import { requestCancel } from '@orch/shared/cancel';
import { queueSnapshot } from '@orch/shared/db/queries/queue';
import { OrchError } from '@orch/shared/runtime/errors';
import { CliError, config, withDb } from '../context.ts';
import { formatStatus } from '../format.ts';
import { findTask, streamLogs } from '../logs.ts';
import { JSON_OPTION, print, type CommandSpec } from '../registry.ts';

export const stopCommand: CommandSpec = {
  summary: 'STOP a task: cancel everything about it (agent, jobs, worktree, branch), as Plane STOP does',
  usage: ['stop <task-id|plane-issue-id> [--json]'],
  options: { json: JSON_OPTION },
  run: async ({ values: v, positionals: [ref] }) => {
    if (!ref) throw new CliError('usage: orch stop <task-id|plane-issue-id>', 2);
    return withDb(async (db) => {
      try {
        const r = await requestCancel({ db, config: config() }, ref, 'cli', 'stop');
        const msg: Record<typeof r.status, string> = {
          requested: `task ${r.task.id}: stop requested; the cancel completes within seconds`,
          already_requested: `task ${r.task.id}: stop already requested`,
          already_cancelled: `task ${r.task.id} is already cancelled`,
          already_done: `task ${r.task.id} is already done; nothing to stop`,
        };
        print(Boolean(v.json), { status: r.status, task: r.task }, () => `${msg[r.status]}\n`);
        return 0;
      } catch (err) {
        if (err instanceof OrchError && err.code === 'stop_disabled') throw new CliError(err.message, 4);
        throw err;
      }
    });
  },
};

export const statusCommand: CommandSpec = {
  summary: 'the queue at a glance: jobs, running jobs, workers, reaper, cancels, merge leases',
  usage: ['status [--json]'],
  options: { json: JSON_OPTION },
  run: ({ values: v }) =>
    withDb(async (db) => {
      const cfg = config();
      const snap = await queueSnapshot(db, { reaperEnabled: cfg.reaper.enabled, reaperIntervalS: cfg.reaper.intervalS, stopEnabled: cfg.stop.enabled });
      print(Boolean(v.json), snap, () => formatStatus(snap));
      return 0;
    }),
};

export const logsCommand: CommandSpec = {
  summary: "a task's events and agent runs in time order, each run as a readable transcript",
  details:
    "A run's transcript (messages, tool calls with their command or file, results) is written while its agent runs; --raw prints its raw output tail instead (recorded when it exits). --follow prints new lines as they appear.",
  usage: ['logs <task-id|plane-issue-id> [--follow] [--raw]'],
  options: {
    follow: { type: 'boolean', short: 'f', help: 'keep printing new lines every second until the task is done/cancelled (Ctrl-C to quit)' },
    raw: { type: 'boolean', help: "each run's raw stdout+stderr tail instead of its transcript (for debugging the stream)" },
  },
  run: async ({ values: v, positionals: [ref] }) => {
    if (!ref) throw new CliError('usage: orch logs <task-id|plane-issue-id> [--follow] [--raw]', 2);
    return withDb(async (db) => {
      const task = await findTask(db, ref);
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        await streamLogs(db, task.id, { follow: Boolean(v.follow), raw: Boolean(v.raw), signal: stop.signal, write: (s) => process.stdout.write(s) });
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      return 0;
    });
  },
};
