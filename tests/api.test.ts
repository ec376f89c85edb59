/** The HTTP contract: JSON errors, 4xx on bad input (never 5xx), nothing written on bad input, auth. */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '@orch/api/app';
import { loadConfig } from '@orch/shared/runtime/config';
import { startOrch, type Orch } from './support/harness.ts';

let orch: Orch;
let app: ReturnType<typeof createApp>;
let authed: ReturnType<typeof createApp>;
beforeAll(async () => {
  orch = await startOrch();
  const { db, boss, log } = orch.rt.svc;
  app = createApp({ db, boss, config: orch.config, log });
  authed = createApp({ db, boss, config: loadConfig({ ...orch.env, ORCH_API_TOKEN: 's3cret', ORCH_API_BODY_LIMIT_BYTES: '2048' }), log });
});
afterAll(async () => orch?.close());

const counts = async () => {
  const r = await sql<{ tasks: number; jobs: number; projects: number; deliveries: number }>`
    SELECT (SELECT count(*)::int FROM tasks) AS tasks, (SELECT count(*)::int FROM jobs) AS jobs,
           (SELECT count(*)::int FROM projects) AS projects, (SELECT count(*)::int FROM webhook_deliveries) AS deliveries`.execute(orch.rt.svc.db);
  return r.rows[0]!;
};
const post = (a: typeof app, path: string, body: string, headers: Record<string, string> = {}) =>
  a.request(path, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });

describe('bad input gets a 4xx JSON error and writes nothing', () => {
  const cases: Array<[string, string, string, number, string]> = [
    ['malformed JSON', '/tasks', '{"project": "p", "title": ', 400, 'invalid_request'],
    ['not an object', '/tasks', '[1,2,3]', 400, 'invalid_request'],
    ['missing title', '/tasks', '{"project":"p"}', 400, 'invalid_request'],
    ['empty title', '/tasks', '{"project":"p","title":"   "}', 400, 'invalid_request'],
    ['unknown field', '/tasks', '{"project":"p","title":"x","evil":1}', 400, 'invalid_request'],
    ['unknown project', '/tasks', '{"project":"nope","title":"x"}', 404, 'not_found'],
    ['unknown dependency', '/tasks', '{"project":"p","title":"x","depends_on":[12345]}', 400, 'invalid_request'],
    ['wrong types', '/tasks', '{"project":1,"title":{}}', 400, 'invalid_request'],
    ['bad project slug', '/projects', '{"slug":"Bad Slug","repo":"/tmp/x"}', 400, 'invalid_request'],
    ['unreachable repo', '/projects', '{"slug":"ok","repo":"/nonexistent/repo.git"}', 400, 'invalid_request'],
    ['duplicate project', '/projects', '{"slug":"p","repo":"/tmp"}', 409, 'conflict'],
    ['stop of an unknown task', '/tasks/999999/stop', '{}', 404, 'not_found'],
    ['stop with a non-numeric id', '/tasks/abc/stop', '{}', 400, 'invalid_request'],
    ['retry of an unknown task', '/tasks/999999/retry', '{}', 404, 'not_found'],
  ];
  it.each(cases)('%s', async (_name, path, body, status, code) => {
    const before = await counts();
    const res = await post(app, path, body);
    expect(res.status).toBe(status);
    expect(res.headers.get('content-type')).toContain('application/json');
    const json = (await res.json()) as { error: { code: string; message: string } };
    expect(json.error.code).toBe(code);
    expect(json.error.message.length).toBeGreaterThan(0);
    expect(await counts()).toEqual(before);
  });

  it('unknown routes are JSON 404s', async () => {
    const res = await app.request('/nope');
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('not_found');
    expect((await app.request('/tasks/123456')).status).toBe(404);
  });

  it('a body over the limit is a 413 and writes nothing', async () => {
    const before = await counts();
    const res = await post(authed, '/tasks', JSON.stringify({ project: 'p', title: 'x', body: 'y'.repeat(5000) }), { authorization: 'Bearer s3cret' });
    expect(res.status).toBe(413);
    expect(await counts()).toEqual(before);
  });
});

describe('auth', () => {
  it('mutating routes need the bearer token when ORCH_API_TOKEN is set; GET routes are open', async () => {
    const before = await counts();
    expect((await post(authed, '/tasks', '{"project":"p","title":"x"}')).status).toBe(401);
    expect((await post(authed, '/tasks', '{"project":"p","title":"x"}', { authorization: 'Bearer wrong' })).status).toBe(401);
    expect((await post(authed, '/projects', '{"slug":"z","repo":"/tmp"}')).status).toBe(401);
    expect(await counts()).toEqual(before);
    expect((await authed.request('/tasks')).status).toBe(200);
    const ok = await post(authed, '/tasks', '{"project":"p","title":"with token"}', { authorization: 'Bearer s3cret' });
    expect(ok.status).toBe(201);
  });

  it('the Plane webhook answers 503 without a secret and 401 on a bad signature, writing nothing', async () => {
    const before = await counts();
    expect((await post(app, '/webhooks/plane', '{}')).status).toBe(503);
    const withSecret = createApp({ ...orch.rt.svc, config: loadConfig({ ...orch.env, PLANE_WEBHOOK_SECRET: 'whsec' }) });
    expect((await post(withSecret, '/webhooks/plane', '{}', { 'x-plane-signature': 'ab'.repeat(32) })).status).toBe(401);
    expect((await post(withSecret, '/webhooks/plane', '{}')).status).toBe(401);
    expect(await counts()).toEqual(before);
  });
});

describe('reads', () => {
  it('POST /tasks → 201 with the task; GET /tasks/:id has jobs, runs, events, artefacts', async () => {
    const res = await post(app, '/tasks', '{"project":"p","title":"Read me","body":"details"}');
    expect(res.status).toBe(201);
    const { task } = (await res.json()) as { task: { id: number; stage: string; branch: string } };
    expect(task.stage).toBe('analysis');
    expect(task.branch).toBe(`orch/${task.id}-read-me`);
    const one = (await (await app.request(`/tasks/${task.id}`)).json()) as Record<string, unknown[]>;
    expect(Object.keys(one).sort()).toEqual(['artefacts', 'events', 'jobs', 'runs', 'task']);
    expect(one.jobs).toHaveLength(1);
    const list = (await (await app.request('/tasks?stage=analysis')).json()) as { tasks: unknown[] };
    expect(list.tasks.length).toBeGreaterThan(0);
    expect((await app.request('/tasks?stage=bogus')).status).toBe(400);
  });

  it('GET /queue has the contract shape', async () => {
    const q = (await (await app.request('/queue')).json()) as Record<string, any>;
    expect(Object.keys(q.jobs.counts).sort()).toEqual(['cancelled', 'done', 'failed', 'queued', 'running']);
    expect(Array.isArray(q.jobs.running)).toBe(true);
    expect(Array.isArray(q.workers)).toBe(true);
    expect(Object.keys(q.reaper).sort()).toEqual(['enabled', 'interval_s', 'last_error', 'last_tick_at', 'leader', 'lease_reclaims', 'reaped']);
    expect(Object.keys(q.reaper.reaped).sort()).toEqual(['dead_owner', 'known_outcome', 'max_running']);
    expect(Object.keys(q.stop).sort()).toEqual(['completed_total', 'deferred', 'enabled', 'last_error', 'pending']);
    expect(q.merge).toEqual({ leases: [] });
  });

  it('healthz and readyz', async () => {
    expect((await app.request('/healthz')).status).toBe(200);
    expect((await app.request('/readyz')).status).toBe(200);
  });
});
