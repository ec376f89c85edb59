/**
 * stop (issue 5): STOP of running tasks whose agents obey SIGTERM and have child trees
 * (`sleep 300 & sleep 300 & wait`), 4 in-process workers. Tasks first pass analysis (so the
 * remote feature branch exists), then the implementation agent runs and is stopped.
 * STOP request (`requestCancel` called) → process tree dead (no live member of the recorded
 * agent_runs.pid group in /proc) and → cancel complete (tasks.cancelled_at). Afterwards:
 * surviving processes, leaked worktrees, leaked branches.
 */
import fs from 'node:fs/promises';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { requestCancel } from '../packages/shared/src/cancel.ts';
import { createTask } from '../packages/shared/src/pipeline/tasks.ts';
import { git } from '../packages/shared/src/host/git.ts';
import { LATENCY_HEADER, latencyRow, nowMs, remoteBranches, sleep, startBenchOrch, waitFor, type Section } from './support.ts';

const AGENT = 'if [ "$ORCH_STAGE" = analysis ]; then echo plan > "$ORCH_ARTEFACT_DIR/analysis.md"; exit 0; fi; sleep 300 & sleep 300 & wait';

/** Is `pid` alive (not a zombie) and still in group `pgid`? One /proc read. */
function aliveInGroup(pid: number, pgid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[2]) === pgid && rest[0] !== 'Z' && rest[0] !== 'X';
  } catch {
    return false;
  }
}

async function groupMembersSync(pgid: number): Promise<number[]> {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((pid) => aliveInGroup(pid, pgid));
}

/** pgids (from the set) that still have a live (non-zombie) member, one pass over /proc. */
async function liveGroups(pgids: Set<number>): Promise<Set<number>> {
  const live = new Set<number>();
  for (const name of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await fs.readFile(`/proc/${name}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const pgrp = Number(rest[2]);
      if (pgids.has(pgrp) && rest[0] !== 'Z' && rest[0] !== 'X') live.add(pgrp);
    } catch {
      /* gone */
    }
  }
  return live;
}

export async function benchStop(opts: { stops?: number; round?: number } = {}): Promise<Section[]> {
  const stops = opts.stops ?? 50;
  const round = opts.round ?? 10;
  const orch = await startBenchOrch({
    ORCH_AGENT: 'command',
    ORCH_AGENT_CMD: AGENT,
    ORCH_MAX_CONCURRENCY: '16',
    ORCH_JOB_MAX_ATTEMPTS: '1',
  });
  const { pool } = orch.rt.svc;
  const treeDead: number[] = [];
  const cancelled: number[] = [];
  const leaderExit: number[] = [];
  const all: number[] = [];
  const pgids: number[] = [];
  try {
    for (let i = 0; i < 4; i++) await orch.worker();
    for (let done = 0; done < stops; done += round) {
      const n = Math.min(round, stops - done);
      const tasks: number[] = [];
      for (let i = 0; i < n; i++) tasks.push((await createTask(orch.rt.svc, { project: 'p', title: `stop ${done + i}` }, 'bench')).id);
      all.push(...tasks);
      const runs = await waitFor(
        async () => {
          const r = await pool.query<{ task_id: number; pid: number }>(
            `SELECT j.task_id, r.pid FROM jobs j JOIN agent_runs r ON r.job_id = j.id
             WHERE j.task_id = ANY($1) AND j.stage = 'implementation' AND j.status = 'running' AND r.pid IS NOT NULL`,
            [tasks],
          );
          if (r.rows.length !== n) return null;
          // the whole tree is up: sh and its two sleeps
          for (const row of r.rows) {
            const members = await fs.readdir('/proc').then(async (names) => {
              let k = 0;
              for (const nm of names) {
                if (!/^\d+$/.test(nm)) continue;
                const st = await fs.readFile(`/proc/${nm}/stat`, 'utf8').catch(() => '');
                if (st && Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[2]) === row.pid) k++;
              }
              return k;
            });
            if (members < 3) return null;
          }
          return r.rows;
        },
        60_000,
        'implementation agents running',
        100,
      );
      await sleep(200);
      // the members of each agent's group, known before the STOP (this agent forks no more)
      const members = new Map<number, number[]>();
      for (const row of runs) members.set(row.pid, await groupMembersSync(row.pid));
      pgids.push(...members.keys());
      const requested = new Map<number, number>();
      const byPid = new Map(runs.map((r) => [r.pid, r.task_id]));
      // tree dead: a poller over /proc running alongside the requests
      const pending = new Set(runs.map((r) => r.pid));
      const poller = (async () => {
        const deadline = Date.now() + 30_000;
        while (pending.size && Date.now() < deadline) {
          for (const pgid of [...pending]) {
            const req = requested.get(byPid.get(pgid)!);
            if (req === undefined) continue;
            if (!members.get(pgid)!.some((pid) => aliveInGroup(pid, pgid))) {
              pending.delete(pgid);
              treeDead.push(nowMs() - req);
            }
          }
          await sleep(1);
        }
      })();
      for (const t of tasks) {
        requested.set(t, nowMs());
        await requestCancel(orch.rt.svc, t, 'bench');
      }
      await poller;
      // cancel complete: tasks.cancelled_at (DB clock, same host)
      await waitFor(
        async () =>
          (await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM tasks WHERE id = ANY($1) AND stage = 'cancelled'`, [tasks])).rows[0]!.n === n,
        60_000,
        'tasks cancelled',
        50,
      );
      const r = await pool.query<{ id: number; ms: number; exit_ms: number | null }>(
        `SELECT t.id, extract(epoch FROM t.cancelled_at) * 1000 AS ms, extract(epoch FROM r.finished_at) * 1000 AS exit_ms
         FROM tasks t JOIN jobs j ON j.task_id = t.id AND j.stage = 'implementation' LEFT JOIN agent_runs r ON r.job_id = j.id
         WHERE t.id = ANY($1)`,
        [tasks],
      );
      for (const row of r.rows) {
        cancelled.push(Number(row.ms) - requested.get(row.id)!);
        if (row.exit_ms !== null) leaderExit.push(Number(row.exit_ms) - requested.get(row.id)!);
      }
    }
    await sleep(1000);
    const survivors = await liveGroups(new Set(pgids));
    const wtRoot = path.join(orch.config.worktreeRoot, 'p', 'worktrees');
    const leakedDirs = (await fs.readdir(wtRoot).catch(() => [] as string[])).filter((d) => all.includes(Number(d)));
    const mirror = path.join(orch.config.worktreeRoot, 'p', 'mirror.git');
    const registered = (await git(['worktree', 'list', '--porcelain'], { cwd: mirror })).stdout
      .split('\n')
      .filter((l) => l.startsWith('worktree ') && l.slice('worktree '.length).startsWith(`${wtRoot}${path.sep}`)).length;
    const remote = (await remoteBranches(orch.repo)).filter((b) => b !== 'main');
    const hasMain = (await remoteBranches(orch.repo)).includes('main');
    const mirrorLocal = (await git(['for-each-ref', '--format=%(refname:short)', 'refs/heads/orch'], { cwd: mirror })).stdout.split('\n').filter(Boolean);
    const jobStates = await pool.query<{ status: string; n: number }>(
      `SELECT status, count(*)::int AS n FROM jobs WHERE task_id = ANY($1) AND stage = 'implementation' GROUP BY 1`,
      [all],
    );
    return [
      {
        title: `stop — ${stops} STOPs of running agents with child trees, 4 workers (ms)`,
        header: LATENCY_HEADER,
        rows: [
          latencyRow('STOP → agent exit recorded (agent_runs.finished_at)', leaderExit, ''),
          latencyRow('**STOP → process tree dead**', treeDead, ''),
          latencyRow('**STOP → cancel complete (task cancelled)**', cancelled, ''),
        ],
        notes: [
          `agent: \`${AGENT}\`; 4 in-process workers × 4 slots, ORCH_MAX_CONCURRENCY=16, ORCH_CANCEL_POLL_S=1 and ORCH_STOP_GRACE_S=5 (defaults); STOPs in rounds of ${round} running tasks, requested one after another.`,
          `tree dead = none of the group's members (agent_runs.pid's group, listed from /proc before the STOP) is alive, polled every ~1 ms alongside the requests; cancel complete = tasks.cancelled_at.`,
          `survivors (live processes in any stopped group, 1 s after the last cancel): **${survivors.size}**; leaked worktree dirs: **${leakedDirs.length}**, worktrees still registered in the mirror: **${registered}**; leaked remote branches: **${remote.length}**${remote.length ? ` (${remote.slice(0, 5).join(', ')}…)` : ''}; base branch present: ${hasMain ? 'yes' : 'NO'}.`,
          `implementation jobs: ${jobStates.rows.map((j) => `${j.n} ${j.status}`).join(', ')}. Local branches left in the host mirror (cache, not the remote): ${mirrorLocal.length}.`,
        ],
      },
    ];
  } finally {
    await orch.close();
  }
}
