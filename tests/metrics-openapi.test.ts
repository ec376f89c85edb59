/**
 * What an operator reads besides the dashboard: `/metrics` is valid Prometheus text whose counters
 * move when work happens (computed from Postgres, so any api instance tells the same story),
 * `/openapi.json` describes every route the app serves with the request schemas that validate
 * them, and `/docs` is a page.
 */
import { sql } from 'kysely';
import { z } from 'zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '@orch/api/app';
import { newTaskSchema } from '@orch/api/routes/tasks';
import { requestCancel, completeCancel } from '@orch/shared/cancel';
import { insertOutbox } from '@orch/shared/db/queries/outbox';
import { getTask } from '@orch/shared/db/queries/tasks';
import { projectInputSchema } from '@orch/shared/pipeline/projects';
import { createTask } from '@orch/shared/pipeline/tasks';
import { startOrch, waitFor, type Orch } from './support/harness.ts';

// ---- a tiny Prometheus text parser -----------------------------------------------------------
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

function parsePrometheus(text: string): Parsed {
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  const samples: Sample[] = [];
  const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  expect(text.endsWith('\n')).toBe(true);
  for (const [i, line] of text.split('\n').entries()) {
    if (line === '') continue;
    const where = `line ${i + 1}: ${line}`;
    let m: RegExpExecArray | null;
    if ((m = new RegExp(`^# HELP (${NAME}) (.*)$`).exec(line))) {
      expect(help.has(m[1]!), `duplicate HELP, ${where}`).toBe(false);
      help.set(m[1]!, m[2]!);
    } else if ((m = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`).exec(line))) {
      expect(types.has(m[1]!), `duplicate TYPE, ${where}`).toBe(false);
      types.set(m[1]!, m[2]!);
    } else if (line.startsWith('#')) {
      throw new Error(`unknown comment, ${where}`);
    } else if ((m = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)$`).exec(line))) {
      const labels: Record<string, string> = {};
      const body = m[2] ?? '';
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/gy;
      let consumed = 0;
      let lm: RegExpExecArray | null;
      while (consumed < body.length && (lm = re.exec(body))) {
        labels[lm[1]!] = lm[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
        consumed = re.lastIndex;
      }
      expect(consumed, `bad labels, ${where}`).toBe(body.length);
      const raw = m[3]!;
      const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw);
      expect(Number.isNaN(value) && raw !== 'NaN', `bad value, ${where}`).toBe(false);
      samples.push({ name: m[1]!, labels, value });
    } else {
      throw new Error(`not Prometheus text, ${where}`);
    }
  }
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
      const les = buckets.map((b) => (b.labels.le === '+Inf' ? Infinity : Number(b.labels.le)));
      expect([...les].sort((a, b) => a - b)).toEqual(les);
      expect(les.at(-1)).toBe(Infinity);
      for (let i = 1; i < buckets.length; i++) expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value);
      const count = p.samples.find((x) => x.name === `${fam}_count` && JSON.stringify(x.labels) === key);
      expect(count?.value).toBe(buckets.at(-1)!.value);
      expect(p.samples.some((x) => x.name === `${fam}_sum` && JSON.stringify(x.labels) === key)).toBe(true);
    }
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

describe('GET /openapi.json and /docs', () => {
  const requestSchema = (s: z.ZodType) => {
    const { $schema: _s, ...rest } = z.toJSONSchema(s, { io: 'input', target: 'draft-2020-12' }) as Record<string, unknown>;
    return rest;
  };

  it('is an OpenAPI 3.1 document with every route the app serves, bodies from the validating zod schemas', async () => {
    const res = await app.request('/openapi.json');
    expect(res.status).toBe(200);
    const doc = (await res.json()) as {
      openapi: string;
      info: { title: string; version: string };
      paths: Record<string, Record<string, { responses: Record<string, unknown>; requestBody?: { content: Record<string, { schema: { $ref: string } }> } }>>;
      components: { schemas: Record<string, unknown> };
    };
    expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
    expect(doc.info.title).toBeTruthy();
    expect(doc.info.version).toBeTruthy();

    const expected: Array<[string, string]> = [
      ['post', '/webhooks/plane'],
      ['get', '/queue'],
      ['get', '/tasks'],
      ['post', '/tasks'],
      ['get', '/tasks/{id}'],
      ['post', '/tasks/{id}/stop'],
      ['post', '/tasks/{id}/retry'],
      ['get', '/projects'],
      ['post', '/projects'],
      ['get', '/healthz'],
      ['get', '/readyz'],
      ['get', '/metrics'],
      ['get', '/'],
      ['get', '/openapi.json'],
      ['get', '/docs'],
    ];
    for (const [method, path] of expected) {
      const op = doc.paths[path]?.[method];
      expect(op, `${method} ${path}`).toBeDefined();
      expect(Object.keys(op!.responses).length, `${method} ${path} responses`).toBeGreaterThan(0);
    }
    // ... and nothing the app serves is missing from it (Hono knows its routes)
    const served = app.routes
      .filter((r) => r.method !== 'ALL')
      .map((r) => [r.method.toLowerCase(), r.path.replace(/:(\w+)/g, '{$1}').replace(/(.)\/$/, '$1')] as const);
    expect(served.length).toBeGreaterThanOrEqual(expected.length);
    for (const [method, path] of served) expect(doc.paths[path]?.[method], `served but undocumented: ${method} ${path}`).toBeDefined();

    // request bodies are the zod schemas that validate them
    const bodyOf = (method: string, path: string) => {
      const ref = doc.paths[path]![method]!.requestBody!.content['application/json']!.schema.$ref;
      return doc.components.schemas[ref.split('/').pop()!];
    };
    expect(bodyOf('post', '/tasks')).toEqual(requestSchema(newTaskSchema));
    expect(bodyOf('post', '/projects')).toEqual(requestSchema(projectInputSchema));
    expect((bodyOf('post', '/tasks') as { required: string[] }).required).toEqual(expect.arrayContaining(['project', 'title']));

    // every $ref resolves
    const refs = JSON.stringify(doc).match(/"#\/components\/schemas\/[^"]+"/g) ?? [];
    for (const r of refs) expect(doc.components.schemas[JSON.parse(r).split('/').pop()], r).toBeDefined();
  });

  it('/docs is an HTML page listing the routes', async () => {
    const res = await app.request('/docs');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/html');
    const html = await res.text();
    expect(html).toMatch(/^<!doctype html>/i);
    for (const p of ['/webhooks/plane', '/queue', '/tasks/{id}/stop', '/projects', '/metrics', '/openapi.json']) expect(html).toContain(p);
  });
});
