/**
 * Agent processes left behind on this host: a worker that died (SIGKILL, OOM) leaves its
 * agents running in their own process groups. Every agent carries ORCH_JOB_ID in its
 * environment, so the sweep starts from the processes, not from history: one /proc scan finds
 * the live processes that carry a job id (usually only running agents, often none), and only
 * those ids are looked up. A process is killed, with its group, when its job is no longer
 * running and the job's recorded agent pid (on this host) is its group or session leader — the
 * environment and pid checks together mean that a recycled pid, or an agent of another orch
 * deployment on the same machine, is never touched. The leader (often an `sh -c`) may be gone
 * while children that ignored SIGTERM live on in its group, so every member is looked at.
 */
import type { DbOrTx } from '../db/client.ts';
import { agentPidsOfFinishedJobs } from '../db/queries/agent-runs.ts';
import { killGroup } from './process-group.ts';
import { liveProcesses, processEnvVar } from './procfs.ts';

function processJobId(pid: number): string | null {
  return processEnvVar(pid, 'ORCH_JOB_ID');
}

interface AgentProcess {
  pid: number;
  pgrp: number;
  session: number;
  jobId: number;
}

/** Live (non-zombie) processes of this host whose environment carries ORCH_JOB_ID. */
function agentProcessesOnThisHost(): AgentProcess[] {
  const out: AgentProcess[] = [];
  for (const p of liveProcesses()) {
    const jobId = processJobId(p.pid);
    if (jobId === null || !/^\d+$/.test(jobId)) continue;
    out.push({ pid: p.pid, pgrp: p.pgrp, session: p.session, jobId: Number(jobId) });
  }
  return out;
}

export async function killOrphanAgents(db: DbOrTx, host: string): Promise<number> {
  const procs = agentProcessesOnThisHost();
  if (procs.length === 0) return 0;
  const rows = await agentPidsOfFinishedJobs(db, host, [...new Set(procs.map((p) => p.jobId))]);
  let killed = 0;
  for (const { job_id, pid } of rows) {
    const members = procs.filter((p) => p.jobId === job_id && (p.pgrp === pid || p.session === pid));
    if (members.length === 0) continue;
    killGroup(pid, 'SIGKILL');
    // a member that moved to a group of its own (still in the agent's session) is killed too
    for (const m of members) if (m.pgrp !== pid) killGroup(m.pgrp, 'SIGKILL');
    killed++;
  }
  return killed;
}
