/**
 * The outbox delivery loop: calls to Plane (state changes, comments) and to Gitea (pull-request
 * comments, commit statuses) written in the transaction of the change that causes them are
 * delivered here, later, by a loop that never raises — one loop per target, so a Plane that is
 * rate-limited never holds up Gitea and the other way round. A row stays in the table until the
 * service accepted it, so a service that is down for an hour loses nothing: its rows back off (5 s
 * doubling, capped at 10 min) and go out when it is back.
 *
 * "Not before" answers are not the row's fault and do not count as attempts: a 429 reschedules
 * the row at Retry-After and pauses this deliverer until then; no slot in the fleet's Plane budget
 * (TrackerDeferred: nothing was sent) leaves the row as it is and pauses until a slot frees up.
 *
 * Order: rows are claimed with `dueOutboxHeads` — the oldest undelivered row of each order key (a
 * Plane issue, a Gitea pull request), FOR UPDATE SKIP LOCKED — so calls reach the service in the
 * order they were written, per key, even with several deliverers running at once.
 *
 * Delivery is at-least-once: a crash between the service's answer and the commit sends the row
 * again (a state change and a commit status are idempotent; a comment may appear twice).
 */
import type { Db, DbOrTx } from '../db/client.ts';
import { dueOutboxHeads, markOutboxDelivered, markOutboxFailed, postponeOutbox, type OutboxRow } from '../db/queries/outbox.ts';
import type { OutboxTarget } from '../db/types.ts';
import type { Logger } from '../runtime/logger.ts';
import { TrackerDeferred, TrackerRetryError } from './types.ts';

export interface OutboxBackoff {
  /** first retry after this many seconds (default 5) */
  baseS: number;
  /** never wait longer than this (default 600) */
  maxS: number;
}

/** How rows of one target are delivered. */
export interface OutboxChannel {
  readonly target: OutboxTarget;
  /**
   * Deliver one row; `tx` is the transaction that claimed it (for what the delivery implies, e.g.
   * the state an issue is now known to be in). Throws to fail the attempt (TrackerRetryError: not
   * before its `retryAt`, not counted; TrackerDeferred: nothing was sent, the row is left as it is).
   */
  deliver(row: OutboxRow, tx: DbOrTx): Promise<void>;
}

export interface OutboxDelivererOptions {
  db: Db;
  channel: OutboxChannel;
  log: Logger;
  /** rows claimed per transaction (default 20) */
  batch?: number;
  backoff?: Partial<OutboxBackoff>;
  /** strings that must never reach a log line or `outbox.last_error` (API keys, tokens) */
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

/** a tick claims at most this many batches, so one tick cannot run forever */
const MAX_ROUNDS = 50;

/** Delay before retry number `attempts + 1`: base · 2^attempts, capped. */
export function outboxBackoffMs(attempts: number, b: OutboxBackoff): number {
  const exp = Math.min(Math.max(0, attempts), 30);
  return Math.min(b.baseS * 2 ** exp, b.maxS) * 1000;
}

/** The payload of a row as an object, or null. */
export function outboxPayload(row: OutboxRow): Record<string, unknown> | null {
  let p: unknown = row.payload;
  if (typeof p === 'string') {
    try {
      p = JSON.parse(p) as unknown;
    } catch {
      return null;
    }
  }
  return p !== null && typeof p === 'object' && !Array.isArray(p) ? (p as Record<string, unknown>) : null;
}

export function createOutboxDeliverer(opts: OutboxDelivererOptions): OutboxDeliverer {
  const { db, channel, log } = opts;
  const batch = Math.max(1, opts.batch ?? 20);
  const backoff: OutboxBackoff = { baseS: opts.backoff?.baseS ?? 5, maxS: opts.backoff?.maxS ?? 600 };
  const secrets = (opts.secrets ?? []).filter((s) => s.length > 0);
  /** set by a 429 or an empty budget: nothing is sent before this time */
  let pausedUntil = 0;
  let timer: NodeJS.Timeout | null = null;
  let stopped = true;
  let inFlight: Promise<TickResult> | null = null;

  const redact = (s: string): string => secrets.reduce((acc, k) => acc.split(k).join('[redacted]'), s);
  const errText = (err: unknown): string => redact(err instanceof Error ? err.message : String(err));

  /** One transaction: claim a batch of heads, deliver each, record each outcome. */
  async function round(): Promise<TickResult & { claimed: number; paused: boolean }> {
    const r = { delivered: 0, failed: 0, claimed: 0, paused: false };
    await db.transaction().execute(async (tx) => {
      const rows = await dueOutboxHeads(tx, channel.target, batch);
      r.claimed = rows.length;
      for (const row of rows) {
        if (r.paused) break; // left as they are: due again once the pause is over
        try {
          await channel.deliver(row, tx);
          await markOutboxDelivered(tx, row.id);
          r.delivered++;
        } catch (err) {
          const msg = errText(err);
          const ctx = { outboxId: row.id, target: row.target, kind: row.kind, key: row.order_key };
          if (err instanceof TrackerRetryError) {
            const retryAt = err.retryAt.getTime() > Date.now() ? err.retryAt : new Date(Date.now() + 1000);
            pausedUntil = Math.max(pausedUntil, retryAt.getTime());
            r.paused = true;
            if (err instanceof TrackerDeferred) {
              log.debug({ ...ctx, retryAt: retryAt.toISOString(), err: msg }, 'not sent (no budget left); the row waits');
              continue;
            }
            r.failed++;
            await postponeOutbox(tx, row.id, msg, retryAt);
            log.warn({ ...ctx, retryAt: retryAt.toISOString(), err: msg }, 'delivery postponed (rate limited)');
            continue;
          }
          r.failed++;
          const retryAt = new Date(Date.now() + outboxBackoffMs(row.attempts, backoff));
          await markOutboxFailed(tx, row.id, msg, retryAt);
          log.warn({ ...ctx, attempts: row.attempts + 1, retryAt: retryAt.toISOString(), err: msg }, 'delivery failed; will retry');
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
        if (r.claimed === 0 || r.delivered === 0 || r.paused) break;
      }
    } catch (err) {
      log.error({ err: errText(err) }, 'outbox delivery tick failed');
    }
    if (total.delivered > 0 || total.failed > 0) log.debug({ target: channel.target, ...total }, 'outbox tick');
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
