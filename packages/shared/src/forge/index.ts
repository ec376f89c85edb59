/** Which forge serves a project: Gitea when the project names a Gitea repo, else local. */
import path from 'node:path';
import type { Config } from '../runtime/config.ts';
import type { DbOrTx } from '../db/client.ts';
import type { Project } from '../db/types.ts';
import { createLocalForge } from './local.ts';
import { createGiteaForge } from './gitea.ts';
import type { Forge } from './types.ts';

export function createForgeResolver(db: DbOrTx, config: Config): (project: Project) => Forge {
  const cache = new Map<number, Forge>();
  return (project) => {
    let forge = cache.get(project.id);
    if (!forge) {
      if (project.gitea_owner && project.gitea_repo) {
        if (!config.gitea) throw new Error(`project ${project.slug} uses Gitea but GITEA_BASE_URL/GITEA_TOKEN are not set`);
        forge = createGiteaForge({
          baseUrl: config.gitea.baseUrl,
          token: config.gitea.token,
          owner: project.gitea_owner,
          repo: project.gitea_repo,
          baseBranch: project.base_branch,
          remoteUrl: project.repo_url,
        });
      } else {
        forge = createLocalForge({
          db,
          projectId: project.id,
          remoteUrl: project.repo_url,
          baseBranch: project.base_branch,
          scratchRoot: path.join(config.worktreeRoot, project.slug, 'scratch'),
        });
      }
      cache.set(project.id, forge);
    }
    return forge;
  };
}
