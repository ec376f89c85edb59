/**
 * The deploy step: the project's deploy command (`sh -c`) in a detached worktree at base, inside
 * the critical window — irreversible, so a cancel waits for it and its true exit code is
 * recorded (agent_runs, agent `deploy`).
 */
import { enterCriticalWindow, leaveCriticalWindow } from '@orch/shared/db/queries/tasks';
import { prepareWorktree, worktreePath } from '@orch/shared/host/git';
import { StepStopped, type Step } from '../job-handle.ts';
import { contractEnv, jobDirs, makeJobDirs, runStepProcess } from './process.ts';

export const deployStep: Step = async (ctx, rj, s) => {
  const { svc } = ctx;
  const { task, project, repo, log } = s;
  const job = rj.job;
  const wt = worktreePath(svc.config.worktreeRoot, project.slug, task.id);
  await prepareWorktree(repo, wt, { branch: project.base_branch, base: project.base_branch, startAt: 'base', detach: true });
  rj.checkpoint();
  // The deploy command is irreversible: enter the critical window, or stop if a cancel came first.
  rj.critical = true;
  if (!(await enterCriticalWindow(svc.db, task.id))) {
    rj.critical = false;
    throw new StepStopped('cancel');
  }
  const dirs = jobDirs(ctx, project, job);
  await makeJobDirs(dirs);
  try {
    await runStepProcess(
      ctx,
      rj,
      {
        kind: 'deploy',
        agentName: 'deploy',
        file: project.deploy_command!,
        args: [],
        shell: true,
        cwd: wt,
        env: contractEnv(ctx, job, dirs, {}),
        files: { repo: wt, inputs: [repo.mirror], writable: [dirs.artefactDir, dirs.home, dirs.tmp] },
        sandboxed: project.sandbox_deploy,
        parser: null,
      },
      log,
    );
  } finally {
    await leaveCriticalWindow(svc.db, task.id);
    rj.critical = false;
  }
  return { criticalStepRan: true };
};
