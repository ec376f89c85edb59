/**
 * `POST /webhooks/plane`: the signature (hex HMAC-SHA256 of the raw body, timing-safe) is
 * checked before anything is parsed; 401 bad/missing signature, 400 malformed, 202 accepted,
 * 503 when no PLANE_WEBHOOK_SECRET is configured (or when a payload carries only a state id and
 * Plane cannot be asked its name right now: nothing is recorded, the reconciliation poll acts on
 * the issue later). Nothing is written without a valid signature.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { handlePlaneEvent, type StateNameOf } from '@orch/shared/intake/plane';
import { parsePlaneWebhook, verifyPlaneSignature } from '@orch/shared/tracker/plane-webhook';
import type { ApiDeps } from '../deps.ts';
import { errorBody } from '../errors.ts';
import { BODY_ERRORS, errors, INTERNAL_ERROR, json, router } from '../router.ts';

// The body is verified as raw bytes before it is parsed, so it is described here (a JSON Schema,
// not a zod schema) and not validated by the router: a parse before the signature check would
// both act on unauthenticated input and lose the exact bytes the HMAC is over.
const plane = createRoute({
  method: 'post',
  path: '/plane',
  summary: 'Plane webhook (issue events)',
  description:
    'Authenticated by `X-Plane-Signature`: hex HMAC-SHA256 of the raw body with PLANE_WEBHOOK_SECRET (timing-safe). ' +
    'Redelivery is harmless (deduplicated by content). "To Analyse" starts a task, STOP cancels it.',
  parameters: [
    { name: 'X-Plane-Signature', in: 'header', required: true, schema: { type: 'string' }, description: 'a missing or wrong one is a 401' },
    { name: 'X-Plane-Delivery', in: 'header', required: false, schema: { type: 'string' } },
  ],
  request: {
    body: {
      required: true,
      content: { 'application/json': { schema: { type: 'object', description: 'a Plane webhook payload (event, action, data)' } } },
    },
  },
  responses: {
    202: json(
      z.strictObject({
        status: z.string().openapi({ description: 'what intake did: task_created, stop_requested, duplicate, ignored_state, … (IntakeOutcome)' }),
        task_id: z.number().int().nullable(),
      }),
      'accepted',
    ),
    ...errors(
      { 400: 'malformed payload', 401: 'missing or bad signature', 413: BODY_ERRORS[413] },
      { 503: 'PLANE_WEBHOOK_SECRET is not configured, or Plane cannot name the state right now (nothing recorded)' },
      INTERNAL_ERROR,
    ),
  },
});

export function webhookRoutes(d: ApiDeps & { stateNameOf?: StateNameOf }) {
  const tracker = d.tracker ?? null;
  const stateNameOf: StateNameOf | undefined =
    d.stateNameOf ?? (tracker ? (projectId, stateId) => tracker.stateNameOf(projectId, stateId) : undefined);
  return router().openapi(plane, async (c) => {
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
