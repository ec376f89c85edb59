/** Pull requests of the local forge (a row per PR; Gitea keeps its own). */
import { sql } from 'kysely';
import type { DbOrTx } from '../client.ts';
import type { PullRequestRow } from '../types.ts';

export async function openPullRequestFor(db: DbOrTx, projectId: number, head: string): Promise<PullRequestRow | undefined> {
  return db
    .selectFrom('pull_requests')
    .selectAll()
    .where('project_id', '=', projectId)
    .where('head', '=', head)
    .where('state', '=', 'open')
    .executeTakeFirst();
}

/** Insert a PR with the next number of the project, or return the open one for `head`. */
export async function insertPullRequest(
  db: DbOrTx,
  p: { projectId: number; taskId: number | null; head: string; base: string; title: string; body: string; headSha: string | null },
): Promise<PullRequestRow> {
  const row = await sql<PullRequestRow>`
    INSERT INTO pull_requests (project_id, number, task_id, head, base, title, body, head_sha)
    SELECT ${p.projectId}, coalesce(max(number), 0) + 1, ${p.taskId}, ${p.head}, ${p.base}, ${p.title}, ${p.body}, ${p.headSha}
    FROM pull_requests WHERE project_id = ${p.projectId}
    ON CONFLICT DO NOTHING
    RETURNING *
  `.execute(db);
  if (row.rows[0]) return row.rows[0];
  const existing = await openPullRequestFor(db, p.projectId, p.head);
  if (!existing) throw new Error(`could not open a pull request for ${p.head}`);
  return existing;
}

export async function getPullRequestRow(db: DbOrTx, projectId: number, number: number): Promise<PullRequestRow | undefined> {
  return db
    .selectFrom('pull_requests')
    .selectAll()
    .where('project_id', '=', projectId)
    .where('number', '=', number)
    .executeTakeFirst();
}

export async function markPullRequestMerged(db: DbOrTx, id: number, mergedSha: string): Promise<void> {
  await db
    .updateTable('pull_requests')
    .set({ state: 'merged', merged_sha: mergedSha, merged_at: sql`now()` })
    .where('id', '=', id)
    .where('state', '=', 'open')
    .execute();
}

export async function setPullRequestHead(db: DbOrTx, id: number, headSha: string): Promise<void> {
  await db.updateTable('pull_requests').set({ head_sha: headSha }).where('id', '=', id).execute();
}
