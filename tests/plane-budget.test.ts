/**
 * The fleet's Plane budget (rate-budget.ts, ADR 0008): the pure decision (when a denied take may
 * succeed), and the one-statement take against Postgres under concurrent takers — never more
 * than the window allows, the poll leaving the reserve and yielding to a due outbox row, a 429
 * pausing every taker — and what /metrics shows.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '@orch/api/app';
import { insertOutbox } from '@orch/shared/db/queries/outbox';
import { createOutboxDeliverer } from '@orch/shared/tracker/outbox-deliverer';
import { createPlaneTracker } from '@orch/shared/tracker/plane';
import { planeOutboxChannel } from '@orch/shared/tracker/plane-outbox';
import { capFor, createPlaneRateBudget, nextTakeAt, planeKeyHash } from '@orch/shared/tracker/rate-budget';
import { startFakePlane } from './fakes/fake-plane.ts';
import { startOrch, type Orch } from './support/harness.ts';

const t0 = new Date('2026-01-01T00:00:00Z');
const at = (s: number) => new Date(t0.getTime() + s * 1000);

describe('nextTakeAt (pure)', () => {
  const cases: Array<[string, Parameters<typeof nextTakeAt>[0], number, boolean, ReturnType<typeof nextTakeAt>]> = [
    ['room left', { pausedUntil: null, recent: [at(-10)], now: t0, outboxWaiting: false }, 3, false, { ok: true }],
    ['paused by a 429', { pausedUntil: at(30), recent: [], now: t0, outboxWaiting: false }, 3, false, { ok: false, retryAt: at(30), reason: 'paused' }],
    ['a pause that is over', { pausedUntil: at(-1), recent: [], now: t0, outboxWaiting: false }, 3, false, { ok: true }],
    ['full: when the oldest send leaves the window', { pausedUntil: null, recent: [at(-50), at(-20), at(-5)], now: t0, outboxWaiting: false }, 3, false, { ok: false, retryAt: at(12), reason: 'exhausted' }],
    ['over the cap (the poll under the reserve): enough must leave', { pausedUntil: null, recent: [at(-50), at(-40), at(-20), at(-5)], now: t0, outboxWaiting: false }, 2, false, { ok: false, retryAt: at(42), reason: 'exhausted' }],
    ['outbox first', { pausedUntil: null, recent: [], now: t0, outboxWaiting: true }, 3, true, { ok: false, retryAt: at(1), reason: 'outbox_first' }],
    ['the outbox never yields to itself', { pausedUntil: null, recent: [], now: t0, outboxWaiting: true }, 3, false, { ok: true }],
  ];
  it.each(cases)('%s', (_name, a, cap, yieldToOutbox, want) => {
    expect(nextTakeAt(a, cap, 62, yieldToOutbox)).toEqual(want);
  });

  it('capFor: the poll leaves the reserve, the outbox and intake may spend everything', () => {
    expect(capFor('poll', { limit: 60, reserve: 20 })).toBe(40);
    expect(capFor('outbox', { limit: 60, reserve: 20 })).toBe(60);
    expect(capFor('intake', { limit: 60, reserve: 20 })).toBe(60);
  });
});

describe('the budget in Postgres', () => {
  let orch: Orch;
  beforeAll(async () => {
    orch = await startOrch();
  });
  afterAll(() => orch.close());

  it('concurrent takers of several "processes" never get more than the window allows', async () => {
    const budgets = [0, 1, 2].map(() => createPlaneRateBudget(orch.rt.svc.db, 'key-concurrent', { limit: 10, reserve: 4, windowS: 62 }));
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => budgets[i % 3]!.take('outbox')));
    expect(results.filter((r) => r.ok)).toHaveLength(10);
    const denied = results.find((r) => !r.ok);
    expect(denied).toMatchObject({ ok: false, reason: 'exhausted' });
    // the key is stored as a hash, never as itself
    const rows = await sql<{ key_hash: string }>`SELECT key_hash FROM plane_rate_budget`.execute(orch.rt.svc.db);
    expect(rows.rows.map((r) => r.key_hash)).toContain(planeKeyHash('key-concurrent'));
    expect(JSON.stringify(rows.rows)).not.toContain('key-concurrent');
  });

  it('the poll leaves the reserve to the outbox, and yields while an outbox row is due', async () => {
    const b = createPlaneRateBudget(orch.rt.svc.db, 'key-reserve', { limit: 10, reserve: 4, windowS: 62 });
    const poll = await Promise.all(Array.from({ length: 8 }, () => b.take('poll')));
    expect(poll.filter((r) => r.ok)).toHaveLength(6);
    const outbox = await Promise.all(Array.from({ length: 6 }, () => b.take('outbox')));
    expect(outbox.filter((r) => r.ok)).toHaveLength(4);

    const c = createPlaneRateBudget(orch.rt.svc.db, 'key-yield', { limit: 10, reserve: 4, windowS: 62 });
    expect((await c.take('poll')).ok).toBe(true);
    await insertOutbox(orch.rt.svc.db, { taskId: null, kind: 'comment', payload: { projectId: 'p', issueId: 'i-yield', html: '<p>x</p>' } });
    expect(await c.take('poll')).toMatchObject({ ok: false, reason: 'outbox_first' });
    expect((await c.take('outbox')).ok).toBe(true);
    // a row backing off after a failure is not "due": the poll goes on
    await sql`UPDATE outbox SET next_attempt_at = now() + interval '1 minute' WHERE order_key = 'i-yield'`.execute(orch.rt.svc.db);
    expect((await c.take('poll')).ok).toBe(true);
  });

  it('a 429 pauses the key for every taker until Retry-After; counted by caller; /metrics shows both', async () => {
    const db = orch.rt.svc.db;
    const a = createPlaneRateBudget(db, 'key-paused', { limit: 60, reserve: 20, windowS: 62 });
    const b = createPlaneRateBudget(db, 'key-paused', { limit: 60, reserve: 20, windowS: 62 });
    expect((await a.take('poll')).ok).toBe(true);
    const until = new Date(Date.now() + 30_000);
    await a.rateLimited('poll', until);
    const denied = await b.take('outbox');
    expect(denied).toMatchObject({ ok: false, reason: 'paused' });
    expect(Math.abs((denied as { retryAt: Date }).retryAt.getTime() - until.getTime())).toBeLessThan(5);

    const app = createApp({ db, boss: orch.rt.svc.boss, config: orch.config, log: orch.log });
    const text = await (await app.request('/metrics')).text();
    const value = (name: string, caller: string) => Number(new RegExp(`^${name}\\{caller="${caller}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? NaN);
    // earlier tests of this file spent on other keys: totals are over every key
    const totals = await sql<{ outbox: number; poll: number }>`
      SELECT sum((requests->>'outbox')::int)::int AS outbox, sum((requests->>'poll')::int)::int AS poll FROM plane_rate_budget`.execute(db);
    expect(value('orch_plane_requests_total', 'outbox')).toBe(totals.rows[0]!.outbox);
    expect(value('orch_plane_requests_total', 'poll')).toBe(totals.rows[0]!.poll);
    expect(value('orch_plane_rate_limited_total', 'poll')).toBe(1);
    expect(value('orch_plane_rate_limited_total', 'outbox')).toBe(0);
    expect(text).toMatch(/^orch_outbox_backlog\{target="plane"\} \d+/m);
  });

  it('an outbox row that finds no slot is not sent and not counted: it waits, then goes out', async () => {
    const db = orch.rt.svc.db;
    const fake = await startFakePlane({ apiKey: 'key-outbox-waits', workspaceSlug: 'w' });
    try {
      fake.addProject('proj', ['Backlog', 'In Progress']);
      const issue = fake.addIssue('proj', { name: 'x', stateName: 'Backlog' });
      // a window of 2 s (tests cannot wait a minute): two sends fill it
      const budget = createPlaneRateBudget(db, 'key-outbox-waits', { limit: 2, reserve: 0, windowS: 2 });
      expect((await budget.take('poll')).ok).toBe(true);
      expect((await budget.take('poll')).ok).toBe(true);
      const tracker = createPlaneTracker({ baseUrl: fake.url, apiKey: 'key-outbox-waits', workspaceSlug: 'w', budget, stateNames: { in_progress: 'In Progress', in_review: 'x', done: 'x', cancelled: 'x', blocked: 'x' } });
      await insertOutbox(db, { taskId: null, kind: 'comment', payload: { projectId: 'proj', issueId: issue.id, html: '<p>waits</p>' } });
      const deliverer = createOutboxDeliverer({ db, channel: planeOutboxChannel(tracker), log: orch.log });
      // the client waits up to 3 s for a slot that frees up soon: this one frees in ≤ 2 s, so it goes out
      const t0 = Date.now();
      expect(await deliverer.tick()).toEqual({ delivered: 1, failed: 0 });
      expect(Date.now() - t0).toBeGreaterThan(500);
      expect(fake.comments.map((c) => c.comment_html)).toEqual(['<p>waits</p>']);
      const row = (await sql<{ attempts: number; last_error: string | null }>`SELECT attempts, last_error FROM outbox WHERE order_key = ${issue.id}`.execute(db)).rows[0]!;
      expect(row).toEqual({ attempts: 0, last_error: null });
      // a pause set by a 429 is not waited through: nothing is sent, the row is left as it is
      await budget.rateLimited('outbox', new Date(Date.now() + 60_000));
      await insertOutbox(db, { taskId: null, kind: 'comment', payload: { projectId: 'proj', issueId: issue.id, html: '<p>later</p>' } });
      expect(await deliverer.tick()).toEqual({ delivered: 0, failed: 0 });
      const later = (await sql<{ attempts: number; last_error: string | null; delivered_at: Date | null }>`SELECT attempts, last_error, delivered_at FROM outbox WHERE payload->>'html' = '<p>later</p>'`.execute(db)).rows[0]!;
      expect(later).toEqual({ attempts: 0, last_error: null, delivered_at: null });
      expect(fake.comments).toHaveLength(1);
    } finally {
      await fake.close();
    }
  });
});
