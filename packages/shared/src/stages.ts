/**
 * The pipeline as data. `STAGE_TRANSITIONS` is the stage graph — the only edges a task's stage
 * may take — and everything else is derived from it: the forward path (`nextStage`, the first
 * edge of a stage), the send-back edge (`sendBackTarget`, the edge to an earlier stage), and the
 * check that every stage write goes through (`assertTransition`). `isTerminal` is the one
 * predicate every "is this task finished?" question goes through (serial gate, dependencies, the
 * stage sink, the requeue guards of worker and reaper); SQL asks it through
 * `db/queries/terminal.ts`, which is built from `TERMINAL_STAGES`.
 */
export const STAGES = ['analysis', 'implementation', 'review', 'merge', 'deploy', 'done'] as const;
export type Stage = (typeof STAGES)[number];
export type TaskStage = Stage | 'cancelled';
export const TASK_STAGES: readonly TaskStage[] = [...STAGES, 'cancelled'];

/** Stages whose job is a step (agent, forge merge, deploy command); `done` has no job. */
export type WorkStage = Exclude<Stage, 'done'>;

/**
 * The step each work stage runs: an agent, the forge's merge, or the deploy command. The
 * worker's runner picks the step from here; `WORK_STAGES` are its keys.
 */
export const STAGE_STEPS = {
  analysis: 'agent',
  implementation: 'agent',
  review: 'agent',
  merge: 'merge',
  deploy: 'deploy',
} as const satisfies Record<WorkStage, 'agent' | 'merge' | 'deploy'>;
export type StepKind = (typeof STAGE_STEPS)[WorkStage];
export const WORK_STAGES: readonly WorkStage[] = Object.keys(STAGE_STEPS) as WorkStage[];

/**
 * Every edge of the stage graph. The first edge of a stage is its forward edge; an edge to an
 * earlier stage is a send-back (review → implementation on REQUEST_CHANGES, bounded by
 * ORCH_MAX_REVIEW_ROUNDS; merge → implementation on a conflict). merge → done is the forward path
 * of a project without a deploy command. `done` and `cancelled` are sinks; `cancelled` is reached
 * only through cancel, never through an edge.
 */
export const STAGE_TRANSITIONS: Readonly<Record<TaskStage, readonly TaskStage[]>> = {
  analysis: ['implementation'],
  implementation: ['review'],
  review: ['merge', 'implementation'],
  merge: ['deploy', 'done', 'implementation'],
  deploy: ['done'],
  done: [],
  cancelled: [],
};

export const TERMINAL_STAGES: readonly TaskStage[] = ['done', 'cancelled'];

export function isTerminal(stage: string): boolean {
  return (TERMINAL_STAGES as readonly string[]).includes(stage);
}

export function canTransition(from: TaskStage, to: TaskStage): boolean {
  return STAGE_TRANSITIONS[from].includes(to);
}

export class IllegalTransitionError extends Error {
  readonly from: string;
  readonly to: string;
  constructor(from: string, to: string) {
    super(`illegal stage transition ${from} → ${to} (not an edge of STAGE_TRANSITIONS)`);
    this.name = 'IllegalTransitionError';
    this.from = from;
    this.to = to;
  }
}

/** Throws IllegalTransitionError unless `from → to` is an edge of the graph. */
export function assertTransition(from: TaskStage, to: TaskStage): void {
  if (!canTransition(from, to)) throw new IllegalTransitionError(from, to);
}

function forwardEdge(stage: TaskStage): TaskStage {
  const to = STAGE_TRANSITIONS[stage][0];
  if (to === undefined) throw new IllegalTransitionError(stage, '(next)');
  return to;
}

/**
 * The stage after `stage` on the forward path: its first edge, skipping a stage that has no step
 * for this project (deploy without a deploy command) when the graph has an edge past it.
 */
export function nextStage(stage: WorkStage, project: { deploy_command: string | null }): Stage {
  let to = forwardEdge(stage);
  if (to === 'deploy' && !project.deploy_command) to = forwardEdge(to);
  assertTransition(stage, to);
  return to as Stage;
}

/** The earlier stage a send-back from `stage` returns to (review, merge → implementation). */
export function sendBackTarget(stage: WorkStage): WorkStage {
  const order = (s: TaskStage) => TASK_STAGES.indexOf(s);
  const back = STAGE_TRANSITIONS[stage].find((to) => order(to) < order(stage));
  if (back === undefined) throw new IllegalTransitionError(stage, '(send back)');
  return back as WorkStage;
}

export const JOB_STATUSES = ['queued', 'running', 'done', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

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
