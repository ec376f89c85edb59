import { createRoute, z } from '@hono/zod-openapi';
import { listProjects } from '@orch/shared/db/queries/projects';
import { addProject, projectInputSchema } from '@orch/shared/pipeline/projects';
import type { ApiDeps } from '../deps.ts';
import { AUTH_ERRORS, BODY_ERRORS, errors, INTERNAL_ERROR, json, router } from '../router.ts';
import { ProjectSchema } from '../schemas.ts';

const list = createRoute({
  method: 'get',
  path: '/',
  summary: 'List projects',
  responses: { 200: json(z.strictObject({ projects: z.array(ProjectSchema) }), 'projects'), ...errors(INTERNAL_ERROR) },
});

const add = createRoute({
  method: 'post',
  path: '/',
  summary: 'Register a project',
  description: 'The repository must be reachable and have the base branch (`git ls-remote`).',
  security: [{ bearer: [] }],
  request: { body: { required: true, content: { 'application/json': { schema: projectInputSchema.meta({ id: 'ProjectInput' }) } } } },
  responses: {
    201: json(z.strictObject({ project: ProjectSchema }), 'created'),
    ...errors(BODY_ERRORS, { 400: 'unreachable repository, or no such base branch' }, AUTH_ERRORS, { 409: 'slug taken' }, INTERNAL_ERROR),
  },
});

export function projectRoutes(d: ApiDeps) {
  return router()
    .openapi(list, async (c) => c.json({ projects: await listProjects(d.db) }, 200))
    .openapi(add, async (c) => {
      const project = await addProject(d.db, c.req.valid('json'));
      d.log.info({ project: project.slug }, 'project added');
      return c.json({ project }, 201);
    });
}
