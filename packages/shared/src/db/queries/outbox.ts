/**
 * Outbound calls to Plane (state changes, comments) and Gitea (pull-request comments, commit
 * statuses), written in the transaction of the change that causes them and delivered later by a
 * never-raise loop per target. Rows with the same `order_key` (a Plane issue, a Gitea pull
 * request) reach the service in the order they were written.
 */
import { sql, type RawBuilder } from 'kysely';
import type { DbOrTx } from '../client.ts';
import type { OutboxKind, OutboxTable, OutboxTarget } from '../types.ts';
import type { Selectable } from 'kysely';

export type OutboxRow = Selectable<OutboxTable>;

const OUTBOX_TARGET_OF: Readonly<Record<OutboxKind, OutboxTarget>> = {
  set_state: 'plane',
  comment: 'plane',
  pr_comment: 'gitea',
  commit_status: 'gitea',
};

export async function insertOutbox(
  db: DbOrTx,
  o: { taskId: number | null; kind: OutboxKind; payload: Record<string, unknown>; orderKey?: string },
): Promise<void> {
  const orderKey = o.orderKey ?? (typeof o.payload.issueId === 'string' ? o.payload.issueId : null);
  if (orderKey === null) throw new Error(`outbox ${o.kind}: no order key (give orderKey or payload.issueId)`);
  await db
    .insertInto('outbox')
    .values({ task_id: o.taskId, kind: o.kind, target: OUTBOX_TARGET_OF[o.kind], order_key: orderKey, payload: JSON.stringify(o.payload) })
    .execute();
}

export async function markOutboxDelivered(db: DbOrTx, id: number): Promise<void> {
  await db.updateTable('outbox').set({ delivered_at: sql`now()` }).where('id', '=', id).execute();
}

/** A failed attempt: counted (it sets the next backoff), with its error, due again at `retryAt`. */
export async function markOutboxFailed(db: DbOrTx, id: number, error: string, retryAt: Date): Promise<void> {
  await db
    .updateTable('outbox')
    .set({ attempts: sql`attempts + 1`, last_error: error.slice(0, 2000), next_attempt_at: retryAt })
    .where('id', '=', id)
    .execute();
}

/** Not the row's fault (the service said "not before", e.g. a 429): due again later, not counted. */
export async function postponeOutbox(db: DbOrTx, id: number, error: string, retryAt: Date): Promise<void> {
  await db.updateTable('outbox').set({ last_error: error.slice(0, 2000), next_attempt_at: retryAt }).where('id', '=', id).execute();
}

export async function outboxBacklog(db: DbOrTx): Promise<Array<{ target: OutboxTarget; n: number }>> {
  return db
    .selectFrom('outbox')
    .select(['target', sql<number>`count(*)::int`.as('n')])
    .where('delivered_at', 'is', null)
    .groupBy('target')
    .execute();
}

/**
 * SQL for "row `alias` is the oldest undelivered row of its order key": a later row of an issue (or
 * pull request) waits while an earlier one is pending (backing off, or being delivered by
 * another deliverer).
 */
function isHead(alias: 'o' | 'h'): RawBuilder<boolean> {
  const col = (c: string) => sql.ref(`${alias}.${c}`);
  return sql<boolean>`NOT EXISTS (
    SELECT 1 FROM outbox e
    WHERE e.delivered_at IS NULL AND e.target = ${col('target')} AND e.order_key = ${col('order_key')} AND e.id < ${col('id')})`;
}

/** SQL: some row of `target` is due now and first in line (for the rate budget's "outbox first"). */
export function dueOutboxHeadExists(target: OutboxTarget): RawBuilder<boolean> {
  return sql<boolean>`EXISTS (
    SELECT 1 FROM outbox h
    WHERE h.target = ${target} AND h.delivered_at IS NULL AND h.next_attempt_at <= now() AND ${isHead('h')})`;
}

/**
 * Claim due rows of `target` that are the oldest undelivered row of their order key (SKIP LOCKED,
 * so several deliverers never send one row twice at once).
 */
export async function dueOutboxHeads(db: DbOrTx, target: OutboxTarget, limit: number): Promise<OutboxRow[]> {
  return db
    .selectFrom('outbox as o')
    .selectAll('o')
    .where('o.target', '=', target)
    .where('o.delivered_at', 'is', null)
    .where('o.next_attempt_at', '<=', sql<Date>`now()`)
    .where(isHead('o'))
    .orderBy('o.id')
    .limit(limit)
    .forUpdate()
    .skipLocked()
    .execute();
}
