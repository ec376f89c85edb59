import type { DbOrTx } from '../client.ts';

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
