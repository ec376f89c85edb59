/**
 * The agent step (analysis, implementation, review): the task's worktree at the remote feature
 * branch, the stage prompt rendered into the job's run dir, the agent in its own process group,
 * its artefacts stored, the project's test command after an implementation, then the push (and
 * the pull request once there is an implementation).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { insertArtefact, latestStageArtefact } from '@orch/shared/db/queries/artefacts';
import { appendEvent } from '@orch/shared/db/queries/events';
import { markTestStarted, setTestExitCode } from '@orch/shared/db/queries/jobs';
import { prepareWorktree, pushBranch, worktreePath } from '@orch/shared/host/git';
import { pullRequestBody, recordPullRequest } from '@orch/shared/pipeline/forge-report';
import { renderPrompt } from '@orch/shared/prompts';
import type { Step } from '../job-handle.ts';
import { contractEnv, jobDirs, runStepProcess } from './process.ts';

export const agentStep: Step = async (ctx, rj, s) => {
  const { svc } = ctx;
  const { task, project, forge, repo, log } = s;
  const job = rj.job;
  const branch = task.branch!;
  const wt = worktreePath(svc.config.worktreeRoot, project.slug, task.id);
  await prepareWorktree(repo, wt, { branch, base: project.base_branch });
  rj.checkpoint();

  const dirs = jobDirs(ctx, project, job);
  await fs.rm(dirs.artefactDir, { recursive: true, force: true });
  await fs.mkdir(dirs.artefactDir, { recursive: true });
  const analysis = await latestStageArtefact(svc.db, task.id, 'analysis');
  const review = await latestStageArtefact(svc.db, task.id, 'review');
  const prompt = await renderPrompt(job.stage, {
    task_id: task.id,
    project: project.slug,
    title: task.title,
    body: task.body,
    attempt: job.attempt,
    branch,
    base: project.base_branch,
    artefact_dir: dirs.artefactDir,
    analysis: analysis?.content ?? '(none)',
    review_feedback: task.review_rounds > 0 && review ? `The last review asked for changes:\n${review.content}` : '',
    test_hint: project.test_command ? `The tests (\`${project.test_command}\`) must pass.` : '',
  });
  await fs.writeFile(dirs.promptFile, prompt);

  const inv = ctx.agent.invocation({ taskId: task.id, stage: job.stage, attempt: job.attempt, worktree: wt, promptFile: dirs.promptFile, artefactDir: dirs.artefactDir });
  const exit = await runStepProcess(
    ctx,
    rj,
    { agentName: ctx.agent.name, file: inv.file, args: inv.args, shell: inv.shell, cwd: wt, env: contractEnv(job, dirs, inv.env), parser: inv.parser, record: true },
    log,
  );
  rj.checkpoint();

  // Artefacts first: they are the gate's input and outlive everything else.
  for (const name of await fs.readdir(dirs.artefactDir).catch(() => [] as string[])) {
    if (!name.endsWith('.md')) continue;
    const content = await fs.readFile(path.join(dirs.artefactDir, name), 'utf8');
    await insertArtefact(svc.db, { taskId: task.id, jobId: job.id, stage: job.stage, name, content });
  }
  if (exit.exitCode !== 0) return {};

  if (job.stage === 'implementation' && project.test_command) {
    await markTestStarted(svc.db, job.id);
    const test = await runStepProcess(
      ctx,
      rj,
      { agentName: 'test', file: project.test_command, args: [], shell: true, cwd: wt, env: contractEnv(job, dirs, {}), parser: null, record: false },
      log,
    );
    rj.checkpoint();
    await setTestExitCode(svc.db, job.id, test.exitCode ?? -1);
    await insertArtefact(svc.db, { taskId: task.id, jobId: job.id, stage: job.stage, name: 'test.log', content: test.tail });
  }

  const sha = await pushBranch(wt, branch);
  await appendEvent(svc.db, { taskId: task.id, jobId: job.id, kind: 'branch_pushed', actor: `worker:${ctx.workerId}`, data: { branch, sha } });
  if (job.stage === 'implementation') {
    const pr = await forge.ensurePullRequest({ head: branch, base: project.base_branch, title: task.title, body: pullRequestBody(task, svc.config.api), taskId: task.id });
    await recordPullRequest(svc.db, svc.config.api, task, project, pr, { stage: job.stage, sha, analysis: analysis?.content });
  }
  return {};
};
