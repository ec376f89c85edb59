/**
 * Helpers of the STOP tests: the stage-aware shell agent (tests/fixtures/agents/stop-agent.sh),
 * a /proc scan of a process group, row readers, the API app and signed Plane webhooks.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createApp } from '@orch/api/app';
import { listTaskRuns } from '@orch/shared/db/queries/agent-runs';
import { listEvents } from '@orch/shared/db/queries/events';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getTask } from '@orch/shared/db/queries/tasks';
import type { Task } from '@orch/shared/db/types';
import { groupMembers } from '@orch/shared/host/process-group';
import { ROOT, tempDir, waitFor, type Orch } from './harness.ts';
import { planeStateChangeBody, signPlaneBody } from './plane-webhook.ts';

const STOP_AGENT = path.join(ROOT, 'tests', 'fixtures', 'agents', 'stop-agent.sh');

/** A control directory for the shell agent and the env that selects it. */
export async function agentControl(): Promise<{ ctrl: string; env: Record<string, string>; mode(key: string, mode: string): Promise<void> }> {
  const ctrl = await tempDir('orch-stop-ctrl-');
  return {
    ctrl,
    // the control dir is shared with the agent: writable in the sandbox too (ORCH_TEST_SANDBOX=bwrap)
    env: { ORCH_AGENT: 'command', ORCH_AGENT_CMD: `CTRL=${ctrl} sh ${STOP_AGENT}`, ORCH_AGENT_SANDBOX_WRITABLE: ctrl },
    /** key: a stage (`implementation`) or `<taskId>-<stage>` */
    mode: (key, mode) => fs.writeFile(path.join(ctrl, key), mode),
  };
}

/** Live members of the agent's group or session (the worker starts it as their leader). */
export { groupMembers };

/** A process exists and is not a zombie (a zombie is dead; only its parent has not reaped it yet). */
export async function liveProcess(pid: number): Promise<boolean> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export async function taskRow(orch: Orch, id: number): Promise<Task> {
  return (await getTask(orch.rt.svc.db, id))!;
}

export const jobsOf = (orch: Orch, id: number) => listTaskJobs(orch.rt.svc.db, id);
export const runsOf = (orch: Orch, id: number) => listTaskRuns(orch.rt.svc.db, id);
export const eventsOf = (orch: Orch, id: number) => listEvents(orch.rt.svc.db, id);

export async function waitStage(orch: Orch, id: number, stage: string, timeoutMs = 20_000): Promise<Task> {
  return waitFor(async () => {
    const t = await taskRow(orch, id);
    return t.stage === stage ? t : null;
  }, timeoutMs, `task ${id} in ${stage}`);
}

/** The running agent run of a task's `stage` job, once its pid is recorded and its tree is up. */
export async function waitRunningAgent(orch: Orch, id: number, stage: string, minProcs = 1, timeoutMs = 20_000) {
  return waitFor(async () => {
    const jobs = await jobsOf(orch, id);
    const job = jobs.find((j) => j.stage === stage && j.status === 'running');
    if (!job) return null;
    const run = (await runsOf(orch, id)).find((r) => r.job_id === job.id && r.exit_code === null && r.pid !== null);
    if (!run) return null;
    const procs = await groupMembers(run.pid!);
    // in the sandbox, bwrap itself is one more process than the agent's tree
    const extra = orch.config.agent.sandbox.mode === 'bwrap' ? 1 : 0;
    return procs.length >= minProcs + extra ? { job, run, pid: run.pid!, procs } : null;
  }, timeoutMs, `running ${stage} agent of task ${id}`);
}

export function apiOf(orch: Orch) {
  const s = orch.rt.svc;
  const app = createApp({ db: s.db, boss: s.boss, config: s.config, log: s.log });
  return {
    app,
    async post(p: string, body?: unknown, headers: Record<string, string> = {}) {
      const r = await app.request(p, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      return { status: r.status, body: (await r.json()) as any };
    },
    async get(p: string) {
      const r = await app.request(p);
      return { status: r.status, body: (await r.json()) as any };
    },
  };
}

export const WEBHOOK_SECRET = 'stop-test-webhook-secret';
export const PLANE_PROJECT = '5b1d7e4e-1c2a-4f7b-8a59-0c6f2d1e9a10';

/** A Plane `issue updated` webhook body (state change) like webhook_task.py sends. */
export function planeStateChange(issueId: string, name: string, stateName: string, from = 'Backlog'): Record<string, unknown> {
  return planeStateChangeBody({
    issueId,
    name,
    project: PLANE_PROJECT,
    state: { name: stateName, group: stateName === 'STOP' ? 'cancelled' : 'unstarted' },
    from,
    description: 'from plane',
  });
}

export async function postPlane(orch: Orch, body: Record<string, unknown>, secret = WEBHOOK_SECRET) {
  const raw = JSON.stringify(body);
  const sig = signPlaneBody(raw, secret);
  return apiOf(orch).post('/webhooks/plane', raw, { 'x-plane-signature': sig, 'x-plane-delivery': randomUUID() });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
