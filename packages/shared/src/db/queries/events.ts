import type { DbOrTx } from '../client.ts';
import type { TaskEvent } from '../types.ts';

export interface NewEvent {
  taskId: number;
  jobId?: number | null;
  kind: string;
  actor: string;
  reason?: string | null;
  data?: Record<string, unknown>;
}

/** Append to the audit trail (never updated, never deleted). */
export async function appendEvent(db: DbOrTx, e: NewEvent): Promise<void> {
  await db
    .insertInto('task_events')
    .values({
      task_id: e.taskId,
      job_id: e.jobId ?? null,
      kind: e.kind,
      actor: e.actor,
      reason: e.reason ?? null,
      data: JSON.stringify(e.data ?? {}),
    })
    .execute();
}

export async function listEvents(db: DbOrTx, taskId: number): Promise<TaskEvent[]> {
  return db.selectFrom('task_events').selectAll().where('task_id', '=', taskId).orderBy('id').execute();
}
