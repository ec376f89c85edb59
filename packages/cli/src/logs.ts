/**
 * `orch logs <task> [--follow]`: the task's events and agent runs (with their log tails) merged
 * in time order. Follow mode polls every second and prints only what is new, until the task is
 * terminal or the caller aborts (Ctrl-C).
 */
import { listTaskRuns } from '@orch/shared/db/queries/agent-runs';
import { listEvents } from '@orch/shared/db/queries/events';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getLiveTaskByIssue, getTask } from '@orch/shared/db/queries/tasks';
import type { Db } from '@orch/shared/db/client';
import type { AgentRun, Job, Task, TaskEvent } from '@orch/shared/db/types';
import { OrchError } from '@orch/shared/runtime/errors';
import { isTerminal } from '@orch/shared/stages';
import { eventText } from './format.ts';

export interface LogEntry {
  key: string;
  at: Date;
  text: string;
}

const stamp = (d: Date) => d.toISOString().replace('T', ' ').replace('Z', '');

/** Every line `orch logs` can print for a task, oldest first; `key` identifies a line across polls. */
function logEntries(jobs: Job[], runs: AgentRun[], events: TaskEvent[]): LogEntry[] {
  const jobOf = new Map(jobs.map((j) => [j.id, j]));
  const out: LogEntry[] = events.map((e) => ({
    key: `e${e.id}`,
    at: e.created_at,
    text: `${stamp(e.created_at)}  event  ${eventText(e)}  by ${e.actor}${e.job_id ? `  job ${e.job_id}` : ''}`,
  }));
  for (const r of runs) {
    const j = jobOf.get(r.job_id);
    const what = `job ${r.job_id}${j ? ` ${j.stage}#${j.attempt}` : ''}: ${r.agent}`;
    out.push({ key: `r${r.id}+`, at: r.started_at, text: `${stamp(r.started_at)}  run    ${what} started on ${r.host}${r.pid ? ` (pid ${r.pid})` : ''}` });
    if (r.exit_code !== null && r.finished_at) {
      const extra = [
        r.signal ? `signal ${r.signal}` : null,
        r.cost_usd !== null ? `cost $${Number(r.cost_usd).toFixed(4)}` : null,
        r.tokens_in !== null || r.tokens_out !== null ? `tokens ${r.tokens_in ?? 0}/${r.tokens_out ?? 0}` : null,
        r.error ? `error: ${r.error}` : null,
      ].filter(Boolean);
      const tail = r.log_tail.trimEnd();
      const lines = tail ? `\n${tail.split('\n').map((l) => `    │ ${l}`).join('\n')}` : '';
      out.push({
        key: `r${r.id}-`,
        at: r.finished_at,
        text: `${stamp(r.finished_at)}  run    ${what} exited ${r.exit_code}${extra.length ? ` (${extra.join(', ')})` : ''}${lines}`,
      });
    }
  }
  return out.sort((a, b) => a.at.getTime() - b.at.getTime() || a.key.localeCompare(b.key));
}

export async function findTask(db: Db, ref: string): Promise<Task> {
  const task = /^\d{1,15}$/.test(ref) ? await getTask(db, Number(ref)) : await getLiveTaskByIssue(db, ref);
  if (!task) throw new OrchError('not_found', `unknown task: ${ref}`);
  return task;
}

/** Print the task's log; with `follow`, keep printing new lines every `pollMs` until terminal or aborted. */
export async function streamLogs(
  db: Db,
  taskId: number,
  opts: { follow: boolean; write: (s: string) => void; signal?: AbortSignal; pollMs?: number },
): Promise<Task> {
  const printed = new Set<string>();
  for (;;) {
    const task = (await getTask(db, taskId))!;
    const [jobs, runs, events] = await Promise.all([listTaskJobs(db, taskId), listTaskRuns(db, taskId), listEvents(db, taskId)]);
    for (const e of logEntries(jobs, runs, events)) {
      if (printed.has(e.key)) continue;
      printed.add(e.key);
      opts.write(`${e.text}\n`);
    }
    // the rows read after the terminal stage was seen are complete: the last read printed them
    if (!opts.follow || isTerminal(task.stage) || opts.signal?.aborted) {
      if (opts.follow && isTerminal(task.stage)) opts.write(`-- task ${task.id} is ${task.stage}\n`);
      return task;
    }
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, opts.pollMs ?? 1000);
      opts.signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
    });
  }
}
