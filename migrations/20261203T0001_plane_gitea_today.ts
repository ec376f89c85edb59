/**
 * Plane and Gitea as they are today (#14, ADR 0008).
 * - outbox: a `target` (plane | gitea), an `order_key` (rows of one key are delivered in order:
 *   a Plane issue, or a Gitea pull request), and two Gitea kinds: `pr_comment`, `commit_status`.
 * - plane_rate_budget: one row per Plane API key (a sha256 of it, never the key): the requests
 *   of the last window, fleet-wide, a pause set from a 429's Retry-After, counters by caller.
 * - plane_poll_passes: which process polls which Plane project when (one pass per interval for
 *   the whole fleet), the newest `updated_at` seen (a pass ordered by -updated_at stops below it)
 *   and when the last exhaustive pass completed.
 * - plane_issue_states: the last state orch knows each Plane issue was in, and since when (the
 *   issue's `updated_at`, UTC), from a webhook, the poll, or orch's own delivered state change.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE outbox DROP CONSTRAINT outbox_kind_check;
    ALTER TABLE outbox ADD CONSTRAINT outbox_kind_check CHECK (kind IN ('set_state','comment','pr_comment','commit_status'));
    ALTER TABLE outbox ADD COLUMN target text NOT NULL DEFAULT 'plane' CHECK (target IN ('plane','gitea'));
    ALTER TABLE outbox ADD COLUMN order_key text;
    UPDATE outbox SET order_key = coalesce(payload->>'issueId', 'row:' || id);
    ALTER TABLE outbox ALTER COLUMN order_key SET NOT NULL;
    ALTER TABLE outbox ADD CONSTRAINT outbox_kind_target CHECK (
      (target = 'plane' AND kind IN ('set_state','comment')) OR (target = 'gitea' AND kind IN ('pr_comment','commit_status')));
    CREATE INDEX outbox_heads ON outbox (target, order_key, id) WHERE delivered_at IS NULL;

    CREATE TABLE plane_rate_budget (
      key_hash     text PRIMARY KEY,
      sent_at      timestamptz[] NOT NULL DEFAULT '{}',
      paused_until timestamptz,
      requests     jsonb NOT NULL DEFAULT '{}',
      rate_limited jsonb NOT NULL DEFAULT '{}',
      created_at   timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE plane_poll_passes (
      plane_project_id text PRIMARY KEY,
      claimed_at   timestamptz NOT NULL,
      claimed_by   text NOT NULL,
      completed_at timestamptz,
      watermark    timestamptz,
      full_at      timestamptz,
      last_outcome text
    );

    CREATE TABLE plane_issue_states (
      issue_id text PRIMARY KEY,
      state_id text NOT NULL,
      state_at timestamptz NOT NULL,
      source   text NOT NULL CHECK (source IN ('webhook','poll','outbox')),
      noted_at timestamptz NOT NULL DEFAULT now()
    );
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE plane_issue_states, plane_poll_passes, plane_rate_budget;
    DROP INDEX outbox_heads;
    DELETE FROM outbox WHERE target <> 'plane';
    ALTER TABLE outbox DROP CONSTRAINT outbox_kind_target;
    ALTER TABLE outbox DROP COLUMN order_key;
    ALTER TABLE outbox DROP COLUMN target;
    ALTER TABLE outbox DROP CONSTRAINT outbox_kind_check;
    ALTER TABLE outbox ADD CONSTRAINT outbox_kind_check CHECK (kind IN ('set_state','comment'));
  `.execute(db);
}
