/**
 * `orch logs <task> [--follow] [--raw]`: the task's events and agent runs merged in time order,
 * each run as a transcript — the agent's messages, each tool call with its command or file, the
 * tool's result, retries, the final result — written while the agent runs; `--raw` prints the
 * run's raw stdout+stderr tail instead (at its exit), as does a run without a transcript (a
 * command agent, the deploy command). Follow mode polls every second and prints only what is
 * new, until the task is terminal or the caller aborts (Ctrl-C).
 */
import { listTaskRuns } from '@orch/shared/db/queries/agent-runs';
import { listEvents } from '@orch/shared/db/queries/events';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getLiveTaskByIssue, getTask } from '@orch/shared/db/queries/tasks';
import type { Db } from '@orch/shared/db/client';
import type { AgentRun, Job, Task, TaskEvent } from '@orch/shared/db/types';
import { OrchError } from '@orch/shared/runtime/errors';
import { isTerminal } from '@orch/shared/stages';
import { formatEntry } from '@orch/shared/agents/transcript';
import { eventText, runCost } from './format.ts';

export interface LogEntry {
  key: string;
  at: Date;
  text: string;
}

const stamp = (d: Date) => d.toISOString().replace('T', ' ').replace('Z', '');

/** Every line `orch logs` can print for a task, oldest first; `key` identifies a line across polls. */
function logEntries(jobs: Job[], runs: AgentRun[], events: TaskEvent[], opts: { raw?: boolean } = {}): LogEntry[] {
  const jobOf = new Map(jobs.map((j) => [j.id, j]));
  const out: LogEntry[] = events.map((e) => ({
    key: `e${e.id}`,
    at: e.created_at,
    text: `${stamp(e.created_at)}  event  ${eventText(e)}  by ${e.actor}${e.job_id ? `  job ${e.job_id}` : ''}`,
  }));
  for (const r of runs) {
    const j = jobOf.get(r.job_id);
    const what = `job ${r.job_id}${j ? ` ${j.stage}#${j.attempt}` : ''}: ${r.agent}`;
    const started = new Date(r.started_at).getTime();
    out.push({ key: `r${r.id}+`, at: r.started_at, text: `${stamp(r.started_at)}  run    ${what} started on ${r.host}${r.pid ? ` (pid ${r.pid})` : ''}${r.resumed_session_id ? `, resuming session ${r.resumed_session_id}` : ''}` });
    const transcript = Array.isArray(r.transcript) ? r.transcript : [];
    const showTranscript = !opts.raw && transcript.length > 0;
    if (showTranscript) {
      for (const e of transcript) {
        // ms after the run's start: a moment within the run, so lines sort between its start and
        // exit (the start is in the key: a run restarted fresh numbers its entries anew)
        const at = new Date(started + e.at);
        out.push({ key: `r${r.id}t${started}.${e.n}`, at, text: `${stamp(at)}  ${r.agent.padEnd(6)} ${formatEntry(e).trimStart()}` });
      }
    }
    if (r.exit_code !== null && r.finished_at) {
      const extra = [
        r.signal ? `signal ${r.signal}` : null,
        r.cost_usd !== null ? `cost ${runCost(r)}` : null,
        r.tokens_in !== null || r.tokens_out !== null ? `tokens ${r.tokens_in ?? 0}/${r.tokens_out ?? 0}` : null,
      ].filter(Boolean);
      const tail = showTranscript ? '' : r.log_tail.trimEnd();
      const lines = tail ? `\n${tail.split('\n').map((l) => `    │ ${l}`).join('\n')}` : '';
      const failed = r.error ? `\n    ${r.failure_code ? `${r.failure_code} — ` : 'error: '}${r.error.replace(/\n/g, '\n      ')}` : '';
      out.push({
        key: `r${r.id}-`,
        at: r.finished_at,
        text: `${stamp(r.finished_at)}  run    ${what} exited ${r.exit_code}${extra.length ? ` (${extra.join(', ')})` : ''}${failed}${lines}`,
      });
    }
  }
  return out.sort((a, b) => a.at.getTime() - b.at.getTime() || keyOrder(a.key) - keyOrder(b.key) || a.key.localeCompare(b.key, 'en', { numeric: true }));
}

/** Within one instant: a run's start, then its transcript, then its exit, then events. */
function keyOrder(key: string): number {
  if (/^r\d+\+$/.test(key)) return 0;
  if (/^r\d+t/.test(key)) return 1;
  if (/^r\d+-$/.test(key)) return 2;
  return 3;
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
  opts: { follow: boolean; write: (s: string) => void; signal?: AbortSignal; pollMs?: number; raw?: boolean },
): Promise<Task> {
  const printed = new Set<string>();
  for (;;) {
    const task = (await getTask(db, taskId))!;
    const [jobs, runs, events] = await Promise.all([listTaskJobs(db, taskId), listTaskRuns(db, taskId), listEvents(db, taskId)]);
    for (const e of logEntries(jobs, runs, events, { raw: opts.raw })) {
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
