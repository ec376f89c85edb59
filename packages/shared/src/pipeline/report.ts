/** Reports to the tracker (Plane) go through the outbox, in the caller's transaction. */
import type { DbOrTx } from '../db/client.ts';
import type { Project, Task } from '../db/types.ts';
import { insertOutbox } from '../db/queries/outbox.ts';
import type { TrackerStateRole } from '../tracker/types.ts';
import { originalIssueId } from '../stages.ts';

export async function reportToTracker(
  tx: DbOrTx,
  task: Pick<Task, 'id' | 'plane_issue_id'>,
  project: Pick<Project, 'plane_project_id'>,
  r: { role?: TrackerStateRole; comment?: string },
): Promise<void> {
  if (!task.plane_issue_id || !project.plane_project_id) return;
  const target = { projectId: project.plane_project_id, issueId: originalIssueId(task.plane_issue_id) };
  if (r.role) await insertOutbox(tx, { taskId: task.id, kind: 'set_state', payload: { ...target, role: r.role } });
  if (r.comment) await insertOutbox(tx, { taskId: task.id, kind: 'comment', payload: { ...target, html: r.comment } });
}
