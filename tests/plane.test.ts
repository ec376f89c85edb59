import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parsePlaneWebhook, verifyPlaneSignature, webhookDedupeKey } from '@orch/shared/tracker/plane-webhook';
import type { PlaneIssueEvent } from '@orch/shared/tracker/plane-webhook';
import { createPlaneTracker, PlaneRateLimited, rateLimitRetryAt } from '@orch/shared/tracker/plane';
import type { PlaneTracker } from '@orch/shared/tracker/plane';
import { TrackerRetryError } from '@orch/shared/tracker/types';
import type { TrackerStateRole } from '@orch/shared/tracker/types';
import { startFakePlane } from './fakes/fake-plane.ts';
import type { FakePlane } from './fakes/fake-plane.ts';
import { PLANE_WORKSPACE_ID, planeStateChangeBody, signPlaneBody } from './support/plane-webhook.ts';

const SECRET = 'whsec-test-secret';
const API_KEY = 'plane_api_0123456789abcdef';
const SLUG = 'acme';
const PROJECT = '4af68566-94a4-4eb3-94aa-50dc9427067b';
const STATES = ['Backlog', 'To Analyse', 'In Progress', 'In Review', 'Done', 'Cancelled', 'STOP', 'Blocked'];
const ROLES: Record<TrackerStateRole, string> = {
  in_progress: 'In Progress',
  in_review: '  in review ',
  done: 'DONE',
  cancelled: 'Cancelled',
  blocked: 'Blocked',
};

/** A body shaped like webhook_task.py's payload, for parser tests that need no server. */
function issuePayload(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...planeStateChangeBody({
      issueId: 'e1b5f0b4-6a3b-4d50-9f7c-1b7f2b1d2c3e',
      name: 'Add dark mode',
      project: PROJECT,
      state: { name: 'To Analyse' },
      description: 'Please add a dark mode',
      at: '2025-01-02T03:04:05.678901Z',
      data: { workspace: PLANE_WORKSPACE_ID, description_html: '<p>Please add a dark mode</p>', sequence_id: 7, labels: [], assignees: [] },
      activity: { old_identifier: null, new_identifier: null },
    }),
    ...over,
  };
}

function parsedEvent(body: unknown): PlaneIssueEvent {
  const r = parsePlaneWebhook(body);
  if (!r.ok) throw new Error(`expected ok, got ${r.error}`);
  return r.event;
}

// ------------------------------------------------------------------------------------------

describe('verifyPlaneSignature', () => {
  const body = JSON.stringify(issuePayload());

  it('accepts the hex HMAC-SHA256 of the raw body, as string or bytes', () => {
    const sig = signPlaneBody(body, SECRET);
    expect(verifyPlaneSignature(body, sig, SECRET)).toBe(true);
    expect(verifyPlaneSignature(new TextEncoder().encode(body), sig, SECRET)).toBe(true);
  });

  it('accepts uppercase hex', () => {
    expect(verifyPlaneSignature(body, signPlaneBody(body, SECRET).toUpperCase(), SECRET)).toBe(true);
  });

  it('rejects a wrong secret', () => {
    expect(verifyPlaneSignature(body, signPlaneBody(body, 'other-secret'), SECRET)).toBe(false);
  });

  it('rejects a body altered by one byte', () => {
    const sig = signPlaneBody(body, SECRET);
    const bytes = Buffer.from(body, 'utf8');
    bytes[bytes.length - 2] = bytes[bytes.length - 2]! ^ 0x01;
    expect(verifyPlaneSignature(bytes, sig, SECRET)).toBe(false);
    expect(verifyPlaneSignature(body + ' ', sig, SECRET)).toBe(false);
  });

  it('rejects a missing, empty, odd-length, non-hex or prefixed header without throwing', () => {
    const sig = signPlaneBody(body, SECRET);
    for (const bad of [undefined, '', sig.slice(1), sig + '0', 'z'.repeat(64), `sha256=${sig}`, sig.slice(0, 62)]) {
      expect(() => verifyPlaneSignature(body, bad, SECRET)).not.toThrow();
      expect(verifyPlaneSignature(body, bad, SECRET)).toBe(false);
    }
  });

  it('rejects a signature made over a re-serialized body (checks raw bytes)', () => {
    // Plane signs json.dumps output (", " / ": " separators); a compact re-serialization differs.
    const pythonish = JSON.stringify(issuePayload()).replace(/,"/g, ', "').replace(/":/g, '": ');
    const sig = signPlaneBody(pythonish, SECRET);
    expect(verifyPlaneSignature(pythonish, sig, SECRET)).toBe(true);
    expect(verifyPlaneSignature(JSON.stringify(JSON.parse(pythonish)), sig, SECRET)).toBe(false);
  });
});

describe('parsePlaneWebhook', () => {
  it('extracts the issue, its expanded state and the activity', () => {
    const e = parsedEvent(issuePayload());
    expect(e).toEqual({
      event: 'issue',
      action: 'updated',
      webhookId: '3c2c32ac-82df-48b3-be2a-a3e21dbe8692',
      workspaceId: 'd2d97c94-a6ad-4012-b526-5577c0d7c769',
      projectId: PROJECT,
      issueId: 'e1b5f0b4-6a3b-4d50-9f7c-1b7f2b1d2c3e',
      issueName: 'Add dark mode',
      issueDescription: 'Please add a dark mode',
      stateId: '0f6d2b8e-2c1f-4a7e-9a51-6f6b1b2f9c11',
      stateName: 'To Analyse',
      field: 'state',
      newValue: '0f6d2b8e-2c1f-4a7e-9a51-6f6b1b2f9c11',
      oldValue: '9b7e1c2d-3f4a-4b5c-8d9e-0f1a2b3c4d5e',
      actorId: '7d6c5b4a-3e2f-4a1b-9c8d-7e6f5a4b3c2d',
      updatedAt: '2025-01-02T03:04:05.678901Z',
    } satisfies PlaneIssueEvent);
  });

  it('takes the body from description_html (as Markdown), a plain state id, and tolerates extra fields', () => {
    const p = issuePayload({ extra_top: { anything: [1, 2] } });
    const d = p.data as Record<string, unknown>;
    d.description_stripped = 'Please add a dark modeTwo'; // strip_tags glues paragraphs together
    d.description_html = '<p>Please add a dark mode</p><p>Two</p>';
    d.state = '0f6d2b8e-2c1f-4a7e-9a51-6f6b1b2f9c11';
    d.brand_new_field = 42;
    const e = parsedEvent(p);
    expect(e.issueDescription).toBe('Please add a dark mode\n\nTwo');
    expect(e.stateId).toBe('0f6d2b8e-2c1f-4a7e-9a51-6f6b1b2f9c11');
    expect(e.stateName).toBeNull();
  });

  it('takes the state name from an activity that carries names (older releases)', () => {
    const p = issuePayload({
      activity: {
        field: 'state',
        new_value: 'To Analyse',
        old_value: 'Backlog',
        actor: '7d6c5b4a-3e2f-4a1b-9c8d-7e6f5a4b3c2d',
        new_identifier: '0f6d2b8e-2c1f-4a7e-9a51-6f6b1b2f9c11',
        created_at: '2025-02-02T00:00:00Z',
      },
    });
    delete (p.data as Record<string, unknown>).state;
    const e = parsedEvent(p);
    expect(e.stateName).toBe('To Analyse');
    expect(e.stateId).toBe('0f6d2b8e-2c1f-4a7e-9a51-6f6b1b2f9c11');
    expect(e.actorId).toBe('7d6c5b4a-3e2f-4a1b-9c8d-7e6f5a4b3c2d');
    expect(e.updatedAt).toBe('2025-01-02T03:04:05.678901Z');
  });

  it('renders non-string activity values as text', () => {
    const p = issuePayload({ activity: { field: 'label_ids', new_value: ['a', 'b'], old_value: 3, actor: null } });
    const e = parsedEvent(p);
    expect(e.newValue).toBe('["a","b"]');
    expect(e.oldValue).toBe('3');
    expect(e.actorId).toBeNull();
  });

  it('parses non-issue events as ok so the caller can ignore them', () => {
    const project = parsedEvent({
      event: 'project',
      action: 'update',
      webhook_id: 'w',
      workspace_id: 'ws',
      data: { id: PROJECT, name: 'Testing Project', workspace_detail: { slug: 'x' } },
      activity: { field: 'name', new_value: 'n', old_value: 'o', actor: { id: 'u' } },
    });
    expect(project.event).toBe('project');
    const comment = parsedEvent({
      event: 'issue_comment',
      action: 'created',
      data: { id: 'c1', issue: 'i1', project: PROJECT, comment_html: '<p>hi</p>' },
      activity: { field: null, new_value: null, old_value: null, actor: { id: 'u' } },
    });
    expect(comment.event).toBe('issue_comment');
    expect(comment.issueId).toBe('i1');
    const deleted = parsedEvent({ event: 'issue', action: 'deleted', data: { id: 'i2' }, activity: null });
    expect(deleted.issueId).toBe('i2');
    expect(deleted.projectId).toBe('');
  });

  it('rejects malformed shapes', () => {
    const noId = issuePayload();
    delete (noId.data as Record<string, unknown>).id;
    const numericId = issuePayload();
    (numericId.data as Record<string, unknown>).id = 123;
    const noProject = issuePayload();
    delete (noProject.data as Record<string, unknown>).project;
    const bad: unknown[] = [
      null,
      'issue',
      42,
      [issuePayload()],
      {},
      issuePayload({ data: null }),
      issuePayload({ data: 'x' }),
      noId,
      numericId,
      issuePayload({ event: 7 }),
      issuePayload({ action: null }),
      issuePayload({ activity: { field: 12 } }),
      issuePayload({ activity: 'nope' }),
      issuePayload({ webhook_id: { id: 1 } }),
      noProject,
    ];
    for (const b of bad) {
      const r = parsePlaneWebhook(b);
      expect(r.ok, JSON.stringify(b)?.slice(0, 80)).toBe(false);
      if (!r.ok) expect(r.error).toMatch(/malformed/);
    }
  });
});

describe('webhookDedupeKey', () => {
  it('is equal for two deliveries of the same change (delivery id and webhook differ)', () => {
    // X-Plane-Delivery is a header (a new uuid4 per send); it never reaches the key. A second
    // webhook registered on the same workspace sends the same change with its own webhook_id.
    const a = parsedEvent(JSON.parse(JSON.stringify(issuePayload())));
    const b = parsedEvent(issuePayload({ webhook_id: 'ffffffff-82df-48b3-be2a-a3e21dbe8692' }));
    expect(webhookDedupeKey(a)).toBe(webhookDedupeKey(b));
    expect(webhookDedupeKey(a)).toMatch(/^[0-9a-f]{64}$/);
  });

  it('a state event is keyed by what it means: issue, state, updated_at as a UTC instant', () => {
    const base = parsedEvent(issuePayload());
    const key = webhookDedupeKey(base);
    // the web app's field name, the REST one, or a create: the same fact
    expect(webhookDedupeKey({ ...base, field: 'state_id' })).toBe(key);
    expect(webhookDedupeKey({ ...base, action: 'created', field: null, newValue: null })).toBe(key);
    // the same instant in the token owner's zone (REST), or with fewer fraction digits
    expect(webhookDedupeKey({ ...base, updatedAt: '2025-01-02T08:34:05.678901+05:30' })).toBe(key);
    expect(webhookDedupeKey({ ...base, updatedAt: '2025-01-01T22:04:05.678901-05:00' })).toBe(key);
    const whole = { ...base, updatedAt: '2025-01-02T03:04:05Z' };
    expect(webhookDedupeKey({ ...base, updatedAt: '2025-01-02T03:04:05.000000Z' })).toBe(webhookDedupeKey(whole));
    // another state, another time, another issue: another key
    expect(webhookDedupeKey({ ...base, stateId: '11111111-2c1f-4a7e-9a51-6f6b1b2f9c11' })).not.toBe(key);
    expect(webhookDedupeKey({ ...base, updatedAt: '2025-01-02T03:09:00.000000Z' })).not.toBe(key);
    expect(webhookDedupeKey({ ...base, updatedAt: '2025-01-02T03:04:05.678902Z' })).not.toBe(key);
    expect(webhookDedupeKey({ ...base, issueId: 'other' })).not.toBe(key);
  });

  it('other events keep a content key (field, new value, updated_at)', () => {
    const base = { ...parsedEvent(issuePayload()), field: 'priority', newValue: 'high' };
    const key = webhookDedupeKey(base);
    expect(webhookDedupeKey({ ...base })).toBe(key);
    expect(webhookDedupeKey({ ...base, newValue: 'low' })).not.toBe(key);
    expect(webhookDedupeKey({ ...base, field: 'name' })).not.toBe(key);
    expect(webhookDedupeKey({ ...base, updatedAt: '2025-01-02T03:09:00.000000Z' })).not.toBe(key);
    // a state event without a readable time falls back to the content key
    const noTime = { ...parsedEvent(issuePayload()), updatedAt: null };
    expect(webhookDedupeKey(noTime)).not.toBe(webhookDedupeKey({ ...noTime, newValue: 'x' }));
  });
});

// ------------------------------------------------------------------------------------------

describe('fake Plane', () => {
  let fake: FakePlane;
  beforeAll(async () => {
    fake = await startFakePlane({ apiKey: API_KEY, workspaceSlug: SLUG, maxPageSize: 2, restUtcOffset: '+05:30' });
    fake.addProject(PROJECT, STATES);
  });
  afterAll(() => fake.close());

  const statesUrl = () => `${fake.url}/api/v1/workspaces/${SLUG}/projects/${PROJECT}/states/`;
  const h = { 'X-API-Key': API_KEY };

  it('answers 401 without or with a wrong X-API-Key, 404 for unknown paths', async () => {
    expect((await fetch(statesUrl())).status).toBe(401);
    expect((await fetch(statesUrl(), { headers: { 'X-API-Key': 'nope' } })).status).toBe(401);
    expect((await fetch(statesUrl(), { headers: h })).status).toBe(200);
    expect((await fetch(statesUrl().replace(PROJECT, 'b6f3f6b5-0000-4000-8000-000000000000'), { headers: h })).status).toBe(404);
    expect((await fetch(statesUrl().replace(`/${SLUG}/`, '/other/'), { headers: h })).status).toBe(404);
    for (const prefix of ['work-items', 'issues']) {
      expect((await fetch(`${fake.url}/api/v1/workspaces/${SLUG}/projects/${PROJECT}/${prefix}/${'0'.repeat(8)}-0000-4000-8000-000000000000/`, { headers: h })).status).toBe(404);
    }
  });

  it('serves Plane-shaped paginated lists with uuid ids', async () => {
    const res = await fetch(statesUrl(), { headers: h });
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ next_cursor: '2:1:0', next_page_results: true, prev_page_results: false, total_count: STATES.length, count: 2 });
    const first = (body.results as Array<Record<string, unknown>>)[0]!;
    expect(Object.keys(first)).toEqual(expect.arrayContaining(['id', 'name', 'group', 'color', 'sequence']));
    expect(first.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.headers.get('x-ratelimit-reset')).toMatch(/^\d+$/);
    expect((await fetch(`${statesUrl()}?per_page=1001`, { headers: h })).status).toBe(400);
  });

  it('REST has no description_stripped and writes datetimes in the token owner\'s zone; the webhook has both, in UTC', async () => {
    const issue = fake.addIssue(PROJECT, { name: 'Zones', description: 'text', stateName: 'Backlog' });
    const res = await fetch(`${fake.url}/api/v1/workspaces/${SLUG}/projects/${PROJECT}/work-items/${issue.id}/`, { headers: h });
    const rest = (await res.json()) as Record<string, unknown>;
    expect(rest).not.toHaveProperty('description_stripped');
    expect(rest.description_html).toBe('<p>text</p>');
    expect(rest.updated_at).toMatch(/\+05:30$/);
    expect(Date.parse(String(rest.updated_at))).toBe(Date.parse(issue.updated_at));
    const hook = fake.moveIssue(issue.id, 'To Analyse') as { data: Record<string, unknown>; activity: Record<string, unknown> };
    expect(hook.data.updated_at).toMatch(/Z$/);
    expect(hook.data.description_stripped).toBe('text');
    expect(hook.activity.field).toBe('state_id');
    // fields= keeps only what is asked for; order_by=-updated_at puts the latest change first
    const list = (await (await fetch(`${fake.url}/api/v1/workspaces/${SLUG}/projects/${PROJECT}/work-items/?order_by=-updated_at&fields=id,state`, { headers: h })).json()) as { results: Array<Record<string, unknown>> };
    expect(Object.keys(list.results[0]!).sort()).toEqual(['id', 'state']);
    expect(list.results[0]!.id).toBe(issue.id);
  });

  it('enforces 60 requests a minute per key: a 429 carries only Retry-After and error 5900', async () => {
    const f = await startFakePlane({ apiKey: API_KEY, workspaceSlug: SLUG });
    try {
      f.addProject(PROJECT, STATES);
      const url = `${f.url}/api/v1/workspaces/${SLUG}/projects/${PROJECT}/states/`;
      const statuses: number[] = [];
      let last: Response | null = null;
      for (let i = 0; i < 61; i++) {
        last = await fetch(url, { headers: h });
        statuses.push(last.status);
        if (i < 60) expect(last.headers.get('x-ratelimit-remaining')).toBe(String(59 - i));
      }
      expect(statuses.filter((x) => x === 200)).toHaveLength(60);
      expect(statuses.at(-1)).toBe(429);
      expect(Number(last!.headers.get('retry-after'))).toBeGreaterThan(55);
      expect(last!.headers.get('x-ratelimit-remaining')).toBeNull();
      expect(await last!.json()).toEqual({ error_code: 5900, error_message: 'RATE_LIMIT_EXCEEDED' });
      // a request without a valid key is refused by authentication, not counted
      expect((await fetch(url, { headers: { 'X-API-Key': 'nope' } })).status).toBe(401);
    } finally {
      await f.close();
    }
  });

  it('builds a realistic, verifiable issue webhook', () => {
    const issue = fake.addIssue(PROJECT, { name: 'Webhook me', description: 'body text', stateName: 'Backlog' });
    const body = fake.moveIssue(issue.id, 'To Analyse');
    const raw = JSON.stringify(body);
    expect(verifyPlaneSignature(raw, fake.sign(raw, SECRET), SECRET)).toBe(true);
    const e = parsedEvent(JSON.parse(raw));
    expect(e).toMatchObject({
      event: 'issue',
      issueId: issue.id,
      projectId: PROJECT,
      issueName: 'Webhook me',
      issueDescription: 'body text',
      stateName: 'To Analyse',
      field: 'state_id',
      stateId: fake.issues.get(issue.id)!.state,
      newValue: fake.issues.get(issue.id)!.state,
    });
    // the same change sent again, even under the REST field name, has one key; a later change back has another
    const again = parsedEvent(JSON.parse(JSON.stringify(fake.webhookBody(fake.issues.get(issue.id)!, { field: 'state', oldValue: 'Backlog', newValue: 'To Analyse', actorId: e.actorId! }))));
    expect(webhookDedupeKey(again)).toBe(webhookDedupeKey(e));
    fake.moveIssue(issue.id, 'Backlog');
    const later = parsedEvent(fake.moveIssue(issue.id, 'To Analyse'));
    expect(webhookDedupeKey(later)).not.toBe(webhookDedupeKey(e));
  });
});

describe('createPlaneTracker', () => {
  let fake: FakePlane;
  let tracker: PlaneTracker;

  beforeEach(async () => {
    fake = await startFakePlane({ apiKey: API_KEY, workspaceSlug: SLUG, maxPageSize: 2 });
    fake.addProject(PROJECT, STATES);
    tracker = createPlaneTracker({ baseUrl: fake.url + '/', apiKey: API_KEY, workspaceSlug: SLUG, stateNames: ROLES, timeoutMs: 5000 });
  });
  afterEach(() => fake.close());

  /** how many times the state list was loaded (first page requests) */
  const stateLoads = () => fake.requests.filter((r) => r.path.endsWith('/states/') && !r.query.includes('cursor=')).length;

  it('resolves state names trimmed and case-insensitively, and caches them', async () => {
    const ids = fake.addProject(PROJECT, []);
    expect(await tracker.resolveStateId(PROJECT, '  to analyse ')).toBe(ids['To Analyse']);
    expect(await tracker.resolveStateId(PROJECT, 'IN REVIEW')).toBe(ids['In Review']);
    expect(await tracker.stateNameOf(PROJECT, ids['Done']!)).toBe('Done');
    expect(stateLoads()).toBe(1);
    // all pages were followed (8 states, 2 per page), each asking for Plane's largest page
    const pages = fake.requests.filter((r) => r.path.endsWith('/states/'));
    expect(pages.length).toBe(4);
    expect(pages.every((r) => r.query.includes('per_page=1000'))).toBe(true);
  });

  it('refreshes the cache once on a miss (a state added after the first lookup)', async () => {
    expect(await tracker.resolveStateId(PROJECT, 'Backlog')).not.toBeNull();
    expect(stateLoads()).toBe(1);
    const qaId = fake.addState(PROJECT, 'QA');
    expect(await tracker.resolveStateId(PROJECT, 'qa')).toBe(qaId);
    expect(stateLoads()).toBe(2);
    expect(await tracker.stateNameOf(PROJECT, qaId)).toBe('QA');
    expect(stateLoads()).toBe(2);
    // a name that does not exist: one refresh, then null (no loop)
    expect(await tracker.resolveStateId(PROJECT, 'Nope')).toBeNull();
    expect(stateLoads()).toBe(3);
  });

  it('setState PATCHes the work item on the current route and answers the new updated_at', async () => {
    const ids = fake.addProject(PROJECT, []);
    const issue = fake.addIssue(PROJECT, { name: 'Task', stateName: 'To Analyse' });
    const changed = await tracker.setState({ projectId: PROJECT, issueId: issue.id, role: 'in_review' });
    expect(changed).toEqual({ stateId: ids['In Review'], updatedAt: fake.issues.get(issue.id)!.updated_at });
    expect(fake.stateChanges.map((c) => c.stateId)).toEqual([ids['In Review']]);
    expect(fake.issues.get(issue.id)!.state).toBe(ids['In Review']);
    const patch = fake.requests.find((r) => r.method === 'PATCH');
    expect(patch).toMatchObject({ method: 'PATCH', path: `/api/v1/workspaces/${SLUG}/projects/${PROJECT}/work-items/${issue.id}/`, query: '', status: 200 });
    await tracker.setState({ projectId: PROJECT, issueId: issue.id, role: 'done' });
    expect(fake.stateChanges.at(-1)?.stateId).toBe(ids['Done']);
  });

  it('setState fails clearly when the configured state does not exist', async () => {
    const t = createPlaneTracker({ baseUrl: fake.url, apiKey: API_KEY, workspaceSlug: SLUG, stateNames: { ...ROLES, blocked: 'On Hold' } });
    const issue = fake.addIssue(PROJECT, { name: 'Task', stateName: 'Backlog' });
    await expect(t.setState({ projectId: PROJECT, issueId: issue.id, role: 'blocked' })).rejects.toThrow(/On Hold/);
    expect(fake.stateChanges).toEqual([]);
  });

  it('comment posts comment_html', async () => {
    const issue = fake.addIssue(PROJECT, { name: 'Task', stateName: 'Backlog' });
    await tracker.comment({ projectId: PROJECT, issueId: issue.id, html: '<p>orch: <b>blocked</b></p>' });
    expect(fake.comments).toMatchObject([{ issueId: issue.id, comment_html: '<p>orch: <b>blocked</b></p>' }]);
    expect(fake.requests.at(-1)).toMatchObject({ method: 'POST', path: `/api/v1/workspaces/${SLUG}/projects/${PROJECT}/work-items/${issue.id}/comments/`, status: 201 });
  });

  it('a Plane without /work-items/ (older than v1.1.0) still works: one fallback to /issues/, remembered, logged once', async () => {
    const old = await startFakePlane({ apiKey: API_KEY, workspaceSlug: SLUG, routes: 'legacy' });
    try {
      const ids = old.addProject(PROJECT, STATES);
      const warned: string[] = [];
      const log = { warn: (_o: unknown, m: string) => void warned.push(m) } as unknown as import('@orch/shared/runtime/logger').Logger;
      const mk = () => createPlaneTracker({ baseUrl: old.url, apiKey: API_KEY, workspaceSlug: SLUG, stateNames: ROLES, log });
      const t = mk();
      const issue = old.addIssue(PROJECT, { name: 'Old Plane', description: 'still works', stateName: 'To Analyse' });
      expect((await t.listIssues(PROJECT)).issues.map((i) => i.name)).toEqual(['Old Plane']);
      await t.setState({ projectId: PROJECT, issueId: issue.id, role: 'in_progress' });
      await t.comment({ projectId: PROJECT, issueId: issue.id, html: '<p>hi</p>' });
      await mk().comment({ projectId: PROJECT, issueId: issue.id, html: '<p>another client, same Plane</p>' });
      expect(old.issues.get(issue.id)!.state).toBe(ids['In Progress']);
      expect(old.comments).toHaveLength(2);
      const workItems = old.requests.filter((r) => r.path.includes('/work-items/'));
      expect(workItems.map((r) => r.status)).toEqual([404]); // asked once, then remembered
      expect(old.requests.filter((r) => r.path.includes('/issues/') && r.status < 300)).toHaveLength(4);
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatch(/\/issues\//);
    } finally {
      await old.close();
    }
  });

  it('429 → PlaneRateLimited with retryAt from Retry-After (the only header Plane sends)', async () => {
    const issue = fake.addIssue(PROJECT, { name: 'Task', stateName: 'Backlog' });
    fake.rateLimitNext(1, 120);
    const before = Date.now();
    const err = await tracker.comment({ projectId: PROJECT, issueId: issue.id, html: '<p>x</p>' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PlaneRateLimited);
    expect(err).toBeInstanceOf(TrackerRetryError);
    const at = (err as TrackerRetryError).retryAt.getTime();
    expect(at).toBeGreaterThanOrEqual(before + 120_000);
    expect(at).toBeLessThanOrEqual(Date.now() + 120_000);
    expect(fake.comments).toEqual([]);
    // the limit has passed: the retry goes through
    await tracker.comment({ projectId: PROJECT, issueId: issue.id, html: '<p>x</p>' });
    expect(fake.comments).toHaveLength(1);
  });

  it('rateLimitRetryAt: Retry-After seconds or date, else now + 60 s (X-RateLimit-Reset is not a 429 header)', () => {
    const now = Date.parse('2025-01-01T00:00:00Z');
    expect(rateLimitRetryAt(new Headers({ 'Retry-After': '30' }), now).getTime()).toBe(now + 30_000);
    expect(rateLimitRetryAt(new Headers({ 'Retry-After': 'Wed, 01 Jan 2025 00:02:00 GMT' }), now).getTime()).toBe(now + 120_000);
    expect(rateLimitRetryAt(new Headers(), now).getTime()).toBe(now + 60_000);
    expect(rateLimitRetryAt(new Headers({ 'X-RateLimit-Reset': String(now / 1000 + 5) }), now).getTime()).toBe(now + 60_000);
    expect(rateLimitRetryAt(new Headers({ 'Retry-After': 'soon' }), now).getTime()).toBe(now + 60_000);
  });

  it('500 → a plain Error (not a TrackerRetryError) naming the status', async () => {
    const issue = fake.addIssue(PROJECT, { name: 'Task', stateName: 'Backlog' });
    await tracker.resolveStateId(PROJECT, 'Done'); // warm the cache so the PATCH is the failing call
    fake.failNext(1, 500);
    const err = await tracker.setState({ projectId: PROJECT, issueId: issue.id, role: 'done' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(TrackerRetryError);
    expect((err as Error).message).toMatch(/PATCH .* 500/);
    expect(fake.stateChanges).toEqual([]);
    await tracker.setState({ projectId: PROJECT, issueId: issue.id, role: 'done' });
    expect(fake.stateChanges).toHaveLength(1);
  });

  it('a wrong key → Error naming 401, without leaking the key', async () => {
    const badKey = 'plane_api_WRONG_KEY_abcdef';
    const t = createPlaneTracker({ baseUrl: fake.url, apiKey: badKey, workspaceSlug: SLUG, stateNames: ROLES });
    const err = await t.resolveStateId(PROJECT, 'Done').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/401/);
    expect((err as Error).message).toMatch(/Given API token is not valid/);
    expect((err as Error).message).not.toContain(badKey);
    expect(fake.requests.at(-1)?.status).toBe(401);
  });

  it('other 4xx → Error with status and body snippet', async () => {
    const err = await tracker.comment({ projectId: PROJECT, issueId: 'a9a9a9a9-0000-4000-8000-000000000000', html: '<p>x</p>' }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/404: .*does not exist/);
  });

  it('a network failure → a plain Error', async () => {
    const url = fake.url;
    await fake.close();
    const t = createPlaneTracker({ baseUrl: url, apiKey: API_KEY, workspaceSlug: SLUG, stateNames: ROLES });
    const err = await t.resolveStateId(PROJECT, 'Done').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(TrackerRetryError);
    expect((err as Error).message).toMatch(/failed/);
    fake = await startFakePlane({ apiKey: API_KEY, workspaceSlug: SLUG }); // for afterEach
  });

  it('listIssues reads the list alone: latest change first, only the fields orch reads, all pages, bodies as Markdown', async () => {
    const ids = fake.addProject(PROJECT, []);
    const made = [];
    for (const name of ['A', 'B', 'C', 'D', 'E']) {
      made.push(fake.addIssue(PROJECT, { name, descriptionHtml: `<p>${name} one</p><ul><li><p>item</p></li></ul>`, stateName: 'To Analyse' }));
      await new Promise((r) => setTimeout(r, 3)); // distinct milliseconds
    }
    fake.moveIssue(made[1]!.id, 'Backlog'); // B is now the latest change
    const got = await tracker.listIssues(PROJECT);
    expect(got.issues.map((i) => i.name)).toEqual(['B', 'E', 'D', 'C', 'A']);
    expect(got).toMatchObject({ pages: 3, exhaustive: true });
    expect(got.newest?.getTime()).toBe(Date.parse(fake.issues.get(made[1]!.id)!.updated_at));
    expect(got.issues[0]).toEqual({ id: made[1]!.id, name: 'B', description: 'B one\n\n- item', stateId: ids['Backlog'], updatedAt: fake.issues.get(made[1]!.id)!.updated_at });
    const lists = fake.requests.filter((r) => /\/work-items\/$/.test(r.path));
    expect(lists).toHaveLength(3); // no GET per work item
    expect(fake.requests.some((r) => /\/work-items\/[0-9a-f-]{36}\/$/.test(r.path))).toBe(false);
    const q = new URLSearchParams(lists[0]!.query);
    expect(q.get('per_page')).toBe('1000');
    expect(q.get('order_by')).toBe('-updated_at');
    expect(q.get('fields')!.split(',').sort()).toEqual(['description_html', 'id', 'name', 'state', 'updated_at']);

    // since: paging stops after the first page that reaches an older change
    const before = fake.requests.length;
    const partial = await tracker.listIssues(PROJECT, { since: new Date(Date.parse(fake.issues.get(made[3]!.id)!.updated_at)) });
    expect(partial.exhaustive).toBe(false);
    expect(partial.issues.map((i) => i.name)).toEqual(['B', 'E', 'D', 'C']);
    expect(fake.requests.length - before).toBe(2);
  });
});
