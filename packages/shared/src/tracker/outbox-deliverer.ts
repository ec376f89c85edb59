/**
 * The outbox delivery loop: tracker calls (Plane state changes and comments) written in the
 * transaction of the change that causes them are delivered here, later, by a loop that never
 * raises. A row stays in the table until the tracker accepted it, so a tracker that is down for
 * an hour loses nothing: its rows back off (5 s doubling, capped at 10 min) and go out when it is
 * back. A 429 reschedules the row at the tracker's reset time and pauses this deliverer until
 * then (the rate limit is per API key, so the other rows would only be refused too).
 *
 * Order: rows are claimed with `dueOutboxHeads` — the oldest undelivered row of each issue, FOR
 * UPDATE SKIP LOCKED — so calls reach the tracker in the order they were written, per issue, even
 * with several deliverers (the reaper's and `orch up`'s) running at once.
 *
 * Delivery is at-least-once: a crash between the tracker's answer and the commit sends the row
 * again (a state change is idempotent; a comment may appear twice).
 */
import type { Db } from '../db/client.ts';
import { dueOutboxHeads, markOutboxDelivered, markOutboxFailed, type OutboxRow } from '../db/queries/outbox.ts';
import type { Logger } from '../runtime/logger.ts';
import { TRACKER_STATE_ROLES, TrackerRetryError } from './types.ts';
import type { Tracker, TrackerStateRole } from './types.ts';

export interface OutboxBackoff {
  /** first retry after this many seconds (default 5) */
  baseS: number;
  /** never wait longer than this (default 600) */
  maxS: number;
}

export interface OutboxDelivererOptions {
  db: Db;
  tracker: Pick<Tracker, 'setState' | 'comment'>;
  log: Logger;
  /** rows claimed per transaction (default 20) */
  batch?: number;
  backoff?: Partial<OutboxBackoff>;
  /** strings that must never reach a log line or `outbox.last_error` (the API key) */
  secrets?: string[];
}

export interface TickResult {
  delivered: number;
  failed: number;
}

export interface OutboxDeliverer {
  /** Deliver what is due now. Never raises. */
  tick(): Promise<TickResult>;
  /** Tick every `intervalS` seconds (one tick at a time) until `stop()`. */
  start(intervalS: number): void;
  /** Stop ticking; waits for a tick in flight. */
  stop(): Promise<void>;
}

const ROLES: ReadonlySet<string> = new Set<string>(TRACKER_STATE_ROLES);
/** a tick claims at most this many batches, so one tick cannot run forever */
const MAX_ROUNDS = 50;

/** Delay before retry number `attempts + 1`: base · 2^attempts, capped. */
export function outboxBackoffMs(attempts: number, b: OutboxBackoff): number {
  const exp = Math.min(Math.max(0, attempts), 30);
  return Math.min(b.baseS * 2 ** exp, b.maxS) * 1000;
}

type Call =
  | { kind: 'set_state'; projectId: string; issueId: string; role: TrackerStateRole }
  | { kind: 'comment'; projectId: string; issueId: string; html: string };

function parseRow(row: OutboxRow): Call | string {
  const p = (typeof row.payload === 'string' ? safeJson(row.payload) : row.payload) as Record<string, unknown> | null;
  if (p === null || typeof p !== 'object') return 'payload is not an object';
  const { projectId, issueId } = p;
  if (typeof projectId !== 'string' || !projectId || typeof issueId !== 'string' || !issueId) return 'payload lacks projectId/issueId';
  if (row.kind === 'set_state') {
    if (typeof p.role !== 'string' || !ROLES.has(p.role)) return `payload has no valid role (${String(p.role)})`;
    return { kind: 'set_state', projectId, issueId, role: p.role as TrackerStateRole };
  }
  if (row.kind === 'comment') {
    if (typeof p.html !== 'string' || !p.html) return 'payload has no html';
    return { kind: 'comment', projectId, issueId, html: p.html };
  }
  return `unknown kind ${String(row.kind)}`;
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s) as unknown;
  } catch {
    return null;
  }
}

export function createOutboxDeliverer(opts: OutboxDelivererOptions): OutboxDeliverer {
  const { db, tracker, log } = opts;
  const batch = Math.max(1, opts.batch ?? 20);
  const backoff: OutboxBackoff = { baseS: opts.backoff?.baseS ?? 5, maxS: opts.backoff?.maxS ?? 600 };
  const secrets = (opts.secrets ?? []).filter((s) => s.length > 0);
  /** set by a 429: nothing is sent before this time */
  let pausedUntil = 0;
  let timer: NodeJS.Timeout | null = null;
  let stopped = true;
  let inFlight: Promise<TickResult> | null = null;

  const redact = (s: string): string => secrets.reduce((acc, k) => acc.split(k).join('[redacted]'), s);
  const errText = (err: unknown): string => redact(err instanceof Error ? err.message : String(err));

  async function deliverOne(row: OutboxRow): Promise<void> {
    const call = parseRow(row);
    if (typeof call === 'string') throw new Error(`outbox row ${row.id}: ${call}`);
    if (call.kind === 'set_state') await tracker.setState({ projectId: call.projectId, issueId: call.issueId, role: call.role });
    else await tracker.comment({ projectId: call.projectId, issueId: call.issueId, html: call.html });
  }

  /** One transaction: claim a batch of heads, deliver each, record each outcome. */
  async function round(): Promise<TickResult & { claimed: number; rateLimited: boolean }> {
    const r = { delivered: 0, failed: 0, claimed: 0, rateLimited: false };
    await db.transaction().execute(async (tx) => {
      const rows = await dueOutboxHeads(tx, batch);
      r.claimed = rows.length;
      for (const row of rows) {
        if (r.rateLimited) break; // left as they are: due again once the pause is over
        try {
          await deliverOne(row);
          await markOutboxDelivered(tx, row.id);
          r.delivered++;
        } catch (err) {
          r.failed++;
          const msg = errText(err);
          let retryAt: Date;
          if (err instanceof TrackerRetryError) {
            retryAt = err.retryAt.getTime() > Date.now() ? err.retryAt : new Date(Date.now() + 1000);
            pausedUntil = Math.max(pausedUntil, retryAt.getTime());
            r.rateLimited = true;
          } else {
            retryAt = new Date(Date.now() + outboxBackoffMs(row.attempts, backoff));
          }
          await markOutboxFailed(tx, row.id, msg, retryAt);
          const issueId = (row.payload as { issueId?: unknown } | null)?.issueId;
          log.warn({ outboxId: row.id, kind: row.kind, issueId, attempts: row.attempts + 1, retryAt: retryAt.toISOString(), err: msg }, 'tracker delivery failed; will retry');
        }
      }
    });
    return r;
  }

  async function tick(): Promise<TickResult> {
    const total: TickResult = { delivered: 0, failed: 0 };
    try {
      for (let i = 0; i < MAX_ROUNDS; i++) {
        if (Date.now() < pausedUntil) break;
        const r = await round();
        total.delivered += r.delivered;
        total.failed += r.failed;
        // Stop when nothing was claimed, or nothing got through (all due rows just failed).
        if (r.claimed === 0 || r.delivered === 0 || r.rateLimited) break;
      }
    } catch (err) {
      log.error({ err: errText(err) }, 'outbox delivery tick failed');
    }
    if (total.delivered > 0 || total.failed > 0) log.debug(total, 'outbox tick');
    return total;
  }

  function schedule(delayS: number, intervalS: number): void {
    if (stopped) return;
    timer = setTimeout(() => {
      timer = null;
      inFlight = tick().finally(() => {
        inFlight = null;
        schedule(intervalS, intervalS);
      });
    }, delayS * 1000);
    timer.unref();
  }

  return {
    tick,
    start(intervalS: number) {
      if (!stopped) return;
      stopped = false;
      schedule(0, Math.max(0.05, intervalS));
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = null;
      if (inFlight) await inFlight.catch(() => undefined);
    },
  };
}
