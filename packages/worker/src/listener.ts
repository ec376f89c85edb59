/**
 * One LISTEN session for the worker: dispatch wake-ups and cancel requests. Reconnects by
 * itself; every (re)connect triggers `onReconnect` so a wake-up lost while disconnected costs
 * nothing (the caller drains and re-checks cancels).
 */
import pg from 'pg';
import type { Logger } from '@orch/shared/runtime/logger';

export interface Listener {
  close(): Promise<void>;
}

export function listen(
  connectionString: string,
  channels: string[],
  onNotify: (channel: string, payload: string) => void,
  onReconnect: () => void,
  log: Logger,
): Listener {
  let client: pg.Client | null = null;
  let closed = false;
  let retryMs = 200;

  async function connect(): Promise<void> {
    if (closed) return;
    const c = new pg.Client({ connectionString, application_name: 'orch-listen', keepAlive: true });
    c.on('notification', (n) => onNotify(n.channel, n.payload ?? ''));
    c.on('error', (err) => {
      log.warn({ err }, 'listen connection error');
    });
    let retried = false;
    const retry = () => {
      if (retried || closed) return;
      retried = true;
      if (client === c) client = null;
      setTimeout(() => void connect(), retryMs).unref();
    };
    c.on('end', retry);
    try {
      await c.connect();
      for (const ch of channels) await c.query(`LISTEN ${pg.escapeIdentifier(ch)}`);
      client = c;
      retryMs = 200;
      onReconnect();
    } catch (err) {
      log.warn({ err }, 'listen connect failed; retrying');
      retryMs = Math.min(retryMs * 2, 5000);
      retry();
      try {
        await c.end();
      } catch {
        /* already closed */
      }
    }
  }
  void connect();

  return {
    async close() {
      closed = true;
      const c = client;
      client = null;
      if (c) await c.end().catch(() => {});
    },
  };
}
