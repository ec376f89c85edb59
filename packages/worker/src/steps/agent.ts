/**
 * The agent step (analysis, implementation, review): the task's worktree at the remote feature
 * branch, the stage prompt rendered into the job's run dir (the repository's own template when it
 * has one, with why the previous attempt failed), the agent in its own process group — resuming
 * the stage's previous session on this host when ORCH_AGENT_RESUME is on — its artefacts stored,
 * the project's test command after an implementation, then the push (and the pull request once
 * there is an implementation).
 */
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { AgentContext } from '@orch/shared/agents/types';
import { getJobRun, resumableSession, type ResumableSession } from '@orch/shared/db/queries/agent-runs';
import { getJobArtefact, insertArtefact, latestStageArtefact } from '@orch/shared/db/queries/artefacts';
import { appendEvent } from '@orch/shared/db/queries/events';
import { markTestStarted, previousFinishedJob, setTestExitCode } from '@orch/shared/db/queries/jobs';
import type { Job } from '@orch/shared/db/types';
import { prepareWorktree, pushBranch, worktreePath } from '@orch/shared/host/git';
import type { StepFiles } from '@orch/shared/host/isolation';
import { pullRequestBody, recordPullRequest } from '@orch/shared/pipeline/forge-report';
import { previousFailureSection, renderPrompt, type PreviousFailure } from '@orch/shared/prompts';
import type { Logger } from '@orch/shared/runtime/logger';
import type { Services } from '@orch/shared/runtime/services';
import type { Step } from '../job-handle.ts';
import { contractEnv, jobDirs, makeJobDirs, runStepProcess } from './process.ts';

export const agentStep: Step = async (ctx, rj, s) => {
  const { svc } = ctx;
  const { task, project, forge, repo, log } = s;
  const job = rj.job;
  const actor = `worker:${ctx.workerId}`;
  const branch = task.branch!;
  const wt = worktreePath(svc.config.worktreeRoot, project.slug, task.id);
  const prepared = await prepareWorktree(repo, wt, { branch, base: project.base_branch });
  rj.checkpoint();

  const dirs = jobDirs(ctx, project, job);
  await makeJobDirs(dirs);
  const analysis = await latestStageArtefact(svc.db, task.id, 'analysis');
  const review = await latestStageArtefact(svc.db, task.id, 'review');
  const previous = await previousFailure(svc, job);
  const prompt = await renderPrompt(
    job.stage,
    {
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
      previous_failure: previousFailureSection(previous),
    },
    { repoDir: wt },
  );
  await fs.writeFile(dirs.promptFile, prompt.text);

  // A retry or a review round may continue the stage's last session on this host.
  const session: ResumableSession | null =
    svc.config.agent.resume && ctx.agent.resumable && (job.attempt > 1 || task.review_rounds > 0)
      ? await resumableSession(svc.db, { taskId: task.id, stage: job.stage, host: svc.config.hostId, agent: ctx.agent.name, beforeJobId: job.id })
      : null;
  const base: AgentContext = {
    taskId: task.id,
    stage: job.stage,
    attempt: job.attempt,
    worktree: wt,
    promptFile: dirs.promptFile,
    artefactDir: dirs.artefactDir,
    maxCostUsd: svc.config.agent.maxCostUsd,
    orchSandbox: ctx.isolation.sandbox === 'bwrap',
    codexSandbox: project.codex_sandbox,
    claudePermissionMode: project.claude_permission_mode,
  };
  let inv = ctx.agent.invocation(session ? { ...base, resumeSessionId: session.sessionId, resumeBaseline: session.baseline } : base);
  if (inv.home) await fs.mkdir(inv.home.dir, { recursive: true });
  // what the sandbox lets the agent see: its repository (and the mirror it borrows objects
  // from), the prompt; and write: the repository, its artefact dir, its HOME and TMPDIR, the CLI's home
  const files = (home: string | null): StepFiles => ({
    repo: wt,
    inputs: [repo.mirror, dirs.promptFile],
    writable: [dirs.artefactDir, dirs.home, dirs.tmp, ...(home ? [home] : [])],
  });
  await appendEvent(svc.db, {
    taskId: task.id,
    jobId: job.id,
    kind: 'agent_started',
    actor,
    reason: prompt.template,
    data: { agent: ctx.agent.name, template: prompt.template, resumes: inv.resumes, previous_failure: previous && previous.reason },
  });
  const runAgent = (run: Awaited<ReturnType<typeof getJobRun>> | null) =>
    runStepProcess(
      ctx,
      rj,
      {
        kind: 'agent',
        agentName: ctx.agent.name,
        file: inv.file,
        args: inv.args,
        shell: inv.shell,
        cwd: wt,
        env: contractEnv(ctx, job, dirs, inv.env, inv.passEnv),
        files: files(inv.home?.dir ?? null),
        sandboxed: true,
        parser: inv.parser,
        resumedSessionId: inv.resumes,
        loginHint: ctx.agent.loginHint(),
        run,
        keepRunIf: inv.resumes ? (out) => ctx.agent.sessionMissing(out) : undefined,
      },
      log,
    );
  let exit = await runAgent(null);
  if (exit.keptRun) {
    // the session is gone (another host's home, a cleaned agent home): start fresh, and say so
    await appendEvent(svc.db, {
      taskId: task.id,
      jobId: job.id,
      kind: 'session_missing',
      actor,
      reason: 'started fresh',
      data: { session: inv.resumes, agent: ctx.agent.name },
    });
    inv = ctx.agent.invocation(base);
    exit = await runAgent(exit.keptRun);
  }
  rj.checkpoint();

  // Artefacts first: they are the gate's input and outlive everything else.
  for (const { name, content } of await readArtefacts(dirs.artefactDir, log)) {
    await insertArtefact(svc.db, { taskId: task.id, jobId: job.id, stage: job.stage, name, content });
  }
  if (exit.exitCode !== 0) return {};

  if (job.stage === 'implementation' && project.test_command) {
    await markTestStarted(svc.db, job.id);
    const test = await runStepProcess(
      ctx,
      rj,
      {
        kind: 'test',
        agentName: 'test',
        file: project.test_command,
        args: [],
        shell: true,
        cwd: wt,
        env: contractEnv(ctx, job, dirs, {}),
        files: files(null),
        sandboxed: true,
        parser: null,
      },
      log,
    );
    rj.checkpoint();
    await setTestExitCode(svc.db, job.id, test.exitCode ?? -1);
    await insertArtefact(svc.db, { taskId: task.id, jobId: job.id, stage: job.stage, name: 'test.log', content: test.tail });
  }

  // a branch the remote has, at the commit the agent started from: nothing moved, nothing to push
  const { sha, pushed } = await pushBranch(repo, wt, branch, task.id, { unlessAt: prepared.branchExists ? prepared.sha : undefined });
  if (pushed) await appendEvent(svc.db, { taskId: task.id, jobId: job.id, kind: 'branch_pushed', actor, data: { branch, sha } });
  else log.info({ branch, sha }, 'the agent made no commit: nothing to push');
  if (job.stage === 'implementation') {
    const pr = await forge.ensurePullRequest({ head: branch, base: project.base_branch, title: task.title, body: pullRequestBody(task, svc.config.api), taskId: task.id });
    await recordPullRequest(svc.db, svc.config.api, task, project, pr, { stage: job.stage, sha, analysis: analysis?.content });
  }
  return {};
};

/** Largest artefact read (a bigger file is cut, and says so). */
const ARTEFACT_MAX_BYTES = 1_048_576;

/**
 * The `.md` files the agent left in its artefact dir. Only regular files are read, never through
 * a symlink (O_NOFOLLOW): the directory is the agent's, and a link to one of the worker's files
 * would otherwise carry it into the database.
 */
async function readArtefacts(dir: string, log: Logger): Promise<Array<{ name: string; content: string }>> {
  const out: Array<{ name: string; content: string }> = [];
  for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
    if (!name.endsWith('.md')) continue;
    let fh: fs.FileHandle | null = null;
    try {
      fh = await fs.open(path.join(dir, name), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
      const st = await fh.stat();
      if (!st.isFile()) {
        log.warn({ artefact: name }, 'artefact is not a regular file; ignored');
        continue;
      }
      const buf = Buffer.alloc(Math.min(st.size, ARTEFACT_MAX_BYTES));
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      const text = buf.subarray(0, bytesRead).toString('utf8');
      out.push({ name, content: st.size > ARTEFACT_MAX_BYTES ? `${text}\n\n(cut at ${ARTEFACT_MAX_BYTES} bytes of ${st.size})` : text });
    } catch (err) {
      log.warn({ artefact: name, err }, 'artefact not read (a symlink, or unreadable); ignored');
    } finally {
      await fh?.close();
    }
  }
  return out;
}

/**
 * The attempt before this job, when it failed: this stage's previous attempt, or — for an
 * implementation after a merge conflict — the merge that sent the task back. Its words, the
 * test output of its attempt and its agent's last message.
 */
async function previousFailure(svc: Services, job: Job): Promise<PreviousFailure | null> {
  const prev = await previousFinishedJob(svc.db, job.task_id, job.id);
  if (!prev || prev.reason === null) return null;
  const sameStage = prev.stage === job.stage;
  const sentBack = prev.stage === 'merge' && job.stage === 'implementation' && job.attempt === 1;
  if (!sameStage && !sentBack) return null;
  const run = sameStage ? await getJobRun(svc.db, prev.id) : undefined;
  const testLog = /^tests_failed_/.test(prev.reason) ? await getJobArtefact(svc.db, prev.id, 'test.log') : undefined;
  return {
    stage: prev.stage,
    attempt: prev.attempt,
    reason: prev.reason,
    detail: prev.detail,
    testOutput: testLog?.content ?? null,
    lastMessage: run?.last_message ?? null,
  };
}
