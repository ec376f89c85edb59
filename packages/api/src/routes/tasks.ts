import { createRoute, z } from '@hono/zod-openapi';
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
import { AUTH_ERRORS, BODY_ERRORS, errors, INTERNAL_ERROR, json, router } from '../router.ts';
import { AgentRunSchema, ArtefactSchema, JobSchema, TaskEventSchema, TaskSchema } from '../schemas.ts';

/** The body of `POST /tasks`. */
const newTaskSchema = z
  .strictObject({
    project: z.string().min(1).max(63).openapi({ description: 'project slug' }),
    title: z.string().trim().min(1).max(500),
    body: z.string().max(100_000).default(''),
    depends_on: z.array(z.number().int().positive()).max(100).default([]).openapi({ description: 'task ids that must be done or cancelled first' }),
  })
  .openapi('NewTask');

const taskId = z.object({
  id: z
    .string()
    .regex(/^[1-9]\d{0,14}$/, 'must be a positive integer')
    .transform(Number)
    .openapi({ param: { name: 'id', in: 'path', description: 'task id' }, type: 'integer', minimum: 1 }),
});
const bearer = [{ bearer: [] }];
const taskBody = z.strictObject({ task: TaskSchema });

const list = createRoute({
  method: 'get',
  path: '/',
  summary: 'List tasks, newest first',
  request: {
    query: z.object({
      stage: z.enum(TASK_STAGES as readonly [TaskStage, ...TaskStage[]], { error: `must be one of ${TASK_STAGES.join(', ')}` }).optional(),
      project: z.string().min(1).max(63).optional().openapi({ description: 'project slug' }),
      limit: z.coerce.number().int().min(1).max(1000).default(200),
    }),
  },
  responses: {
    200: json(z.strictObject({ tasks: z.array(TaskSchema) }), 'tasks'),
    ...errors({ 400: 'bad query', 404: 'unknown project' }, INTERNAL_ERROR),
  },
});

const create = createRoute({
  method: 'post',
  path: '/',
  summary: 'Create a task without Plane (local tracker)',
  security: bearer,
  request: { body: { required: true, content: { 'application/json': { schema: newTaskSchema } } } },
  responses: {
    201: json(taskBody, 'created; its analysis job is queued (or it waits for its dependencies)'),
    ...errors(BODY_ERRORS, { 400: 'unknown dependency, or NUL characters' }, AUTH_ERRORS, { 404: 'unknown project' }, INTERNAL_ERROR),
  },
});

const show = createRoute({
  method: 'get',
  path: '/{id}',
  summary: 'One task with its jobs, agent runs, events and artefacts',
  request: { params: taskId },
  responses: {
    200: json(
      z.strictObject({
        task: TaskSchema,
        jobs: z.array(JobSchema),
        runs: z.array(AgentRunSchema),
        events: z.array(TaskEventSchema),
        artefacts: z.array(ArtefactSchema),
      }),
      'the task',
    ),
    ...errors({ 400: 'bad id', 404: 'unknown task' }, INTERNAL_ERROR),
  },
});

const stop = createRoute({
  method: 'post',
  path: '/{id}/stop',
  summary: 'STOP: cancel everything about the task (same as Plane STOP)',
  security: bearer,
  request: { params: taskId },
  responses: {
    202: json(z.strictObject({ status: z.literal('requested'), task: TaskSchema }), 'cancel requested; it completes within seconds'),
    200: json(z.strictObject({ status: z.enum(['already_requested', 'already_cancelled', 'already_done']), task: TaskSchema }), 'nothing to do'),
    ...errors({ 400: 'bad id' }, AUTH_ERRORS, { 404: 'unknown task', 409: 'stop_disabled (ORCH_STOP_STATUS_ENABLED=false)' }, INTERNAL_ERROR),
  },
});

const retry = createRoute({
  method: 'post',
  path: '/{id}/retry',
  summary: 'Requeue a blocked task in its stage (attempt 1)',
  security: bearer,
  request: { params: taskId },
  responses: {
    202: json(taskBody, 'requeued'),
    ...errors(
      { 400: 'bad id' },
      AUTH_ERRORS,
      { 404: 'unknown task', 409: 'terminal, being cancelled, waiting, or a job is live' },
      INTERNAL_ERROR,
    ),
  },
});

export function taskRoutes(d: ApiDeps) {
  return router()
    .openapi(list, async (c) => {
      const { stage, project: projectSlug, limit } = c.req.valid('query');
      const project = projectSlug ? await getProjectBySlug(d.db, projectSlug) : undefined;
      if (projectSlug && !project) throw new OrchError('not_found', `unknown project: ${projectSlug}`);
      return c.json({ tasks: await listTasks(d.db, { stage, projectId: project?.id, limit }) }, 200);
    })
    .openapi(create, async (c) => {
      const input = c.req.valid('json');
      const task = await createTask(d, { project: input.project, title: input.title, body: input.body, dependsOn: input.depends_on }, 'api');
      d.log.info({ taskId: task.id, project: input.project }, 'task created');
      return c.json({ task }, 201);
    })
    .openapi(show, async (c) => {
      const { id } = c.req.valid('param');
      const task = await getTask(d.db, id);
      if (!task) throw new OrchError('not_found', `unknown task: ${id}`);
      const [jobs, runs, events, artefacts] = await Promise.all([
        listTaskJobs(d.db, id),
        listTaskRuns(d.db, id),
        listEvents(d.db, id),
        listArtefacts(d.db, id),
      ]);
      return c.json({ task, jobs, runs, events, artefacts }, 200);
    })
    .openapi(stop, async (c) => {
      const { id } = c.req.valid('param');
      const r = await requestCancel(d, id, 'api', 'stop');
      d.log.info({ taskId: id, status: r.status }, 'stop requested');
      return r.status === 'requested' ? c.json({ status: r.status, task: r.task }, 202) : c.json({ status: r.status, task: r.task }, 200);
    })
    .openapi(retry, async (c) => {
      const { id } = c.req.valid('param');
      const task = await retryTask(d, id, 'api');
      return c.json({ task }, 202);
    });
}
