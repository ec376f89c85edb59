/**
 * The pipeline as data. `STAGE_TRANSITIONS` holds the only forward edges; `isTerminal` is the
 * one predicate every "is this task finished?" question goes through (serial gate,
 * dependencies, the stage sink, the requeue guards of worker and reaper).
 */
export const STAGES = ['analysis', 'implementation', 'review', 'merge', 'deploy', 'done'] as const;
export type Stage = (typeof STAGES)[number];
export type TaskStage = Stage | 'cancelled';
export const TASK_STAGES: readonly TaskStage[] = [...STAGES, 'cancelled'];

/** Stages whose job is a step (agent, forge merge, deploy command); `done` has no job. */
export type WorkStage = Exclude<Stage, 'done'>;
export const WORK_STAGES: readonly WorkStage[] = ['analysis', 'implementation', 'review', 'merge', 'deploy'];

export const STAGE_TRANSITIONS: Readonly<Record<TaskStage, readonly TaskStage[]>> = {
  analysis: ['implementation'],
  implementation: ['review'],
  // review may send the task back (bounded by ORCH_MAX_REVIEW_ROUNDS)
  review: ['merge', 'implementation'],
  // a merge conflict sends the task back to implementation
  merge: ['deploy', 'done', 'implementation'],
  deploy: ['done'],
  done: [],
  cancelled: [],
};

export const TERMINAL_STAGES: ReadonlySet<TaskStage> = new Set<TaskStage>(['done', 'cancelled']);

export function isTerminal(stage: string): boolean {
  return TERMINAL_STAGES.has(stage as TaskStage);
}

export function isStage(s: string): s is TaskStage {
  return (TASK_STAGES as readonly string[]).includes(s);
}

export function canTransition(from: TaskStage, to: TaskStage): boolean {
  return STAGE_TRANSITIONS[from].includes(to);
}

/** The stage after `stage` on the forward path; deploy is skipped without a deploy command. */
export function nextStage(stage: WorkStage, project: { deploy_command: string | null }): Stage {
  switch (stage) {
    case 'analysis':
      return 'implementation';
    case 'implementation':
      return 'review';
    case 'review':
      return 'merge';
    case 'merge':
      return project.deploy_command ? 'deploy' : 'done';
    case 'deploy':
      return 'done';
  }
}

/** Stages whose step is an agent run (the branch is pushed after each). */
export const AGENT_STAGES: ReadonlySet<Stage> = new Set<Stage>(['analysis', 'implementation', 'review']);

/** A stage after analysis: what the serial gate of a project restricts. */
export function isPastAnalysis(stage: string): boolean {
  return stage !== 'analysis' && !isTerminal(stage);
}

export const JOB_STATUSES = ['queued', 'running', 'done', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const FINISHED_JOB_STATUSES: ReadonlySet<JobStatus> = new Set<JobStatus>(['done', 'failed', 'cancelled']);
export function isLiveJobStatus(s: string): boolean {
  return s === 'queued' || s === 'running';
}

/** Backoff before retry `attempt + 1`: base · 2^(attempt−1), capped at 5 minutes. */
export function retryBackoffS(baseS: number, attempt: number): number {
  return Math.min(300, baseS * 2 ** Math.max(0, attempt - 1));
}

/** The feature branch of a task: `orch/<id>-<slug of title, ≤ 40 chars>`. */
export function branchName(taskId: number, title: string): string {
  const slug = title
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40)
    .replace(/-+$/g, '');
  return `orch/${taskId}-${slug || 'task'}`;
}

/** Tombstone of a cancelled task's plane_issue_id: `<uuid>~cancelled~<task_id>`. */
export function tombstoneIssueId(issueId: string, taskId: number): string {
  return `${issueId}~cancelled~${taskId}`;
}

/** The original Plane issue id of a (possibly tombstoned) plane_issue_id. */
export function originalIssueId(planeIssueId: string): string {
  const i = planeIssueId.indexOf('~');
  return i === -1 ? planeIssueId : planeIssueId.slice(0, i);
}

export function isTombstoned(planeIssueId: string | null): boolean {
  return planeIssueId !== null && planeIssueId.includes('~cancelled~');
}
