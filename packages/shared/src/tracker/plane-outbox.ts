/**
 * Plane's outbox rows: `set_state` (`{projectId, issueId, role}`) and `comment` (`{projectId,
 * issueId, html}`), delivered through the Plane tracker. A delivered state change also records
 * the state the issue is now in, as of the `updated_at` Plane answered (plane_issue_states), so
 * the poll knows orch's own move from a person's.
 */
import { noteIssueState } from '../db/queries/plane-poll.ts';
import type { OutboxRow } from '../db/queries/outbox.ts';
import { outboxPayload, type OutboxChannel } from './outbox-deliverer.ts';
import { utcInstant } from './plane-time.ts';
import { TRACKER_STATE_ROLES } from './types.ts';
import type { Tracker, TrackerStateRole } from './types.ts';

const ROLES: ReadonlySet<string> = new Set<string>(TRACKER_STATE_ROLES);

type Call =
  | { kind: 'set_state'; projectId: string; issueId: string; role: TrackerStateRole }
  | { kind: 'comment'; projectId: string; issueId: string; html: string };

/** The call a row stands for, or why it stands for none. Pure. */
export function planeCallOf(row: Pick<OutboxRow, 'kind' | 'payload'>): Call | string {
  const p = outboxPayload(row as OutboxRow);
  if (p === null) return 'payload is not an object';
  const { projectId, issueId } = p;
  if (typeof projectId !== 'string' || !projectId || typeof issueId !== 'string' || !issueId) return 'payload lacks projectId/issueId';
  if (row.kind === 'set_state') {
    if (typeof p.role !== 'string' || !ROLES.has(p.role)) return `payload has no valid role (${String(p.role)})`;
    return { kind: 'set_state', projectId, issueId, role: p.role as TrackerStateRole };
  }
  if (row.kind === 'comment') {
    if (typeof p.html !== 'string' || !p.html) return 'payload has no html';
    return { kind: 'comment', projectId, issueId, html: p.html };
  }
  return `not a Plane kind: ${String(row.kind)}`;
}

export function planeOutboxChannel(tracker: Pick<Tracker, 'setState' | 'comment'>): OutboxChannel {
  return {
    target: 'plane',
    async deliver(row, tx) {
      const call = planeCallOf(row);
      if (typeof call === 'string') throw new Error(`outbox row ${row.id}: ${call}`);
      if (call.kind === 'comment') {
        await tracker.comment({ projectId: call.projectId, issueId: call.issueId, html: call.html });
        return;
      }
      const changed = await tracker.setState({ projectId: call.projectId, issueId: call.issueId, role: call.role });
      const at = changed ? utcInstant(changed.updatedAt) : null;
      if (changed && at) await noteIssueState(tx, { issueId: call.issueId, stateId: changed.stateId, stateAt: at, source: 'outbox' });
    },
  };
}
