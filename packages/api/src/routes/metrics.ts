/**
 * `GET /metrics`: Prometheus text computed from Postgres at scrape time, so every api instance
 * answers the fleet's truth. Histograms cover every row ever (cumulative, as Prometheus expects):
 * `rate(orch_dispatch_latency_seconds_sum[5m]) / rate(..._count[5m])` is the recent mean.
 */
import { createRoute, z } from '@hono/zod-openapi';
import * as q from '@orch/shared/db/queries/metrics';
import { outboxBacklog } from '@orch/shared/db/queries/outbox';
import { planeRequestTotals } from '@orch/shared/db/queries/plane-rate-budget';
import { JOB_STATUSES, TASK_STAGES, WORK_STAGES } from '@orch/shared/stages';
import type { ApiDeps } from '../deps.ts';
import { exposition, PROMETHEUS_CONTENT_TYPE, type Family, type Sample } from '../prometheus.ts';
import { errors, INTERNAL_ERROR, router } from '../router.ts';

const DISPATCH_BOUNDS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900];
const STAGE_BOUNDS = [1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200];
const STOP_BOUNDS = [0.25, 0.5, 1, 2, 5, 10, 30, 60, 300];

/** Every combination present, zeros included: a series exists before its first increment. */
function grid(rows: q.LabelledCount[], axes: Record<string, readonly string[]>): Sample[] {
  const key = (l: Record<string, string>) => Object.keys(axes).map((k) => l[k] ?? '').join('\u0000');
  const seen = new Map(rows.map((r) => [key(r.labels), r.value]));
  let combos: Array<Record<string, string>> = [{}];
  for (const [k, values] of Object.entries(axes)) combos = combos.flatMap((c) => values.map((v) => ({ ...c, [k]: v })));
  const out: Sample[] = combos.map((labels) => ({ labels, value: seen.get(key(labels)) ?? 0 }));
  // values outside the known axes (a status added later) are reported too
  const known = new Set(combos.map(key));
  for (const r of rows) if (!known.has(key(r.labels))) out.push({ labels: r.labels, value: r.value });
  return out;
}

async function collectMetrics(d: ApiDeps): Promise<Family[]> {
  const db = d.db;
  const [jobs, tasks, depth, workers, dispatch, durations, stopLat, agents, reaper, stop, webhooks, backlog, leases, plane] = await Promise.all([
    q.jobsByStatusAndStage(db),
    q.tasksByStage(db),
    q.queueDepth(db),
    q.workerCounts(db, d.config.heartbeat.timeoutS),
    q.dispatchLatency(db, DISPATCH_BOUNDS),
    q.stageDuration(db, STAGE_BOUNDS),
    q.stopLatency(db, STOP_BOUNDS),
    q.agentTotals(db),
    q.reaperTotals(db),
    q.stopCounts(db),
    q.webhookOutcomes(db),
    outboxBacklog(db),
    q.mergeLeasesHeld(db),
    planeRequestTotals(db),
  ]);
  const callers = ['intake', 'outbox', 'poll'];
  const planeSamples = (field: 'requests' | 'rate_limited') =>
    grid(plane.map((p) => ({ labels: { caller: p.caller }, value: p[field] })), { caller: callers });
  return [
    { name: 'orch_jobs', help: 'Jobs by status and stage (rows of the jobs table).', type: 'gauge', samples: grid(jobs, { status: JOB_STATUSES, stage: WORK_STAGES }) },
    { name: 'orch_tasks', help: 'Tasks by stage.', type: 'gauge', samples: grid(tasks, { stage: TASK_STAGES }) },
    { name: 'orch_queue_depth', help: 'Queued jobs (including those waiting out a retry backoff).', type: 'gauge', samples: [{ value: depth.queued }] },
    { name: 'orch_queue_ready', help: 'Queued jobs whose run_after has passed (claimable now).', type: 'gauge', samples: [{ value: depth.ready }] },
    { name: 'orch_tasks_blocked', help: 'Live tasks blocked after exhausting their attempts.', type: 'gauge', samples: [{ value: depth.blocked_tasks }] },
    {
      name: 'orch_workers',
      help: 'Registered, not stopped workers by heartbeat freshness (stale: older than ORCH_HEARTBEAT_TIMEOUT_S).',
      type: 'gauge',
      samples: [
        { labels: { state: 'alive' }, value: workers.alive },
        { labels: { state: 'stale' }, value: workers.stale },
      ],
    },
    { name: 'orch_dispatch_latency_seconds', help: 'Claim time minus run_after of claimed jobs, by stage.', type: 'histogram', bounds: DISPATCH_BOUNDS, series: dispatch },
    { name: 'orch_stage_duration_seconds', help: 'Duration of finished jobs (finished_at - started_at), by stage.', type: 'histogram', bounds: STAGE_BOUNDS, series: durations },
    { name: 'orch_agent_runs_total', help: 'Agent runs (agent, deploy command) by agent.', type: 'counter', samples: agents.map((a) => ({ labels: { agent: a.agent }, value: a.runs })) },
    { name: 'orch_agent_cost_usd_total', help: 'Cost reported by agents, in USD.', type: 'counter', samples: agents.map((a) => ({ labels: { agent: a.agent }, value: a.cost_usd })) },
    {
      name: 'orch_agent_tokens_total',
      help: 'Tokens reported by agents, by direction.',
      type: 'counter',
      samples: agents.flatMap((a) => [
        { labels: { agent: a.agent, direction: 'in' }, value: a.tokens_in },
        { labels: { agent: a.agent, direction: 'out' }, value: a.tokens_out },
      ]),
    },
    {
      name: 'orch_reaper_actions_total',
      help: 'Reaper actions by tier, summed over every reaper process.',
      type: 'counter',
      samples: (['dead_owner', 'known_outcome', 'max_running', 'lease_reclaim', 'cancel_completed'] as const).map((tier) => ({
        labels: { tier },
        value: reaper[tier],
      })),
    },
    { name: 'orch_stop_cancelled_total', help: 'Tasks cancelled by STOP.', type: 'counter', samples: [{ value: stop.cancelled }] },
    {
      name: 'orch_stop_in_progress',
      help: 'STOPs requested and not completed: pending, or deferred by a critical window (merge/deploy).',
      type: 'gauge',
      samples: [
        { labels: { state: 'pending' }, value: stop.pending },
        { labels: { state: 'deferred' }, value: stop.deferred },
      ],
    },
    { name: 'orch_stop_latency_seconds', help: 'cancelled_at - cancel_requested_at of cancelled tasks.', type: 'histogram', bounds: STOP_BOUNDS, series: stopLat.length ? stopLat : [{ labels: {}, buckets: STOP_BOUNDS.map(() => 0), count: 0, sum: 0 }] },
    { name: 'orch_webhook_deliveries_total', help: 'Plane webhook deliveries recorded, by outcome.', type: 'counter', samples: webhooks.map((w) => ({ labels: w.labels, value: w.value })) },
    {
      name: 'orch_outbox_backlog',
      help: 'Outbox calls written and not yet delivered, by target (plane: state changes and comments; gitea: PR comments and commit statuses).',
      type: 'gauge',
      samples: grid(backlog.map((b) => ({ labels: { target: b.target }, value: b.n })), { target: ['plane', 'gitea'] }),
    },
    {
      name: 'orch_plane_requests_total',
      help: "Requests sent to Plane by the whole fleet, by caller (outbox, poll, intake), summed over API keys.",
      type: 'counter',
      samples: planeSamples('requests'),
    },
    {
      name: 'orch_plane_rate_limited_total',
      help: 'Plane answers 429 (rate limited), by caller.',
      type: 'counter',
      samples: planeSamples('rate_limited'),
    },
    { name: 'orch_merge_leases_held', help: 'Projects whose merge lock is held.', type: 'gauge', samples: [{ value: leases }] },
  ];
}

const metrics = createRoute({
  method: 'get',
  path: '/metrics',
  summary: 'Prometheus metrics, computed from Postgres at scrape time',
  responses: {
    200: { description: 'text exposition format 0.0.4', content: { 'text/plain': { schema: z.string() } } },
    ...errors(INTERNAL_ERROR),
  },
});

export function metricsRoutes(d: ApiDeps) {
  return router().openapi(metrics, async (c) => {
    const body = exposition(await collectMetrics(d));
    return c.text(body, 200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'cache-control': 'no-store' });
  });
}
