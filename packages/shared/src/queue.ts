/**
 * Dispatch through pg-boss. The `jobs` table is the record of every stage attempt; a pg-boss
 * message on `orch-dispatch` is a wake token: "a job may be claimable (not before startAfter)".
 * It is sent in the same transaction as the change that makes a job claimable (an enqueue, a
 * slot freed, a gate opened), together with a NOTIFY on `orch_dispatch` that wakes idle workers
 * at once. Workers consume tokens only while they have free slots and claim the oldest
 * claimable job under the claim lock (see db/queries/claims.ts); duplicate or stale tokens are
 * harmless because the claim is a compare-and-set. See docs/adr/0002-dispatch-tokens.md.
 */
import { CompiledQuery, sql, type Kysely } from 'kysely';
import { PgBoss } from 'pg-boss';
import type { Database } from './db/types.ts';

export const DISPATCH_QUEUE = 'orch-dispatch';
export const DISPATCH_CHANNEL = 'orch_dispatch';
export const CANCEL_CHANNEL = 'orch_cancel';
const BOSS_SCHEMA = 'pgboss';

export type Boss = PgBoss;

export function createBoss(connectionString: string, opts: { supervise?: boolean; max?: number } = {}): PgBoss {
  const boss = new PgBoss({
    connectionString,
    schema: BOSS_SCHEMA,
    max: opts.max ?? 3,
    supervise: opts.supervise ?? true,
    schedule: false,
    application_name: 'orch-pgboss',
  });
  // pg-boss re-emits connection errors; they are logged by the owner, never fatal here.
  boss.on('error', () => {});
  return boss;
}

/** Start pg-boss (installing or migrating its schema) and make sure the dispatch queue exists. */
export async function startBoss(boss: PgBoss): Promise<void> {
  await boss.start();
  const existing = await boss.getQueue(DISPATCH_QUEUE);
  if (!existing) {
    try {
      await boss.createQueue(DISPATCH_QUEUE, { retryLimit: 0, expireInSeconds: 300 });
    } catch (err) {
      // another process created it between our check and our create
      if (!(await boss.getQueue(DISPATCH_QUEUE))) throw err;
    }
  }
}

/** pg-boss's IDatabase over a Kysely transaction, so a send commits or rolls back with it. */
function bossDb(tx: Kysely<Database>) {
  return {
    executeSql: async (text: string, values: unknown[] = []) => {
      const r = await tx.executeQuery(CompiledQuery.raw(text, values));
      return { rows: r.rows as any[] };
    },
  };
}

/**
 * Send a wake token inside `tx` (and NOTIFY idle workers when it is due now).
 * `jobId` is a hint for logs; workers always claim the oldest claimable job. The NOTIFY payload
 * is the job id, and `@<host>` when the job prefers a host (`dispatchPreferredHost` reads it).
 */
export async function sendDispatch(
  boss: PgBoss,
  tx: Kysely<Database>,
  token: { jobId?: number; reason: string; startAfter?: Date; preferredHost?: string | null },
): Promise<void> {
  const due = !token.startAfter || token.startAfter.getTime() <= Date.now();
  await boss.send(
    DISPATCH_QUEUE,
    { jobId: token.jobId ?? null, reason: token.reason },
    { db: bossDb(tx), ...(due ? {} : { startAfter: token.startAfter }) },
  );
  const payload = `${token.jobId ?? ''}${token.preferredHost ? `@${token.preferredHost}` : ''}`;
  if (due) await sql`SELECT pg_notify(${DISPATCH_CHANNEL}, ${payload})`.execute(tx);
}

/** The host a dispatch NOTIFY's job prefers (`<job id>@<host>`), or null. */
export function dispatchPreferredHost(payload: string): string | null {
  const at = payload.indexOf('@');
  return at < 0 ? null : payload.slice(at + 1);
}
