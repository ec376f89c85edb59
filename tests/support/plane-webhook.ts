/**
 * Plane webhook bodies and signatures for tests that post to `POST /webhooks/plane` without
 * the fake Plane server (which builds its own from its issue store). The shape is Plane's
 * apps/api/plane/bgtasks/webhook_task.py: `{event, action, webhook_id, workspace_id, data,
 * activity}`, `data.state` expanded to `{id, name, color, group}`; the signature is the hex
 * HMAC-SHA256 of the raw body with the webhook secret (`X-Plane-Signature`).
 */
import { createHmac } from 'node:crypto';

const PLANE_WEBHOOK_ID = '3c2c32ac-82df-48b3-be2a-a3e21dbe8692';
export const PLANE_WORKSPACE_ID = 'd2d97c94-a6ad-4012-b526-5577c0d7c769';
const PLANE_ACTOR_ID = '7d6c5b4a-3e2f-4a1b-9c8d-7e6f5a4b3c2d';

/** State ids of the states the tests move issues through. */
export const PLANE_STATE_IDS: Readonly<Record<string, string>> = {
  'To Analyse': '0f6d2b8e-2c1f-4a7e-9a51-6f6b1b2f9c11',
  STOP: '8a1b2c3d-4e5f-4a6b-9c7d-8e9f0a1b2c3d',
  Backlog: '9b7e1c2d-3f4a-4b5c-8d9e-0f1a2b3c4d5e',
};

/** Hex HMAC-SHA256 of the raw body, as Plane signs it. */
export function signPlaneBody(body: string | Uint8Array, secret: string): string {
  return createHmac('sha256', secret).update(body).digest('hex');
}

export interface PlaneStateChangeOptions {
  issueId: string;
  name: string;
  project: string;
  /** the new state; its id defaults to PLANE_STATE_IDS[name] */
  state: { name: string; id?: string | null; group?: string };
  /** the state moved out of (by name, looked up in PLANE_STATE_IDS; or an id) */
  from?: string;
  description?: string;
  /** ISO time of the change (default now) */
  at?: string;
  actor?: Record<string, unknown> | null;
  /** more fields of `data` (IssueExpandSerializer) and of `activity` */
  data?: Record<string, unknown>;
  activity?: Record<string, unknown>;
}

/** An `issue updated` webhook body for a change of state. */
export function planeStateChangeBody(o: PlaneStateChangeOptions): Record<string, unknown> {
  const at = o.at ?? new Date().toISOString();
  const stateId = o.state.id === undefined ? (PLANE_STATE_IDS[o.state.name] ?? null) : o.state.id;
  const from = o.from ?? 'Backlog';
  return {
    event: 'issue',
    action: 'updated',
    webhook_id: PLANE_WEBHOOK_ID,
    workspace_id: PLANE_WORKSPACE_ID,
    data: {
      id: o.issueId,
      name: o.name,
      project: o.project,
      state: { id: stateId, name: o.state.name, color: '#3F76FF', group: o.state.group ?? 'unstarted' },
      description_stripped: o.description ?? '',
      updated_at: at,
      ...o.data,
    },
    activity: {
      field: 'state',
      new_value: stateId,
      old_value: PLANE_STATE_IDS[from] ?? from,
      actor: o.actor === undefined ? { id: PLANE_ACTOR_ID, display_name: 'alice' } : o.actor,
      created_at: at,
      ...o.activity,
    },
  };
}
