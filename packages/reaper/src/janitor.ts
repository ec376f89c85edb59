/**
 * The janitor, on this host: worktrees of terminal tasks are removed (with their local branch
 * and per-job dirs). Orphan agents are killed by `killOrphanAgents` (shared/orphans.ts), which
 * the workers run too.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { DbOrTx } from '@orch/shared/db/client';
import { terminalTaskIds } from '@orch/shared/db/queries/reaper';
import { removeTaskWorktree } from '@orch/shared/git';

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
