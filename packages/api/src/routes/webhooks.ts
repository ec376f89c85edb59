/**
 * `POST /webhooks/plane`: the signature (hex HMAC-SHA256 of the raw body, timing-safe) is
 * checked before anything is parsed; 401 bad/missing signature, 400 malformed, 202 accepted,
 * 503 when no PLANE_WEBHOOK_SECRET is configured (or when a payload carries only a state id and
 * Plane cannot be asked its name right now: nothing is recorded, the reconciliation poll acts on
 * the issue later). Nothing is written without a valid signature.
 */
import { Hono } from 'hono';
import { handlePlaneEvent, type StateNameOf } from '@orch/shared/intake/plane';
import { parsePlaneWebhook, verifyPlaneSignature } from '@orch/shared/tracker/plane-webhook';
import type { ApiDeps } from '../deps.ts';
import { errorBody } from '../errors.ts';

export function webhookRoutes(d: ApiDeps & { stateNameOf?: StateNameOf }) {
  const tracker = d.tracker ?? null;
  const stateNameOf: StateNameOf | undefined =
    d.stateNameOf ?? (tracker ? (projectId, stateId) => tracker.stateNameOf(projectId, stateId) : undefined);
  return new Hono().post('/plane', async (c) => {
    const secret = d.config.plane.webhookSecret;
    if (!secret) return c.json(errorBody('unavailable', 'PLANE_WEBHOOK_SECRET is not configured'), 503);
    const raw = new Uint8Array(await c.req.arrayBuffer());
    if (!verifyPlaneSignature(raw, c.req.header('x-plane-signature'), secret))
      return c.json(errorBody('unauthorized', 'missing or invalid X-Plane-Signature'), 401);
    let body: unknown;
    try {
      body = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw));
    } catch {
      return c.json(errorBody('invalid_request', 'body is not valid JSON'), 400);
    }
    const parsed = parsePlaneWebhook(body);
    if (!parsed.ok) return c.json(errorBody('invalid_request', parsed.error), 400);
    const r = await handlePlaneEvent(d, parsed.event, {
      deliveryId: c.req.header('x-plane-delivery') ?? null,
      payload: body,
      stateNameOf,
    });
    return c.json({ status: r.outcome, task_id: r.taskId }, 202);
  });
}
