/**
 * The stage graph is the one that runs: every stage write goes through `moveTaskStage`, which
 * refuses an edge STAGE_TRANSITIONS lacks — and writes nothing — while every edge it has works.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getTask, moveTaskStage } from '@orch/shared/db/queries/tasks';
import { createTask } from '@orch/shared/pipeline/tasks';
import { IllegalTransitionError, STAGE_TRANSITIONS, TASK_STAGES, canTransition, nextStage, sendBackTarget, type TaskStage } from '@orch/shared/stages';
import { startOrch, type Orch } from './support/harness.ts';

let orch: Orch;
beforeAll(async () => {
  orch = await startOrch();
});
afterAll(async () => orch?.close());

const pairs = TASK_STAGES.flatMap((from) => TASK_STAGES.map((to) => [from, to] as [TaskStage, TaskStage]));
const illegal = pairs.filter(([from, to]) => !canTransition(from, to));
const legal = pairs.filter(([from, to]) => canTransition(from, to));

async function taskIn(stage: TaskStage): Promise<number> {
  const t = await createTask(orch.rt.svc, { project: 'p', title: `in ${stage}` }, 'test');
  await sql`UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE task_id = ${t.id}`.execute(orch.rt.svc.db);
  await sql`UPDATE tasks SET stage = ${stage}, cancelled_at = CASE WHEN ${stage} = 'cancelled' THEN now() END WHERE id = ${t.id}`.execute(orch.rt.svc.db);
  return t.id;
}

describe('moveTaskStage', () => {
  it(`refuses each of the ${illegal.length} illegal edges and leaves the row untouched`, async () => {
    expect(illegal.length).toBeGreaterThan(30);
    for (const [from, to] of illegal) {
      const id = await taskIn(from);
      const before = (await getTask(orch.rt.svc.db, id))!;
      await expect(moveTaskStage(orch.rt.svc.db, id, from, to), `${from} → ${to}`).rejects.toBeInstanceOf(IllegalTransitionError);
      expect(await getTask(orch.rt.svc.db, id), `${from} → ${to}`).toEqual(before);
    }
  });

  it(`takes each of the ${legal.length} edges of the graph, as a compare-and-set on the current stage`, async () => {
    for (const [from, to] of legal) {
      const id = await taskIn(from);
      expect((await moveTaskStage(orch.rt.svc.db, id, from, to))?.stage, `${from} → ${to}`).toBe(to);
      // the task is no longer in `from`: the same move again loses
      if (!canTransition(to, to)) expect(await moveTaskStage(orch.rt.svc.db, id, from, to)).toBeNull();
    }
  });
});

describe('what the runtime derives from the graph', () => {
  it('nextStage follows the first edge, skipping deploy only where the graph has an edge past it', () => {
    expect(nextStage('analysis', { deploy_command: null })).toBe(STAGE_TRANSITIONS.analysis[0]);
    expect(nextStage('implementation', { deploy_command: null })).toBe('review');
    expect(nextStage('review', { deploy_command: null })).toBe('merge');
    expect(nextStage('merge', { deploy_command: 'x' })).toBe('deploy');
    expect(nextStage('merge', { deploy_command: null })).toBe('done');
    expect(nextStage('deploy', { deploy_command: 'x' })).toBe('done');
  });
  it('send-backs return to the earlier stage the graph names, and only review and merge have one', () => {
    expect(sendBackTarget('review')).toBe('implementation');
    expect(sendBackTarget('merge')).toBe('implementation');
    for (const s of ['analysis', 'implementation', 'deploy'] as const) expect(() => sendBackTarget(s)).toThrow(IllegalTransitionError);
  });
});
