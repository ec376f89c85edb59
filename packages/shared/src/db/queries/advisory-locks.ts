/**
 * Every advisory lock orch takes, with its key. Keys are two-int `(namespace, id)` pairs or one
 * constant, each namespace a four-letter tag, so no two locks ever collide:
 * - claim ('orch', transaction-scoped): serializes claims fleet-wide, so the caps hold exactly;
 * - merge ('merg', project id, session-scoped): one merge per project, held by the merging
 *   worker's connection (it dies with the session);
 * - reaper leader ('reap', session-scoped): one acting reaper per tick;
 * - webhook delivery ('hook', hashtext of the dedupe key, transaction-scoped).
 */
import { sql } from 'kysely';
import type pg from 'pg';
import type { DbOrTx } from '../client.ts';

/** Constant key of the transaction-scoped lock that serializes claims fleet-wide. */
export const CLAIM_LOCK_KEY = 0x6f726368; // 'orch'
const REAPER_LOCK_KEY = 0x72656170; // 'reap'
const MERGE_NAMESPACE = 0x6d657267; // 'merg'
const DELIVERY_NAMESPACE = 0x686f6f6b; // 'hook'

export async function takeClaimLock(tx: DbOrTx): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(${CLAIM_LOCK_KEY})`.execute(tx);
}

/** The merge lock of a project as `(classid, objid)`, as pg_locks shows it (objsubid = 2). */
export function mergeLockKey(projectId: number): [number, number] {
  return [MERGE_NAMESPACE, projectId];
}

export async function tryMergeLock(client: pg.PoolClient, projectId: number): Promise<boolean> {
  const [a, b] = mergeLockKey(projectId);
  const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [a, b]);
  return r.rows[0]?.ok === true;
}

export async function releaseMergeLock(client: pg.PoolClient, projectId: number): Promise<void> {
  const [a, b] = mergeLockKey(projectId);
  await client.query('SELECT pg_advisory_unlock($1, $2)', [a, b]);
}

/** The reaper's leadership, held by a dedicated session for as long as it lives. */
export async function tryLeaderLock(client: pg.Client): Promise<boolean> {
  const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [REAPER_LOCK_KEY]);
  return r.rows[0]?.ok === true;
}

/**
 * Try to take the transaction-scoped lock of one delivery content, so two identical deliveries
 * arriving at once are not both acted on. Never waits: false means another session is handling
 * the same content right now.
 */
export async function tryLockDeliveryKey(tx: DbOrTx, dedupeKey: string): Promise<boolean> {
  const r = await sql<{ ok: boolean }>`SELECT pg_try_advisory_xact_lock(${DELIVERY_NAMESPACE}, hashtext(${dedupeKey})) AS ok`.execute(tx);
  return r.rows[0]?.ok === true;
}
