/**
 * Agent processes left behind on this host: a worker that died (SIGKILL, OOM) leaves its
 * agents running in their own process groups. Any process whose environment says
 * ORCH_JOB_ID=<a job that is no longer running> is killed with its group — the environment
 * check means a recycled pid is never touched. The leader (often an `sh -c`) may be gone while
 * children that ignored SIGTERM live on in its group, so every member is looked at.
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

/** Live processes by process group and by session (one /proc scan). */
async function groupsOnThisHost(): Promise<Map<number, number[]>> {
  const byGroup = new Map<number, number[]>();
  const add = (k: number, pid: number) => {
    const l = byGroup.get(k);
    if (l) l.push(pid);
    else byGroup.set(k, [pid]);
  };
  for (const name of await fs.readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await fs.readFile(`/proc/${name}/stat`, 'utf8').catch(() => null);
    if (stat === null) continue;
    const [state, , pgrp, session] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (state === 'Z' || state === 'X') continue;
    add(Number(pgrp), Number(name));
    if (session !== pgrp) add(Number(session), Number(name));
  }
  return byGroup;
}

export async function killOrphanAgents(db: DbOrTx, host: string): Promise<number> {
  const rows = await finishedJobAgentPids(db, host);
  if (rows.length === 0) return 0;
  const groups = await groupsOnThisHost();
  let killed = 0;
  for (const { job_id, pid } of rows) {
    for (const member of groups.get(pid) ?? []) {
      if ((await processJobId(member)) === String(job_id)) {
        killGroup(pid, 'SIGKILL');
        killed++;
        break;
      }
    }
  }
  return killed;
}
