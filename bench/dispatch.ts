/**
 * dispatch (issue 3): job enqueued (createTask commit) → agent process started, with one idle
 * in-process worker. The agent records its own start (`date +%s%N`, wall clock in ns) and exits
 * 1 (ORCH_JOB_MAX_ATTEMPTS=1: the task blocks, no retry pollutes the next sample). Broken down
 * as claim latency (commit → jobs.started_at) and spawn latency (jobs.started_at → agent start),
 * plus isolated timings of the steps orch performs between claim and spawn.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { createTask } from '../packages/shared/src/pipeline/tasks.ts';
import { prepareWorktree, syncMirror, worktreePath } from '../packages/shared/src/host/git.ts';
import { claimNextJob } from '../packages/shared/src/db/queries/jobs.ts';
import { getTask } from '../packages/shared/src/db/queries/tasks.ts';
import { getProject } from '../packages/shared/src/db/queries/projects.ts';
import { latestStageArtefact } from '../packages/shared/src/db/queries/artefacts.ts';
import { registerWorker } from '../packages/shared/src/db/queries/workers.ts';
import { renderPrompt } from '../packages/shared/src/prompts.ts';
import { execa } from './deps.ts';
import { LATENCY_HEADER, fmt, latencyRow, nowMs, sleep, startBenchOrch, summary, waitFor, type Section } from './support.ts';

const AGENT = 'date +%s%N > "$ORCH_ARTEFACT_DIR/started"; exit 1';

/** Enqueue → agent started samples with one idle worker (ORCH_AGENT_SANDBOX as given, default auto). */
export async function dispatchSamples(samples: number, env: Record<string, string> = {}): Promise<{ endToEnd: number[]; claim: number[]; spawn: number[]; runRow: number[] }> {
  const warmup = 5;
  const orch = await startBenchOrch({ ORCH_AGENT: 'command', ORCH_AGENT_CMD: AGENT, ORCH_JOB_MAX_ATTEMPTS: '1', ...env });
  const { pool } = orch.rt.svc;
  const endToEnd: number[] = [];
  const claim: number[] = [];
  const spawn: number[] = [];
  const runRow: number[] = [];
  try {
    const worker = await orch.worker();
    await sleep(300); // initial drain and LISTEN settle
    for (let i = 0; i < samples + warmup; i++) {
      const finishedBefore = worker.stats.finished;
      const task = await createTask(orch.rt.svc, { project: 'p', title: `dispatch ${i}` }, 'bench');
      const committed = nowMs();
      await waitFor(async () => worker.stats.finished > finishedBefore, 30_000, `job of task ${task.id}`, 2);
      const row = await pool.query<{ id: number; started_ms: number; run_started_ms: number | null }>(
        `SELECT j.id, extract(epoch FROM j.started_at) * 1000 AS started_ms,
                extract(epoch FROM r.started_at) * 1000 AS run_started_ms
         FROM jobs j LEFT JOIN agent_runs r ON r.job_id = j.id
         WHERE j.task_id = $1 ORDER BY j.id LIMIT 1`,
        [task.id],
      );
      const job = row.rows[0]!;
      const startedFile = path.join(orch.config.worktreeRoot, 'p', 'runs', String(task.id), String(job.id), 'artefacts', 'started');
      const agentStartMs = Number(BigInt((await fs.readFile(startedFile, 'utf8')).trim()) / 1000n) / 1000;
      if (i >= warmup) {
        const claimedMs = Number(job.started_ms);
        endToEnd.push(agentStartMs - committed);
        claim.push(claimedMs - committed);
        spawn.push(agentStartMs - claimedMs);
        if (job.run_started_ms !== null) runRow.push(Number(job.run_started_ms) - claimedMs);
      }
      await sleep(20); // let the worker's post-job drain settle: an idle worker for the next sample
    }
  } finally {
    await orch.close();
  }
  return { endToEnd, claim, spawn, runRow };
}

export async function benchDispatch(opts: { samples?: number } = {}): Promise<Section[]> {
  const samples = opts.samples ?? 200;
  const warmup = 5;
  const { endToEnd, claim, spawn, runRow } = await dispatchSamples(samples);
  // What the worker does between claim and spawn, timed in isolation on a scratch repo.
  const parts = await componentTimings();

  const s = summary(endToEnd);
  return [
    {
      title: 'dispatch — enqueue → agent process started (1 idle worker)',
      header: LATENCY_HEADER,
      rows: [
        latencyRow('**enqueue → agent started**', endToEnd, 'p50 < 10, p99 < 50'),
        latencyRow('  claim: enqueue commit → jobs.started_at', claim, ''),
        latencyRow('  spawn: jobs.started_at → agent started', spawn, ''),
        latencyRow('  (jobs.started_at → agent_runs row, after spawn)', runRow, ''),
        ...parts,
      ],
      notes: [
        `${samples} samples after ${warmup} warm-up; agent = \`${AGENT}\` via ORCH_AGENT=command; worker in-process, default heartbeat/poll settings, ORCH_AGENT_SANDBOX=auto (bubblewrap where it works; \`node bench/run.ts sandbox\` compares on and off).`,
        `target p50 < 10 ms: ${s.p50 < 10 ? 'met' : 'NOT met'} (${fmt(s.p50)} ms); target p99 < 50 ms: ${s.p99 < 50 ? 'met' : 'NOT met'} (${fmt(s.p99)} ms).`,
        'enqueue time = createTask() resolved (commit acknowledged); agent start = the agent\'s own `date +%s%N`; jobs.started_at = now() of the claim transaction (same host clock).',
        'rows marked "isolated" time one step of the claim→spawn path alone (same git/Postgres, no worker around it); the spawn path runs them in sequence.',
      ],
    },
  ];
}

/** Isolated timings of the steps between claim and spawn (git on a scratch mirror, the spawn floor). */
async function componentTimings(n = 40): Promise<string[][]> {
  const orch = await startBenchOrch({ ORCH_AGENT: 'command', ORCH_AGENT_CMD: 'true' });
  try {
    const root = path.join(orch.dir, 'scratch');
    const sync: number[] = [];
    const wt: number[] = [];
    const sh: number[] = [];
    const claimTx: number[] = [];
    const rest: number[] = [];
    const { db } = orch.rt.svc;
    const task = await createTask(orch.rt.svc, { project: 'p', title: 'scratch' }, 'bench');
    await registerWorker(db, { id: 'none', host: 'h', pid: 1, slots: 1 });
    await claimNextJob(db, { workerId: 'none', host: 'h', pid: 1, maxConcurrency: 4 }); // take its job out of the way
    let repo = await syncMirror(root, 'p', orch.repo);
    for (let i = 0; i < n; i++) {
      let t = nowMs();
      repo = await syncMirror(root, 'p', orch.repo);
      sync.push(nowMs() - t);
      t = nowMs();
      await prepareWorktree(repo, worktreePath(root, 'p', 1), { branch: `orch/1-x`, base: 'main' });
      wt.push(nowMs() - t);
      t = nowMs();
      const r = await execa('sh', ['-c', 'date +%s%N'], { stdin: 'ignore' });
      sh.push(Number(BigInt(String(r.stdout).trim()) / 1000n) / 1000 - t);
      t = nowMs();
      await claimNextJob(orch.rt.svc.db, { workerId: 'none', host: 'h', pid: 1, maxConcurrency: 4 });
      claimTx.push(nowMs() - t);
      t = nowMs();
      const tk = (await getTask(db, task.id))!;
      await getProject(db, tk.project_id);
      const dir = path.join(root, 'runs', String(i));
      await fs.rm(path.join(dir, 'artefacts'), { recursive: true, force: true });
      await fs.mkdir(path.join(dir, 'artefacts'), { recursive: true });
      await latestStageArtefact(db, tk.id, 'analysis');
      await latestStageArtefact(db, tk.id, 'review');
      await fs.writeFile(path.join(dir, 'prompt.md'), (await renderPrompt('analysis', { task_id: tk.id, title: tk.title })).text);
      rest.push(nowMs() - t);
    }
    return [
      latencyRow('  isolated: syncMirror (git remote set-url + fetch)', sync),
      latencyRow('  isolated: prepareWorktree (task repository: rm, init, alternates, fetch from the mirror, checkout)', wt),
      latencyRow('  isolated: execa sh -c → agent\'s first instruction', sh),
      latencyRow('  isolated: claimNextJob transaction (nothing claimable)', claimTx),
      latencyRow('  isolated: 4 row reads + artefact dir + prompt render/write', rest),
    ];
  } finally {
    await orch.close();
  }
}
