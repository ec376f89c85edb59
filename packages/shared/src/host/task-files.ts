/**
 * A task's files on this host, all of them caches: its worktree (with its local branch in the
 * project's mirror) and the run dirs of its jobs (`runs/<task>/<job>`: the rendered prompt and
 * `ORCH_ARTEFACT_DIR`, whose files are copied into `artefacts` when the agent exits). The
 * remote branch and the database are the truth, so once a task is terminal every one of them
 * goes: by the worker that finished it, by the cancel, or by a janitor on this host.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { removeTaskWorktree } from './git.ts';

export function taskRunsDir(root: string, projectSlug: string, taskId: number): string {
  return path.join(root, projectSlug, 'runs', String(taskId));
}

export function jobRunDir(root: string, projectSlug: string, taskId: number, jobId: number): string {
  return path.join(taskRunsDir(root, projectSlug, taskId), String(jobId));
}

/** Remove the worktree, the mirror's local branch and the run dirs of a task. Idempotent. */
export async function removeTaskFiles(root: string, projectSlug: string, taskId: number): Promise<void> {
  await removeTaskWorktree(root, projectSlug, taskId);
  await fs.rm(taskRunsDir(root, projectSlug, taskId), { recursive: true, force: true });
}

/** Ids of the tasks that have a worktree or run dirs under this host's root, for one project. */
export async function taskIdsWithFiles(root: string, projectSlug: string): Promise<number[]> {
  const ids = new Set<number>();
  for (const kind of ['worktrees', 'runs']) {
    for (const name of await fs.readdir(path.join(root, projectSlug, kind)).catch(() => [] as string[])) {
      if (/^\d+$/.test(name)) ids.add(Number(name));
    }
  }
  return [...ids];
}
