import type { DbOrTx } from '../client.ts';
import type { NewProject, Project } from '../types.ts';

export async function insertProject(db: DbOrTx, p: NewProject): Promise<Project> {
  return db.insertInto('projects').values(p).returningAll().executeTakeFirstOrThrow();
}

export async function getProject(db: DbOrTx, id: number): Promise<Project | undefined> {
  return db.selectFrom('projects').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function getProjectBySlug(db: DbOrTx, slug: string): Promise<Project | undefined> {
  return db.selectFrom('projects').selectAll().where('slug', '=', slug).executeTakeFirst();
}

export async function getProjectByPlaneId(db: DbOrTx, planeProjectId: string): Promise<Project | undefined> {
  return db.selectFrom('projects').selectAll().where('plane_project_id', '=', planeProjectId).executeTakeFirst();
}

export async function listProjects(db: DbOrTx): Promise<Project[]> {
  return db.selectFrom('projects').selectAll().orderBy('id').execute();
}

/** Row lock on the project: serializes serial-gate decisions of one project. */
export async function lockProject(db: DbOrTx, id: number): Promise<Project | undefined> {
  return db.selectFrom('projects').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
}
