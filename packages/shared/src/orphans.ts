/**
 * Agent processes left behind on this host: a worker that died (SIGKILL, OOM) leaves its
 * agents running in their own process groups. Any process whose environment says
 * ORCH_JOB_ID=<a job that is no longer running> is killed with its group — the environment
 * check means a recycled pid is never touched.
 */
import fs from 'node:fs/promises';
import type { DbOrTx } from './db/client.ts';
import { finishedJobAgentPids } from './db/queries/reaper.ts';
import { killGroup } from './process-group.ts';

export async function processJobId(pid: number): Promise<string | null> {
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
