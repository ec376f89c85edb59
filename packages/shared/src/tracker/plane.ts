/**
 * The Plane tracker: a small client of Plane's REST API v1.
 *
 * Shapes and behaviour relied on (makeplane/plane):
 * - apps/api/plane/api/middleware/api_authentication.py: the key goes in `X-Api-Key`
 *   (header names are case-insensitive; we send `X-API-Key`).
 * - apps/api/plane/api/views/state.py + apps/api/plane/api/serializers/state.py:
 *   `GET /api/v1/workspaces/{slug}/projects/{project_id}/states/` is paginated; a state is
 *   `{id, name, color, group, sequence, default, ...}`.
 * - apps/api/plane/api/views/issue.py: `GET .../issues/` (paginated, no state filter — we filter
 *   client-side), `GET/PATCH .../issues/{id}/` (`state` holds the state id),
 *   `POST .../issues/{id}/comments/` with `{comment_html}`.
 * - apps/api/plane/utils/paginator.py: list bodies are `{results, next_cursor, prev_cursor,
 *   next_page_results, prev_page_results, count, total_count, total_pages, ...}` with cursor
 *   `"<per_page>:<page>:<is_prev>"`, query params `cursor` and `per_page` (max 1000).
 * - apps/api/plane/api/rate_limit.py + views/base.py: `X-RateLimit-Remaining` and
 *   `X-RateLimit-Reset` (epoch seconds) on allowed responses; a throttled request is DRF's 429,
 *   which carries `Retry-After` (seconds) — we honour the reset header, then Retry-After, then
 *   fall back to now + 60 s.
 *
 * Errors: 429 → TrackerRetryError(retryAt); 5xx, timeouts and network errors → PlaneHttpError /
 * Error (the outbox retries with backoff); other 4xx → PlaneHttpError naming the status with a
 * body snippet. The API key never appears in a message.
 */
import { z } from 'zod';
import { TrackerRetryError } from './types.ts';
import type { Tracker, TrackerStateRole } from './types.ts';

export interface PlaneTrackerOptions {
  /** e.g. `https://plane.example.com` (no `/api/v1`) */
  baseUrl: string;
  apiKey: string;
  workspaceSlug: string;
  /** the Plane state name orch uses for each role (matched trimmed, case-insensitively) */
  stateNames: Record<TrackerStateRole, string>;
  /** per request; default 15 s */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

export interface PlaneIssueSummary {
  id: string;
  name: string;
  description: string | null;
  stateId: string | null;
}

export interface PlaneIssue extends PlaneIssueSummary {
  sequenceId: number | null;
  updatedAt: string | null;
}

export interface PlaneTracker extends Tracker {
  readonly kind: 'plane';
  /** state id for a name (trimmed, case-insensitive); null when the project has no such state */
  resolveStateId(projectId: string, name: string): Promise<string | null>;
  stateNameOf(projectId: string, stateId: string): Promise<string | null>;
  /** every issue of the project whose state is one of `stateNames` (unknown names are ignored) */
  listIssuesInStates(projectId: string, stateNames: string[]): Promise<PlaneIssueSummary[]>;
  /** null when Plane answers 404 */
  getIssue(projectId: string, issueId: string): Promise<PlaneIssue | null>;
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

const DEFAULT_TIMEOUT_MS = 15_000;
const RATE_LIMIT_FALLBACK_MS = 60_000;
const PER_PAGE = 100;
const MAX_PAGES = 1_000;
const SNIPPET = 300;

const stateSchema = z.object({ id: z.string(), name: z.string() }).loose();
const issueSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    state: z.union([z.string(), z.object({ id: z.string() }).loose()]).nullish(),
    description_stripped: z.string().nullish(),
    description_html: z.string().nullish(),
    sequence_id: z.number().nullish(),
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
type PlaneIssueWire = z.infer<typeof issueSchema>;

interface StateIndex {
  byName: Map<string, string>;
  byId: Map<string, string>;
}

function normalizeStateName(name: string): string {
  return name.trim().toLowerCase();
}

/** When to retry after a 429: X-RateLimit-Reset (epoch s), else Retry-After, else now + 60 s. */
export function rateLimitRetryAt(headers: Headers, now: number = Date.now()): Date {
  const reset = Number(headers.get('x-ratelimit-reset') ?? NaN);
  if (Number.isFinite(reset) && reset > 0) return new Date(Math.max(reset * 1000, now));
  const retryAfter = headers.get('retry-after');
  if (retryAfter !== null) {
    const secs = Number(retryAfter);
    if (Number.isFinite(secs) && secs >= 0) return new Date(now + secs * 1000);
    const at = Date.parse(retryAfter);
    if (Number.isFinite(at)) return new Date(Math.max(at, now));
  }
  return new Date(now + RATE_LIMIT_FALLBACK_MS);
}

/**
 * Plain text when Plane has it (`description_stripped`; blank → null), else the HTML. Plane stores
 * `strip_tags(description_html)`, so an empty editor (`<p></p>`) is `""`, not null.
 */
function planeDescription(stripped: string | null | undefined, html: string | null | undefined): string | null {
  if (typeof stripped === 'string') return stripped.trim() === '' ? null : stripped;
  if (typeof html === 'string' && html.trim() !== '') return html;
  return null;
}

function toSummary(i: PlaneIssueWire): PlaneIssue {
  const stateId = i.state == null ? null : typeof i.state === 'string' ? i.state : i.state.id;
  return {
    id: i.id,
    name: i.name,
    description: planeDescription(i.description_stripped, i.description_html),
    stateId,
    sequenceId: i.sequence_id ?? null,
    updatedAt: i.updated_at ?? null,
  };
}

export function createPlaneTracker(opts: PlaneTrackerOptions): PlaneTracker {
  const doFetch = opts.fetch ?? globalThis.fetch;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const base = opts.baseUrl.replace(/\/+$/, '');
  const apiKey = opts.apiKey;
  const stateCache = new Map<string, Promise<StateIndex>>();

  const redact = (s: string): string => (apiKey.length > 0 ? s.split(apiKey).join('[redacted]') : s);

  function projectPath(projectId: string, rest: string): string {
    return `/api/v1/workspaces/${encodeURIComponent(opts.workspaceSlug)}/projects/${encodeURIComponent(projectId)}/${rest}`;
  }

  /** One request. Returns the parsed JSON body, or null for 404 when `allow404`. */
  async function request(method: string, path: string, body?: unknown, allow404 = false): Promise<unknown> {
    const what = `Plane ${method} ${path}`;
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
      throw new TrackerRetryError(`${what} → 429 rate limited until ${retryAt.toISOString()}`, retryAt);
    }
    if (res.status === 404 && allow404) return null;
    if (res.status < 200 || res.status >= 300) {
      const snippet = redact(text.replace(/\s+/g, ' ').trim().slice(0, SNIPPET));
      const hint = res.status === 401 || res.status === 403 ? ' (check PLANE_API_KEY and PLANE_WORKSPACE_SLUG)' : '';
      throw new PlaneHttpError(`${what} → ${res.status}${hint}${snippet ? `: ${snippet}` : ''}`, res.status);
    }
    if (text.length === 0) return null;
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new PlaneHttpError(`${what} → ${res.status} with a non-JSON body`, res.status);
    }
  }

  /** Every `results` item of a paginated list, following `next_cursor`. */
  async function listAll(path: string): Promise<unknown[]> {
    const out: unknown[] = [];
    let cursor: string | null = null;
    const seen = new Set<string>();
    for (let page = 0; page < MAX_PAGES; page++) {
      const qs = new URLSearchParams({ per_page: String(PER_PAGE) });
      if (cursor !== null) qs.set('cursor', cursor);
      const body = await request('GET', `${path}?${qs.toString()}`);
      const parsed = pageSchema.safeParse(body);
      if (!parsed.success) throw new Error(`Plane GET ${path}: unexpected list body (no results array)`);
      out.push(...parsed.data.results);
      const next = parsed.data.next_cursor ?? null;
      if (!parsed.data.next_page_results || next === null || seen.has(next)) return out;
      seen.add(next);
      cursor = next;
    }
    throw new Error(`Plane GET ${path}: more than ${MAX_PAGES} pages`);
  }

  async function fetchStates(projectId: string): Promise<StateIndex> {
    const items = await listAll(projectPath(projectId, 'states/'));
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
  async function states(projectId: string, forceRefresh: boolean): Promise<{ index: StateIndex; fresh: boolean }> {
    let p = forceRefresh ? undefined : stateCache.get(projectId);
    let fresh = false;
    if (p === undefined) {
      fresh = true;
      p = fetchStates(projectId);
      stateCache.set(projectId, p);
      p.catch(() => {
        if (stateCache.get(projectId) === p) stateCache.delete(projectId);
      });
    }
    return { index: await p, fresh };
  }

  /** Look up in the cache; on a miss, refresh once (unless this call just loaded it). */
  async function lookup<T>(projectId: string, find: (i: StateIndex) => T | undefined): Promise<T | null> {
    const first = await states(projectId, false);
    const hit = find(first.index);
    if (hit !== undefined) return hit;
    if (first.fresh) return null;
    const second = await states(projectId, true);
    return find(second.index) ?? null;
  }

  async function resolveStateId(projectId: string, name: string): Promise<string | null> {
    const key = normalizeStateName(name);
    return lookup(projectId, (i) => i.byName.get(key));
  }

  async function stateNameOf(projectId: string, stateId: string): Promise<string | null> {
    return lookup(projectId, (i) => i.byId.get(stateId));
  }

  async function setState(input: { projectId: string; issueId: string; role: TrackerStateRole }): Promise<void> {
    const name = opts.stateNames[input.role];
    const stateId = await resolveStateId(input.projectId, name);
    if (stateId === null) {
      throw new Error(`Plane project ${input.projectId} has no state named "${name}" (role ${input.role})`);
    }
    await request('PATCH', projectPath(input.projectId, `issues/${encodeURIComponent(input.issueId)}/`), {
      state: stateId,
    });
  }

  async function comment(input: { projectId: string; issueId: string; html: string }): Promise<void> {
    await request('POST', projectPath(input.projectId, `issues/${encodeURIComponent(input.issueId)}/comments/`), {
      comment_html: input.html,
    });
  }

  async function listIssuesInStates(projectId: string, stateNames: string[]): Promise<PlaneIssueSummary[]> {
    const ids = new Set<string>();
    for (const n of stateNames) {
      const id = await resolveStateId(projectId, n);
      if (id !== null) ids.add(id);
    }
    if (ids.size === 0) return [];
    const items = await listAll(projectPath(projectId, 'issues/'));
    const out: PlaneIssueSummary[] = [];
    for (const item of items) {
      const parsed = issueSchema.safeParse(item);
      if (!parsed.success) throw new Error(`Plane issues of project ${projectId}: unexpected issue object`);
      const s = toSummary(parsed.data);
      if (s.stateId !== null && ids.has(s.stateId)) {
        out.push({ id: s.id, name: s.name, description: s.description, stateId: s.stateId });
      }
    }
    return out;
  }

  async function getIssue(projectId: string, issueId: string): Promise<PlaneIssue | null> {
    const body = await request('GET', projectPath(projectId, `issues/${encodeURIComponent(issueId)}/`), undefined, true);
    if (body === null) return null;
    const parsed = issueSchema.safeParse(body);
    if (!parsed.success) throw new Error(`Plane issue ${issueId}: unexpected issue object`);
    return toSummary(parsed.data);
  }

  return { kind: 'plane', setState, comment, resolveStateId, stateNameOf, listIssuesInStates, getIssue };
}
