import type { DbOrTx } from '../client.ts';
import type { Artefact } from '../types.ts';

export async function insertArtefact(
  db: DbOrTx,
  a: { taskId: number; jobId: number | null; stage: string; name: string; content: string },
): Promise<void> {
  await db
    .insertInto('artefacts')
    .values({ task_id: a.taskId, job_id: a.jobId, stage: a.stage, name: a.name, content: a.content })
    .execute();
}

export async function listArtefacts(db: DbOrTx, taskId: number): Promise<Artefact[]> {
  return db.selectFrom('artefacts').selectAll().where('task_id', '=', taskId).orderBy('id').execute();
}

/** The named artefact a job produced (the gate's input). */
export async function getJobArtefact(db: DbOrTx, jobId: number, name: string): Promise<Artefact | undefined> {
  return db
    .selectFrom('artefacts')
    .selectAll()
    .where('job_id', '=', jobId)
    .where('name', '=', name)
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
}

/** The latest artefact of a stage for a task (previous artefacts for the next prompt). */
export async function latestStageArtefact(db: DbOrTx, taskId: number, stage: string): Promise<Artefact | undefined> {
  return db
    .selectFrom('artefacts')
    .selectAll()
    .where('task_id', '=', taskId)
    .where('stage', '=', stage)
    .where('name', '=', `${stage}.md`)
    .orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst();
}
