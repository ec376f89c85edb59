/**
 * A fake of Plane's REST API v1 and webhook payloads that behaves like Plane does today, for tests.
 * Every behaviour cites where it comes from in makeplane/plane (apps/api/plane/…):
 * - routes: api/urls/work_item.py `urlpatterns = old_url_patterns + new_url_patterns`: the current
 *   `…/projects/<id>/work-items/…` and the deprecated `…/projects/<id>/issues/…` map to the same
 *   views. `routes: 'legacy'` stands for a Plane older than v1.1.0 (commit 992457efd2), which has
 *   only `/issues/`: the new prefix is then an unmatched URL, Django's HTML 404.
 *   api/urls/state.py: `…/projects/<id>/states/`.
 * - auth: api/middleware/api_authentication.py (`X-Api-Key`; "Given API token is not valid").
 * - REST issue: api/serializers/issue.py `IssueSerializer` (`exclude = ["description_json",
 *   "description_stripped"]`; `state` is the uuid); list and detail in api/views/issue.py
 *   (`IssueListCreateAPIEndpoint.get`: `order_by` default `-created_at`, any model field
 *   otherwise; no state filter; `fields=` via api/views/base.py `BaseAPIView.fields` and
 *   `BaseSerializer._filter_fields`; `expand=state` → StateLiteSerializer `{id,name,color,group}`).
 * - REST datetimes: api/views/base.py `TimezoneMixin` activates the token owner's
 *   `user_timezone`, and DRF's DateTimeField writes `isoformat()` ('+00:00' → 'Z', no fraction when
 *   the microseconds are 0): `restUtcOffset` is that zone's offset (default UTC).
 * - pagination: utils/paginator.py (`get_per_page(…, default_per_page=1000, max_per_page=1000)`, a
 *   larger per_page is a 400 "Invalid per_page value. Cannot exceed 1000."; cursor
 *   `"<per_page>:<page>:<is_prev>"`; body `{grouped_by, sub_grouped_by, total_count, next_cursor,
 *   prev_cursor, next_page_results, prev_page_results, count, total_pages, total_results,
 *   extra_stats, results}`).
 * - rate limiting: api/rate_limit.py `ApiKeyRateThrottle` (DRF SimpleRateThrottle: a sliding
 *   window of `API_KEY_RATE_LIMIT`, default 60/minute, per key; checked after authentication);
 *   allowed answers carry `X-RateLimit-Remaining` (after this request) and `X-RateLimit-Reset`
 *   (always now + 60 s; api/views/base.py `finalize_response`); a throttled request is answered by
 *   authentication/adapter/exception.py `auth_exception_handler`: 429, only `Retry-After`
 *   (DRF's `wait`, rounded up) and `{"error_code": 5900, "error_message": "RATE_LIMIT_EXCEEDED"}`.
 * - webhooks: bgtasks/webhook_task.py (`{event, action, webhook_id, workspace_id, data,
 *   activity}`; data = IssueExpandSerializer, with `description_stripped` and `state` expanded;
 *   datetimes in UTC `…Z` — the Celery worker activates no zone; `activity {field, new_value,
 *   old_value, actor, old_identifier, new_identifier}`); a state change from the web app has
 *   `field: "state_id"` (app/views/issue/base.py `IssueViewSet.partial_update` with the web UI's
 *   `{ state_id }`), one through the REST API `field: "state"`. Signature: hex HMAC-SHA256 of the
 *   body. db/models/issue.py `Issue.save`: `description_stripped = strip_tags(description_html)`.
 *
 * Deviations, on purpose: a missing/wrong key answers 401 (Plane's DRF setup answers 403 since its
 * authenticator declares no WWW-Authenticate; the client treats both alike); `maxPageSize` lets a
 * test force pagination with fewer items than Plane's 1000.
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

/** An issue as Plane stores it; datetimes here are UTC with microseconds (the webhook's form). */
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
  /** Date.now() when it was answered */
  at: number;
}

export interface FakePlaneOptions {
  apiKey: string;
  workspaceSlug: string;
  /** largest page served (default Plane's 1000) */
  maxPageSize?: number;
  /** `current` (both route forms, Plane ≥ v1.1.0, default) or `legacy` (only `/issues/`) */
  routes?: 'current' | 'legacy';
  /** requests per minute per key (API_KEY_RATE_LIMIT; default 60; 0 = no throttle) */
  rateLimitPerMinute?: number;
  /** the token owner's UTC offset for REST datetimes, e.g. `+05:30` (default UTC) */
  restUtcOffset?: string;
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
  addIssue(projectId: string, input: { name: string; description?: string; descriptionHtml?: string; stateName: string }): FakePlaneIssue;
  /**
   * A person's change: moves the issue and returns the webhook body Plane would send. `via: 'web'`
   * (default) is the web app (`field: "state_id"`), `'api'` a REST client (`field: "state"`).
   */
  moveIssue(issueId: string, stateName: string, opts?: { actorId?: string; via?: 'web' | 'api' }): Record<string, unknown>;
  /** A person edits the description (a new `updated_at`, no state change); returns its webhook. */
  editIssue(issueId: string, descriptionHtml: string, actorId?: string): Record<string, unknown>;
  states(projectId: string): FakePlaneState[];
  issues: Map<string, FakePlaneIssue>;
  comments: Array<{ issueId: string; comment_html: string; id: string; at: number }>;
  stateChanges: Array<{ issueId: string; stateId: string; at: number }>;
  requests: FakePlaneRequest[];
  /** the next `n` authenticated requests answer 429 with `Retry-After: retryAfterS` (another client spent the key) */
  rateLimitNext(n: number, retryAfterS: number): void;
  /** the next `n` authenticated requests answer `status` */
  failNext(n: number, status: number): void;
  webhookBody(issue: FakePlaneIssue, opts: { field: string | null; oldValue: unknown; newValue: unknown; actorId: string; action?: string }): Record<string, unknown>;
  /** what REST serializes for an issue (IssueSerializer, in the token owner's zone) */
  restIssue(issue: FakePlaneIssue): Record<string, unknown>;
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

/** Plane's Issue.save: `None if description_html in ("", None) else strip_tags(description_html)` (utils/html_processor.py: text nodes, no separators, entities decoded) */
function stripTags(s: string): string | null {
  if (s === '') return null;
  return s
    .replace(/<[^>]*>/g, '')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&');
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Django's 404 page for a URL no pattern matches (DEBUG=False). */
const DJANGO_NOT_FOUND =
  '<!doctype html>\n<html lang="en">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n</body>\n</html>\n';

/** A microsecond instant as DRF writes it in a zone of `offsetMin` minutes: isoformat(), '+00:00' → 'Z', no fraction at .000000. */
function isoMicros(us: number, offsetMin: number): string {
  const ms = Math.floor(us / 1000);
  const micros = us - ms * 1000 + (ms % 1000) * 1000;
  const local = new Date(Math.floor(ms / 1000) * 1000 + offsetMin * 60_000).toISOString().slice(0, 19);
  const frac = micros === 0 ? '' : `.${String(micros).padStart(6, '0')}`;
  if (offsetMin === 0) return `${local}${frac}Z`;
  const sign = offsetMin < 0 ? '-' : '+';
  const a = Math.abs(offsetMin);
  return `${local}${frac}${sign}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')}`;
}

function parseOffset(s: string | undefined): number {
  if (!s || s === 'Z' || s === '+00:00') return 0;
  const m = /^([+-])(\d{2}):(\d{2})$/.exec(s);
  if (!m) throw new Error(`fake-plane: bad restUtcOffset ${s}`);
  return (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3]));
}

export async function startFakePlane(opts: FakePlaneOptions): Promise<FakePlane> {
  const maxPageSize = Math.max(1, Math.min(1000, opts.maxPageSize ?? 1000));
  const legacy = opts.routes === 'legacy';
  const ratePerMinute = opts.rateLimitPerMinute ?? 60;
  const restOffset = parseOffset(opts.restUtcOffset);
  const workspaceId = randomUUID();
  const botUserId = randomUUID();
  const webhookId = randomUUID();
  const projects = new Map<string, { states: FakePlaneState[]; nextSeq: number }>();
  const issues = new Map<string, FakePlaneIssue>();
  /** created/updated instants in µs, by issue id (the source of both serializations) */
  const times = new Map<string, { created: number; updated: number }>();
  const comments: FakePlane['comments'] = [];
  const stateChanges: FakePlane['stateChanges'] = [];
  const requests: FakePlaneRequest[] = [];
  /** DRF SimpleRateThrottle's history for the key: request times (s), newest first */
  let history: number[] = [];
  let forced429 = 0;
  let forcedRetryAfter = 0;
  let failing = 0;
  let failStatus = 500;
  /** strictly increasing µs instants, so two changes never share an updated_at */
  let lastUs = 0;
  const nowUs = (): number => {
    lastUs = Math.max(Date.now() * 1000 + Math.floor(Math.random() * 1000), lastUs + 1);
    return lastUs;
  };
  const utc = (us: number) => isoMicros(us, 0);

  function project(id: string) {
    const p = projects.get(id);
    if (!p) throw new Error(`fake-plane: unknown project ${id}`);
    return p;
  }

  function addState(projectId: string, name: string): string {
    const p = project(projectId);
    const existing = p.states.find((s) => s.name === name);
    if (existing) return existing.id;
    const ts = utc(nowUs());
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

  function touch(issue: FakePlaneIssue): void {
    const t = times.get(issue.id)!;
    t.updated = nowUs();
    issue.updated_at = utc(t.updated);
  }

  function addIssue(projectId: string, input: { name: string; description?: string; descriptionHtml?: string; stateName: string }): FakePlaneIssue {
    const p = project(projectId);
    const st = stateByName(projectId, input.stateName);
    const us = nowUs();
    // db/models/issue.py: description_html defaults to "<p></p>"
    const html = input.descriptionHtml ?? (input.description === undefined ? '<p></p>' : `<p>${escapeHtml(input.description)}</p>`);
    const issue: FakePlaneIssue = {
      id: randomUUID(),
      name: input.name,
      state: st.id,
      sequence_id: p.nextSeq++,
      description_html: html,
      description_stripped: stripTags(html),
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
      created_at: utc(us),
      updated_at: utc(us),
    };
    issues.set(issue.id, issue);
    times.set(issue.id, { created: us, updated: us });
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
    // Plane serializes the issue as it is after the change (IssueExpandSerializer, UTC).
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

  function moveIssue(issueId: string, stateName: string, o: { actorId?: string; via?: 'web' | 'api' } = {}): Record<string, unknown> {
    const issue = issues.get(issueId);
    if (!issue) throw new Error(`fake-plane: unknown issue ${issueId}`);
    const st = stateByName(issue.project, stateName);
    const old = issue.state;
    issue.state = st.id;
    touch(issue);
    issue.updated_by = o.actorId ?? randomUUID();
    return webhookBody(issue, { field: o.via === 'api' ? 'state' : 'state_id', oldValue: old, newValue: st.id, actorId: issue.updated_by });
  }

  function editIssue(issueId: string, descriptionHtml: string, actorId?: string): Record<string, unknown> {
    const issue = issues.get(issueId);
    if (!issue) throw new Error(`fake-plane: unknown issue ${issueId}`);
    const old = issue.description_html;
    issue.description_html = descriptionHtml;
    issue.description_stripped = stripTags(descriptionHtml);
    touch(issue);
    issue.updated_by = actorId ?? randomUUID();
    return webhookBody(issue, { field: 'description_html', oldValue: old, newValue: descriptionHtml, actorId: issue.updated_by });
  }

  function sign(body: string, secret: string): string {
    return createHmac('sha256', secret).update(body, 'utf8').digest('hex');
  }

  // --------------------------------------------------------------------------------- REST

  /** IssueSerializer: every model field but description_json/description_stripped; datetimes in the token owner's zone */
  function restIssue(issue: FakePlaneIssue): Record<string, unknown> {
    const { description_stripped: _omit, ...rest } = issue;
    const t = times.get(issue.id)!;
    return { ...rest, created_at: isoMicros(t.created, restOffset), updated_at: isoMicros(t.updated, restOffset), description_binary: null, type_id: null, deleted_at: null };
  }

  /** `?fields=` keeps only the named fields (unknown names ignored); `?expand=state` expands it */
  function shape(issue: FakePlaneIssue, query: URLSearchParams): Record<string, unknown> {
    let out = restIssue(issue);
    const expand = (query.get('expand') ?? '').split(',').filter(Boolean);
    if (expand.includes('state')) out.state = stateLite(issue.project, issue.state);
    const fields = (query.get('fields') ?? '').split(',').filter(Boolean);
    if (fields.length) out = Object.fromEntries(Object.entries(out).filter(([k]) => fields.includes(k)));
    return out;
  }

  function paginate(items: unknown[], query: URLSearchParams): { status: number; body: unknown } {
    const perPageRaw = query.get('per_page') ?? '1000';
    const perPage = Number(perPageRaw);
    if (!Number.isInteger(perPage) || perPage <= 0) return { status: 400, body: { detail: 'Invalid per_page parameter.' } };
    if (perPage > 1000) return { status: 400, body: { detail: 'Invalid per_page value. Cannot exceed 1000.' } };
    const limit = Math.min(perPage, maxPageSize);
    let page = 0;
    const cursor = query.get('cursor');
    if (cursor !== null) {
      const bits = cursor.split(':');
      if (bits.length !== 3 || !bits.every((b) => /^-?\d+$/.test(b))) {
        return { status: 400, body: { detail: "Cursor must be in the format 'value:offset:is_prev'" } };
      }
      page = Math.max(0, Number(bits[1]));
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
  const ORDERABLE: Record<string, (i: FakePlaneIssue) => number> = {
    created_at: (i) => times.get(i.id)!.created,
    updated_at: (i) => times.get(i.id)!.updated,
    sequence_id: (i) => i.sequence_id,
  };

  type Route = { status: number; body: unknown; html?: boolean };

  function route(method: string, path: string, query: URLSearchParams, body: unknown): Route {
    const m = /^\/api\/v1\/workspaces\/([^/]+)\/projects\/([^/]+)\/(states|issues|work-items)\/(?:([^/]+)\/(?:(comments)\/)?)?$/.exec(path);
    if (!m || (legacy && m[3] === 'work-items')) return { status: 404, body: DJANGO_NOT_FOUND, html: true };
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
      const orderBy = query.get('order_by') ?? '-created_at';
      const desc = orderBy.startsWith('-');
      const key = ORDERABLE[orderBy.replace(/^-/, '')];
      // Django's order_by with an unknown field raises FieldError: a 500
      if (!key) return { status: 500, body: { error: 'Something went wrong please try again later' } };
      const list = [...issues.values()].filter((i) => i.project === pid && !i.archived_at && !i.is_draft);
      list.sort((a, b) => (desc ? key(b) - key(a) : key(a) - key(b)));
      return paginate(list.map((i) => shape(i, query)), query);
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
      const c = { issueId: issue.id, comment_html: html, id: randomUUID(), at: Date.now() };
      comments.push(c);
      return { status: 201, body: commentJson(issue, c) };
    }

    if (method === 'GET') return { status: 200, body: shape(issue, query) };
    if (method !== 'PATCH') return { status: 405, body: { detail: `Method "${method}" not allowed.` } };
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      return { status: 400, body: { error: 'The payload is not valid' } };
    }
    const patch = body as Record<string, unknown>;
    if ('state' in patch) {
      const sid = patch.state;
      if (typeof sid !== 'string' || !p.states.some((s) => s.id === sid)) {
        return { status: 400, body: { error: 'State is not valid please pass a valid state_id' } };
      }
      issue.state = sid;
      stateChanges.push({ issueId: issue.id, stateId: sid, at: Date.now() });
    }
    if (typeof patch.name === 'string') issue.name = patch.name;
    if (typeof patch.description_html === 'string') {
      issue.description_html = patch.description_html;
      issue.description_stripped = stripTags(patch.description_html);
    }
    touch(issue);
    issue.updated_by = botUserId;
    return { status: 200, body: shape(issue, new URLSearchParams()) };
  }

  function commentJson(issue: FakePlaneIssue, c: { id: string; comment_html: string }) {
    const ts = isoMicros(nowUs(), restOffset);
    return {
      id: c.id,
      comment_html: c.comment_html,
      access: 'INTERNAL',
      issue: issue.id,
      project: issue.project,
      workspace: workspaceId,
      actor: botUserId,
      created_by: botUserId,
      updated_by: botUserId,
      created_at: ts,
      updated_at: ts,
      external_source: null,
      external_id: null,
      is_member: true,
    };
  }

  /** DRF SimpleRateThrottle.allow_request for the key: null = allowed (remaining after it), else the wait in seconds */
  function throttle(): { remaining: number } | { wait: number } {
    if (ratePerMinute <= 0) return { remaining: 1000 };
    const now = Date.now() / 1000;
    while (history.length && history[history.length - 1]! <= now - 60) history.pop();
    if (history.length >= ratePerMinute) {
      // SimpleRateThrottle.wait(): remaining_duration / available_requests (= 1 when full), rounded up by Throttled
      const remainingDuration = 60 - (now - history[history.length - 1]!);
      const available = ratePerMinute - history.length + 1;
      return { wait: Math.ceil(remainingDuration / Math.max(1, available)) };
    }
    history = [now, ...history];
    return { remaining: Math.max(0, ratePerMinute - history.length) };
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
      let html = false;

      const key = req.headers['x-api-key'];
      const t = key === opts.apiKey ? (forced429 > 0 ? { wait: forcedRetryAfter } : throttle()) : null;
      if (key === undefined || key === '') {
        status = 401;
        out = { detail: 'Authentication credentials were not provided.' };
      } else if (key !== opts.apiKey) {
        status = 401;
        out = { detail: 'Given API token is not valid' };
      } else if (t && 'wait' in t) {
        if (forced429 > 0) forced429--;
        status = 429;
        if (t.wait > 0) headers['Retry-After'] = String(t.wait);
        out = { error_code: 5900, error_message: 'RATE_LIMIT_EXCEEDED' };
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
          html = r.html ?? false;
        }
        if (!html) {
          headers['X-RateLimit-Remaining'] = String(t && 'remaining' in t ? t.remaining : 0);
          headers['X-RateLimit-Reset'] = String(Math.floor(Date.now() / 1000) + 60);
        }
      }
      requests.push({ method, path: url.pathname, query: url.search, status, at: Date.now() });
      if (html) {
        res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8' });
        res.end(String(out));
        return;
      }
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
    editIssue,
    states: (projectId) => project(projectId).states.map((s) => ({ ...s })),
    issues,
    comments,
    stateChanges,
    requests,
    rateLimitNext(n, retryAfterS) {
      forced429 = n;
      forcedRetryAfter = retryAfterS;
    },
    failNext(n, status) {
      failing = n;
      failStatus = status;
    },
    webhookBody,
    restIssue,
    sign,
  };
}
