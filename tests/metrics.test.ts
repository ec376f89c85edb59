/**
 * `/metrics` is valid Prometheus text — parsed by a real exposition-format parser
 * (parse-prometheus-text-format, a port of the Prometheus Python client's parser) — whose counters
 * move when work happens (computed from Postgres, so any api instance tells the same story).
 * The text stays hand-formatted (api/src/prometheus.ts): its histograms are aggregated in SQL,
 * which a client registry does not model (ADR 0010).
 */
import { sql } from 'kysely';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '@orch/api/app';
import { requestCancel, completeCancel } from '@orch/shared/cancel';
import { insertOutbox } from '@orch/shared/db/queries/outbox';
import { getTask } from '@orch/shared/db/queries/tasks';
import { createTask } from '@orch/shared/pipeline/tasks';
import { startOrch, waitFor, type Orch } from './support/harness.ts';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface Parsed {
  types: Map<string, string>;
  help: Map<string, string>;
  samples: Sample[];
}

const number = (v: string) => (v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : v === 'NaN' ? NaN : Number(v));

/**
 * Families (TYPE, HELP) from the parser as it is; samples from the same parser over the text
 * without its TYPE lines, where each sample line stays a sample of its own name. The parser
 * folds a histogram's series into one (its `flattenMetrics` keys buckets by `le` alone and drops
 * labelled `_sum`/`_count`), so a labelled histogram cannot be checked from its typed output.
 */
function parsePrometheus(text: string): Parsed {
  expect(text.endsWith('\n')).toBe(true);
  const families = parsePrometheusTextFormat(text);
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  for (const f of families) {
    // a family split in two (its samples not contiguous, or a second TYPE) shows as two entries
    expect(types.has(f.name), `family ${f.name} appears twice`).toBe(false);
    expect(f.type, `family ${f.name} has no # TYPE`).not.toBe('UNTYPED');
    expect(f.help, `family ${f.name} has no # HELP`).not.toBe('');
    types.set(f.name, f.type.toLowerCase());
    help.set(f.name, f.help);
  }
  const untyped = parsePrometheusTextFormat(text.replace(/^# TYPE .*\n/gm, ''));
  const samples = untyped.flatMap((f) => f.metrics.map((m) => ({ name: f.name, labels: m.labels ?? {}, value: number(m.value ?? '') })));
  for (const s of samples) expect(Number.isNaN(s.value), `${s.name} has no numeric value`).toBe(false);
  // the parser merges consecutive lines with equal labels: a duplicate series would vanish here
  const lines = text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
  expect(samples.length, 'one sample per line (no duplicate series)').toBe(lines.length);
  return { types, help, samples };
}

/** The family a sample belongs to: histograms expose name_bucket / name_sum / name_count. */
function familyOf(p: Parsed, name: string): string | undefined {
  if (p.types.has(name)) return name;
  const base = name.replace(/_(bucket|sum|count)$/, '');
  return p.types.get(base) === 'histogram' ? base : undefined;
}

function value(p: Parsed, name: string, labels: Record<string, string> = {}): number {
  const s = p.samples.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return s.reduce((n, x) => n + x.value, 0);
}

function checkWellFormed(p: Parsed): void {
  expect(p.samples.length).toBeGreaterThan(0);
  for (const s of p.samples) {
    const fam = familyOf(p, s.name);
    expect(fam, `sample ${s.name} has no # TYPE`).toBeDefined();
    expect(p.help.has(fam!), `family ${fam} has no # HELP`).toBe(true);
    if (p.types.get(fam!) === 'counter') expect(s.value).toBeGreaterThanOrEqual(0);
  }
  // one label set per family: every series of it has the same label names (buckets add `le`)
  for (const fam of p.types.keys()) {
    const names = new Set(
      p.samples
        .filter((s) => familyOf(p, s.name) === fam)
        .map((s) => Object.keys(s.labels).filter((k) => !(s.name === `${fam}_bucket` && k === 'le')).sort().join(',')),
    );
    expect(names.size, `label names of ${fam}: ${[...names].join(' | ')}`).toBeLessThanOrEqual(1); // 0: no series yet
  }
  // histograms: buckets cumulative and ending in +Inf == _count
  for (const [fam, type] of p.types) {
    if (type !== 'histogram') continue;
    const series = new Map<string, Sample[]>();
    for (const s of p.samples.filter((x) => x.name === `${fam}_bucket`)) {
      const { le: _le, ...rest } = s.labels;
      const key = JSON.stringify(rest);
      series.set(key, [...(series.get(key) ?? []), s]);
    }
    for (const [key, buckets] of series) {
      const les = buckets.map((b) => number(b.labels.le!));
      expect([...new Set(les)].sort((a, b) => a - b), `bounds of ${fam} ${key}`).toEqual(les);
      expect(les.at(-1)).toBe(Infinity);
      for (let i = 1; i < buckets.length; i++) expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value);
      const count = p.samples.find((x) => x.name === `${fam}_count` && JSON.stringify(x.labels) === key);
      expect(count?.value).toBe(buckets.at(-1)!.value);
      expect(p.samples.some((x) => x.name === `${fam}_sum` && JSON.stringify(x.labels) === key)).toBe(true);
    }
    const counted = p.samples.filter((x) => x.name === `${fam}_count`).map((x) => JSON.stringify(x.labels));
    expect(counted.sort(), `series of ${fam}`).toEqual([...series.keys()].sort());
  }
}

// ---------------------------------------------------------------------------------------------
let orch: Orch;
let app: ReturnType<typeof createApp>;
beforeAll(async () => {
  orch = await startOrch();
  const { db, boss, log } = orch.rt.svc;
  app = createApp({ db, boss, config: orch.config, log });
});
afterAll(async () => orch?.close());

const scrape = async () => {
  const res = await app.request('/metrics');
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  const p = parsePrometheus(await res.text());
  checkWellFormed(p);
  return p;
};

describe('the check of the exposition', () => {
  const good = [
    '# HELP h_seconds A histogram.',
    '# TYPE h_seconds histogram',
    'h_seconds_bucket{stage="a",le="1"} 1',
    'h_seconds_bucket{stage="a",le="+Inf"} 2',
    'h_seconds_sum{stage="a"} 3',
    'h_seconds_count{stage="a"} 2',
    'h_seconds_bucket{stage="b",le="1"} 0',
    'h_seconds_bucket{stage="b",le="+Inf"} 0',
    'h_seconds_sum{stage="b"} 0',
    'h_seconds_count{stage="b"} 0',
    '# HELP c_total A counter.',
    '# TYPE c_total counter',
    'c_total{kind="x"} 1',
    '',
  ].join('\n');
  const broken = (from: string, to: string) => good.replace(from, to);
  it('passes a well-formed text and fails each kind of mistake', () => {
    expect(() => checkWellFormed(parsePrometheus(good))).not.toThrow();
    for (const [what, text] of [
      ['+Inf bucket differs from _count', broken('h_seconds_count{stage="b"} 0', 'h_seconds_count{stage="b"} 1')],
      ['buckets not cumulative', broken('h_seconds_bucket{stage="a",le="1"} 1', 'h_seconds_bucket{stage="a",le="1"} 5')],
      ['no +Inf bucket', broken('h_seconds_bucket{stage="a",le="+Inf"} 2\n', '')],
      ['a series without _count', broken('h_seconds_count{stage="a"} 2\n', '')],
      ['no HELP', broken('# HELP c_total A counter.\n', '')],
      ['no TYPE', broken('# TYPE c_total counter\n', '')],
      ['a second label set', broken('c_total{kind="x"} 1', 'c_total{kind="x"} 1\nc_total{other="y"} 1')],
      ['a duplicate series', broken('c_total{kind="x"} 1', 'c_total{kind="x"} 1\nc_total{kind="x"} 2')],
      ['a negative counter', broken('c_total{kind="x"} 1', 'c_total{kind="x"} -1')],
      ['a family split in two', `${good}# HELP h_seconds again\n# TYPE h_seconds histogram\nh_seconds_count 1\n`],
    ])
      expect(() => checkWellFormed(parsePrometheus(text!)), what).toThrow();
  });
});

describe('GET /metrics', () => {
  it('is Prometheus text, and its counters move when a task runs to done, a STOP completes, deliveries and outbox rows appear', async () => {
    const before = await scrape();
    for (const fam of [
      'orch_jobs',
      'orch_tasks',
      'orch_queue_depth',
      'orch_dispatch_latency_seconds',
      'orch_stage_duration_seconds',
      'orch_agent_cost_usd_total',
      'orch_agent_tokens_total',
      'orch_reaper_actions_total',
      'orch_stop_cancelled_total',
      'orch_stop_latency_seconds',
      'orch_webhook_deliveries_total',
      'orch_outbox_backlog',
    ])
      expect(before.types.has(fam), fam).toBe(true);
    expect(value(before, 'orch_jobs', { status: 'done' })).toBe(0);
    expect(value(before, 'orch_stop_latency_seconds_count')).toBe(0);

    // a queued task shows in the queue depth
    const svc = orch.rt.svc;
    const queued = await createTask(svc, { project: 'p', title: 'waits in the queue' }, 'test');
    const q = await scrape();
    expect(value(q, 'orch_queue_depth')).toBe(1);
    expect(value(q, 'orch_jobs', { status: 'queued', stage: 'analysis' })).toBe(1);
    // ... and STOP of it is a cancelled task with a latency observation
    await requestCancel(svc, queued.id, 'test');
    await completeCancel(svc, queued.id, 'test');

    // one task through the whole pipeline with the demo agent and an in-process worker
    await orch.worker();
    const t = await createTask(svc, { project: 'p', title: 'runs to done' }, 'test');
    await waitFor(async () => (await getTask(svc.db, t.id))?.stage === 'done', 30_000, 'task done');

    await svc.db
      .insertInto('webhook_deliveries')
      .values([
        { dedupe_key: 'm-1', outcome: 'created', payload: '{}' },
        { dedupe_key: 'm-2', outcome: 'ignored', payload: '{}' },
        { dedupe_key: 'm-3', outcome: 'ignored', payload: '{}' },
      ])
      .execute();
    await insertOutbox(svc.db, { taskId: t.id, kind: 'comment', payload: { issueId: 'x', text: 'hi' } });

    const after = await scrape();
    expect(value(after, 'orch_tasks', { stage: 'done' })).toBe(1);
    expect(value(after, 'orch_tasks', { stage: 'cancelled' })).toBe(1);
    for (const stage of ['analysis', 'implementation', 'review', 'merge']) {
      expect(value(after, 'orch_jobs', { status: 'done', stage }), stage).toBe(1);
      expect(value(after, 'orch_stage_duration_seconds_count', { stage }), stage).toBe(1);
      expect(value(after, 'orch_dispatch_latency_seconds_count', { stage }), stage).toBe(1);
      expect(value(after, 'orch_stage_duration_seconds_sum', { stage })).toBeGreaterThan(0);
    }
    expect(value(after, 'orch_jobs', { status: 'cancelled', stage: 'analysis' })).toBe(1);
    expect(value(after, 'orch_queue_depth')).toBe(0);
    expect(value(after, 'orch_agent_runs_total', { agent: 'demo' })).toBe(3);
    expect(value(after, 'orch_stop_cancelled_total')).toBe(1);
    expect(value(after, 'orch_stop_latency_seconds_count')).toBe(1);
    expect(value(after, 'orch_webhook_deliveries_total', { outcome: 'ignored' })).toBe(2);
    expect(value(after, 'orch_webhook_deliveries_total', { outcome: 'created' })).toBe(1);
    expect(value(after, 'orch_outbox_backlog')).toBe(1);
    expect(value(after, 'orch_workers', { state: 'alive' })).toBe(1);

    // the psql view of the same history: one timeline row per job, durations and dispatch delays
    const timeline = await sql<{ stage: string; status: string; duration_s: number; dispatch_s: number; agent: string | null }>`
      SELECT stage, status, duration_s, dispatch_s, agent FROM v_task_timeline WHERE task_id = ${t.id} ORDER BY job_id`.execute(svc.db);
    expect(timeline.rows.map((r) => [r.stage, r.status])).toEqual([
      ['analysis', 'done'],
      ['implementation', 'done'],
      ['review', 'done'],
      ['merge', 'done'],
    ]);
    for (const r of timeline.rows) {
      expect(r.duration_s).toBeGreaterThanOrEqual(0);
      expect(r.dispatch_s).toBeGreaterThanOrEqual(0);
    }
    expect(timeline.rows[0]!.agent).toBe('demo');

    // every counter is monotonic between the two scrapes
    for (const s of before.samples) {
      if (before.types.get(familyOf(before, s.name)!) !== 'counter') continue;
      expect(value(after, s.name, s.labels), s.name).toBeGreaterThanOrEqual(s.value);
    }
  });

  it('any api instance answers the same: a second app over the same database scrapes the same counts', async () => {
    const other = createApp({ db: orch.rt.svc.db, boss: orch.rt.svc.boss, config: orch.config, log: orch.rt.svc.log });
    const a = parsePrometheus(await (await app.request('/metrics')).text());
    const b = parsePrometheus(await (await other.request('/metrics')).text());
    expect(value(b, 'orch_tasks', { stage: 'done' })).toBe(value(a, 'orch_tasks', { stage: 'done' }));
    expect(value(b, 'orch_agent_runs_total')).toBe(value(a, 'orch_agent_runs_total'));
  });
});
