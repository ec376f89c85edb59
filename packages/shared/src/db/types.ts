/** The schema as Kysely sees it; Selectable/Insertable/Updateable derive from here. */
import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';
import type { TranscriptEntry } from '../agents/transcript.ts';
import type { FailureClass } from '../pipeline/failures.ts';
import type { JobStatus, TaskStage, WorkStage } from '../stages.ts';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
type Json = ColumnType<unknown, string | undefined, string>;

export const CODEX_SANDBOXES = ['read-only', 'workspace-write', 'danger-full-access'] as const;
export type CodexSandbox = (typeof CODEX_SANDBOXES)[number];
/** claude-code 2.1's --permission-mode choices */
export const CLAUDE_PERMISSION_MODES = ['acceptEdits', 'auto', 'bypassPermissions', 'manual', 'dontAsk', 'plan'] as const;
export type ClaudePermissionMode = (typeof CLAUDE_PERMISSION_MODES)[number];

export interface ProjectsTable {
  id: Generated<number>;
  slug: string;
  repo_url: string;
  base_branch: Generated<string>;
  gitea_owner: string | null;
  gitea_repo: string | null;
  plane_project_id: string | null;
  test_command: string | null;
  deploy_command: string | null;
  serial: Generated<boolean>;
  max_concurrency: Generated<number>;
  sandbox_deploy: Generated<boolean>;
  codex_sandbox: CodexSandbox | null;
  claude_permission_mode: ClaudePermissionMode | null;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface TasksTable {
  id: Generated<number>;
  project_id: number;
  plane_issue_id: string | null;
  title: string;
  body: Generated<string>;
  stage: Generated<TaskStage>;
  branch: string | null;
  waiting_for: 'serial' | 'dependencies' | null;
  review_rounds: Generated<number>;
  pr_number: number | null;
  merged_sha: string | null;
  blocked_at: NullableTimestamp;
  blocked_reason: string | null;
  cancel_requested_at: NullableTimestamp;
  cancel_reason: string | null;
  cancelled_at: NullableTimestamp;
  critical_started_at: NullableTimestamp;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface TaskDependenciesTable {
  task_id: number;
  depends_on_task_id: number;
}

export interface WorkersTable {
  id: string;
  host: string;
  pid: number;
  slots: number;
  started_at: Timestamp;
  heartbeat_at: Timestamp;
  stopped_at: NullableTimestamp;
  /** what the worker runs its steps with (db/queries/workers.ts WorkerIsolation) */
  isolation: Json | null;
}

export interface JobsTable {
  id: Generated<number>;
  task_id: number;
  /** the task's project, copied at insert so claims walk each project's queue (migration 0006) */
  project_id: number;
  stage: WorkStage;
  status: Generated<JobStatus>;
  attempt: Generated<number>;
  run_after: Timestamp;
  worker_id: string | null;
  host: string | null;
  pid: number | null;
  heartbeat_at: NullableTimestamp;
  started_at: NullableTimestamp;
  finished_at: NullableTimestamp;
  exit_code: number | null;
  error: string | null;
  reason: string | null;
  outcome: string | null;
  test_exit_code: number | null;
  test_started_at: NullableTimestamp;
  test_finished_at: NullableTimestamp;
  /** the failure in words (reason is its stable code) */
  detail: string | null;
  failure_class: FailureClass | null;
  created_at: Timestamp;
  /** the host holding the task's worktree (it ran the previous stage): preferred by claims for ORCH_AFFINITY_WAIT_MS */
  preferred_host: string | null;
}

export interface AgentRunsTable {
  id: Generated<number>;
  job_id: number;
  agent: string;
  host: string;
  pid: number | null;
  started_at: Timestamp;
  finished_at: NullableTimestamp;
  exit_code: number | null;
  signal: string | null;
  cost_usd: ColumnType<string | null, number | string | null | undefined, number | string | null>;
  // bigint, read as a number (db/client.ts parses int8)
  tokens_in: ColumnType<number | null, number | null | undefined, number | null>;
  tokens_out: ColumnType<number | null, number | null | undefined, number | null>;
  log_tail: Generated<string>;
  error: string | null;
  /** the CLI's session (claude session_id, codex thread_id) */
  session_id: string | null;
  /** the session this run continued (--resume), when it did */
  resumed_session_id: string | null;
  last_message: string | null;
  failure_code: string | null;
  failure_class: FailureClass | null;
  cost_source: 'reported' | 'estimated' | 'estimated_fallback' | null;
  transcript: ColumnType<TranscriptEntry[], string | undefined, string>;
}

export interface TaskEventsTable {
  id: Generated<number>;
  task_id: number;
  job_id: number | null;
  kind: string;
  actor: string;
  reason: string | null;
  /** always an object (appendEvent) */
  data: ColumnType<Record<string, unknown>, string | undefined, string>;
  created_at: Timestamp;
}

export interface ArtefactsTable {
  id: Generated<number>;
  task_id: number;
  job_id: number | null;
  stage: string;
  name: string;
  content: string;
  created_at: Timestamp;
}

export interface PullRequestsTable {
  id: Generated<number>;
  project_id: number;
  number: number;
  task_id: number | null;
  head: string;
  base: string;
  title: string;
  body: Generated<string>;
  state: Generated<'open' | 'closed' | 'merged'>;
  head_sha: string | null;
  merged_sha: string | null;
  created_at: Timestamp;
  merged_at: NullableTimestamp;
}

export interface MergeLeasesTable {
  project_id: number;
  job_id: number;
  worker_id: string | null;
  backend_pid: number;
  acquired_at: Timestamp;
}

export interface WebhookDeliveriesTable {
  id: Generated<number>;
  dedupe_key: string;
  delivery_id: string | null;
  event: string | null;
  action: string | null;
  outcome: string;
  task_id: number | null;
  payload: Json;
  received_at: Timestamp;
}

export interface ReaperStateTable {
  id: string;
  host: string;
  pid: number;
  is_leader: Generated<boolean>;
  last_tick_at: NullableTimestamp;
  interval_s: number;
  reaped_dead_owner: ColumnType<string, number | undefined, number | string>;
  reaped_known_outcome: ColumnType<string, number | undefined, number | string>;
  reaped_max_running: ColumnType<string, number | undefined, number | string>;
  lease_reclaims: ColumnType<string, number | undefined, number | string>;
  cancels_completed: ColumnType<string, number | undefined, number | string>;
  last_error: string | null;
  last_error_at: NullableTimestamp;
  updated_at: Timestamp;
}

export interface ReaperStreaksTable {
  job_id: number;
  ticks: number;
  updated_at: Timestamp;
}

export type OutboxTarget = 'plane' | 'gitea';
export type OutboxKind = 'set_state' | 'comment' | 'pr_comment' | 'commit_status';

export interface OutboxTable {
  id: Generated<number>;
  task_id: number | null;
  kind: OutboxKind;
  target: Generated<OutboxTarget>;
  /** rows of one key are delivered in the order they were written (a Plane issue, a Gitea PR) */
  order_key: string;
  payload: Json;
  attempts: Generated<number>;
  next_attempt_at: Timestamp;
  delivered_at: NullableTimestamp;
  last_error: string | null;
  created_at: Timestamp;
}

export interface PlaneRateBudgetTable {
  key_hash: string;
  sent_at: ColumnType<Date[], string[] | undefined, string[]>;
  paused_until: NullableTimestamp;
  requests: Json;
  rate_limited: Json;
  created_at: Timestamp;
}

export interface PlanePollPassesTable {
  plane_project_id: string;
  claimed_at: Timestamp;
  claimed_by: string;
  completed_at: NullableTimestamp;
  watermark: NullableTimestamp;
  full_at: NullableTimestamp;
  last_outcome: string | null;
}

export type PlaneIssueStateSource = 'webhook' | 'poll' | 'outbox';

export interface PlaneIssueStatesTable {
  issue_id: string;
  state_id: string;
  state_at: Timestamp;
  source: PlaneIssueStateSource;
  noted_at: Timestamp;
}

export interface Database {
  projects: ProjectsTable;
  tasks: TasksTable;
  task_dependencies: TaskDependenciesTable;
  workers: WorkersTable;
  jobs: JobsTable;
  agent_runs: AgentRunsTable;
  task_events: TaskEventsTable;
  artefacts: ArtefactsTable;
  pull_requests: PullRequestsTable;
  merge_leases: MergeLeasesTable;
  webhook_deliveries: WebhookDeliveriesTable;
  reaper_state: ReaperStateTable;
  reaper_streaks: ReaperStreaksTable;
  outbox: OutboxTable;
  plane_rate_budget: PlaneRateBudgetTable;
  plane_poll_passes: PlanePollPassesTable;
  plane_issue_states: PlaneIssueStatesTable;
}

export type Project = Selectable<ProjectsTable>;
export type NewProject = Insertable<ProjectsTable>;
export type Task = Selectable<TasksTable>;
export type Job = Selectable<JobsTable>;
export type AgentRun = Selectable<AgentRunsTable>;
export type TaskEvent = Selectable<TaskEventsTable>;
export type Artefact = Selectable<ArtefactsTable>;
export type PullRequestRow = Selectable<PullRequestsTable>;
