/**
 * The janitor, on this host: worktrees of terminal tasks are removed, and agent processes whose
 * job is no longer running are killed (identified by ORCH_JOB_ID in their environment, so a
 * recycled pid is never touched).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { DbOrTx } from '@orch/shared/db/client';
import { finishedJobAgentPids, terminalTaskIds } from '@orch/shared/db/queries/reaper';
import { removeTaskWorktree } from '@orch/shared/git';
import { killGroup } from '@orch/shared/process-group';

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

async function processJobId(pid: number): Promise<string | null> {
  try {
    const env = await fs.readFile(`/proc/${pid}/environ`, 'utf8');
    const hit = env.split('\0').find((kv) => kv.startsWith('ORCH_JOB_ID='));
    return hit ? hit.slice('ORCH_JOB_ID='.length) : null;
  } catch {
    return null;
  }
}

export async function killOrphanAgents(db: DbOrTx, host: string): Promise<number> {
  let killed = 0;
  for (const { job_id, pid } of await finishedJobAgentPids(db, host)) {
    if ((await processJobId(pid)) === String(job_id)) {
      killGroup(pid, 'SIGKILL');
      killed++;
    }
  }
  return killed;
}
