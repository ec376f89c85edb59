/**
 * A faithful-enough fake of Plane's REST API v1 and webhook payloads, for tests.
 *
 * Modelled on makeplane/plane:
 * - paths and auth: apps/api/plane/api/views/{state,issue}.py, apps/api/plane/api/middleware/
 *   api_authentication.py (`X-Api-Key`), apps/api/plane/api/views/base.py (404 body
 *   `{"error": "The requested resource does not exist."}`, `X-RateLimit-*` headers on answers);
 * - pagination: apps/api/plane/utils/paginator.py (cursor `"<per_page>:<page>:<is_prev>"`,
 *   body `{grouped_by, sub_grouped_by, total_count, next_cursor, prev_cursor, next_page_results,
 *   prev_page_results, count, total_pages, total_results, extra_stats, results}`);
 * - rate limiting: apps/api/plane/api/rate_limit.py (DRF throttle; 429 with Retry-After);
 * - webhooks: apps/api/plane/bgtasks/webhook_task.py (`{event, action, webhook_id, workspace_id,
 *   data, activity}`, data = IssueExpandSerializer with `state` as `{id, name, color, group}`,
 *   activity `{field, new_value, old_value, actor, old_identifier, new_identifier}`; signature
 *   = hex HMAC-SHA256 of the body with the webhook secret).
 *
 * Deviations, on purpose: a missing/wrong key answers 401 (Plane's DRF setup answers 403 since
 * its authenticator declares no WWW-Authenticate; the client treats both alike); list pages are
 * capped at `pageSize` (default 2) whatever `per_page` asks, so pagination is exercised.
 */
import { createHmac, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakePlaneState {
  id: string;
  name: string;
  group: 'backlog' | 'unstarted' | 'started' | 'completed' | 'cancelled';
  color: string;
  sequence: number;
  default: boolean;
  description: string;
  project: string;
  workspace: string;
  created_at: string;
  updated_at: string;
}

export interface FakePlaneIssue {
  id: string;
  name: string;
  /** the state id */
  state: string;
  sequence_id: number;
  description_html: string;
  description_stripped: string | null;
  priority: string;
  project: string;
  workspace: string;
  parent: string | null;
  start_date: string | null;
  target_date: string | null;
  completed_at: string | null;
  archived_at: string | null;
  is_draft: boolean;
  sort_order: number;
  external_source: string | null;
  external_id: string | null;
  assignees: string[];
  labels: string[];
  created_by: string;
  updated_by: string;
  created_at: string;
  updated_at: string;
}

export interface FakePlaneRequest {
  method: string;
  /** pathname, without the query */
  path: string;
  query: string;
  status: number;
}

export interface FakePlaneOptions {
  apiKey: string;
  workspaceSlug: string;
  /** largest page served (default 2) */
  pageSize?: number;
}

export interface FakePlane {
  url: string;
  workspaceId: string;
  /** a user id standing for "the API key's owner" (the actor of orch's own changes) */
  botUserId: string;
  close(): Promise<void>;
  /** create the project (or add the states it lacks); returns name → id for all its states */
  addProject(id: string, states: string[]): Record<string, string>;
  addState(projectId: string, name: string): string;
  addIssue(projectId: string, input: { name: string; description?: string; stateName: string }): FakePlaneIssue;
  /** a user's change in Plane's UI: moves the issue and returns the webhook body Plane would send */
  moveIssue(issueId: string, stateName: string, actorId?: string): Record<string, unknown>;
  states(projectId: string): FakePlaneState[];
  issues: Map<string, FakePlaneIssue>;
  comments: Array<{ issueId: string; comment_html: string; id: string }>;
  stateChanges: Array<{ issueId: string; stateId: string }>;
  requests: FakePlaneRequest[];
  /** the next `n` authenticated requests answer 429 with X-RateLimit-Reset = resetEpochS */
  rateLimitNext(n: number, resetEpochS: number): void;
  /** the next `n` authenticated requests answer `status` */
  failNext(n: number, status: number): void;
  webhookBody(
    issue: FakePlaneIssue,
    opts: { field: string | null; oldValue: unknown; newValue: unknown; actorId: string; action?: string },
  ): Record<string, unknown>;
  sign(body: string, secret: string): string;
}

const GROUPS: Array<[RegExp, FakePlaneState['group']]> = [
  [/backlog/i, 'backlog'],
  [/done|complete|merged|closed/i, 'completed'],
  [/cancel|stop|won.?t/i, 'cancelled'],
  [/progress|review|doing|analys(is|ing)|blocked/i, 'started'],
];

const COLORS = ['#60646C', '#3F76FF', '#F59E0B', '#8B5CF6', '#16A34A', '#9AA4BC', '#DC2626'];

function groupFor(name: string): FakePlaneState['group'] {
  for (const [re, g] of GROUPS) if (re.test(name)) return g;
  return 'unstarted';
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Plane's Issue.save: `None if description_html in ("", None) else strip_tags(description_html)` */
function stripHtml(s: string): string | null {
  if (s === '') return null;
  return s.replace(/<[^>]*>/g, '');
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export async function startFakePlane(opts: FakePlaneOptions): Promise<FakePlane> {
  const pageSize = Math.max(1, opts.pageSize ?? 2);
  const workspaceId = randomUUID();
  const botUserId = randomUUID();
  const webhookId = randomUUID();
  const projects = new Map<string, { states: FakePlaneState[]; nextSeq: number }>();
  const issues = new Map<string, FakePlaneIssue>();
  const comments: FakePlane['comments'] = [];
  const stateChanges: FakePlane['stateChanges'] = [];
  const requests: FakePlaneRequest[] = [];
  let rateLimited = 0;
  let rateLimitReset = 0;
  let failing = 0;
  let failStatus = 500;
  /** strictly increasing timestamps, so two changes never share an updated_at */
  let lastTs = 0;
  const now = (): string => {
    lastTs = Math.max(Date.now(), lastTs + 1);
    return new Date(lastTs).toISOString();
  };

  function project(id: string) {
    const p = projects.get(id);
    if (!p) throw new Error(`fake-plane: unknown project ${id}`);
    return p;
  }

  function addState(projectId: string, name: string): string {
    const p = project(projectId);
    const existing = p.states.find((s) => s.name === name);
    if (existing) return existing.id;
    const ts = now();
    const st: FakePlaneState = {
      id: randomUUID(),
      name,
      group: groupFor(name),
      color: COLORS[p.states.length % COLORS.length]!,
      sequence: 15000 + p.states.length * 10000,
      default: p.states.length === 0,
      description: '',
      project: projectId,
      workspace: workspaceId,
      created_at: ts,
      updated_at: ts,
    };
    p.states.push(st);
    return st.id;
  }

  function addProject(id: string, states: string[]): Record<string, string> {
    if (!projects.has(id)) projects.set(id, { states: [], nextSeq: 1 });
    for (const s of states) addState(id, s);
    return Object.fromEntries(project(id).states.map((s) => [s.name, s.id]));
  }

  function stateByName(projectId: string, name: string): FakePlaneState {
    const key = name.trim().toLowerCase();
    const st = project(projectId).states.find((s) => s.name.trim().toLowerCase() === key);
    if (!st) throw new Error(`fake-plane: project ${projectId} has no state "${name}"`);
    return st;
  }

  function addIssue(projectId: string, input: { name: string; description?: string; stateName: string }): FakePlaneIssue {
    const p = project(projectId);
    const st = stateByName(projectId, input.stateName);
    const ts = now();
    const html = input.description === undefined ? '<p></p>' : `<p>${escapeHtml(input.description)}</p>`;
    const issue: FakePlaneIssue = {
      id: randomUUID(),
      name: input.name,
      state: st.id,
      sequence_id: p.nextSeq++,
      description_html: html,
      description_stripped: stripHtml(html),
      priority: 'none',
      project: projectId,
      workspace: workspaceId,
      parent: null,
      start_date: null,
      target_date: null,
      completed_at: null,
      archived_at: null,
      is_draft: false,
      sort_order: 65535,
      external_source: null,
      external_id: null,
      assignees: [],
      labels: [],
      created_by: botUserId,
      updated_by: botUserId,
      created_at: ts,
      updated_at: ts,
    };
    issues.set(issue.id, issue);
    return issue;
  }

  function stateLite(projectId: string, stateId: string) {
    const st = projects.get(projectId)?.states.find((s) => s.id === stateId);
    return st ? { id: st.id, name: st.name, color: st.color, group: st.group } : null;
  }

  /** state names given as activity values are turned into ids, as Plane sends them */
  function stateValue(projectId: string, v: unknown): unknown {
    if (typeof v !== 'string' || UUID.test(v)) return v;
    const st = projects.get(projectId)?.states.find((s) => s.name.trim().toLowerCase() === v.trim().toLowerCase());
    return st ? st.id : v;
  }

  function webhookBody(
    issue: FakePlaneIssue,
    o: { field: string | null; oldValue: unknown; newValue: unknown; actorId: string; action?: string },
  ): Record<string, unknown> {
    const isState = o.field === 'state' || o.field === 'state_id';
    const newValue = isState ? stateValue(issue.project, o.newValue) : o.newValue;
    const oldValue = isState ? stateValue(issue.project, o.oldValue) : o.oldValue;
    // Plane serializes the issue as it is after the change.
    const stateId = isState && typeof newValue === 'string' && UUID.test(newValue) ? newValue : issue.state;
    const data: Record<string, unknown> = {
      ...issue,
      state: stateLite(issue.project, stateId),
      description: null,
      cycle: null,
      module: null,
      labels: [],
      assignees: [],
      estimate_point: null,
      type: null,
      deleted_at: null,
    };
    return {
      event: 'issue',
      action: o.action ?? 'updated',
      webhook_id: webhookId,
      workspace_id: workspaceId,
      data,
      activity: {
        field: o.field,
        new_value: newValue ?? null,
        old_value: oldValue ?? null,
        actor: {
          id: o.actorId,
          first_name: 'Test',
          last_name: 'User',
          avatar: '',
          avatar_url: null,
          is_bot: o.actorId === botUserId,
          display_name: 'test-user',
        },
        old_identifier: null,
        new_identifier: null,
      },
    };
  }

  function moveIssue(issueId: string, stateName: string, actorId?: string): Record<string, unknown> {
    const issue = issues.get(issueId);
    if (!issue) throw new Error(`fake-plane: unknown issue ${issueId}`);
    const st = stateByName(issue.project, stateName);
    const old = issue.state;
    issue.state = st.id;
    issue.updated_at = now();
    issue.updated_by = actorId ?? randomUUID();
    return webhookBody(issue, { field: 'state', oldValue: old, newValue: st.id, actorId: issue.updated_by });
  }

  function sign(body: string, secret: string): string {
    return createHmac('sha256', secret).update(body, 'utf8').digest('hex');
  }

  // --------------------------------------------------------------------------------- server

  function paginate(items: unknown[], query: URLSearchParams): { status: number; body: unknown } {
    const perPageRaw = query.get('per_page') ?? '1000';
    const perPage = Number(perPageRaw);
    if (!Number.isInteger(perPage) || perPage <= 0) return { status: 400, body: { detail: 'Invalid per_page parameter.' } };
    if (perPage > 1000) return { status: 400, body: { detail: 'Invalid per_page value. Cannot exceed 1000.' } };
    const limit = Math.min(perPage, pageSize);
    let page = 0;
    const cursor = query.get('cursor');
    if (cursor !== null) {
      const bits = cursor.split(':');
      if (bits.length !== 3 || !bits.every((b) => /^\d+$/.test(b))) {
        return { status: 400, body: { detail: 'Invalid cursor parameter.' } };
      }
      page = Number(bits[1]);
    }
    const offset = page * limit;
    const results = items.slice(offset, offset + limit);
    const hasNext = offset + limit < items.length;
    return {
      status: 200,
      body: {
        grouped_by: null,
        sub_grouped_by: null,
        total_count: items.length,
        next_cursor: `${limit}:${page + 1}:0`,
        prev_cursor: `${limit}:${page - 1}:1`,
        next_page_results: hasNext,
        prev_page_results: page > 0,
        count: results.length,
        total_pages: items.length > 0 ? Math.ceil(items.length / limit) : 0,
        total_results: items.length,
        extra_stats: null,
        results,
      },
    };
  }

  const NOT_FOUND = { error: 'The requested resource does not exist.' };

  function route(method: string, path: string, query: URLSearchParams, body: unknown): { status: number; body: unknown } {
    const m = /^\/api\/v1\/workspaces\/([^/]+)\/projects\/([^/]+)\/(states|issues)\/(?:([^/]+)\/(?:(comments)\/)?)?$/.exec(path);
    if (!m) return { status: 404, body: NOT_FOUND };
    const [, slug, projectId, kind, issueId, sub] = m;
    if (decodeURIComponent(slug!) !== opts.workspaceSlug) return { status: 404, body: NOT_FOUND };
    const p = projects.get(decodeURIComponent(projectId!));
    if (!p) return { status: 404, body: NOT_FOUND };
    const pid = decodeURIComponent(projectId!);

    if (kind === 'states') {
      if (issueId !== undefined || sub !== undefined) return { status: 404, body: NOT_FOUND };
      if (method !== 'GET') return { status: 405, body: { detail: `Method "${method}" not allowed.` } };
      return paginate([...p.states].sort((a, b) => a.sequence - b.sequence), query);
    }

    if (issueId === undefined) {
      if (method !== 'GET') return { status: 405, body: { detail: `Method "${method}" not allowed.` } };
      const list = [...issues.values()].filter((i) => i.project === pid).sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
      return paginate(list, query);
    }

    const issue = issues.get(decodeURIComponent(issueId));
    if (!issue || issue.project !== pid) return { status: 404, body: NOT_FOUND };

    if (sub === 'comments') {
      if (method === 'GET') {
        return paginate(comments.filter((c) => c.issueId === issue.id).map((c) => commentJson(issue, c)), query);
      }
      if (method !== 'POST') return { status: 405, body: { detail: `Method "${method}" not allowed.` } };
      const html = (body as { comment_html?: unknown } | null)?.comment_html;
      if (typeof html !== 'string' || html.length === 0) {
        return { status: 400, body: { comment_html: ['This field is required.'] } };
      }
      const c = { issueId: issue.id, comment_html: html, id: randomUUID() };
      comments.push(c);
      return { status: 201, body: commentJson(issue, c) };
    }

    if (method === 'GET') return { status: 200, body: issue };
    if (method !== 'PATCH') return { status: 405, body: { detail: `Method "${method}" not allowed.` } };
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      return { status: 400, body: { error: 'The payload is not valid' } };
    }
    const patch = body as Record<string, unknown>;
    if ('state' in patch) {
      const sid = patch.state;
      if (typeof sid !== 'string' || !p.states.some((s) => s.id === sid)) {
        return { status: 400, body: { state: [`Invalid pk "${String(sid)}" - object does not exist.`] } };
      }
      issue.state = sid;
      stateChanges.push({ issueId: issue.id, stateId: sid });
    }
    if (typeof patch.name === 'string') issue.name = patch.name;
    if (typeof patch.description_html === 'string') {
      issue.description_html = patch.description_html;
      issue.description_stripped = stripHtml(patch.description_html);
    }
    issue.updated_at = now();
    issue.updated_by = botUserId;
    return { status: 200, body: issue };
  }

  function commentJson(issue: FakePlaneIssue, c: { id: string; comment_html: string }) {
    return {
      id: c.id,
      comment_html: c.comment_html,
      comment_stripped: stripHtml(c.comment_html) ?? '',
      access: 'INTERNAL',
      issue: issue.id,
      project: issue.project,
      workspace: workspaceId,
      actor: botUserId,
      created_by: botUserId,
      updated_by: botUserId,
      created_at: now(),
      updated_at: now(),
      external_source: null,
      external_id: null,
      is_member: true,
    };
  }

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://fake-plane');
      const method = req.method ?? 'GET';
      const headers: Record<string, string> = { 'Content-Type': 'application/json' };
      let status: number;
      let out: unknown;

      const key = req.headers['x-api-key'];
      if (key === undefined || key === '') {
        status = 401;
        out = { detail: 'Authentication credentials were not provided.' };
      } else if (key !== opts.apiKey) {
        status = 401;
        out = { detail: 'Given API token is not valid' };
      } else if (rateLimited > 0) {
        rateLimited--;
        status = 429;
        const wait = Math.max(0, rateLimitReset - Math.floor(Date.now() / 1000));
        headers['Retry-After'] = String(wait);
        headers['X-RateLimit-Remaining'] = '0';
        headers['X-RateLimit-Reset'] = String(rateLimitReset);
        out = { detail: `Request was throttled. Expected available in ${wait} seconds.` };
      } else if (failing > 0) {
        failing--;
        status = failStatus;
        out = { error: 'Something went wrong please try again later' };
      } else {
        let body: unknown = null;
        const raw = Buffer.concat(chunks).toString('utf8');
        let bad = false;
        if (raw.length > 0) {
          try {
            body = JSON.parse(raw);
          } catch {
            bad = true;
          }
        }
        if (bad) {
          status = 400;
          out = { detail: 'JSON parse error' };
        } else {
          const r = route(method, url.pathname, url.searchParams, body);
          status = r.status;
          out = r.body;
        }
        headers['X-RateLimit-Remaining'] = '59';
        headers['X-RateLimit-Reset'] = String(Math.floor(Date.now() / 1000) + 60);
      }
      requests.push({ method, path: url.pathname, query: url.search, status });
      res.writeHead(status, headers);
      res.end(JSON.stringify(out));
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    workspaceId,
    botUserId,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
    addProject,
    addState,
    addIssue,
    moveIssue,
    states: (projectId) => project(projectId).states.map((s) => ({ ...s })),
    issues,
    comments,
    stateChanges,
    requests,
    rateLimitNext(n, resetEpochS) {
      rateLimited = n;
      rateLimitReset = resetEpochS;
    },
    failNext(n, status) {
      failing = n;
      failStatus = status;
    },
    webhookBody,
    sign,
  };
}
