/**
 * A connection dying under a checked-out pool client (what a Postgres restart does to a
 * transaction between two statements, or to the merge step's session lock) must not crash the
 * process: the pool drops the broken client and the next query works. Found by bench/chaos.ts:
 * two of three worker processes died on `pg_ctlcluster restart` with "Unhandled 'error' event …
 * Emitted 'error' event on Client instance".
 */
import { afterEach, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createDb, type DbHandle } from '@orch/shared/db/client';
import { freshDatabase } from './support/harness.ts';

let h: DbHandle | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe('database connections', () => {
  it('a checked-out client whose backend is terminated does not crash the process; the pool recovers', async () => {
    const url = await freshDatabase();
    h = createDb(url, { max: 2, applicationName: 'orch-resilience' });
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => void uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      const client = await h.pool.connect();
      const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      await admin.end();
      await new Promise((r) => setTimeout(r, 300)); // the FATAL arrives while the client is idle, checked out
      expect(uncaught).toEqual([]);
      await expect(client.query('SELECT 1')).rejects.toThrow();
      client.release();
      // the pool replaced the broken connection
      const r = await h.pool.query<{ ok: number }>('SELECT 1 AS ok');
      expect(r.rows[0]!.ok).toBe(1);
      const k = await h.db.selectFrom('projects').select('id').execute();
      expect(Array.isArray(k)).toBe(true);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  });
});
