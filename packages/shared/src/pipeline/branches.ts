/** Feature branches of finished tasks are deleted through the forge, once, and recorded. */
import { appendEvent } from '../db/queries/events.ts';
import type { Project, Task } from '../db/types.ts';
import type { DeleteBranchResult } from '../forge/types.ts';
import type { Services } from '../runtime/services.ts';

export async function removeFeatureBranch(
  svc: Pick<Services, 'db' | 'forgeFor'>,
  task: Pick<Task, 'id' | 'branch'>,
  project: Project,
  actor: string,
): Promise<DeleteBranchResult | null> {
  if (!task.branch || task.branch === project.base_branch) return null;
  const result = await svc.forgeFor(project).deleteBranch(task.branch);
  await appendEvent(svc.db, {
    taskId: task.id,
    kind: result === 'protected' ? 'branch_delete_refused' : 'branch_deleted',
    actor,
    reason: result,
    data: { branch: task.branch },
  });
  return result;
}
