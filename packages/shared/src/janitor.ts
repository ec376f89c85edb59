/**
 * The janitor, on this host: worktrees of terminal tasks are removed (with their local branch
 * and per-job dirs). Workers and reapers both run it, so a host with workers and no reaper does
 * not collect the worktrees of tasks that finished on another host. Removal is idempotent, so
 * two janitors (or a janitor and the worker finishing the task) may race on the same directory.
 * Orphan agents are killed by `killOrphanAgents` (shared/orphans.ts).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { DbOrTx } from './db/client.ts';
import { terminalTaskIds } from './db/queries/reaper.ts';
import { removeTaskWorktree } from './git.ts';

export async function sweepWorktrees(db: DbOrTx, root: string): Promise<number> {
  let removed = 0;
  const projects = await fs.readdir(root).catch(() => [] as string[]);
  for (const slug of projects) {
    const dir = path.join(root, slug, 'worktrees');
    const ids = (await fs.readdir(dir).catch(() => [] as string[])).filter((n) => /^\d+$/.test(n)).map(Number);
    for (const id of await terminalTaskIds(db, ids)) {
      await removeTaskWorktree(root, slug, id);
      await fs.rm(path.join(root, slug, 'runs', String(id)), { recursive: true, force: true });
      removed++;
    }
  }
  return removed;
}
