/**
 * Plane webhooks: signature check, payload parsing, redelivery dedupe key. Pure (no I/O).
 *
 * Wire format, as Plane sends it (makeplane/plane, apps/api/plane/bgtasks/webhook_task.py,
 * `webhook_send_task` / `webhook_activity` / `model_activity`):
 * - headers `X-Plane-Delivery` (a fresh uuid4 per send — a Celery retry re-runs the task and
 *   gets a new one, so it is useless for dedupe), `X-Plane-Event` (`issue`, `project`, `cycle`,
 *   `module`, `issue_comment`, ...), and `X-Plane-Signature` = hex `hmac.new(secret,
 *   json.dumps(payload), sha256)`; the body is posted with `requests.post(json=payload)`, i.e. the
 *   same `json.dumps` bytes, so the HMAC is checked over the raw request body.
 * - body `{event, action, webhook_id, workspace_id, data, activity}`; `action` is the verb
 *   (`created` | `updated` | `deleted`; older releases sent `create` | `update` | `delete`).
 *   `data` is the serialized object (`IssueExpandSerializer` for issues: every model column plus
 *   `state` expanded to `{id, name, color, group}`, labels, assignees) or just `{id}` on delete.
 *   `activity` is `{field, new_value, old_value, actor: UserLite, old_identifier,
 *   new_identifier}`: one delivery per changed key of the request, so `field` is the request key
 *   (`state` through the REST API, `state_id` from the web app) and the values are raw (state
 *   ids, not names).
 * (apps/api/plane/api/serializers/issue.py for IssueExpandSerializer, apps/api/plane/api/
 * serializers/state.py for StateLiteSerializer.)
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { planeIssueBody } from './plane-body.ts';
import { utcInstant } from './plane-time.ts';

export interface PlaneIssueEvent {
  /** `X-Plane-Event` / body `event`: `issue` is the only one orch acts on */
  event: string;
  action: string;
  webhookId: string | null;
  workspaceId: string | null;
  /** `data.project` (empty when Plane sends no project, e.g. a delete carries only `{id}`) */
  projectId: string;
  /** `data.id` for issue events; for `issue_comment` the comment's `issue`; else `data.id` */
  issueId: string;
  issueName: string | null;
  /** the task body: Markdown of `description_html` (plane-body.ts), the same as the poll's */
  issueDescription: string | null;
  stateId: string | null;
  stateName: string | null;
  field: string | null;
  newValue: string | null;
  oldValue: string | null;
  actorId: string | null;
  /** `data.updated_at`: the issue's last change, as Plane sent it (webhooks: UTC `…Z`) */
  updatedAt: string | null;
}

export type ParsePlaneWebhookResult = { ok: true; event: PlaneIssueEvent } | { ok: false; error: string };

const HEX_SHA256 = /^[0-9a-fA-F]{64}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * True iff `header` is the hex HMAC-SHA256 of the raw body under `secret` (any hex case).
 * Never throws: a missing, odd-length or non-hex header is simply false.
 */
export function verifyPlaneSignature(rawBody: Uint8Array | string, header: string | undefined, secret: string): boolean {
  if (typeof header !== 'string' || secret.length === 0) return false;
  const given = header.trim();
  if (!HEX_SHA256.test(given)) return false;
  const expected = createHmac('sha256', secret)
    .update(typeof rawBody === 'string' ? Buffer.from(rawBody, 'utf8') : rawBody)
    .digest();
  const actual = Buffer.from(given, 'hex');
  if (actual.length !== expected.length) return false;
  return timingSafeEqual(actual, expected);
}

// ---------------------------------------------------------------------------------------------
// Payload schema: strict about what orch reads, tolerant of everything else (extra keys pass).

const nullableString = z.string().nullish();
/** `project`, `workspace`, `issue` are ids in Plane's serializers, expanded objects with `?expand=` */
const idRef = z.union([z.string(), z.object({ id: z.string() }).loose()]).nullish();
/** activity values are whatever the request carried: strings, numbers, lists, null */
const anyValue = z.unknown();

const stateRef = z.union([
  z.string(),
  z.object({ id: z.string(), name: z.string().nullish() }).loose(),
]).nullish();

const dataSchema = z
  .object({
    id: z.string().min(1),
    name: nullableString,
    project: idRef,
    project_id: nullableString,
    issue: idRef,
    issue_id: nullableString,
    state: stateRef,
    state_id: nullableString,
    description_stripped: nullableString,
    description_html: nullableString,
    updated_at: nullableString,
  })
  .loose();

const actorSchema = z.union([z.string(), z.object({ id: z.string() }).loose()]).nullish();

const activitySchema = z
  .object({
    field: nullableString,
    new_value: anyValue,
    old_value: anyValue,
    actor: actorSchema,
    old_identifier: anyValue,
    new_identifier: anyValue,
  })
  .loose();

const payloadSchema = z
  .object({
    event: z.string().min(1),
    action: z.string(),
    webhook_id: nullableString,
    workspace_id: nullableString,
    data: dataSchema,
    activity: activitySchema.nullish(),
  })
  .loose();

/** The path of the first string (value or key) holding U+0000, or null when there is none. */
function nulPath(v: unknown, path = '', depth = 0): string | null {
  if (typeof v === 'string') return v.includes('\u0000') ? path : null;
  if (v === null || typeof v !== 'object' || depth > 64) return null;
  for (const [k, x] of Object.entries(v)) {
    const p = path ? `${path}.${k}` : k;
    if (k.includes('\u0000')) return p;
    const hit = nulPath(x, p, depth + 1);
    if (hit !== null) return hit;
  }
  return null;
}

function refId(v: string | { id: string } | null | undefined): string | null {
  if (v == null) return null;
  return typeof v === 'string' ? v : v.id;
}

/** Activity values as text: strings verbatim, scalars via String, lists/objects as JSON. */
function valueText(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return JSON.stringify(v);
}

function isStateField(field: string | null): boolean {
  return field === 'state' || field === 'state_id';
}

/** Parse a Plane webhook body (already JSON-decoded). Non-issue events parse too; check `event`. */
export function parsePlaneWebhook(body: unknown): ParsePlaneWebhookResult {
  // Postgres text and jsonb cannot hold U+0000 (Plane's own database cannot either, so a real
  // payload never carries one): refuse it here as malformed instead of failing at the insert.
  const nul = nulPath(body);
  if (nul !== null) return { ok: false, error: `malformed Plane webhook: ${nul || 'body'}: contains a NUL character` };
  const parsed = payloadSchema.safeParse(body);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    const where = first && first.path.length > 0 ? first.path.join('.') : 'body';
    return { ok: false, error: `malformed Plane webhook: ${where}: ${first?.message ?? 'invalid'}` };
  }
  const p = parsed.data;
  const d = p.data;
  const a = p.activity ?? null;

  const isDelete = /^delete/.test(p.action);
  const projectId = refId(d.project) ?? d.project_id ?? '';
  if (p.event === 'issue' && !isDelete && projectId === '') {
    return { ok: false, error: 'malformed Plane webhook: data.project: missing for an issue event' };
  }

  const issueId = p.event === 'issue_comment' ? (refId(d.issue) ?? d.issue_id ?? d.id) : d.id;

  const field = a?.field ?? null;
  const newValue = valueText(a?.new_value);
  const oldValue = valueText(a?.old_value);

  // State: the expanded `data.state` object is authoritative (Plane serializes the issue after
  // the change); fall back to the activity when it is about the state.
  let stateId: string | null = null;
  let stateName: string | null = null;
  if (d.state != null && typeof d.state === 'object') {
    stateId = d.state.id;
    stateName = d.state.name ?? null;
  } else if (typeof d.state === 'string') {
    stateId = d.state;
  } else if (d.state_id) {
    stateId = d.state_id;
  }
  if (isStateField(field) && newValue !== null) {
    if (UUID.test(newValue)) {
      // Current releases: the raw request value, a state id.
      stateId ??= newValue;
    } else {
      // Older releases' issue-activity style: the value is the state's name, the id in
      // new_identifier.
      stateName ??= newValue;
      const ident = valueText(a?.new_identifier);
      if (ident !== null && UUID.test(ident)) stateId ??= ident;
    }
  }

  return {
    ok: true,
    event: {
      event: p.event,
      action: p.action,
      webhookId: p.webhook_id ?? null,
      workspaceId: p.workspace_id ?? null,
      projectId,
      issueId,
      issueName: d.name ?? null,
      issueDescription: planeIssueBody(d.description_html, d.description_stripped),
      stateId,
      stateName,
      field,
      newValue,
      oldValue,
      actorId: refId(a?.actor),
      updatedAt: d.updated_at ?? null,
    },
  };
}

/**
 * Is this event a fact about the issue's state: created (in some state), or a change whose field is
 * the state (`state` through the REST API, `state_id` from the web app)?
 */
export function isStateEvent(e: Pick<PlaneIssueEvent, 'event' | 'action' | 'field'>): boolean {
  return e.event === 'issue' && (/^create/.test(e.action) || isStateField(e.field));
}

/**
 * The dedupe key (sha256 hex) of what an event means. Plane's delivery id is a new uuid4 on every
 * send, retries included, so it cannot be the key. A state event means "issue I was in state S as
 * of its `updated_at` U": the key is (I, S, U as a UTC instant), whatever the field was called
 * (`state_id` from the web app, `state` from the API) and whichever zone U was written in — so a
 * webhook and the poll (which sees the issue in its list) produce the same key for the same change.
 * Any other event keeps a content key (event, action, issue, field, new value, `updated_at`).
 */
export function webhookDedupeKey(e: PlaneIssueEvent): string {
  const at = utcInstant(e.updatedAt);
  const parts =
    isStateEvent(e) && e.stateId && at
      ? ['state', e.issueId, e.stateId, at]
      : [e.event, e.action, e.issueId, e.field ?? '', e.newValue ?? '', e.updatedAt ?? ''];
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}
