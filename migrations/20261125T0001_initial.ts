/**
 * The initial schema. Frozen once landed: a fix is a new migration.
 * Statuses are text with CHECK constraints and times are timestamptz, so `table jobs` in psql
 * reads like a report.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE projects (
      id              bigserial PRIMARY KEY,
      slug            text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]*$'),
      repo_url        text NOT NULL,
      base_branch     text NOT NULL DEFAULT 'main',
      gitea_owner     text,
      gitea_repo      text,
      plane_project_id text UNIQUE,
      test_command    text,
      deploy_command  text,
      serial          boolean NOT NULL DEFAULT false,
      max_concurrency integer NOT NULL DEFAULT 2 CHECK (max_concurrency >= 1),
      created_at      timestamptz NOT NULL DEFAULT now(),
      updated_at      timestamptz NOT NULL DEFAULT now(),
      CHECK ((gitea_owner IS NULL) = (gitea_repo IS NULL))
    );

    CREATE TABLE tasks (
      id                  bigserial PRIMARY KEY,
      project_id          bigint NOT NULL REFERENCES projects(id),
      plane_issue_id      text UNIQUE,
      title               text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
      body                text NOT NULL DEFAULT '',
      stage               text NOT NULL DEFAULT 'analysis' CHECK (stage IN
                            ('analysis','implementation','review','merge','deploy','done','cancelled')),
      branch              text,
      waiting_for         text CHECK (waiting_for IN ('serial','dependencies')),
      review_rounds       integer NOT NULL DEFAULT 0,
      pr_number           integer,
      merged_sha          text,
      blocked_at          timestamptz,
      blocked_reason      text,
      cancel_requested_at timestamptz,
      cancel_reason       text,
      cancelled_at        timestamptz,
      critical_started_at timestamptz,
      created_at          timestamptz NOT NULL DEFAULT now(),
      updated_at          timestamptz NOT NULL DEFAULT now(),
      CHECK ((stage = 'cancelled') = (cancelled_at IS NOT NULL))
    );
    CREATE INDEX tasks_project_live ON tasks (project_id, id) WHERE stage NOT IN ('done','cancelled');
    CREATE INDEX tasks_cancel_pending ON tasks (id) WHERE cancel_requested_at IS NOT NULL AND cancelled_at IS NULL;
    CREATE UNIQUE INDEX tasks_branch_live ON tasks (branch) WHERE stage <> 'cancelled';

    CREATE TABLE task_dependencies (
      task_id            bigint NOT NULL REFERENCES tasks(id),
      depends_on_task_id bigint NOT NULL REFERENCES tasks(id),
      PRIMARY KEY (task_id, depends_on_task_id),
      CHECK (task_id <> depends_on_task_id)
    );
    CREATE INDEX task_dependencies_reverse ON task_dependencies (depends_on_task_id);

    CREATE TABLE workers (
      id           text PRIMARY KEY,
      host         text NOT NULL,
      pid          integer NOT NULL,
      slots        integer NOT NULL,
      started_at   timestamptz NOT NULL DEFAULT now(),
      heartbeat_at timestamptz NOT NULL DEFAULT now(),
      stopped_at   timestamptz
    );

    CREATE TABLE jobs (
      id                bigserial PRIMARY KEY,
      task_id           bigint NOT NULL REFERENCES tasks(id),
      stage             text NOT NULL CHECK (stage IN ('analysis','implementation','review','merge','deploy')),
      status            text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued','running','done','failed','cancelled')),
      attempt           integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
      run_after         timestamptz NOT NULL DEFAULT now(),
      worker_id         text REFERENCES workers(id),
      host              text,
      pid               integer,
      heartbeat_at      timestamptz,
      started_at        timestamptz,
      finished_at       timestamptz,
      exit_code         integer,
      error             text,
      reason            text,
      outcome           text,
      test_exit_code    integer,
      test_started_at   timestamptz,
      test_finished_at  timestamptz,
      created_at        timestamptz NOT NULL DEFAULT now(),
      CHECK ((status = 'running') <= (worker_id IS NOT NULL AND started_at IS NOT NULL)),
      CHECK ((status IN ('done','failed','cancelled')) = (finished_at IS NOT NULL))
    );
    -- The duplicate-run guard: a task has at most one live (queued or running) job.
    CREATE UNIQUE INDEX jobs_one_live_per_task ON jobs (task_id) WHERE status IN ('queued','running');
    CREATE INDEX jobs_queued ON jobs (run_after, id) WHERE status = 'queued';
    CREATE INDEX jobs_running ON jobs (worker_id) WHERE status = 'running';
    CREATE INDEX jobs_task ON jobs (task_id, id);

    CREATE TABLE agent_runs (
      id          bigserial PRIMARY KEY,
      job_id      bigint NOT NULL REFERENCES jobs(id),
      agent       text NOT NULL,
      host        text NOT NULL,
      pid         integer,
      started_at  timestamptz NOT NULL DEFAULT now(),
      finished_at timestamptz,
      exit_code   integer,
      signal      text,
      cost_usd    numeric(12,6),
      tokens_in   bigint,
      tokens_out  bigint,
      log_tail    text NOT NULL DEFAULT '',
      error       text,
      CHECK ((exit_code IS NULL) OR (finished_at IS NOT NULL))
    );
    CREATE UNIQUE INDEX agent_runs_one_per_job ON agent_runs (job_id);

    CREATE TABLE task_events (
      id         bigserial PRIMARY KEY,
      task_id    bigint NOT NULL REFERENCES tasks(id),
      job_id     bigint REFERENCES jobs(id),
      kind       text NOT NULL,
      actor      text NOT NULL,
      reason     text,
      data       jsonb NOT NULL DEFAULT '{}',
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX task_events_task ON task_events (task_id, id);

    CREATE TABLE artefacts (
      id         bigserial PRIMARY KEY,
      task_id    bigint NOT NULL REFERENCES tasks(id),
      job_id     bigint REFERENCES jobs(id),
      stage      text NOT NULL,
      name       text NOT NULL,
      content    text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX artefacts_task ON artefacts (task_id, stage, id);

    CREATE TABLE pull_requests (
      id          bigserial PRIMARY KEY,
      project_id  bigint NOT NULL REFERENCES projects(id),
      number      integer NOT NULL,
      task_id     bigint REFERENCES tasks(id),
      head        text NOT NULL,
      base        text NOT NULL,
      title       text NOT NULL,
      body        text NOT NULL DEFAULT '',
      state       text NOT NULL DEFAULT 'open' CHECK (state IN ('open','closed','merged')),
      head_sha    text,
      merged_sha  text,
      created_at  timestamptz NOT NULL DEFAULT now(),
      merged_at   timestamptz,
      UNIQUE (project_id, number)
    );
    CREATE UNIQUE INDEX pull_requests_open_head ON pull_requests (project_id, head) WHERE state = 'open';

    CREATE TABLE merge_leases (
      project_id  bigint PRIMARY KEY REFERENCES projects(id),
      job_id      bigint NOT NULL REFERENCES jobs(id),
      worker_id   text,
      backend_pid integer NOT NULL,
      acquired_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE webhook_deliveries (
      id          bigserial PRIMARY KEY,
      dedupe_key  text NOT NULL UNIQUE,
      delivery_id text,
      event       text,
      action      text,
      outcome     text NOT NULL,
      task_id     bigint REFERENCES tasks(id),
      payload     jsonb NOT NULL,
      received_at timestamptz NOT NULL DEFAULT now()
    );

    -- Tier 1 streaks: consecutive reaper ticks that saw a running job's owner dead. Kept here,
    -- not on jobs, so the reaper's only write on jobs stays the terminal flip, and so the streak
    -- survives a reaper restart or a change of leader.
    CREATE TABLE reaper_streaks (
      job_id     bigint PRIMARY KEY REFERENCES jobs(id),
      ticks      integer NOT NULL,
      updated_at timestamptz NOT NULL DEFAULT now()
    );

    -- One row per reaper process that has run a tick; the leader's row says what it did.
    CREATE TABLE reaper_state (
      id           text PRIMARY KEY,
      host         text NOT NULL,
      pid          integer NOT NULL,
      is_leader    boolean NOT NULL DEFAULT false,
      last_tick_at timestamptz,
      interval_s   double precision NOT NULL,
      reaped_dead_owner    bigint NOT NULL DEFAULT 0,
      reaped_known_outcome bigint NOT NULL DEFAULT 0,
      reaped_max_running   bigint NOT NULL DEFAULT 0,
      lease_reclaims       bigint NOT NULL DEFAULT 0,
      cancels_completed    bigint NOT NULL DEFAULT 0,
      last_error   text,
      last_error_at timestamptz,
      updated_at   timestamptz NOT NULL DEFAULT now()
    );

    -- Outbound tracker calls (Plane), written in the transaction of the change that causes them.
    CREATE TABLE outbox (
      id           bigserial PRIMARY KEY,
      task_id      bigint REFERENCES tasks(id),
      kind         text NOT NULL CHECK (kind IN ('set_state','comment')),
      payload      jsonb NOT NULL,
      attempts     integer NOT NULL DEFAULT 0,
      next_attempt_at timestamptz NOT NULL DEFAULT now(),
      delivered_at timestamptz,
      last_error   text,
      created_at   timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX outbox_pending ON outbox (next_attempt_at, id) WHERE delivered_at IS NULL;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE outbox, reaper_state, reaper_streaks, webhook_deliveries, merge_leases, pull_requests, artefacts,
      task_events, agent_runs, jobs, workers, task_dependencies, tasks, projects;
  `.execute(db);
}
