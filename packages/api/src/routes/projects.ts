import { Hono } from 'hono';
import { listProjects } from '@orch/shared/db/queries/projects';
import { addProject, projectInputSchema } from '@orch/shared/pipeline/projects';
import type { ApiDeps } from '../deps.ts';
import { jsonBody } from '../validate.ts';

export function projectRoutes(d: ApiDeps) {
  return new Hono()
    .get('/', async (c) => c.json({ projects: await listProjects(d.db) }))
    .post('/', async (c) => {
      const input = await jsonBody(c, projectInputSchema);
      const project = await addProject(d.db, input);
      d.log.info({ project: project.slug }, 'project added');
      return c.json({ project }, 201);
    });
}
