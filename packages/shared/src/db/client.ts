/** The Kysely client over a pg Pool. bigint/numeric come back as numbers where they are ids. */
import pg from 'pg';
import { Kysely, PostgresDialect } from 'kysely';
import type { Database } from './types.ts';

// int8 (ids, counts) → number: ids stay far below 2^53.
pg.types.setTypeParser(20, (v) => Number(v));

export type Db = Kysely<Database>;
/** Either a plain client or a transaction: query functions accept both. */
export type DbOrTx = Kysely<Database>;

export interface DbHandle {
  db: Db;
  pool: pg.Pool;
  close(): Promise<void>;
}

export function createDb(connectionString: string, opts: { max?: number; applicationName?: string } = {}): DbHandle {
  const pool = new pg.Pool({
    connectionString,
    max: opts.max ?? 10,
    application_name: opts.applicationName ?? 'orch',
    // A worker or reaper must notice a dead server instead of hanging forever.
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
  });
  // An idle client losing its connection (Postgres restart) must not crash the process.
  pool.on('error', () => {});
  // Nor a checked-out one: pg-pool removes its idle listener on checkout, so a connection that
  // dies between two statements of a transaction (or while a session lock is held) would emit an
  // unhandled 'error' and kill the process. The statement in flight still fails, the broken
  // client is not queryable and the pool drops it on release.
  pool.on('connect', (client) => {
    client.on('error', () => {});
  });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  return {
    db,
    pool,
    close: async () => {
      await db.destroy();
    },
  };
}
