/** Registering a project: validated input, a reachable remote with its base branch. */
import path from 'node:path';
import { z } from 'zod';
import type { DbOrTx } from '../db/client.ts';
import { getProjectBySlug, insertProject } from '../db/queries/projects.ts';
import { CLAUDE_PERMISSION_MODES, CODEX_SANDBOXES, type Project } from '../db/types.ts';
import { OrchError } from '../runtime/errors.ts';
import { git } from '../host/git.ts';

export const projectInputSchema = z
  .object({
    slug: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'lowercase letters, digits, - and _ (max 63)'),
    repo: z.string().min(1).max(2000),
    base: z.string().min(1).max(200).regex(/^[A-Za-z0-9._/-]+$/, 'a branch name').default('main'),
    gitea: z.string().regex(/^[^/\s]+\/[^/\s]+$/, 'owner/repo').optional(),
    plane_project: z.string().min(1).max(200).optional(),
    test_cmd: z.string().min(1).max(4000).optional(),
    deploy_cmd: z.string().min(1).max(4000).optional(),
    serial: z.boolean().default(false),
    max_concurrency: z.number().int().min(1).max(1000).default(2),
    /** the deploy command runs in the sandbox (default); false: on the host, with its network and files */
    sandbox_deploy: z.boolean().default(true),
    codex_sandbox: z.enum(CODEX_SANDBOXES).optional(),
    claude_permission_mode: z.enum(CLAUDE_PERMISSION_MODES).optional(),
  })
  .strict();

export type ProjectInput = z.input<typeof projectInputSchema>;

export async function addProject(db: DbOrTx, input: ProjectInput, opts: { verifyRemote?: boolean } = {}): Promise<Project> {
  const parsed = projectInputSchema.safeParse(input);
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    throw new OrchError('invalid_request', `${i.path.join('.') || 'project'}: ${i.message}`);
  }
  const p = parsed.data;
  if (await getProjectBySlug(db, p.slug)) throw new OrchError('conflict', `project ${p.slug} already exists`);
  // A plain path is made absolute: workers run from other directories.
  const repo = /^[a-z][a-z0-9+.-]*:\/\//i.test(p.repo) || /^[^/]+@[^:]+:/.test(p.repo) ? p.repo : path.resolve(p.repo);
  if (opts.verifyRemote !== false) {
    const r = await git(['ls-remote', '--heads', repo, `refs/heads/${p.base}`], { allowFail: true });
    if (r.exitCode !== 0) throw new OrchError('invalid_request', `repo ${p.repo} is not a reachable git repository`);
    if (!r.stdout.trim()) throw new OrchError('invalid_request', `repo ${p.repo} has no branch ${p.base}`);
  }
  const [owner, name] = p.gitea ? p.gitea.split('/') : [null, null];
  return insertProject(db, {
    slug: p.slug,
    repo_url: repo,
    base_branch: p.base,
    gitea_owner: owner,
    gitea_repo: name,
    plane_project_id: p.plane_project ?? null,
    test_command: p.test_cmd ?? null,
    deploy_command: p.deploy_cmd ?? null,
    serial: p.serial,
    max_concurrency: p.max_concurrency,
    sandbox_deploy: p.sandbox_deploy,
    codex_sandbox: p.codex_sandbox ?? null,
    claude_permission_mode: p.claude_permission_mode ?? null,
  });
}
