/** Plain-text renderings for the terminal (`--json` gives the data itself). */
import type { QueueSnapshot } from '@orch/shared/db/queries/queue';
import type { AgentRun, Job, Task, TaskEvent } from '@orch/shared/db/types';

function table(rows: string[][]): string {
  if (!rows.length) return '';
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

const age = (d: Date | null | undefined) => (d ? `${Math.max(0, Math.round((Date.now() - new Date(d).getTime()) / 1000))}s` : '-');

export function formatStatus(s: QueueSnapshot): string {
  const c = s.jobs.counts;
  let out = s.warnings.map((w) => `WARNING  ${w}\n`).join('') + (s.warnings.length ? '\n' : '');
  out += `jobs     queued ${c.queued}  running ${c.running}  done ${c.done}  failed ${c.failed}  cancelled ${c.cancelled}\n`;
  if (s.jobs.running.length) {
    out += '\nrunning:\n';
    out += table([
      ['JOB', 'TASK', 'STAGE', 'ATTEMPT', 'WORKER', 'HOST', 'ELAPSED', 'HEARTBEAT', 'FINISHED_AGE'],
      ...s.jobs.running.map((j) => [
        String(j.id),
        String(j.task_id),
        j.stage,
        String(j.attempt),
        j.worker_id ?? '-',
        j.host ?? '-',
        age(j.started_at),
        age(j.heartbeat_at),
        j.finished_age_s === null ? '-' : `${j.finished_age_s}s`,
      ]),
    ]);
  }
  out += `\nworkers  ${s.workers.length}\n`;
  if (s.workers.length)
    out += table([
      ['ID', 'HOST', 'PID', 'HEARTBEAT_AGE', 'RUNNING', 'SANDBOX', 'NETWORK', 'LIMITS'],
      ...s.workers.map((w) => [
        w.id,
        w.host,
        String(w.pid),
        `${w.heartbeat_age_s}s`,
        String(w.running),
        w.isolation?.sandbox ?? '?',
        w.isolation?.network ?? '?',
        w.isolation?.limits ?? '?',
      ]),
    ]);
  const r = s.reaper;
  out += `\nreaper   ${r.enabled ? 'enabled' : 'disabled'}  leader ${r.leader ?? '-'}  last tick ${r.last_tick_at ? `${age(r.last_tick_at)} ago` : 'never'}  reaped: dead_owner ${r.reaped.dead_owner}, known_outcome ${r.reaped.known_outcome}, max_running ${r.reaped.max_running}  lease reclaims ${r.lease_reclaims}\n`;
  if (r.last_error) out += `         last error: ${r.last_error}\n`;
  out += `stop     ${s.stop.enabled ? 'enabled' : 'disabled'}  pending [${s.stop.pending.join(', ')}]  deferred [${s.stop.deferred.join(', ')}]  completed ${s.stop.completed_total}\n`;
  out += `merge    ${s.merge.leases.length ? s.merge.leases.map((l) => `${l.project}: job ${l.job_id} (backend ${l.backend_pid}, ${l.age_s}s)`).join('; ') : 'no lease held'}\n`;
  return out;
}

export function formatTasks(tasks: Task[]): string {
  if (!tasks.length) return 'no tasks\n';
  return table([
    ['ID', 'STAGE', 'TITLE', 'BRANCH', 'NOTE', 'UPDATED'],
    ...tasks.map((t) => [
      String(t.id),
      t.stage,
      t.title.length > 48 ? `${t.title.slice(0, 47)}…` : t.title,
      t.branch ?? '-',
      t.blocked_reason ? `blocked: ${t.blocked_reason}` : t.waiting_for ? `waiting: ${t.waiting_for}` : t.cancel_requested_at && t.stage !== 'cancelled' ? 'stopping' : '',
      `${age(t.updated_at)} ago`,
    ]),
  ]);
}

export function formatTask(t: Task, jobs: Job[], runs: AgentRun[], events: TaskEvent[]): string {
  let out = `task ${t.id}: ${t.title}\nstage ${t.stage}  branch ${t.branch ?? '-'}  pr ${t.pr_number ?? '-'}  merged ${t.merged_sha?.slice(0, 12) ?? '-'}\n`;
  if (t.blocked_reason) out += `blocked: ${indentRest(t.blocked_reason, '  ')}\n`;
  if (t.waiting_for) out += `waiting for: ${t.waiting_for}\n`;
  out += '\njobs:\n' + table([['JOB', 'STAGE', 'ATTEMPT', 'STATUS', 'REASON', 'STARTED', 'FINISHED'], ...jobs.map((j) => [String(j.id), j.stage, String(j.attempt), j.status, j.reason ?? '', j.started_at?.toISOString() ?? '-', j.finished_at?.toISOString() ?? '-'])]);
  const why = jobs.filter((j) => j.detail);
  if (why.length) {
    out += '\nwhy:\n';
    for (const j of why) out += `  job ${j.id} ${j.stage} #${j.attempt} ${j.status}${j.failure_class ? ` (${j.failure_class})` : ''}: ${j.reason ?? ''} — ${indentRest(j.detail!, '      ')}\n`;
  }
  if (runs.length)
    out +=
      '\nruns:\n' +
      table([
        ['JOB', 'AGENT', 'PID', 'EXIT', 'COST', 'TOKENS', 'SESSION'],
        ...runs.map((r) => [String(r.job_id), r.agent, String(r.pid ?? '-'), String(r.exit_code ?? '-'), runCost(r), `${r.tokens_in ?? '-'}/${r.tokens_out ?? '-'}`, sessionOf(r)]),
      ]);
  out += '\nevents:\n' + events.map((e) => `  ${e.created_at.toISOString()}  ${eventText(e)}  by ${e.actor}\n`).join('');
  return out;
}

/** A run's cost, marked when it is orch's estimate rather than the agent's own figure. */
export function runCost(r: Pick<AgentRun, 'cost_usd' | 'cost_source'>): string {
  if (r.cost_usd === null) return '-';
  const usd = `$${Number(r.cost_usd).toFixed(4)}`;
  return r.cost_source === 'estimated' ? `~${usd}` : r.cost_source === 'estimated_fallback' ? `~${usd} (fallback price)` : usd;
}

function sessionOf(r: Pick<AgentRun, 'session_id' | 'resumed_session_id'>): string {
  if (!r.session_id) return '-';
  return r.resumed_session_id === r.session_id ? `${r.session_id} (resumed)` : r.session_id;
}

/** Continuation lines of a multi-line text, indented under its first line. */
function indentRest(text: string, indent: string): string {
  return text.replace(/\n/g, `\n${indent}`);
}

/**
 * An event in words: a transition as `stage_changed analysis → implementation (gate_passed)`,
 * anything else as its kind with its reason, and a failure's words after a dash.
 */
export function eventText(e: Pick<TaskEvent, 'kind' | 'reason' | 'data'>): string {
  const d = (e.data ?? {}) as { from?: unknown; to?: unknown; detail?: unknown };
  const move = typeof d.from === 'string' && typeof d.to === 'string' ? ` ${d.from} → ${d.to}` : '';
  const detail = typeof d.detail === 'string' && d.detail && !(e.reason ?? '').includes(d.detail) ? ` — ${oneLine(d.detail)}` : '';
  return `${e.kind}${move}${e.reason ? ` (${oneLine(e.reason)})` : ''}${detail}`;
}

/** The first line of a text, at most `max` characters (`orch task show` prints the whole of it once). */
function oneLine(text: string, max = 160): string {
  const first = text.split('\n')[0]!;
  return first.length > max ? `${first.slice(0, max - 1)}…` : first;
}
