/** Schema migrations (Kysely Migrator) and pg-boss's own schema. */
import { Migrator, type MigrationResult } from 'kysely/migration';
import { migrations } from '@orch/migrations';
import { sql } from 'kysely';
import type { Db } from './client.ts';

export interface MigrateOutcome {
  applied: string[];
  error: string | null;
}

export function createMigrator(db: Db): Migrator {
  return new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
  });
}

/** Apply pending migrations. Returns what was applied; never throws for a failed migration. */
export async function migrateToLatest(db: Db): Promise<MigrateOutcome> {
  const { error, results } = await createMigrator(db).migrateToLatest();
  const applied = (results ?? []).filter((r: MigrationResult) => r.status === 'Success').map((r) => r.migrationName);
  return { applied, error: error ? String((error as Error).message ?? error) : null };
}

/** Names of migrations not yet applied (empty = schema current). */
export async function pendingMigrations(db: Db): Promise<string[]> {
  const list = await createMigrator(db).getMigrations();
  return list.filter((m) => m.executedAt === undefined).map((m) => m.name);
}

export async function pingDb(db: Db): Promise<void> {
  await sql`SELECT 1`.execute(db);
}
