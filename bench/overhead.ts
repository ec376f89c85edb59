/**
 * overhead: orchestration time per stage job with a near-no-op agent —
 * (jobs.finished_at − jobs.started_at) − (agent_runs.finished_at − agent_runs.started_at).
 * The agent does the least that passes each gate (analysis.md; one commit; APPROVE), so every
 * task walks analysis → implementation → review → merge → done and each stage's real path
 * (push, PR, gate, advance, next enqueue, merge, cleanup) is measured. Merge has no agent: its
 * overhead is the whole job. One in-process worker, one slot: jobs never overlap.
 */
import { LATENCY_HEADER, latencyRow, startBenchOrch, waitFor, type Section } from './support.ts';

const AGENT = [
  'case "$ORCH_STAGE" in',
  '  analysis) echo plan > "$ORCH_ARTEFACT_DIR/analysis.md" ;;',
  '  implementation) echo "$ORCH_TASK_ID" > "task-$ORCH_TASK_ID.txt" && git add . && git commit -qm "task $ORCH_TASK_ID" ;;',
  '  review) echo "VERDICT: APPROVE" > "$ORCH_ARTEFACT_DIR/review.md" ;;',
  'esac',
].join('\n');

export async function benchOverhead(opts: { tasks?: number } = {}): Promise<Section[]> {
  const tasks = opts.tasks ?? 25;
  const orch = await startBenchOrch({ ORCH_AGENT: 'command', ORCH_AGENT_CMD: AGENT, ORCH_WORKER_SLOTS: '1', ORCH_JOB_MAX_ATTEMPTS: '1' });
  const { pool } = orch.rt.svc;
  const { createTask } = await import('../packages/shared/src/pipeline/tasks.ts');
  try {
    await orch.worker();
    const ids: number[] = [];
    for (let i = 0; i < tasks; i++) ids.push((await createTask(orch.rt.svc, { project: 'p', title: `overhead ${i}` }, 'bench')).id);
    await waitFor(
      async () => {
        const r = await pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM tasks t WHERE id = ANY($1) AND (stage IN ('done','cancelled') OR blocked_at IS NOT NULL)
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.task_id = t.id AND j.status IN ('queued','running'))`,
          [ids],
        );
        return r.rows[0]!.n === tasks;
      },
      180_000,
      'all tasks finished',
      200,
    );
    const rows = await pool.query<{ stage: string; status: string; job_ms: number; agent_ms: number | null }>(
      `SELECT j.stage, j.status,
              extract(epoch FROM j.finished_at - j.started_at) * 1000 AS job_ms,
              extract(epoch FROM r.finished_at - r.started_at) * 1000 AS agent_ms
       FROM jobs j LEFT JOIN agent_runs r ON r.job_id = j.id
       WHERE j.task_id = ANY($1) AND j.finished_at IS NOT NULL ORDER BY j.id`,
      [ids],
    );
    const outcome = await pool.query<{ stage: string; blocked: boolean; n: number }>(
      `SELECT stage, blocked_at IS NOT NULL AS blocked, count(*)::int AS n FROM tasks WHERE id = ANY($1) GROUP BY 1, 2 ORDER BY 1`,
      [ids],
    );
    const stages = ['analysis', 'implementation', 'review', 'merge'];
    const overhead = (rs: typeof rows.rows) => rs.map((r) => Number(r.job_ms) - Number(r.agent_ms ?? 0));
    const tableRows: string[][] = [];
    for (const st of stages) {
      const rs = rows.rows.filter((r) => r.stage === st);
      tableRows.push(latencyRow(`${st}: overhead`, overhead(rs)));
      if (st !== 'merge') tableRows.push(latencyRow(`  ${st}: agent run (subtracted)`, rs.map((r) => Number(r.agent_ms ?? 0))));
    }
    tableRows.push(latencyRow('**all stage jobs: overhead**', overhead(rows.rows)));
    return [
      {
        title: 'overhead — per stage job, orchestration time outside the agent (1 worker, 1 slot)',
        header: LATENCY_HEADER,
        rows: tableRows,
        notes: [
          `${tasks} tasks × 4 stage jobs (no deploy command: merge → done). Outcome: ${outcome.rows.map((o) => `${o.n} ${o.stage}${o.blocked ? ' (blocked)' : ''}`).join(', ')}.`,
          'overhead = (jobs.finished_at − jobs.started_at) − (agent_runs.finished_at − agent_runs.started_at): claim → worktree → spawn, and exit → artefacts → push/PR → gate → finalize (the next job is enqueued in the finalize transaction).',
          'merge has no agent run: its figure is the whole merge job (update check, local-forge merge, push to base, branch/worktree cleanup).',
        ],
      },
    ];
  } finally {
    await orch.close();
  }
}
