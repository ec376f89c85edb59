/**
 * What the API answers with, as zod schemas: the routes declare their responses with these, and
 * `/openapi.json` is generated from the routes, so the document is the one description there is.
 * Every object is closed (`z.strictObject` → `additionalProperties: false`): a column the API
 * starts returning is documented in the same change, or tests/openapi-contract.test.ts fails.
 *
 * The shapes are those of the rows the handlers return, as JSON: timestamps are ISO strings
 * (`Date.toJSON`), `bigint` columns are numbers (db/client.ts parses int8), `numeric` columns
 * (`agent_runs.cost_usd`) are decimal strings, exactly as pg hands them over.
 */
import { z } from '@hono/zod-openapi';
import { TRANSCRIPT_KINDS } from '@orch/shared/agents/transcript';
import { CLAUDE_PERMISSION_MODES, CODEX_SANDBOXES } from '@orch/shared/db/types';
import { FAILURE_CLASSES } from '@orch/shared/pipeline/failures';
import { JOB_STATUSES, TASK_STAGES, WORK_STAGES, type TaskStage, type WorkStage } from '@orch/shared/stages';

const timestamp = z.iso.datetime({ offset: true });
const id = z.number().int();
const seconds = z.number();
const decimal = z.string().regex(/^-?\d+(\.\d+)?$/);
const FAILURE_CLASS = z.enum(FAILURE_CLASSES);

export const ErrorSchema = z
  .strictObject({
    error: z.strictObject({
      code: z.string().openapi({ description: 'stable, machine-readable (invalid_request, not_found, conflict, …)' }),
      message: z.string(),
    }),
  })
  .openapi('Error');

export const TaskSchema = z
  .strictObject({
    id,
    project_id: id,
    plane_issue_id: z.string().nullable().openapi({ description: "Plane's issue id; after a cancel `<uuid>~cancelled~<task id>`" }),
    title: z.string(),
    body: z.string(),
    stage: z.enum(TASK_STAGES as readonly [TaskStage, ...TaskStage[]]),
    branch: z.string().nullable(),
    waiting_for: z.enum(['serial', 'dependencies']).nullable(),
    review_rounds: z.number().int().openapi({ description: 'review → implementation send-backs so far' }),
    pr_number: z.number().int().nullable(),
    merged_sha: z.string().nullable(),
    blocked_at: timestamp.nullable(),
    blocked_reason: z.string().nullable(),
    cancel_requested_at: timestamp.nullable(),
    cancel_reason: z.string().nullable(),
    cancelled_at: timestamp.nullable(),
    critical_started_at: timestamp.nullable().openapi({ description: 'set while an irreversible step (merge call, deploy command) runs' }),
    created_at: timestamp,
    updated_at: timestamp,
  })
  .openapi('Task');

export const JobSchema = z
  .strictObject({
    id,
    task_id: id,
    project_id: id.openapi({ description: "the task's project (claims walk each project's queue)" }),
    stage: z.enum(WORK_STAGES as readonly [WorkStage, ...WorkStage[]]),
    status: z.enum(JOB_STATUSES),
    attempt: z.number().int(),
    run_after: timestamp.openapi({ description: 'not claimed before (retry backoff)' }),
    worker_id: z.string().nullable(),
    host: z.string().nullable(),
    pid: z.number().int().nullable(),
    heartbeat_at: timestamp.nullable(),
    started_at: timestamp.nullable(),
    finished_at: timestamp.nullable(),
    exit_code: z.number().int().nullable(),
    error: z.string().nullable(),
    reason: z.string().nullable().openapi({ description: 'why the job ended as it did, in words' }),
    outcome: z.string().nullable(),
    test_exit_code: z.number().int().nullable(),
    test_started_at: timestamp.nullable(),
    test_finished_at: timestamp.nullable(),
    created_at: timestamp,
    detail: z.string().nullable().openapi({ description: 'the failure in words (the agent\'s error, the gate\'s verdict with the test output tail, the budget or stall figure)' }),
    failure_class: FAILURE_CLASS.nullable().openapi({ description: 'config: blocked at once; transient: retried with backoff; agent: retried with the failure in the prompt' }),
    preferred_host: z.string().nullable().openapi({ description: "the host that ran the task's previous stage and holds its worktree; other hosts leave the job to it for ORCH_AFFINITY_WAIT_MS" }),
  })
  .openapi('Job');

export const AgentRunSchema = z
  .strictObject({
    id,
    job_id: id,
    agent: z.string().openapi({ description: 'claude, codex, command, demo, or deploy (the deploy command)' }),
    host: z.string(),
    pid: z.number().int().nullable(),
    started_at: timestamp,
    finished_at: timestamp.nullable().openapi({ description: 'when the agent exited (before push, PR, comments)' }),
    exit_code: z.number().int().nullable(),
    signal: z.string().nullable(),
    cost_usd: decimal.nullable().openapi({ description: 'as reported by the agent; a decimal string (numeric column)' }),
    tokens_in: z.number().int().nullable(),
    tokens_out: z.number().int().nullable(),
    log_tail: z.string(),
    error: z.string().nullable(),
    session_id: z.string().nullable().openapi({ description: 'the CLI\'s session (claude session_id, codex thread_id)' }),
    resumed_session_id: z.string().nullable().openapi({ description: 'the session this run continued, when it did' }),
    last_message: z.string().nullable(),
    failure_code: z.string().nullable(),
    failure_class: FAILURE_CLASS.nullable(),
    cost_source: z.enum(['reported', 'estimated', 'estimated_fallback']).nullable(),
    transcript: z
      .array(
        z.strictObject({
          n: z.number().int(),
          at: z.number(),
          kind: z.enum(TRANSCRIPT_KINDS),
          text: z.string(),
          failed: z.boolean().optional(),
        }),
      )
      .openapi({ description: 'the run as a person reads it: messages, tool calls, results' }),
  })
  .openapi('AgentRun');

export const TaskEventSchema = z
  .strictObject({
    id,
    task_id: id,
    job_id: id.nullable(),
    kind: z.string().openapi({ description: 'created, stage_changed, sent_back, cancel_requested, …' }),
    actor: z.string(),
    reason: z.string().nullable(),
    data: z.record(z.string(), z.unknown()).openapi({ description: 'free-form, by kind' }),
    created_at: timestamp,
  })
  .openapi('TaskEvent');

export const ArtefactSchema = z
  .strictObject({
    id,
    task_id: id,
    job_id: id.nullable(),
    stage: z.string(),
    name: z.string(),
    content: z.string(),
    created_at: timestamp,
  })
  .openapi('Artefact');

export const ProjectSchema = z
  .strictObject({
    id,
    slug: z.string(),
    repo_url: z.string(),
    base_branch: z.string(),
    gitea_owner: z.string().nullable(),
    gitea_repo: z.string().nullable(),
    plane_project_id: z.string().nullable(),
    test_command: z.string().nullable(),
    deploy_command: z.string().nullable(),
    serial: z.boolean(),
    max_concurrency: z.number().int(),
    sandbox_deploy: z.boolean(),
    codex_sandbox: z.enum(CODEX_SANDBOXES).nullable(),
    claude_permission_mode: z.enum(CLAUDE_PERMISSION_MODES).nullable(),
    created_at: timestamp,
    updated_at: timestamp,
  })
  .openapi('Project');

export const QueueSchema = z
  .strictObject({
    jobs: z.strictObject({
      counts: z.strictObject(Object.fromEntries(JOB_STATUSES.map((s) => [s, z.number().int()])) as Record<(typeof JOB_STATUSES)[number], z.ZodNumber>),
      running: z.array(
        z.strictObject({
          id,
          task_id: id,
          stage: z.enum(WORK_STAGES as readonly [WorkStage, ...WorkStage[]]),
          attempt: z.number().int(),
          worker_id: z.string().nullable(),
          host: z.string().nullable(),
          pid: z.number().int().nullable(),
          started_at: timestamp,
          heartbeat_at: timestamp.nullable(),
          finished_age_s: seconds.nullable().openapi({ description: 'seconds since the agent exited; null while it runs' }),
        }),
      ),
    }),
    workers: z.array(
      z.strictObject({
        id: z.string(),
        host: z.string(),
        pid: z.number().int(),
        heartbeat_at: timestamp,
        heartbeat_age_s: seconds,
        running: z.number().int().openapi({ description: 'running jobs it owns' }),
        isolation: z
          .strictObject({
            sandbox: z.enum(['bwrap', 'none']),
            network: z.enum(['on', 'off']),
            limits: z.string(),
            warning: z.string().nullable(),
          })
          .nullable()
          .openapi({ description: "what the worker runs agents, tests and deploys with (ORCH_AGENT_SANDBOX); null for a worker of an older orch" }),
      }),
    ),
    warnings: z.array(z.string()).openapi({ description: 'what an operator must know first, e.g. "<host>: agents run unsandboxed: …"' }),
    reaper: z.strictObject({
      enabled: z.boolean(),
      leader: z.string().nullable().openapi({ description: '"<host_id>:<pid>" of the acting reaper; null when none ticks' }),
      last_tick_at: timestamp.nullable(),
      interval_s: seconds,
      reaped: z.strictObject({ dead_owner: z.number().int(), known_outcome: z.number().int(), max_running: z.number().int() }),
      lease_reclaims: z.number().int(),
      last_error: z.string().nullable(),
    }),
    stop: z.strictObject({
      enabled: z.boolean(),
      pending: z.array(id).openapi({ description: 'task ids whose cancel is under way' }),
      deferred: z.array(id).openapi({ description: 'task ids whose cancel waits for a critical window (merge, deploy)' }),
      completed_total: z.number().int(),
      last_error: z.string().nullable(),
    }),
    merge: z.strictObject({
      leases: z.array(
        z.strictObject({ project: z.string(), job_id: id, backend_pid: z.number().int(), acquired_at: timestamp, age_s: seconds }),
      ),
    }),
  })
  .openapi('Queue');
