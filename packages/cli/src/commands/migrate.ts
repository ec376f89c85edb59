/** `orch migrate`: orch's schema and pg-boss's, idempotent. */
import { createDb } from '@orch/shared/db/client';
import { migrateToLatest } from '@orch/shared/db/migrate';
import { createBoss, startBoss } from '@orch/shared/queue';
import { checkDatabase, CliError, config, databaseUrl } from '../context.ts';
import type { CommandSpec } from '../registry.ts';

/** Apply pending migrations (orch's, then pg-boss's own schema); returns the names applied. */
export async function migrate(url: string): Promise<string[]> {
  await checkDatabase(url, { requireMigrated: false });
  const h = createDb(url, { max: 2, applicationName: 'orch-migrate' });
  try {
    const r = await migrateToLatest(h.db);
    if (r.error) throw new CliError(`migration failed: ${r.error}`);
    const boss = createBoss(url, { supervise: false });
    await startBoss(boss); // installs or migrates pg-boss's own schema
    await boss.stop({ graceful: false, timeout: 1000 });
    return r.applied;
  } finally {
    await h.close();
  }
}

export const migrateCommand: CommandSpec = {
  summary: 'apply pending database migrations (orch schema and pg-boss); idempotent',
  usage: ['migrate'],
  run: async () => {
    const applied = await migrate(await databaseUrl(config()));
    process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'schema is current\n');
    return 0;
  },
};
