/**
 * The served `/openapi.json` is the API: every route's real responses — its 2xx and each error it
 * documents — validate against the document with a JSON Schema 2020-12 validator (ajv), every
 * object in them closed (`additionalProperties: false`), so an undocumented field fails; every
 * status a route documents is produced here at least once, and every array a response holds is
 * seen non-empty at least once (an item schema never exercised proves nothing). The state comes
 * from a real worker running tasks through the pipeline, then from the query functions the
 * worker, reaper and merge step use (a claimed job whose agent exited, a held merge lease, a
 * ticking reaper leader, a pending and a deferred STOP), with no process racing the snapshot.
 */
import { Ajv2020 } from 'ajv/dist/2020.js';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '@orch/api/app';
import { requestCancel } from '@orch/shared/cancel';
import { createDb, type DbHandle } from '@orch/shared/db/client';
import { tryMergeLock } from '@orch/shared/db/queries/advisory-locks';
import { recordAgentExit, startAgentRun } from '@orch/shared/db/queries/agent-runs';
import { appendEvent } from '@orch/shared/db/queries/events';
import { claimNextJob } from '@orch/shared/db/queries/jobs';
import { recordLease } from '@orch/shared/db/queries/merge-leases';
import { saveReaperState } from '@orch/shared/db/queries/reaper-state';
import { enterCriticalWindow, getTask } from '@orch/shared/db/queries/tasks';
import { heartbeatWorker, registerWorker } from '@orch/shared/db/queries/workers';
import { createTask } from '@orch/shared/pipeline/tasks';
import { loadConfig } from '@orch/shared/runtime/config';
import { signPlaneBody, planeStateChangeBody } from './support/plane-webhook.ts';
import { startOrch, waitFor, withDatabase, type Orch } from './support/harness.ts';

const TOKEN = 'contract-token';
const SECRET = 'contract-webhook-secret';
const LIMIT = 4096;

type App = ReturnType<typeof createApp>;
interface Operation {
  responses: Record<string, { content?: Record<string, { schema: unknown }> }>;
  requestBody?: { content: Record<string, { schema: unknown }> };
}
interface Doc {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, unknown> };
}

let orch: Orch;
let app: App; // token, webhook secret, small body limit
let stopOff: App; // STOP disabled, no webhook secret
let broken: App; // a database that does not exist
let brokenDb: DbHandle;
let doc: Doc;
const ajv = new Ajv2020({ strict: true, allErrors: true });
// RFC 3339 date-time (ajv ships no formats; ajv-formats is not a dependency)
ajv.addFormat('date-time', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i);

const ids = { done: 0, blocked: 0, live: 0 };

beforeAll(async () => {
  orch = await startOrch({ env: { ORCH_JOB_MAX_ATTEMPTS: '1' } });
  const svc = orch.rt.svc;
  const config = loadConfig({ ...orch.env, ORCH_API_TOKEN: TOKEN, PLANE_WEBHOOK_SECRET: SECRET, ORCH_API_BODY_LIMIT_BYTES: String(LIMIT) });
  app = createApp({ db: svc.db, boss: svc.boss, config, log: orch.log });
  stopOff = createApp({ db: svc.db, boss: svc.boss, config: loadConfig({ ...orch.env, ORCH_STOP_STATUS_ENABLED: 'false' }), log: orch.log });
  brokenDb = createDb(withDatabase(orch.url, 'orch_contract_no_such_db'), { max: 2 });
  broken = createApp({ db: brokenDb.db, boss: svc.boss, config, log: orch.log });
  doc = (await (await app.request('/openapi.json')).json()) as Doc;
  // The document's own keys are not JSON Schema keywords; declared so, strict mode stays on for
  // every schema in it.
  ajv.addVocabulary(Object.keys(doc));
  ajv.addSchema(doc as object, 'openapi.json');

  // 1. real work: one task through the whole pipeline, one blocked by its failing test command
  const failing = await orch.addProject({ slug: 'failing', test_cmd: 'echo "1 test failed" >&2; exit 1' });
  const worker = await orch.worker();
  ids.done = (await createTask(svc, { project: 'p', title: 'runs to done' }, 'test')).id;
  ids.blocked = (await createTask(svc, { project: failing.slug, title: 'is blocked' }, 'test')).id;
  await waitFor(async () => (await getTask(svc.db, ids.done))?.stage === 'done', 40_000, 'task done');
  await waitFor(async () => (await getTask(svc.db, ids.blocked))?.blocked_at, 40_000, 'task blocked');
  await worker.stop();

  // 2. what a running fleet looks like, written by the functions the fleet writes it with
  // a worker whose agents run unsandboxed (its warning is in the snapshot)
  await registerWorker(svc.db, {
    id: 'contract-worker',
    host: 'test-host',
    pid: process.pid,
    slots: 2,
    isolation: { sandbox: 'none', network: 'on', limits: 'no limits (off)', warning: 'agents run unsandboxed (ORCH_AGENT_SANDBOX=none)' },
  });
  await heartbeatWorker(svc.db, 'contract-worker');
  ids.live = (await createTask(svc, { project: 'p', title: 'agent exited, still finalizing' }, 'test')).id;
  const job = await claimNextJob(svc.db, { workerId: 'contract-worker', host: 'test-host', pid: process.pid, maxConcurrency: 10 });
  expect(job?.task_id).toBe(ids.live);
  const run = await startAgentRun(svc.db, { jobId: job!.id, agent: 'demo', host: 'test-host', pid: process.pid });
  await recordAgentExit(svc.db, run.id, {
    exitCode: 0,
    signal: null,
    costUsd: 0.25,
    tokensIn: 1200,
    tokensOut: 340,
    logTail: 'ok\n',
    error: null,
    sessionId: '8cb4c532-e261-40a5-aa61-1d23a31e8c95',
    lastMessage: 'done',
    costSource: 'reported',
    transcript: [
      { n: 0, at: 12, kind: 'message', text: 'I will add the file.' },
      { n: 1, at: 40, kind: 'tool', text: 'Bash: git commit -m x' },
      { n: 2, at: 55, kind: 'output', text: 'exit 1', failed: true },
    ],
  });
  await saveReaperState(svc.db, {
    id: 'contract-reaper',
    host: 'test-host',
    pid: process.pid,
    isLeader: true,
    intervalS: 60,
    add: { dead_owner: 1, known_outcome: 0, max_running: 0, lease_reclaims: 0, cancels_completed: 0 },
    error: 'a tick failed once',
  });
  const holder = await orch.rt.svc.pool.connect();
  expect(await tryMergeLock(holder, orch.project.id)).toBe(true);
  await recordLease(holder, { projectId: orch.project.id, jobId: job!.id, workerId: 'contract-worker' });
  closers.push(async () => holder.release());
  const pending = await createTask(svc, { project: 'p', title: 'stop pending' }, 'test');
  await requestCancel(svc, pending.id, 'test');
  const deferred = await createTask(svc, { project: 'p', title: 'stop deferred' }, 'test');
  expect(await enterCriticalWindow(svc.db, deferred.id)).toBe(true);
  await requestCancel(svc, deferred.id, 'test');
  await appendEvent(svc.db, { taskId: deferred.id, kind: 'cancel_error', actor: 'test', reason: 'branch delete failed once' });
}, 120_000);

const closers: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of closers) await c().catch(() => {});
  await brokenDb?.close();
  await orch?.close();
});

// ---- one request, checked against the document ----------------------------------------------
const covered = new Set<string>();
const arrays = new Map<string, boolean>(); // array path in a response → seen non-empty

function operation(template: string, method: string): Operation {
  const op = doc.paths[template]?.[method];
  if (!op) throw new Error(`undocumented route: ${method.toUpperCase()} ${template}`);
  return op;
}

const pointer = (...parts: string[]) => parts.map((p) => p.replace(/~/g, '~0').replace(/\//g, '~1')).join('/');

/** Arrays of the document's own objects; free-form parts (event `data`, the document itself) are not its to describe. */
function noteArrays(where: string, v: unknown): void {
  if (where.startsWith('get /openapi.json') || /\.data$/.test(where)) return;
  if (Array.isArray(v)) {
    arrays.set(where, (arrays.get(where) ?? false) || v.length > 0);
    for (const x of v) noteArrays(`${where}[]`, x);
  } else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) noteArrays(`${where}.${k}`, x);
  }
}

interface Call {
  app?: App;
  method?: 'get' | 'post';
  /** the documented path (`/tasks/{id}`) */
  route: string;
  /** the requested path, when it differs from the route */
  url?: string;
  body?: string;
  headers?: Record<string, string>;
  /** send the bearer token (default: on POST) */
  token?: boolean;
  status: number;
}

async function call(c: Call): Promise<unknown> {
  const method = c.method ?? 'get';
  const headers: Record<string, string> = { ...(c.body !== undefined ? { 'content-type': 'application/json' } : {}), ...c.headers };
  if (c.token ?? method === 'post') headers.authorization = `Bearer ${TOKEN}`;
  const res = await (c.app ?? app).request(c.url ?? c.route, { method: method.toUpperCase(), body: c.body, headers });
  const what = `${method.toUpperCase()} ${c.url ?? c.route} → ${res.status}`;
  const text = await res.text();
  expect(res.status, `${what}: ${text.slice(0, 300)}`).toBe(c.status);
  const documented = operation(c.route, method).responses[String(res.status)];
  expect(documented, `${what} is not documented`).toBeDefined();
  covered.add(`${method} ${c.route} ${res.status}`);
  const type = (res.headers.get('content-type') ?? '').split(';')[0]!.trim();
  expect(Object.keys(documented!.content ?? {}), `${what}: content type ${type}`).toContain(type);
  if (type !== 'application/json') return text;
  const body = JSON.parse(text) as unknown;
  const validate = ajv.getSchema(`openapi.json#/${pointer('paths', c.route, method, 'responses', String(res.status), 'content', type, 'schema')}`)!;
  expect(validate(body) ? [] : validate.errors, `${what}: the body against the document`).toEqual([]);
  noteArrays(`${method} ${c.route} ${res.status}`, body);
  return body;
}

const signed = (body: string) => ({ 'x-plane-signature': signPlaneBody(body, SECRET) });

describe('every route answers what /openapi.json says, 2xx and every error', () => {
  it('the document is OpenAPI 3.1, and every object schema in it is closed', () => {
    expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
    const open: string[] = [];
    const walk = (where: string, s: unknown): void => {
      if (Array.isArray(s)) return s.forEach((x, i) => walk(`${where}/${i}`, x));
      if (!s || typeof s !== 'object') return;
      const o = s as Record<string, unknown>;
      if (o.properties && o.additionalProperties !== false) open.push(where);
      for (const [k, v] of Object.entries(o)) walk(`${where}/${k}`, v);
    };
    walk('#/components/schemas', doc.components.schemas);
    for (const [p, ops] of Object.entries(doc.paths))
      for (const [m, op] of Object.entries(ops)) walk(`#/paths/${p}/${m}/responses`, op.responses);
    expect(open).toEqual([]);
    // the request bodies are named components (the /docs page shows them by name)
    expect(doc.paths['/tasks']!.post!.requestBody!.content['application/json']!.schema).toEqual({ $ref: '#/components/schemas/NewTask' });
    expect(doc.paths['/projects']!.post!.requestBody!.content['application/json']!.schema).toEqual({ $ref: '#/components/schemas/ProjectInput' });
  });

  it('and nothing the app serves is missing from it (Hono knows its routes)', () => {
    const served = app.routes
      .filter((r) => r.method !== 'ALL')
      .map((r) => `${r.method.toLowerCase()} ${r.path.replace(/:(\w+)/g, '{$1}').replace(/(.)\/$/, '$1')}`);
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${p}`));
    expect(served.length).toBeGreaterThanOrEqual(15);
    expect([...new Set(served)].sort()).toEqual(documented.sort());
  });

  it('reads', async () => {
    const one = (await call({ route: '/tasks/{id}', url: `/tasks/${ids.done}`, status: 200 })) as Record<string, unknown[]>;
    // the run to done left each kind of row behind (else the item schemas were never exercised)
    expect(one.jobs!.length).toBe(4);
    expect(one.runs!.length).toBe(3);
    expect(one.artefacts!.length).toBeGreaterThanOrEqual(2);
    const blocked = (await call({ route: '/tasks/{id}', url: `/tasks/${ids.blocked}`, status: 200 })) as { jobs: Array<{ test_exit_code: number | null }> };
    expect(blocked.jobs.some((j) => j.test_exit_code === 1)).toBe(true);
    await call({ route: '/tasks/{id}', url: `/tasks/${ids.live}`, status: 200 });
    await call({ route: '/tasks/{id}', url: '/tasks/abc', status: 400 });
    await call({ route: '/tasks/{id}', url: '/tasks/0', status: 400 });
    await call({ route: '/tasks/{id}', url: '/tasks/999999', status: 404 });
    await call({ route: '/tasks', status: 200 });
    await call({ route: '/tasks', url: '/tasks?stage=done&project=p&limit=5', status: 200 });
    await call({ route: '/tasks', url: '/tasks?stage=bogus', status: 400 });
    await call({ route: '/tasks', url: '/tasks?limit=0', status: 400 });
    await call({ route: '/tasks', url: '/tasks?project=nope', status: 404 });
    await call({ route: '/projects', status: 200 });
    const q = (await call({ route: '/queue', status: 200 })) as {
      jobs: { running: Array<{ finished_age_s: number | null }> };
      reaper: { leader: string | null };
      stop: { pending: number[]; deferred: number[] };
    };
    expect(q.jobs.running[0]!.finished_age_s).toEqual(expect.any(Number));
    expect(q.reaper.leader).toBe(`test-host:${process.pid}`);
    expect(q.stop.deferred).toHaveLength(1);
    await call({ route: '/healthz', status: 200 });
    await call({ route: '/readyz', status: 200 });
    expect(await call({ route: '/metrics', status: 200 })).toContain('# TYPE orch_jobs gauge');
    await call({ route: '/openapi.json', status: 200 });
    const page = (await call({ route: '/docs', status: 200 })) as string;
    expect(page).toMatch(/^<!doctype html>/i);
    for (const p of Object.keys(doc.paths)) expect(page, `/docs lists ${p}`).toContain(`<code>${p}</code>`);
    expect(await call({ route: '/', status: 200 })).toMatch(/^<!doctype html>/i);
    const live = (await call({ route: '/tasks/{id}', url: `/tasks/${ids.live}`, status: 200 })) as { runs: Array<{ cost_usd: string }> };
    expect(live.runs[0]!.cost_usd).toBe('0.250000'); // numeric(12,6), as pg returns it
  });

  it('writes, and each of their errors', async () => {
    const task = JSON.stringify({ project: 'p', title: 'made over HTTP', body: 'b', depends_on: [ids.done] });
    const made = (await call({ method: 'post', route: '/tasks', body: task, status: 201 })) as { task: { id: number } };
    await call({ method: 'post', route: '/tasks', body: task, token: false, status: 401 });
    await call({ method: 'post', route: '/tasks', body: '{"project":"p","title":', status: 400 });
    await call({ method: 'post', route: '/tasks', body: '{"project":"p","title":"x","evil":1}', status: 400 });
    await call({ method: 'post', route: '/tasks', body: '{"project":"p","title":"x","depends_on":[987654]}', status: 400 });
    await call({ method: 'post', route: '/tasks', body: '{"project":"nope","title":"x"}', status: 404 });
    await call({ method: 'post', route: '/tasks', body: JSON.stringify({ project: 'p', title: 'x', body: 'y'.repeat(LIMIT) }), status: 413 });
    await call({ method: 'post', route: '/tasks', body: task, headers: { 'content-type': 'text/plain' }, status: 415 });

    const repo = JSON.stringify({ slug: 'second', repo: orch.repo });
    await call({ method: 'post', route: '/projects', body: repo, status: 201 });
    await call({ method: 'post', route: '/projects', body: repo, status: 409 });
    await call({ method: 'post', route: '/projects', body: repo, token: false, status: 401 });
    await call({ method: 'post', route: '/projects', body: '{"slug":"Bad Slug","repo":"x"}', status: 400 });
    await call({ method: 'post', route: '/projects', body: '{"slug":"ok","repo":"/nonexistent/repo.git"}', status: 400 });
    await call({ method: 'post', route: '/projects', body: JSON.stringify({ slug: 'big', repo: 'r'.repeat(LIMIT) }), status: 413 });
    await call({ method: 'post', route: '/projects', body: repo, headers: { 'content-type': 'application/x-www-form-urlencoded' }, status: 415 });

    const stopOf = (id: number | string) => ({ method: 'post' as const, route: '/tasks/{id}/stop', url: `/tasks/${id}/stop` });
    await call({ ...stopOf(made.task.id), status: 202 });
    await call({ ...stopOf(made.task.id), status: 200 });
    await call({ ...stopOf(ids.done), status: 200 });
    await call({ ...stopOf('abc'), status: 400 });
    await call({ ...stopOf(ids.done), token: false, status: 401 });
    await call({ ...stopOf(999999), status: 404 });
    await call({ ...stopOf(ids.done), app: stopOff, status: 409 });

    const retryOf = (id: number | string) => ({ method: 'post' as const, route: '/tasks/{id}/retry', url: `/tasks/${id}/retry` });
    await call({ ...retryOf(ids.blocked), token: false, status: 401 });
    await call({ ...retryOf(ids.blocked), status: 202 });
    await call({ ...retryOf(ids.blocked), status: 409 }); // its job is queued now
    await call({ ...retryOf('x1'), status: 400 });
    await call({ ...retryOf(999999), status: 404 });
  });

  it('the Plane webhook', async () => {
    const body = JSON.stringify(
      planeStateChangeBody({ issueId: '5d1f0a3e-1b2c-4d5e-8f90-a1b2c3d4e5f6', name: 'from Plane', project: '0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d', state: { name: 'To Analyse' } }),
    );
    const hook = { method: 'post' as const, route: '/webhooks/plane', token: false };
    await call({ ...hook, body, headers: signed(body), status: 202 });
    await call({ ...hook, body, headers: { 'x-plane-signature': 'ab'.repeat(32) }, status: 401 });
    await call({ ...hook, body: '{"event":', headers: signed('{"event":'), status: 400 });
    await call({ ...hook, body: 'x'.repeat(LIMIT + 1), headers: signed('x'.repeat(LIMIT + 1)), status: 413 });
    await call({ ...hook, app: stopOff, body, headers: signed(body), status: 503 });
  });

  it('a database that cannot be reached is a JSON 500 on every route that reads it (and 503 on /readyz)', async () => {
    const b = { app: broken };
    await call({ ...b, route: '/readyz', status: 503 });
    await call({ ...b, route: '/queue', status: 500 });
    await call({ ...b, route: '/metrics', status: 500 });
    await call({ ...b, route: '/projects', status: 500 });
    await call({ ...b, route: '/tasks', status: 500 });
    await call({ ...b, route: '/tasks/{id}', url: '/tasks/1', status: 500 });
    await call({ ...b, method: 'post', route: '/tasks', body: '{"project":"p","title":"x"}', status: 500 });
    await call({ ...b, method: 'post', route: '/projects', body: JSON.stringify({ slug: 'z', repo: orch.repo }), status: 500 });
    await call({ ...b, method: 'post', route: '/tasks/{id}/stop', url: '/tasks/1/stop', status: 500 });
    await call({ ...b, method: 'post', route: '/tasks/{id}/retry', url: '/tasks/1/retry', status: 500 });
    const body = JSON.stringify(planeStateChangeBody({ issueId: '6e2f0a3e-1b2c-4d5e-8f90-a1b2c3d4e5f6', name: 'x', project: '0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d', state: { name: 'To Analyse' } }));
    await call({ ...b, method: 'post', route: '/webhooks/plane', token: false, body, headers: signed(body), status: 500 });
    // nothing of the cause reaches the client
    const res = await broken.request('/tasks');
    expect(await res.json()).toEqual({ error: { code: 'internal', message: 'internal error' } });
  });

  it('covered every documented status of every route, and saw every array non-empty', () => {
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.entries(ops).flatMap(([m, op]) => Object.keys(op.responses).map((s) => `${m} ${p} ${s}`)),
    );
    expect(documented.filter((d) => !covered.has(d))).toEqual([]);
    expect([...arrays].filter(([, seen]) => !seen).map(([where]) => where)).toEqual([]);
  });
});

describe('request bodies: what the document rejects, the route rejects', () => {
  const cases: Array<[string, string, unknown]> = [
    ['/tasks', 'minimal', { project: 'p', title: 'ok' }],
    ['/tasks', 'unknown field', { project: 'p', title: 'x', evil: 1 }],
    ['/tasks', 'missing title', { project: 'p' }],
    ['/tasks', 'wrong types', { project: 1, title: {} }],
    ['/tasks', 'negative dependency', { project: 'p', title: 'x', depends_on: [-1] }],
    ['/tasks', 'title too long', { project: 'p', title: 'x'.repeat(501) }],
    ['/projects', 'bad slug', { slug: 'Bad Slug', repo: 'x' }],
    ['/projects', 'unknown field', { slug: 'ok2', repo: 'x', evil: true }],
    ['/projects', 'max_concurrency 0', { slug: 'ok3', repo: 'x', max_concurrency: 0 }],
    ['/projects', 'valid', { slug: 'third' }],
  ];
  it.each(cases)('POST %s, %s', async (route, _name, input) => {
    const body = route === '/projects' && !('repo' in (input as object)) ? { ...(input as object), repo: orch.repo } : input;
    const validate = ajv.getSchema(`openapi.json#/${pointer('paths', route, 'post', 'requestBody', 'content', 'application/json', 'schema')}`)!;
    const res = await app.request(route, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
    });
    expect(res.status === 400, `route answered ${res.status}: ${await res.text()}`).toBe(!validate(body));
  });
});

describe('a sanity check of the check', () => {
  it('a field the document lacks fails validation (the objects are closed)', async () => {
    const validate = ajv.getSchema(`openapi.json#/${pointer('components', 'schemas', 'Task')}`)!;
    const task = ((await (await app.request(`/tasks/${ids.done}`)).json()) as { task: Record<string, unknown> }).task;
    expect(validate(task)).toBe(true);
    expect(validate({ ...task, undocumented: 1 })).toBe(false);
    const { review_rounds: _dropped, ...missing } = task;
    expect(validate(missing)).toBe(false);
    const rows = await sql<{ n: number }>`SELECT count(*)::int AS n FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'tasks'`.execute(orch.rt.svc.db);
    expect(Object.keys(task)).toHaveLength(rows.rows[0]!.n);
  });
});
