/**
 * The Plane tracker: a small client of Plane's REST API v1.
 *
 * Shapes and behaviour relied on (makeplane/plane):
 * - apps/api/plane/api/middleware/api_authentication.py: the key goes in `X-Api-Key`
 *   (header names are case-insensitive; we send `X-API-Key`).
 * - apps/api/plane/api/urls/work_item.py: `urlpatterns = old_url_patterns + new_url_patterns`;
 *   the `…/projects/<id>/issues/…` forms are listed as "Deprecated url patterns", the current ones
 *   are `…/projects/<id>/work-items/…` (since v1.1.0). We speak `/work-items/`; a self-hosted Plane
 *   older than that answers 404 there, and then — once, remembered per base URL, logged once — we
 *   fall back to `/issues/`.
 * - apps/api/plane/api/urls/state.py + views/state.py: `GET …/projects/<id>/states/` (paginated).
 * - apps/api/plane/api/views/issue.py `IssueListCreateAPIEndpoint.get`: no state filter (we filter
 *   client-side); `order_by` (default `-created_at`, any field otherwise: `-updated_at`),
 *   `fields=` (api/views/base.py `BaseAPIView.fields`, applied by `BaseSerializer._filter_fields`).
 *   `PATCH …/work-items/<id>/` with `{state}` answers the serialized issue; `POST
 *   …/work-items/<id>/comments/` with `{comment_html}` answers 201.
 * - apps/api/plane/api/serializers/issue.py `IssueSerializer`: `exclude = ["description_json",
 *   "description_stripped"]`, so REST has `description_html` only (see plane-body.ts); `state` is
 *   the state uuid.
 * - apps/api/plane/api/views/base.py `TimezoneMixin`: REST datetimes are in the token owner's time
 *   zone (`…+05:30`), not UTC — compare them as instants (plane-time.ts), never as strings.
 * - apps/api/plane/utils/paginator.py: `get_per_page(…, default_per_page=1000, max_per_page=1000)`;
 *   bodies `{results, next_cursor, next_page_results, …}`, cursor `"<per_page>:<page>:<is_prev>"`.
 * - apps/api/plane/api/rate_limit.py + authentication/adapter/exception.py: 60 requests a minute per
 *   key; a 429 carries only `Retry-After` (seconds) and `{"error_code": 5900, "error_message":
 *   "RATE_LIMIT_EXCEEDED"}` (no X-RateLimit-* headers).
 *
 * Every request first takes a slot of the fleet's budget for the key (rate-budget.ts), on behalf of
 * a caller (outbox, poll, intake). No slot → `PlaneBudgetDenied` (nothing was sent). A 429 → the
 * key is paused fleet-wide until Retry-After and `PlaneRateLimited` is thrown. 5xx, timeouts and
 * network errors → PlaneHttpError / Error (callers retry with backoff); other 4xx → PlaneHttpError
 * naming the status with a body snippet. The API key never appears in a message.
 */
import { z } from 'zod';
import type { Logger } from '../runtime/logger.ts';
import { planeIssueBody } from './plane-body.ts';
import { planeDate } from './plane-time.ts';
import { UNLIMITED_BUDGET, type PlaneCaller, type PlaneRateBudget } from './rate-budget.ts';
import { TrackerDeferred, TrackerRetryError } from './types.ts';
import type { StateChanged, Tracker, TrackerStateRole } from './types.ts';

export interface PlaneTrackerOptions {
  /** e.g. `https://plane.example.com` (no `/api/v1`) */
  baseUrl: string;
  apiKey: string;
  workspaceSlug: string;
  /** the Plane state name orch uses for each role (matched trimmed, case-insensitively) */
  stateNames: Record<TrackerStateRole, string>;
  /** the fleet's budget for this key (default: none, every request goes out) */
  budget?: PlaneRateBudget;
  log?: Logger;
  /** per request; default 15 s */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

export interface PlaneIssue {
  id: string;
  name: string;
  /** the task body: Markdown of `description_html` (plane-body.ts) */
  description: string | null;
  stateId: string | null;
  /** as Plane sent it (the token owner's time zone) */
  updatedAt: string | null;
}

export interface IssueListing {
  issues: PlaneIssue[];
  pages: number;
  /** false when the listing stopped early because older issues were not needed (`since`) */
  exhaustive: boolean;
  /** the newest `updated_at` on the first page (as an instant), for the next pass's `since` */
  newest: Date | null;
}

export interface PlaneTracker extends Tracker {
  readonly kind: 'plane';
  /** state id for a name (trimmed, case-insensitive); null when the project has no such state */
  resolveStateId(projectId: string, name: string, caller?: PlaneCaller): Promise<string | null>;
  stateNameOf(projectId: string, stateId: string, caller?: PlaneCaller): Promise<string | null>;
  /**
   * The project's issues, most recently updated first, from the list alone (`fields=` keeps the
   * answer to what orch reads), at the largest page size Plane serves. With `since`, paging stops
   * after the first page that reaches an issue updated before it.
   */
  listIssues(projectId: string, opts?: { since?: Date | null; caller?: PlaneCaller }): Promise<IssueListing>;
}

/** A non-2xx answer from Plane other than 429. `status` lets callers tell 4xx from 5xx. */
class PlaneHttpError extends Error {
  readonly status: number;
  constructor(message: string, status: number) {
    super(message);
    this.name = 'PlaneHttpError';
    this.status = status;
  }
}

/** Plane answered 429; the key is paused for the fleet until `retryAt`. */
export class PlaneRateLimited extends TrackerRetryError {
  constructor(message: string, retryAt: Date) {
    super(message, retryAt);
    this.name = 'PlaneRateLimited';
  }
}

/** The fleet's budget has no slot for this request now: nothing was sent. */
export class PlaneBudgetDenied extends TrackerDeferred {
  readonly reason: string;
  constructor(message: string, retryAt: Date, reason: string) {
    super(message, retryAt);
    this.name = 'PlaneBudgetDenied';
    this.reason = reason;
  }
}

const DEFAULT_TIMEOUT_MS = 15_000;
/** a request waits this long at most for a budget slot that frees up soon */
const BUDGET_WAIT_MS = 3_000;
const RATE_LIMIT_FALLBACK_MS = 60_000;
/** apps/api/plane/utils/paginator.py: `max_per_page=1000` (more is a 400) */
const PLANE_MAX_PER_PAGE = 1000;
const MAX_PAGES = 1_000;
const SNIPPET = 300;
/** what the poll reads of an issue (`?fields=`) */
const LIST_FIELDS = 'id,name,state,updated_at,description_html';

const stateSchema = z.object({ id: z.string(), name: z.string() }).loose();
const issueSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    state: z.union([z.string(), z.object({ id: z.string() }).loose()]).nullish(),
    description_html: z.string().nullish(),
    updated_at: z.string().nullish(),
  })
  .loose();
const pageSchema = z
  .object({
    results: z.array(z.unknown()),
    next_cursor: z.string().nullish(),
    next_page_results: z.boolean().nullish(),
  })
  .loose();

type PlaneState = z.infer<typeof stateSchema>;

interface StateIndex {
  byName: Map<string, string>;
  byId: Map<string, string>;
}

function normalizeStateName(name: string): string {
  return name.trim().toLowerCase();
}

/** When to retry after a 429: Retry-After (seconds, or an HTTP date), else now + 60 s. */
export function rateLimitRetryAt(headers: Headers, now: number = Date.now()): Date {
  const retryAfter = headers.get('retry-after');
  if (retryAfter !== null && retryAfter.trim() !== '') {
    const secs = Number(retryAfter);
    if (Number.isFinite(secs) && secs >= 0) return new Date(now + secs * 1000);
    const at = Date.parse(retryAfter);
    if (Number.isFinite(at)) return new Date(Math.max(at, now));
  }
  return new Date(now + RATE_LIMIT_FALLBACK_MS);
}

function toIssue(i: z.infer<typeof issueSchema>): PlaneIssue {
  const stateId = i.state == null ? null : typeof i.state === 'string' ? i.state : i.state.id;
  return { id: i.id, name: i.name, description: planeIssueBody(i.description_html), stateId, updatedAt: i.updated_at ?? null };
}

/**
 * Which issue routes a Plane at a base URL serves, once known (process-wide: every client of the
 * same Plane shares it). Unknown until an answer settles it: a 2xx under `/work-items/`, or a 404
 * there and a 2xx under `/issues/`.
 */
type IssueRoutes = 'work-items' | 'issues';
const issueRoutesByBase = new Map<string, IssueRoutes>();

interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

export function createPlaneTracker(opts: PlaneTrackerOptions): PlaneTracker {
  const doFetch = opts.fetch ?? globalThis.fetch;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const base = opts.baseUrl.replace(/\/+$/, '');
  const apiKey = opts.apiKey;
  const budget = opts.budget ?? UNLIMITED_BUDGET;
  const stateCache = new Map<string, Promise<StateIndex>>();

  const redact = (s: string): string => (apiKey.length > 0 ? s.split(apiKey).join('[redacted]') : s);

  function projectPath(projectId: string, rest: string): string {
    return `/api/v1/workspaces/${encodeURIComponent(opts.workspaceSlug)}/projects/${encodeURIComponent(projectId)}/${rest}`;
  }

  /**
   * A slot of the budget: waits for one that frees up soon (at most BUDGET_WAIT_MS), never through
   * a 429's pause; otherwise `PlaneBudgetDenied`.
   */
  async function takeSlot(what: string, caller: PlaneCaller): Promise<void> {
    const deadline = Date.now() + BUDGET_WAIT_MS;
    for (;;) {
      const slot = await budget.take(caller);
      if (slot.ok) return;
      const wait = slot.retryAt.getTime() - Date.now();
      if (slot.reason === 'paused' || Date.now() + wait > deadline) {
        throw new PlaneBudgetDenied(`${what}: no request left in the budget (${slot.reason}) before ${slot.retryAt.toISOString()}`, slot.retryAt, slot.reason);
      }
      await new Promise((r) => setTimeout(r, Math.max(10, wait)));
    }
  }

  /** Send one request (after taking a budget slot). 429 pauses the key and throws. */
  async function send(method: string, path: string, body: unknown, caller: PlaneCaller): Promise<Answer> {
    const what = `Plane ${method} ${path}`;
    await takeSlot(what, caller);
    const headers: Record<string, string> = { 'X-API-Key': apiKey, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res: Response;
    try {
      res = await doFetch(base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
        redirect: 'error',
      });
    } catch (err) {
      const msg = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      throw new Error(redact(`${what} failed: ${msg}`));
    }
    const text = await res.text().catch(() => '');
    if (res.status === 429) {
      const retryAt = rateLimitRetryAt(res.headers);
      // the fleet pauses too; if the database cannot be told, this caller still backs off
      await budget.rateLimited(caller, retryAt).catch((err: unknown) => opts.log?.warn({ err }, 'could not record a Plane 429 in the rate budget'));
      throw new PlaneRateLimited(`${what} → 429 rate limited until ${retryAt.toISOString()}`, retryAt);
    }
    return { status: res.status, headers: res.headers, text };
  }

  /** The parsed JSON body of a 2xx (null for an empty one); throws otherwise. */
  function interpret(method: string, path: string, a: Answer): unknown {
    const what = `Plane ${method} ${path}`;
    if (a.status < 200 || a.status >= 300) {
      const snippet = redact(a.text.replace(/\s+/g, ' ').trim().slice(0, SNIPPET));
      const hint = a.status === 401 || a.status === 403 ? ' (check PLANE_API_KEY and PLANE_WORKSPACE_SLUG)' : '';
      throw new PlaneHttpError(`${what} → ${a.status}${hint}${snippet ? `: ${snippet}` : ''}`, a.status);
    }
    if (a.text.length === 0) return null;
    try {
      return JSON.parse(a.text) as unknown;
    } catch {
      throw new PlaneHttpError(`${what} → ${a.status} with a non-JSON body`, a.status);
    }
  }

  async function request(method: string, path: string, o: { body?: unknown; caller: PlaneCaller }): Promise<unknown> {
    return interpret(method, path, await send(method, path, o.body, o.caller));
  }

  /**
   * A request on an issue route (`rest` after `work-items/` or `issues/`): the current prefix, or
   * the deprecated one when this Plane turned out not to have the current one.
   */
  async function issueRequest(method: string, projectId: string, rest: string, o: { body?: unknown; caller: PlaneCaller }): Promise<unknown> {
    const known = issueRoutesByBase.get(base);
    if (known) return request(method, projectPath(projectId, `${known}/${rest}`), o);
    const current = projectPath(projectId, `work-items/${rest}`);
    const a = await send(method, current, o.body, o.caller);
    if (a.status >= 200 && a.status < 300) issueRoutesByBase.set(base, 'work-items');
    if (a.status !== 404) return interpret(method, current, a);
    const legacy = projectPath(projectId, `issues/${rest}`);
    const b = await send(method, legacy, o.body, o.caller);
    if (b.status >= 200 && b.status < 300 && !issueRoutesByBase.has(base)) {
      issueRoutesByBase.set(base, 'issues');
      opts.log?.warn(
        { plane: base },
        'Plane answers 404 for /work-items/ and serves /issues/: this Plane predates v1.1.0; using the deprecated /issues/ routes (upgrade Plane before it drops them)',
      );
    }
    return interpret(method, legacy, b);
  }

  /** Every `results` item of a paginated list, following `next_cursor`; `stop` ends it after a page. */
  async function listPages(path: string, query: Record<string, string>, caller: PlaneCaller, stop?: (page: unknown[]) => boolean, issueRoute?: { projectId: string; rest: string }): Promise<{ items: unknown[]; pages: number; stopped: boolean }> {
    const out: unknown[] = [];
    let cursor: string | null = null;
    const seen = new Set<string>();
    for (let page = 0; page < MAX_PAGES; page++) {
      const qs = new URLSearchParams({ ...query, per_page: String(PLANE_MAX_PER_PAGE) });
      if (cursor !== null) qs.set('cursor', cursor);
      const body = issueRoute
        ? await issueRequest('GET', issueRoute.projectId, `${issueRoute.rest}?${qs.toString()}`, { caller })
        : await request('GET', `${path}?${qs.toString()}`, { caller });
      const parsed = pageSchema.safeParse(body);
      if (!parsed.success) throw new Error(`Plane GET ${path}: unexpected list body (no results array)`);
      out.push(...parsed.data.results);
      const next = parsed.data.next_cursor ?? null;
      if (!parsed.data.next_page_results || next === null || seen.has(next)) return { items: out, pages: page + 1, stopped: false };
      if (stop?.(parsed.data.results)) return { items: out, pages: page + 1, stopped: true };
      seen.add(next);
      cursor = next;
    }
    throw new Error(`Plane GET ${path}: more than ${MAX_PAGES} pages`);
  }

  async function fetchStates(projectId: string, caller: PlaneCaller): Promise<StateIndex> {
    const { items } = await listPages(projectPath(projectId, 'states/'), {}, caller);
    const index: StateIndex = { byName: new Map(), byId: new Map() };
    for (const item of items) {
      const s = stateSchema.safeParse(item);
      if (!s.success) throw new Error(`Plane states of project ${projectId}: unexpected state object`);
      const st: PlaneState = s.data;
      const key = normalizeStateName(st.name);
      if (!index.byName.has(key)) index.byName.set(key, st.id);
      index.byId.set(st.id, st.name);
    }
    return index;
  }

  /** The cached index, loading it on first use; `fresh` reports whether this call loaded it. */
  async function states(projectId: string, forceRefresh: boolean, caller: PlaneCaller): Promise<{ index: StateIndex; fresh: boolean }> {
    let p = forceRefresh ? undefined : stateCache.get(projectId);
    let fresh = false;
    if (p === undefined) {
      fresh = true;
      p = fetchStates(projectId, caller);
      stateCache.set(projectId, p);
      p.catch(() => {
        if (stateCache.get(projectId) === p) stateCache.delete(projectId);
      });
    }
    return { index: await p, fresh };
  }

  /** Look up in the cache; on a miss, refresh once (unless this call just loaded it). */
  async function lookup<T>(projectId: string, find: (i: StateIndex) => T | undefined, caller: PlaneCaller): Promise<T | null> {
    const first = await states(projectId, false, caller);
    const hit = find(first.index);
    if (hit !== undefined) return hit;
    if (first.fresh) return null;
    const second = await states(projectId, true, caller);
    return find(second.index) ?? null;
  }

  async function resolveStateId(projectId: string, name: string, caller: PlaneCaller = 'intake'): Promise<string | null> {
    const key = normalizeStateName(name);
    return lookup(projectId, (i) => i.byName.get(key), caller);
  }

  async function stateNameOf(projectId: string, stateId: string, caller: PlaneCaller = 'intake'): Promise<string | null> {
    return lookup(projectId, (i) => i.byId.get(stateId), caller);
  }

  async function setState(input: { projectId: string; issueId: string; role: TrackerStateRole }): Promise<StateChanged> {
    const name = opts.stateNames[input.role];
    const stateId = await resolveStateId(input.projectId, name, 'outbox');
    if (stateId === null) {
      throw new Error(`Plane project ${input.projectId} has no state named "${name}" (role ${input.role})`);
    }
    const body = await issueRequest('PATCH', input.projectId, `${encodeURIComponent(input.issueId)}/`, { body: { state: stateId }, caller: 'outbox' });
    const parsed = issueSchema.safeParse(body);
    return { stateId, updatedAt: parsed.success ? (parsed.data.updated_at ?? null) : null };
  }

  async function comment(input: { projectId: string; issueId: string; html: string }): Promise<void> {
    await issueRequest('POST', input.projectId, `${encodeURIComponent(input.issueId)}/comments/`, { body: { comment_html: input.html }, caller: 'outbox' });
  }

  async function listIssues(projectId: string, o: { since?: Date | null; caller?: PlaneCaller } = {}): Promise<IssueListing> {
    const caller = o.caller ?? 'poll';
    let newest: Date | null = null;
    const toIssues = (items: unknown[]) =>
      items.map((item) => {
        const parsed = issueSchema.safeParse(item);
        if (!parsed.success) throw new Error(`Plane work items of project ${projectId}: unexpected work item object`);
        return toIssue(parsed.data);
      });
    const at = (i: PlaneIssue) => planeDate(i.updatedAt)?.getTime() ?? NaN;
    let first = true;
    const stop = (page: unknown[]) => {
      const issues = toIssues(page);
      if (first) {
        first = false;
        const t = issues.length ? at(issues[0]!) : NaN;
        if (Number.isFinite(t)) newest = new Date(t);
      }
      if (!o.since) return false;
      const last = issues.at(-1);
      return last !== undefined && Number.isFinite(at(last)) && at(last) < o.since.getTime();
    };
    const r = await listPages(projectPath(projectId, 'work-items/'), { order_by: '-updated_at', fields: LIST_FIELDS }, caller, stop, { projectId, rest: '' });
    const issues = toIssues(r.items);
    if (first && issues.length && Number.isFinite(at(issues[0]!))) newest = new Date(at(issues[0]!));
    return { issues, pages: r.pages, exhaustive: !r.stopped, newest };
  }

  return { kind: 'plane', setState, comment, resolveStateId, stateNameOf, listIssues };
}
