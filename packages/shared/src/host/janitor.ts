/**
 * The janitor, on this host: the files of terminal tasks (worktree, local branch, run dirs) are
 * removed. Workers and reapers both run it, so a host with workers and no reaper does not
 * collect the files of tasks that finished on another host. Removal is idempotent, so two
 * janitors (or a janitor and the worker finishing the task) may race on the same directory.
 * Orphan agents are killed by `killOrphanAgents` (shared/orphans.ts).
 */
import fs from 'node:fs/promises';
import type { DbOrTx } from '../db/client.ts';
import { terminalTaskIds } from '../db/queries/tasks.ts';
import { removeTaskFiles, taskIdsWithFiles } from './task-files.ts';

/** Returns how many tasks' files were removed. */
export async function sweepWorktrees(db: DbOrTx, root: string): Promise<number> {
  let removed = 0;
  const projects = await fs.readdir(root).catch(() => [] as string[]);
  for (const slug of projects) {
    const ids = await taskIdsWithFiles(root, slug);
    for (const id of await terminalTaskIds(db, ids)) {
      await removeTaskFiles(root, slug, id);
      removed++;
    }
  }
  return removed;
}
