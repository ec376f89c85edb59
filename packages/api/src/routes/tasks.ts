import { Hono } from 'hono';
import { z } from 'zod';
import { requestCancel } from '@orch/shared/cancel';
import { listTaskRuns } from '@orch/shared/db/queries/agent-runs';
import { listArtefacts } from '@orch/shared/db/queries/artefacts';
import { listEvents } from '@orch/shared/db/queries/events';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getProjectBySlug } from '@orch/shared/db/queries/projects';
import { getTask, listTasks } from '@orch/shared/db/queries/tasks';
import { OrchError } from '@orch/shared/runtime/errors';
import { createTask, retryTask } from '@orch/shared/pipeline/tasks';
import { TASK_STAGES, type TaskStage } from '@orch/shared/stages';
import type { ApiDeps } from '../deps.ts';
import { idParam, jsonBody } from '../validate.ts';

/** The body of `POST /tasks`; also the source of its OpenAPI schema. */
export const newTaskSchema = z
  .object({
    project: z.string().min(1).max(63),
    title: z.string().trim().min(1).max(500),
    body: z.string().max(100_000).default(''),
    depends_on: z.array(z.number().int().positive()).max(100).default([]),
  })
  .strict();

export function taskRoutes(d: ApiDeps) {
  return new Hono()
    .get('/', async (c) => {
      const stage = c.req.query('stage');
      const projectSlug = c.req.query('project');
      if (stage !== undefined && !TASK_STAGES.includes(stage as TaskStage))
        throw new OrchError('invalid_request', `stage must be one of ${TASK_STAGES.join(', ')}`);
      const project = projectSlug ? await getProjectBySlug(d.db, projectSlug) : undefined;
      if (projectSlug && !project) throw new OrchError('not_found', `unknown project: ${projectSlug}`);
      const limitRaw = c.req.query('limit');
      const limit = limitRaw && /^\d+$/.test(limitRaw) ? Math.min(Number(limitRaw), 1000) : 200;
      return c.json({ tasks: await listTasks(d.db, { stage: stage as TaskStage | undefined, projectId: project?.id, limit }) });
    })
    .post('/', async (c) => {
      const input = await jsonBody(c, newTaskSchema);
      const task = await createTask(d, { project: input.project, title: input.title, body: input.body, dependsOn: input.depends_on }, 'api');
      d.log.info({ taskId: task.id, project: input.project }, 'task created');
      return c.json({ task }, 201);
    })
    .get('/:id', async (c) => {
      const id = idParam(c);
      const task = await getTask(d.db, id);
      if (!task) throw new OrchError('not_found', `unknown task: ${id}`);
      const [jobs, runs, events, artefacts] = await Promise.all([
        listTaskJobs(d.db, id),
        listTaskRuns(d.db, id),
        listEvents(d.db, id),
        listArtefacts(d.db, id),
      ]);
      return c.json({ task, jobs, runs, events, artefacts });
    })
    .post('/:id/stop', async (c) => {
      const id = idParam(c);
      const r = await requestCancel(d, id, 'api', 'stop');
      d.log.info({ taskId: id, status: r.status }, 'stop requested');
      return c.json({ status: r.status, task: r.task }, r.status === 'requested' ? 202 : 200);
    })
    .post('/:id/retry', async (c) => {
      const id = idParam(c);
      const task = await retryTask(d, id, 'api');
      return c.json({ task }, 202);
    });
}
