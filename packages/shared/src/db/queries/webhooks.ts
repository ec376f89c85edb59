import { sql } from 'kysely';
import type { DbOrTx } from '../client.ts';

/**
 * Try to take the transaction-scoped lock of one delivery content (two-int form: namespace
 * 'hook', hashtext of the key), so two identical deliveries arriving at once are not both acted
 * on. Never waits: false means another session is handling the same content right now.
 */
export async function tryLockDeliveryKey(tx: DbOrTx, dedupeKey: string): Promise<boolean> {
  const r = await sql<{ ok: boolean }>`SELECT pg_try_advisory_xact_lock(${0x686f6f6b}, hashtext(${dedupeKey})) AS ok`.execute(tx);
  return r.rows[0]?.ok === true;
}

export async function deliverySeen(db: DbOrTx, dedupeKey: string): Promise<boolean> {
  const r = await db.selectFrom('webhook_deliveries').select('id').where('dedupe_key', '=', dedupeKey).executeTakeFirst();
  return r !== undefined;
}

/** Record a delivery once (by content); false when it was already recorded. */
export async function recordDelivery(
  db: DbOrTx,
  d: { dedupeKey: string; deliveryId: string | null; event: string | null; action: string | null; outcome: string; taskId: number | null; payload: unknown },
): Promise<boolean> {
  const r = await db
    .insertInto('webhook_deliveries')
    .values({
      dedupe_key: d.dedupeKey,
      delivery_id: d.deliveryId,
      event: d.event,
      action: d.action,
      outcome: d.outcome,
      task_id: d.taskId,
      payload: JSON.stringify(d.payload ?? null),
    })
    .onConflict((oc) => oc.column('dedupe_key').doNothing())
    .returning('id')
    .executeTakeFirst();
  return r !== undefined;
}
