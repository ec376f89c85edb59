/**
 * Agents in a sandbox (docs/adr/0012):
 * - projects.sandbox_deploy: the deploy command runs in the sandbox too (default); false for a
 *   deploy that needs the host (its credentials, its network services). Agents and the test
 *   command always run in it.
 * - projects.codex_sandbox / claude_permission_mode: the CLIs' own sandboxes, per project
 *   (null: orch's default, which depends on whether orch's sandbox is around the agent).
 * - workers.isolation: what each worker runs its steps with ({sandbox, network, limits,
 *   warning}), for GET /queue, `orch status` and the dashboard.
 */
import { sql, type Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE projects
      ADD COLUMN sandbox_deploy boolean NOT NULL DEFAULT true,
      ADD COLUMN codex_sandbox text CHECK (codex_sandbox IN ('read-only','workspace-write','danger-full-access')),
      ADD COLUMN claude_permission_mode text CHECK (claude_permission_mode IN ('acceptEdits','auto','bypassPermissions','manual','dontAsk','plan'));
    ALTER TABLE workers ADD COLUMN isolation jsonb;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE workers DROP COLUMN isolation;
    ALTER TABLE projects DROP COLUMN sandbox_deploy, DROP COLUMN codex_sandbox, DROP COLUMN claude_permission_mode;
  `.execute(db);
}
