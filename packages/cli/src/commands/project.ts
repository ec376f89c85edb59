/** `orch project add | list`. */
import { listProjects } from '@orch/shared/db/queries/projects';
import { addProject, type ProjectInput } from '@orch/shared/pipeline/projects';
import { CliError, withDb } from '../context.ts';
import { JSON_OPTION, print, type GroupSpec } from '../registry.ts';

const str = (v: unknown) => (v === undefined ? undefined : String(v));

export const projectCommand: GroupSpec = {
  summary: 'manage projects: add | list',
  subcommands: {
    add: {
      summary: 'register a project (a repository the workers can fetch and push)',
      usage: [
        'project add --slug S --repo <git url or path> [--base main] [--gitea owner/repo] [--plane-project ID]\n' +
          '                   [--test-cmd CMD] [--deploy-cmd CMD] [--serial] [--max-concurrency N]\n' +
          '                   [--unsandboxed-deploy] [--codex-sandbox MODE] [--claude-permission-mode MODE] [--json]',
      ],
      options: {
        slug: { type: 'string', help: 'project slug: lowercase letters, digits, - and _' },
        repo: { type: 'string', help: 'git URL or path the workers can fetch and push' },
        base: { type: 'string', help: 'base branch (default: main)' },
        gitea: { type: 'string', help: 'owner/repo on Gitea (without it the forge is local)' },
        'plane-project': { type: 'string', help: 'Plane project UUID whose issues feed this project' },
        'test-cmd': { type: 'string', help: 'command run (sh -c) in the worktree by the implementation gate' },
        'deploy-cmd': { type: 'string', help: 'command run (sh -c) by the deploy stage; without it deploy is skipped' },
        serial: { type: 'boolean', help: 'one task past analysis at a time, in creation order' },
        'max-concurrency': { type: 'string', help: "cap on the project's running jobs (default 2)" },
        'unsandboxed-deploy': { type: 'boolean', help: 'run the deploy command on the host, outside the sandbox (agents and tests always run in it)' },
        'codex-sandbox': { type: 'string', help: "codex's own --sandbox: read-only | workspace-write | danger-full-access (default: danger-full-access inside orch's sandbox, workspace-write without it)" },
        'claude-permission-mode': { type: 'string', help: "claude's --permission-mode (default: acceptEdits)" },
        json: JSON_OPTION,
      },
      run: async ({ values: v }) => {
        if (!v.slug || !v.repo) throw new CliError('project add needs --slug and --repo', 2);
        const maxConc = v['max-concurrency'] !== undefined ? Number(v['max-concurrency']) : undefined;
        if (maxConc !== undefined && !Number.isInteger(maxConc)) throw new CliError('--max-concurrency must be an integer', 2);
        return withDb(async (db) => {
          const p = await addProject(db, {
            slug: String(v.slug),
            repo: String(v.repo),
            base: str(v.base),
            gitea: str(v.gitea),
            plane_project: str(v['plane-project']),
            test_cmd: str(v['test-cmd']),
            deploy_cmd: str(v['deploy-cmd']),
            serial: Boolean(v.serial),
            max_concurrency: maxConc,
            sandbox_deploy: !v['unsandboxed-deploy'],
            codex_sandbox: str(v['codex-sandbox']) as ProjectInput['codex_sandbox'],
            claude_permission_mode: str(v['claude-permission-mode']) as ProjectInput['claude_permission_mode'],
          });
          print(Boolean(v.json), { project: p }, () => `project ${p.slug} added (id ${p.id})\n`);
          return 0;
        });
      },
    },
    list: {
      summary: 'list projects',
      usage: ['project list [--json]'],
      options: { json: JSON_OPTION },
      run: ({ values: v }) =>
        withDb(async (db) => {
          const projects = await listProjects(db);
          print(Boolean(v.json), { projects }, () =>
            projects.map((p) => `${p.slug}\t${p.repo_url}\tbase=${p.base_branch}${p.serial ? '\tserial' : ''}\tmax=${p.max_concurrency}\n`).join('') || 'no projects\n',
          );
          return 0;
        }),
    },
  },
};
