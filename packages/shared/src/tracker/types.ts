/**
 * The tracker: where tasks come from and where orch reports back. `local` (no Plane: tasks are
 * created with `orch task add` / `POST /tasks`, reports go nowhere) or `plane`.
 *
 * Outbound calls are made by a never-raise delivery loop from the outbox, never inline in a
 * state change; a method that throws is retried later with backoff.
 */
export const TRACKER_STATE_ROLES = ['in_progress', 'in_review', 'done', 'blocked', 'cancelled'] as const;
export type TrackerStateRole = (typeof TRACKER_STATE_ROLES)[number];

export interface Tracker {
  readonly kind: 'local' | 'plane';
  /** Move the issue to the state orch uses for `role` (names are configured per deployment). */
  setState(input: { projectId: string; issueId: string; role: TrackerStateRole }): Promise<StateChanged | void>;
  /** Add a comment (HTML) to the issue. */
  comment(input: { projectId: string; issueId: string; html: string }): Promise<void>;
}

/** What a state change left the issue with, as the tracker answered it. */
export interface StateChanged {
  stateId: string;
  /** the issue's `updated_at` after the change, as the tracker sent it */
  updatedAt: string | null;
}

/** Thrown by a tracker call that should be retried no earlier than `retryAt`. */
export class TrackerRetryError extends Error {
  readonly retryAt: Date;
  constructor(message: string, retryAt: Date) {
    super(message);
    this.name = 'TrackerRetryError';
    this.retryAt = retryAt;
  }
}

/** Nothing was sent: the call may be made no earlier than `retryAt` (e.g. no slot in a rate budget). */
export class TrackerDeferred extends TrackerRetryError {
  constructor(message: string, retryAt: Date) {
    super(message, retryAt);
    this.name = 'TrackerDeferred';
  }
}
