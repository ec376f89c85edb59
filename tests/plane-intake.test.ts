/**
 * Plane end to end, against the fake Plane: signed webhooks through `createApp` (dedupe by
 * content, echo, unknown states, malformed payloads, relaunch rules), the outbox delivered by the
 * never-raise loop (order per issue; 429 honours the reset; 500 and Plane down lose nothing), and
 * the reconciliation poll (catches a missed webhook; a second pass does nothing).
 */
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '@orch/api/app';
import type { Logger } from '@orch/shared/runtime/logger';
import { insertOutbox } from '@orch/shared/db/queries/outbox';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getLiveTaskByIssue, getTask } from '@orch/shared/db/queries/tasks';
import { reconcilePlane } from '@orch/shared/intake/reconcile';
import { createTracker } from '@orch/shared/tracker/index';
import { createOutboxDeliverer, outboxBackoffMs } from '@orch/shared/tracker/outbox-deliverer';
import { createPlaneTracker } from '@orch/shared/tracker/plane';
import { planeOutboxChannel } from '@orch/shared/tracker/plane-outbox';
import { startFakePlane, type FakePlane } from './fakes/fake-plane.ts';
import { GOOD_AGENT } from './support/agents.ts';
import { startOrch, waitFor, type Orch } from './support/harness.ts';

const SECRET = 'whsec-test-secret';
const API_KEY = 'plane_api_SUPERSECRETKEY_123';
const SLUG = 'acme';
const STATES = ['Backlog', 'To Analyse', 'In Progress', 'In Review', 'Done', 'Cancelled', 'Blocked', 'STOP'];
/** a poll that may run again at once (no interval between passes) */
const POLL = { who: 'test', intervalS: 0 };

function planeEnv(fake: FakePlane, baseUrl = fake.url): Record<string, string> {
  return {
    PLANE_WEBHOOK_SECRET: SECRET,
    PLANE_BASE_URL: baseUrl,
    PLANE_API_KEY: API_KEY,
    PLANE_WORKSPACE_SLUG: SLUG,
    PLANE_BOT_USER_ID: fake.botUserId,
  };
}

interface Ctx {
  fake: FakePlane;
  orch: Orch;
  planeProject: string;
  app: ReturnType<typeof createApp>;
  send(body: unknown, raw?: string): Promise<{ status: number; json: { status?: string; task_id?: number | null; error?: { code: string } } }>;
}

async function setup(env: Record<string, string> = {}): Promise<Ctx> {
  const fake = await startFakePlane({ apiKey: API_KEY, workspaceSlug: SLUG });
  const planeProject = randomUUID();
  fake.addProject(planeProject, STATES);
  const orch = await startOrch({ env: { ...planeEnv(fake), ...env }, project: { plane_project: planeProject } });
  const { db, boss, log } = orch.rt.svc;
  const app = createApp({ db, boss, config: orch.config, log, tracker: createTracker(orch.config, { db }) });
  const send: Ctx['send'] = async (body, rawOverride) => {
    const raw = rawOverride ?? JSON.stringify(body);
    const res = await app.request('/webhooks/plane', {
      method: 'POST',
      body: raw,
      headers: {
        'content-type': 'application/json',
        'x-plane-event': 'issue',
        'x-plane-delivery': randomUUID(),
        'x-plane-signature': fake.sign(raw, SECRET),
      },
    });
    return { status: res.status, json: (await res.json()) as never };
  };
  return { fake, orch, planeProject, app, send };
}

async function teardown(c: Ctx | undefined): Promise<void> {
  if (!c) return;
  await c.orch.close();
  await c.fake.close().catch(() => {});
}

const rowCounts = async (o: Orch) => {
  const r = await sql<{ tasks: number; jobs: number; deliveries: number; outbox: number }>`
    SELECT (SELECT count(*)::int FROM tasks) AS tasks, (SELECT count(*)::int FROM jobs) AS jobs,
           (SELECT count(*)::int FROM webhook_deliveries) AS deliveries, (SELECT count(*)::int FROM outbox) AS outbox`.execute(o.rt.svc.db);
  return r.rows[0]!;
};

const tasksOfIssue = async (o: Orch, issueId: string) =>
  (await sql<{ id: number }>`SELECT id FROM tasks WHERE split_part(plane_issue_id, '~', 1) = ${issueId}`.execute(o.rt.svc.db)).rows;

// ---------------------------------------------------------------------------------------------

describe('POST /webhooks/plane with the fake Plane', () => {
  let c: Ctx;
  beforeAll(async () => {
    c = await setup();
  });
  afterAll(async () => teardown(c));

  it('a signed move to "To Analyse" → 202 and a task with the issue name and description', async () => {
    const issue = c.fake.addIssue(c.planeProject, { name: 'Add a dark mode', description: 'Users want it.', stateName: 'Backlog' });
    const r = await c.send(c.fake.moveIssue(issue.id, 'To Analyse'));
    expect(r.status).toBe(202);
    expect(r.json.status).toBe('task_created');
    const task = await getTask(c.orch.rt.svc.db, r.json.task_id!);
    expect(task).toMatchObject({ title: 'Add a dark mode', body: 'Users want it.', plane_issue_id: issue.id, stage: 'analysis' });
    expect((await listTaskJobs(c.orch.rt.svc.db, task!.id)).map((j) => `${j.stage}:${j.status}`)).toEqual(['analysis:queued']);
  });

  it('five redeliveries of one change (a new X-Plane-Delivery each time) → one task', async () => {
    const issue = c.fake.addIssue(c.planeProject, { name: 'Redelivered', stateName: 'Backlog' });
    const body = c.fake.moveIssue(issue.id, 'To Analyse');
    const statuses: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await c.send(body);
      expect(r.status).toBe(202);
      statuses.push(r.json.status!);
    }
    expect(statuses).toEqual(['task_created', 'duplicate', 'duplicate', 'duplicate', 'duplicate']);
    expect(await tasksOfIssue(c.orch, issue.id)).toHaveLength(1);
    // five concurrent ones too
    const issue2 = c.fake.addIssue(c.planeProject, { name: 'Redelivered at once', stateName: 'Backlog' });
    const body2 = c.fake.moveIssue(issue2.id, 'To Analyse');
    const all = await Promise.all(Array.from({ length: 5 }, () => c.send(body2)));
    expect(all.every((r) => r.status === 202)).toBe(true);
    expect(all.filter((r) => r.json.status === 'task_created')).toHaveLength(1);
    expect(await tasksOfIssue(c.orch, issue2.id)).toHaveLength(1);
  });

  it("orch's own changes echoing back (PLANE_BOT_USER_ID) are ignored", async () => {
    const issue = c.fake.addIssue(c.planeProject, { name: 'Echo', stateName: 'Backlog' });
    const before = await rowCounts(c.orch);
    const r = await c.send(c.fake.moveIssue(issue.id, 'To Analyse', { actorId: c.fake.botUserId }));
    expect(r.status).toBe(202);
    expect(r.json.status).toBe('ignored_echo');
    expect((await rowCounts(c.orch)).tasks).toBe(before.tasks);
  });

  it('a state that is neither start nor stop, or unknown to Plane, is ignored', async () => {
    const issue = c.fake.addIssue(c.planeProject, { name: 'Elsewhere', stateName: 'Backlog' });
    const before = await rowCounts(c.orch);
    expect((await c.send(c.fake.moveIssue(issue.id, 'In Review'))).json.status).toBe('ignored_state');
    // a payload with only a state id (no expanded state) unknown to the project: resolved via the
    // states API (cache refreshed once on the miss), still unknown → ignored
    const body = c.fake.moveIssue(issue.id, 'Backlog') as { data: Record<string, unknown>; activity: Record<string, unknown> };
    const unknownId = randomUUID();
    body.data.state = unknownId;
    body.activity.new_value = unknownId;
    expect((await c.send(body)).json.status).toBe('ignored_state');
    expect((await rowCounts(c.orch)).tasks).toBe(before.tasks);
  });

  it('a payload carrying only the state id of "To Analyse" is resolved through the states API', async () => {
    const issue = c.fake.addIssue(c.planeProject, { name: 'Id only', stateName: 'Backlog' });
    const body = c.fake.moveIssue(issue.id, 'To Analyse') as { data: Record<string, unknown> };
    body.data.state = (body.data.state as { id: string }).id;
    const r = await c.send(body);
    expect(r.json.status).toBe('task_created');
  });

  it('malformed payloads → 400 and no rows; bad signature → 401', async () => {
    const issue = c.fake.addIssue(c.planeProject, { name: 'Malformed', stateName: 'Backlog' });
    const good = c.fake.moveIssue(issue.id, 'To Analyse') as Record<string, unknown> & { data: Record<string, unknown> };
    const before = await rowCounts(c.orch);
    const bad: Array<[string, unknown, string?]> = [
      ['not JSON', null, '{"event": "issue", '],
      ['an array', [1, 2]],
      ['no data', { ...good, data: undefined }],
      ['data without id', { ...good, data: { ...good.data, id: undefined } }],
      ['issue without project', { ...good, data: { ...good.data, project: undefined } }],
      ['event not a string', { ...good, event: 42 }],
      ['state of a wrong type', { ...good, data: { ...good.data, state: 7 } }],
    ];
    for (const [name, body, raw] of bad) {
      const r = await c.send(body, raw);
      expect(r.status, name).toBe(400);
      expect(r.json.error?.code, name).toBe('invalid_request');
    }
    const raw = JSON.stringify(good);
    const unsigned = await c.app.request('/webhooks/plane', { method: 'POST', body: raw, headers: { 'x-plane-signature': 'ab'.repeat(32) } });
    expect(unsigned.status).toBe(401);
    expect(await rowCounts(c.orch)).toEqual(before);
  });
});

describe('relaunch rules', () => {
  let c: Ctx | undefined;
  afterEach(async () => {
    await teardown(c);
    c = undefined;
  });

  it('"To Analyse" relaunches a failed analysis; on a task in implementation it is ignored', async () => {
    // analysis is lazy for titles with LAZY-ANALYSIS, implementation is lazy for the others
    const cmd = `if grep -q LAZY-ANALYSIS "$ORCH_PROMPT_FILE"; then L=analysis; else L=implementation; fi; LAZY_STAGE=$L sh ${GOOD_AGENT}`;
    c = await setup({ ORCH_AGENT: 'command', ORCH_AGENT_CMD: cmd, ORCH_JOB_MAX_ATTEMPTS: '1' });
    await c.orch.worker();
    const db = c.orch.rt.svc.db;
    const lazy = c.fake.addIssue(c.planeProject, { name: 'LAZY-ANALYSIS fails', stateName: 'Backlog' });
    const impl = c.fake.addIssue(c.planeProject, { name: 'stuck in implementation', stateName: 'Backlog' });
    const r1 = await c.send(c.fake.moveIssue(lazy.id, 'To Analyse'));
    const r2 = await c.send(c.fake.moveIssue(impl.id, 'To Analyse'));
    const blocked = (id: number) => waitFor(async () => {
      const t = await getTask(db, id);
      return t?.blocked_at ? t : null;
    }, 30_000, `task ${id} blocked`);
    expect((await blocked(r1.json.task_id!)).stage).toBe('analysis');
    expect((await blocked(r2.json.task_id!)).stage).toBe('implementation');

    // the user moves the issue away and back to "To Analyse": a new change → relaunch
    c.fake.moveIssue(lazy.id, 'Backlog');
    const again = await c.send(c.fake.moveIssue(lazy.id, 'To Analyse'));
    expect(again.json).toMatchObject({ status: 'task_relaunched', task_id: r1.json.task_id });
    const jobs = await listTaskJobs(db, r1.json.task_id!);
    expect(jobs.filter((j) => j.stage === 'analysis')).toHaveLength(2);
    expect((await getTask(db, r1.json.task_id!))!.blocked_at).toBeNull();

    // a task in implementation is not relaunched
    const implJobs = (await listTaskJobs(db, r2.json.task_id!)).length;
    const ignored = await c.send(c.fake.moveIssue(impl.id, 'To Analyse'));
    expect(ignored.json).toMatchObject({ status: 'ignored_not_relaunchable', task_id: r2.json.task_id });
    expect(await listTaskJobs(db, r2.json.task_id!)).toHaveLength(implJobs);
    expect((await getTask(db, r2.json.task_id!))!.stage).toBe('implementation');
  });
});

// ---------------------------------------------------------------------------------------------

/** A TCP proxy in front of the fake Plane that can be taken down (connection refused) and back up. */
async function startProxy(targetPort: number) {
  const sockets = new Set<net.Socket>();
  let server: net.Server | null = null;
  let port = 0;
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      server = net.createServer((client) => {
        const upstream = net.connect(targetPort, '127.0.0.1');
        sockets.add(client).add(upstream);
        const drop = () => {
          client.destroy();
          upstream.destroy();
          sockets.delete(client);
          sockets.delete(upstream);
        };
        client.on('error', drop).on('close', drop);
        upstream.on('error', drop).on('close', drop);
        client.pipe(upstream).pipe(client);
      });
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        port = (server!.address() as AddressInfo).port;
        resolve();
      });
    });
  await listen();
  return {
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    async down() {
      const s = server!;
      server = null;
      for (const sock of sockets) sock.destroy();
      sockets.clear();
      await new Promise<void>((r) => s.close(() => r()));
    },
    up: listen,
  };
}

/** The kinds of calls the fake Plane accepted, per issue, in order. */
function acceptedCalls(fake: FakePlane, issueId: string): string[] {
  return fake.requests
    .filter((r) => r.status < 300 && r.path.includes(`/work-items/${issueId}/`) && r.method !== 'GET')
    .map((r) => (r.method === 'PATCH' ? 'state' : 'comment'));
}

function stateNamesOf(fake: FakePlane, projectId: string, issueId: string): string[] {
  const names = new Map(fake.states(projectId).map((s) => [s.id, s.name]));
  return fake.stateChanges.filter((s) => s.issueId === issueId).map((s) => names.get(s.stateId)!);
}

describe('outbox delivery', () => {
  let c: Ctx | undefined;
  afterEach(async () => {
    await teardown(c);
    c = undefined;
  });

  it('a task run to done: Plane gets in progress → in review → done and the comments', async () => {
    c = await setup();
    await c.orch.worker();
    const deliverer = createOutboxDeliverer({ db: c.orch.rt.svc.db, channel: planeOutboxChannel(createTracker(c.orch.config, { db: c.orch.rt.svc.db })!), log: c.orch.log });
    deliverer.start(0.1);
    try {
      const issue = c.fake.addIssue(c.planeProject, { name: 'Ship it', stateName: 'Backlog' });
      const r = await c.send(c.fake.moveIssue(issue.id, 'To Analyse'));
      expect(r.json.status).toBe('task_created');
      await waitFor(async () => (await getTask(c!.orch.rt.svc.db, r.json.task_id!))?.stage === 'done', 45_000, 'task done');
      await waitFor(async () => (await rowCounts(c!.orch)).outbox > 0 && (await sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE delivered_at IS NULL`.execute(c!.orch.rt.svc.db)).rows[0]!.n === 0, 10_000, 'outbox drained');
      expect(stateNamesOf(c.fake, c.planeProject, issue.id)).toEqual(['In Progress', 'In Review', 'Done']);
      const comments = c.fake.comments.filter((x) => x.issueId === issue.id).map((x) => x.comment_html);
      expect(comments).toHaveLength(2);
      expect(comments[0]).toContain(`picked up as task ${r.json.task_id}`);
      expect(comments[1]).toContain('task done');
      expect(c.fake.issues.get(issue.id)!.state).toBe(c.fake.states(c.planeProject).find((s) => s.name === 'Done')!.id);
      // the echo of orch's own change is ignored
      const echo = await c.send(c.fake.webhookBody(c.fake.issues.get(issue.id)!, { field: 'state', oldValue: null, newValue: 'Done', actorId: c.fake.botUserId }));
      expect(echo.json.status).toBe('ignored_echo');
    } finally {
      await deliverer.stop();
    }
  });

  it('429 honours Retry-After (not counted as an attempt), 500 backs off from 5 s, Plane down for an hour loses nothing; order per issue kept', async () => {
    c = await setup();
    const db = c.orch.rt.svc.db;
    const proxy = await startProxy(Number(new URL(c.fake.url).port));
    const tracker = createPlaneTracker({
      baseUrl: proxy.url,
      apiKey: API_KEY,
      workspaceSlug: SLUG,
      timeoutMs: 2000,
      stateNames: { in_progress: 'In Progress', in_review: 'In Review', done: 'Done', cancelled: 'Cancelled', blocked: 'Blocked' },
    });
    const logged: string[] = [];
    const record = (o: unknown, m?: string) => void logged.push(JSON.stringify(o) + (m ?? ''));
    const capture: Record<string, unknown> = { warn: record, error: record, info: record, debug: () => {} };
    capture.child = () => capture;
    const deliverer = createOutboxDeliverer({ db, channel: planeOutboxChannel(tracker), log: capture as unknown as Logger });

    const issues = [0, 1].map((i) => c!.fake.addIssue(c!.planeProject, { name: `issue ${i}`, stateName: 'To Analyse' }));
    const plan: Array<['set_state', string] | ['comment', string]> = [
      ['set_state', 'in_progress'],
      ['comment', 'one'],
      ['set_state', 'in_review'],
      ['comment', 'two'],
      ['set_state', 'done'],
    ];
    for (const step of plan) {
      for (const issue of issues) {
        const payload = step[0] === 'set_state' ? { role: step[1] } : { html: `<p>${step[1]} ${issue.id}</p>` };
        await insertOutbox(db, { taskId: null, kind: step[0], payload: { projectId: c.planeProject, issueId: issue.id, ...payload } });
      }
    }
    const pending = async () => (await sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE delivered_at IS NULL`.execute(db)).rows[0]!.n;
    const rows = async () => (await sql<{ id: number; attempts: number; next_attempt_at: Date; last_error: string | null; payload: { issueId: string } }>`SELECT * FROM outbox WHERE delivered_at IS NULL ORDER BY id`.execute(db)).rows;
    const makeDue = () => sql`UPDATE outbox SET next_attempt_at = now() WHERE delivered_at IS NULL`.execute(db);

    // 429: the row is rescheduled at Retry-After, and the deliverer pauses until then
    const reset = Date.now() + 2000;
    c.fake.rateLimitNext(1, 2);
    const t1 = await deliverer.tick();
    expect(t1).toEqual({ delivered: 0, failed: 1 });
    const first = (await rows())[0]!;
    expect(first.attempts).toBe(0);
    expect(Math.abs(first.next_attempt_at.getTime() - reset)).toBeLessThan(1000);
    expect(first.last_error).toContain('429');
    const requestsDuringPause = c.fake.requests.length;
    expect(await deliverer.tick()).toEqual({ delivered: 0, failed: 0 });
    expect(c.fake.requests.length).toBe(requestsDuringPause); // nothing sent before the reset
    expect(await pending()).toBe(10);

    // the deliverer pauses until the row's Retry-After (counted from when the 429 arrived)
    await waitFor(async () => Date.now() > first.next_attempt_at.getTime() + 50, 5000, 'rate limit reset');
    // 500: exponential backoff from 5 s (default), not lost
    c.fake.failNext(1, 500);
    const t2 = await deliverer.tick();
    expect(t2.failed).toBe(1);
    const failedRow = (await rows()).find((r) => r.last_error?.includes('500'))!;
    const wait = failedRow.next_attempt_at.getTime() - Date.now();
    expect(wait).toBeGreaterThan(outboxBackoffMs(failedRow.attempts - 1, { baseS: 5, maxS: 600 }) - 2000);
    expect(wait).toBeLessThanOrEqual(outboxBackoffMs(failedRow.attempts - 1, { baseS: 5, maxS: 600 }) + 100);
    // the other issue went on meanwhile, but the failed issue's later rows waited
    expect(await pending()).toBeGreaterThan(0);

    // Plane down for "an hour": every due row fails with a connection error, backs off (capped at
    // 10 min); we fast-forward time by making the rows due again between ticks
    await proxy.down();
    for (let i = 0; i < 12; i++) {
      await makeDue();
      const t = await deliverer.tick();
      expect(t.delivered).toBe(0);
      expect(t.failed).toBeGreaterThan(0);
    }
    const during = await rows();
    expect(during.length).toBeGreaterThan(0);
    const maxWait = Math.max(...during.map((r) => r.next_attempt_at.getTime() - Date.now()));
    expect(maxWait).toBeLessThanOrEqual(600_000 + 1000);
    expect(maxWait).toBeGreaterThan(590_000); // the cap was reached
    const errors = during.map((r) => r.last_error).filter((e): e is string => e !== null);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors.some((e) => e.includes(API_KEY))).toBe(false);
    expect(during.every((r) => r.payload.issueId === issues[0]!.id)).toBe(true); // issue 1 went through before the outage

    // back up: everything is delivered, in order per issue
    await proxy.up();
    await makeDue();
    for (let i = 0; i < 10 && (await pending()) > 0; i++) {
      await deliverer.tick();
    }
    expect(await pending()).toBe(0);
    for (const issue of issues) {
      expect(acceptedCalls(c.fake, issue.id)).toEqual(['state', 'comment', 'state', 'comment', 'state']);
      expect(stateNamesOf(c.fake, c.planeProject, issue.id)).toEqual(['In Progress', 'In Review', 'Done']);
      expect(c.fake.comments.filter((x) => x.issueId === issue.id).map((x) => x.comment_html)).toEqual([`<p>one ${issue.id}</p>`, `<p>two ${issue.id}</p>`]);
    }
    expect(logged.length).toBeGreaterThan(0);
    expect(logged.some((l) => l.includes(API_KEY))).toBe(false);
    // nothing delivered twice
    expect(c.fake.stateChanges).toHaveLength(6);
    expect(c.fake.comments).toHaveLength(4);
  });

  it('a tick never raises, even when the database is gone', async () => {
    c = await setup();
    const broken = createOutboxDeliverer({
      db: c.orch.rt.svc.db.withSchema('no_such_schema'),
      channel: planeOutboxChannel({ setState: async () => {}, comment: async () => {} }),
      log: c.orch.log,
    });
    expect(await broken.tick()).toEqual({ delivered: 0, failed: 0 });
  });

  it('backoff doubles from 5 s and is capped at 10 min', () => {
    const b = { baseS: 5, maxS: 600 };
    expect([0, 1, 2, 3].map((a) => outboxBackoffMs(a, b))).toEqual([5000, 10_000, 20_000, 40_000]);
    expect(outboxBackoffMs(7, b)).toBe(600_000);
    expect(outboxBackoffMs(1000, b)).toBe(600_000);
  });
});

// ---------------------------------------------------------------------------------------------

describe('reconciliation', () => {
  let c: Ctx | undefined;
  afterEach(async () => {
    await teardown(c);
    c = undefined;
  });

  it('picks up an issue moved to "To Analyse" without a webhook; a second pass creates nothing', async () => {
    c = await setup();
    const svc = c.orch.rt.svc;
    const d = { db: svc.db, boss: svc.boss, config: c.orch.config, log: c.orch.log };
    const tracker = createTracker(c.orch.config)!;
    const missed = c.fake.addIssue(c.planeProject, { name: 'Missed webhook', description: 'no webhook came', stateName: 'Backlog' });
    c.fake.moveIssue(missed.id, 'To Analyse'); // the webhook is lost
    const viaWebhook = c.fake.addIssue(c.planeProject, { name: 'Webhook came', stateName: 'Backlog' });
    const hook = await c.send(c.fake.moveIssue(viaWebhook.id, 'To Analyse'));
    expect(hook.json.status).toBe('task_created');
    c.fake.addIssue(c.planeProject, { name: 'Backlog item', stateName: 'Backlog' });

    const first = await reconcilePlane(d, tracker, POLL);
    expect(first.errors).toBe(0);
    expect(first.outcomes).toEqual({ task_created: 1, duplicate: 1 }); // the webhook's issue is a duplicate of its webhook
    const task = await getLiveTaskByIssue(svc.db, missed.id);
    expect(task).toMatchObject({ title: 'Missed webhook', body: 'no webhook came', stage: 'analysis' });
    const before = await rowCounts(c.orch);

    const second = await reconcilePlane(d, tracker, POLL);
    expect(second.outcomes).toEqual({ duplicate: 2 });
    expect(await rowCounts(c.orch)).toEqual(before);

    // the late webhook of the missed change is a duplicate too
    const late = await c.send(c.fake.webhookBody(c.fake.issues.get(missed.id)!, { field: 'state', oldValue: null, newValue: 'To Analyse', actorId: randomUUID() }));
    expect(late.json.status).toBe('duplicate');
    expect(await tasksOfIssue(c.orch, missed.id)).toHaveLength(1);
  });

  it('picks up a missed STOP', async () => {
    c = await setup();
    const svc = c.orch.rt.svc;
    const d = { db: svc.db, boss: svc.boss, config: c.orch.config, log: c.orch.log };
    const issue = c.fake.addIssue(c.planeProject, { name: 'To be stopped', stateName: 'Backlog' });
    const created = await c.send(c.fake.moveIssue(issue.id, 'To Analyse'));
    c.fake.moveIssue(issue.id, 'STOP'); // webhook lost
    const r = await reconcilePlane(d, createTracker(c.orch.config)!, POLL);
    expect(r.outcomes).toEqual({ stop_requested: 1 });
    expect((await getTask(svc.db, created.json.task_id!))!.cancel_requested_at).not.toBeNull();
    expect((await reconcilePlane(d, createTracker(c.orch.config)!, POLL)).outcomes).toEqual({ duplicate: 1 });
  });

  it('Plane unreachable: the pass reports errors and never raises', async () => {
    c = await setup();
    const svc = c.orch.rt.svc;
    const tracker = createPlaneTracker({
      baseUrl: 'http://127.0.0.1:9',
      apiKey: API_KEY,
      workspaceSlug: SLUG,
      timeoutMs: 500,
      stateNames: { in_progress: 'a', in_review: 'b', done: 'c', cancelled: 'd', blocked: 'e' },
    });
    const r = await reconcilePlane({ db: svc.db, boss: svc.boss, config: c.orch.config, log: c.orch.log }, tracker, POLL);
    expect(r).toMatchObject({ projects: 1, errors: 1, seen: 0 });
  });
});

// ---------------------------------------------------------------------------------------------

describe('the same issue, whichever path sees it', () => {
  let c: Ctx | undefined;
  afterEach(async () => {
    await teardown(c);
    c = undefined;
  });

  /** editor markup as Plane's tiptap writes it (packages/editor), with a mention and a code block */
  const RICH =
    '<p class="editor-paragraph-block" data-id="1">Add a <strong>dark mode</strong> to <code class="rounded-sm" spellcheck="false">settings_page</code>.</p>' +
    '<h2 class="editor-heading-block">Steps</h2><ul class="list-disc pl-7"><li class="not-prose space-y-2"><p class="editor-paragraph-block">a toggle</p></li>' +
    '<li class="not-prose space-y-2"><p class="editor-paragraph-block">ask <mention-component id="m" entity_identifier="u-42" entity_name="user_mention"></mention-component> first</p></li></ul>' +
    '<pre><code class="language-css">body { color: #000; }</code></pre>';
  const RICH_MD = 'Add a **dark mode** to `settings_page`.\n\n## Steps\n\n- a toggle\n- ask @u-42 first\n\n```css\nbody { color: #000; }\n```';

  it('a task created by the poll and one created by the webhook for the same issue text have identical bodies (Markdown, not HTML)', async () => {
    c = await setup();
    const svc = c.orch.rt.svc;
    const d = { db: svc.db, boss: svc.boss, config: c.orch.config, log: c.orch.log };
    const viaHook = c.fake.addIssue(c.planeProject, { name: 'Dark mode (webhook)', descriptionHtml: RICH, stateName: 'Backlog' });
    const viaPoll = c.fake.addIssue(c.planeProject, { name: 'Dark mode (poll)', descriptionHtml: RICH, stateName: 'Backlog' });
    const hook = await c.send(c.fake.moveIssue(viaHook.id, 'To Analyse'));
    expect(hook.json.status).toBe('task_created');
    c.fake.moveIssue(viaPoll.id, 'To Analyse'); // its webhook is lost
    const tracker = createTracker(c.orch.config, { db: svc.db })!;
    // the outbox goes first (the poll yields while a Plane row is due): deliver the pick-up
    await createOutboxDeliverer({ db: svc.db, channel: planeOutboxChannel(tracker), log: c.orch.log }).tick();
    expect((await reconcilePlane(d, tracker, POLL)).outcomes).toMatchObject({ task_created: 1 });
    const a = (await getLiveTaskByIssue(svc.db, viaHook.id))!;
    const b = (await getLiveTaskByIssue(svc.db, viaPoll.id))!;
    expect(a.body).toBe(RICH_MD);
    expect(b.body).toBe(a.body);
  });

  it('a state_id webhook, then a poll of the same change → one task; its failed analysis is not relaunched by the poll', async () => {
    c = await setup({ ORCH_AGENT: 'command', ORCH_AGENT_CMD: `LAZY_STAGE=analysis sh ${GOOD_AGENT}`, ORCH_JOB_MAX_ATTEMPTS: '1' });
    await c.orch.worker();
    const svc = c.orch.rt.svc;
    const d = { db: svc.db, boss: svc.boss, config: c.orch.config, log: c.orch.log };
    const tracker = createTracker(c.orch.config, { db: svc.db })!;
    const issue = c.fake.addIssue(c.planeProject, { name: 'Analysis fails', stateName: 'Backlog' });
    const body = c.fake.moveIssue(issue.id, 'To Analyse'); // the web app: field "state_id"
    expect((body.activity as { field: string }).field).toBe('state_id');
    const hook = await c.send(body);
    expect(hook.json.status).toBe('task_created');
    const taskId = hook.json.task_id!;
    await waitFor(async () => (await getTask(svc.db, taskId))?.blocked_at, 30_000, 'analysis failed and blocked');
    // orch's own move to "In Progress" is still waiting in the outbox (no deliverer runs here, and
    // the rows back off as after a failed attempt, so the poll does not yield to them): Plane still
    // shows the issue in "To Analyse", with the updated_at of the user's move
    await sql`UPDATE outbox SET next_attempt_at = now() + interval '1 hour' WHERE delivered_at IS NULL`.execute(svc.db);
    expect(c.fake.issues.get(issue.id)!.state).toBe(c.fake.states(c.planeProject).find((s) => s.name === 'To Analyse')!.id);
    const jobs = (await listTaskJobs(svc.db, taskId)).length;
    const first = await reconcilePlane(d, tracker, POLL);
    expect(first.outcomes).toEqual({ duplicate: 1 });
    // someone edits the description: a new updated_at, but no move — still nothing to relaunch
    c.fake.editIssue(issue.id, '<p>more detail</p>');
    expect((await reconcilePlane(d, tracker, POLL)).outcomes).toEqual({ duplicate: 1 });
    expect(await listTaskJobs(svc.db, taskId)).toHaveLength(jobs);
    expect(await tasksOfIssue(c.orch, issue.id)).toHaveLength(1);
    expect((await getTask(svc.db, taskId))!.blocked_at).not.toBeNull();

    // a real move away and back, both webhooks lost: the poll sees the issue back in "To
    // Analyse" after orch knew it elsewhere (orch's own delivered move), and relaunches
    await sql`UPDATE outbox SET next_attempt_at = now() WHERE delivered_at IS NULL`.execute(svc.db);
    const deliverer = createOutboxDeliverer({ db: svc.db, channel: planeOutboxChannel(tracker), log: c.orch.log });
    await deliverer.tick(); // in progress, then blocked, delivered: orch now knows the issue is in "Blocked"
    expect(c.fake.issues.get(issue.id)!.state).toBe(c.fake.states(c.planeProject).find((s) => s.name === 'Blocked')!.id);
    c.fake.moveIssue(issue.id, 'To Analyse');
    expect((await reconcilePlane(d, tracker, POLL)).outcomes).toEqual({ task_relaunched: 1 });
    expect((await listTaskJobs(svc.db, taskId)).length).toBe(jobs + 1);
  });

  it('timestamps in another zone dedupe too: REST in +05:30 (poll first), the webhook in UTC', async () => {
    const fake = await startFakePlane({ apiKey: API_KEY, workspaceSlug: SLUG, restUtcOffset: '+05:30' });
    const planeProject = randomUUID();
    fake.addProject(planeProject, STATES);
    const orch = await startOrch({ env: planeEnv(fake), project: { plane_project: planeProject } });
    c = { fake, orch, planeProject, app: createApp({ db: orch.rt.svc.db, boss: orch.rt.svc.boss, config: orch.config, log: orch.log }), send: async () => ({ status: 0, json: {} }) };
    const svc = orch.rt.svc;
    const issue = fake.addIssue(planeProject, { name: 'Zoned', stateName: 'Backlog' });
    const hookBody = fake.moveIssue(issue.id, 'To Analyse'); // delivered late, after the poll
    const rest = fake.restIssue(fake.issues.get(issue.id)!);
    expect(rest.updated_at).toMatch(/\+05:30$/);
    expect((hookBody.data as { updated_at: string }).updated_at).toMatch(/Z$/);
    const r = await reconcilePlane({ db: svc.db, boss: svc.boss, config: orch.config, log: orch.log }, createTracker(orch.config, { db: svc.db })!, POLL);
    expect(r.outcomes).toEqual({ task_created: 1 });
    const raw = JSON.stringify(hookBody);
    const late = await c.app.request('/webhooks/plane', { method: 'POST', body: raw, headers: { 'content-type': 'application/json', 'x-plane-signature': fake.sign(raw, SECRET) } });
    expect(((await late.json()) as { status: string }).status).toBe('duplicate');
    expect(await tasksOfIssue(orch, issue.id)).toHaveLength(1);
    const deliveries = await sql<{ n: number }>`SELECT count(*)::int AS n FROM webhook_deliveries`.execute(svc.db);
    expect(deliveries.rows[0]!.n).toBe(1);
  });

  it('a Plane that answers 404 for /work-items/ still works end to end: webhook, outbox and poll', async () => {
    const fake = await startFakePlane({ apiKey: API_KEY, workspaceSlug: SLUG, routes: 'legacy' });
    const planeProject = randomUUID();
    fake.addProject(planeProject, STATES);
    const orch = await startOrch({ env: planeEnv(fake), project: { plane_project: planeProject } });
    c = { fake, orch, planeProject, app: createApp({ db: orch.rt.svc.db, boss: orch.rt.svc.boss, config: orch.config, log: orch.log }), send: async () => ({ status: 0, json: {} }) };
    const svc = orch.rt.svc;
    const tracker = createTracker(orch.config, { db: svc.db })!;
    const missed = fake.addIssue(planeProject, { name: 'On an old Plane', description: 'found by the poll', stateName: 'Backlog' });
    fake.moveIssue(missed.id, 'To Analyse');
    const r = await reconcilePlane({ db: svc.db, boss: svc.boss, config: orch.config, log: orch.log }, tracker, POLL);
    expect(r).toMatchObject({ errors: 0, outcomes: { task_created: 1 } });
    expect((await getLiveTaskByIssue(svc.db, missed.id))!.body).toBe('found by the poll');
    const deliverer = createOutboxDeliverer({ db: svc.db, channel: planeOutboxChannel(tracker), log: orch.log });
    expect((await deliverer.tick()).delivered).toBe(2); // in progress + the pick-up comment
    expect(fake.issues.get(missed.id)!.state).toBe(fake.states(planeProject).find((s) => s.name === 'In Progress')!.id);
    expect(fake.comments.filter((x) => x.issueId === missed.id)).toHaveLength(1);
    expect(fake.requests.filter((x) => x.path.includes('/work-items/'))).toHaveLength(1);
  });

  it("resolving a state's name over HTTP holds no transaction and no delivery lock open", async () => {
    c = await setup();
    const db = c.orch.rt.svc.db;
    const tracker = createTracker(c.orch.config, { db })!;
    const seen: Array<{ in_tx: number; advisory: number }> = [];
    const app = createApp({
      db,
      boss: c.orch.rt.svc.boss,
      config: c.orch.config,
      log: c.orch.log,
      tracker: {
        async stateNameOf(projectId, stateId) {
          // what Postgres sees while orch waits for Plane
          const r = await sql<{ in_tx: number; advisory: number }>`
            SELECT (SELECT count(*)::int FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%') AS in_tx,
                   (SELECT count(*)::int FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                    WHERE d.datname = current_database() AND l.locktype = 'advisory' AND l.classid = ${0x686f6f6b}::oid) AS advisory`.execute(db);
          seen.push(r.rows[0]!);
          return tracker.stateNameOf(projectId, stateId);
        },
      },
    });
    const issue = c.fake.addIssue(c.planeProject, { name: 'Id only', stateName: 'Backlog' });
    const body = c.fake.moveIssue(issue.id, 'To Analyse') as { data: Record<string, unknown> };
    body.data.state = (body.data.state as { id: string }).id; // no name: Plane must be asked
    const raw = JSON.stringify(body);
    const res = await app.request('/webhooks/plane', { method: 'POST', body: raw, headers: { 'content-type': 'application/json', 'x-plane-signature': c.fake.sign(raw, SECRET) } });
    expect(((await res.json()) as { status: string }).status).toBe('task_created');
    expect(seen).toEqual([{ in_tx: 0, advisory: 0 }]);
  });
});
