/** Outbound tracker calls, written in the transaction of the change that causes them. */
import { sql } from 'kysely';
import type { DbOrTx } from '../client.ts';
import type { OutboxTable } from '../types.ts';
import type { Selectable } from 'kysely';

export type OutboxRow = Selectable<OutboxTable>;

export async function insertOutbox(
  db: DbOrTx,
  o: { taskId: number | null; kind: 'set_state' | 'comment'; payload: Record<string, unknown> },
): Promise<void> {
  await db.insertInto('outbox').values({ task_id: o.taskId, kind: o.kind, payload: JSON.stringify(o.payload) }).execute();
}

export async function markOutboxDelivered(db: DbOrTx, id: number): Promise<void> {
  await db.updateTable('outbox').set({ delivered_at: sql`now()` }).where('id', '=', id).execute();
}

export async function markOutboxFailed(db: DbOrTx, id: number, error: string, retryAt: Date): Promise<void> {
  await db
    .updateTable('outbox')
    .set({ attempts: sql`attempts + 1`, last_error: error.slice(0, 2000), next_attempt_at: retryAt })
    .where('id', '=', id)
    .execute();
}

export async function outboxBacklog(db: DbOrTx): Promise<number> {
  const r = await db
    .selectFrom('outbox')
    .select(sql<number>`count(*)::int`.as('n'))
    .where('delivered_at', 'is', null)
    .executeTakeFirstOrThrow();
  return r.n;
}

/**
 * Claim due rows that are the oldest undelivered row of their issue (SKIP LOCKED). A later row of
 * an issue waits while an earlier one is pending (backing off, or being delivered by another
 * deliverer): calls reach the tracker in the order they were written, per issue.
 */
export async function dueOutboxHeads(db: DbOrTx, limit: number): Promise<OutboxRow[]> {
  return db
    .selectFrom('outbox as o')
    .selectAll('o')
    .where('o.delivered_at', 'is', null)
    .where('o.next_attempt_at', '<=', sql<Date>`now()`)
    .where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom('outbox as e')
            .select(sql`1`.as('one'))
            .where('e.delivered_at', 'is', null)
            .whereRef('e.id', '<', 'o.id')
            .where(sql<boolean>`e.payload->>'issueId' = o.payload->>'issueId'`),
        ),
      ),
    )
    .orderBy('o.id')
    .limit(limit)
    .forUpdate()
    .skipLocked()
    .execute();
}
