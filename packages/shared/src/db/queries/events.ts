import { sql } from 'kysely';
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

/**
 * The feature branch's head as orch last moved it: the sha of the task's latest `branch_pushed`
 * (an agent stage pushed) or `branch_updated` (the forge merged base into it) event.
 */
export async function latestBranchSha(db: DbOrTx, taskId: number): Promise<string | null> {
  const r = await db
    .selectFrom('task_events')
    .select(sql<string | null>`data->>'sha'`.as('sha'))
    .where('task_id', '=', taskId)
    .where('kind', 'in', ['branch_pushed', 'branch_updated'])
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
  return r?.sha ?? null;
}
