/**
 * The fleet against a Plane that enforces its rate limit: three real `orch reaper` processes
 * (each runs the outbox deliverers and the reconciliation poll) for three minutes, against the
 * fake Plane throttling the key at 60 requests a minute (apps/api/plane/api/rate_limit.py), with
 * 5 projects × 200 work items and a steady stream of state changes and comments in the outbox.
 * Expected: no outbox call is ever answered 429, every outbox entry is delivered, and the poll
 * still finds a "To Analyse" whose webhook was lost.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { insertOutbox } from '@orch/shared/db/queries/outbox';
import { getLiveTaskByIssue } from '@orch/shared/db/queries/tasks';
import type { TrackerStateRole } from '@orch/shared/tracker/types';
import { startFakePlane, type FakePlane } from './fakes/fake-plane.ts';
import { startOrch, waitFor, type Orch } from './support/harness.ts';

const API_KEY = 'plane_api_fleet_key';
const SLUG = 'acme';
const STATES = ['Backlog', 'To Analyse', 'In Progress', 'In Review', 'Done', 'Cancelled', 'Blocked', 'STOP'];
const RUN_MS = 180_000;
const LOAD_EVERY_MS = 4_000;

let fake: FakePlane | undefined;
let orch: Orch | undefined;
afterAll(async () => {
  await orch?.close(); // SIGKILLs any process still running
  await fake?.close();
});

const isOutboxCall = (r: { method: string; path: string }) => /\/work-items\//.test(r.path) && (r.method === 'PATCH' || r.method === 'POST');

describe('three processes, one Plane key, 60 requests a minute', () => {
  it(
    'no 429 on outbox calls, every outbox entry delivered, the poll still finds a missed "To Analyse"',
    async () => {
      fake = await startFakePlane({ apiKey: API_KEY, workspaceSlug: SLUG, rateLimitPerMinute: 60 });
      const projects = Array.from({ length: 5 }, () => randomUUID());
      const issues: string[][] = projects.map((p) => {
        fake!.addProject(p, STATES);
        return Array.from({ length: 200 }, (_, i) => fake!.addIssue(p, { name: `work item ${i}`, stateName: 'Backlog' }).id);
      });
      orch = await startOrch({
        env: {
          PLANE_BASE_URL: fake.url,
          PLANE_API_KEY: API_KEY,
          PLANE_WORKSPACE_SLUG: SLUG,
          PLANE_BOT_USER_ID: fake.botUserId,
          ORCH_PLANE_RECONCILE_S: '10',
          ORCH_OUTBOX_INTERVAL_S: '1',
          // the reaper's own tiers have nothing to do here: only the tracker loops run
          ORCH_REAPER_ENABLED: 'false',
        },
        project: { plane_project: projects[0]! },
      });
      for (let i = 1; i < projects.length; i++) await orch.addProject({ slug: `p${i}`, plane_project: projects[i]! });
      const db = orch.rt.svc.db;

      const procs = [0, 1, 2].map(() => orch!.spawn(['reaper']));
      const started = Date.now();
      // the outbox load: a state change and a comment every LOAD_EVERY_MS, on changing work items
      const roles: TrackerStateRole[] = ['in_progress', 'in_review', 'blocked', 'done'];
      let written = { set_state: 0, comment: 0 };
      let n = 0;
      let missed: string | null = null;
      let missedAt = 0;
      while (Date.now() - started < RUN_MS - 30_000) {
        const p = n % projects.length;
        const issueId = issues[p]![(n * 7) % 200]!;
        await insertOutbox(db, { taskId: null, kind: 'set_state', payload: { projectId: projects[p], issueId, role: roles[n % roles.length] } });
        await insertOutbox(db, { taskId: null, kind: 'comment', payload: { projectId: projects[p], issueId, html: `<p>load ${n}</p>` } });
        written = { set_state: written.set_state + 1, comment: written.comment + 1 };
        n++;
        if (!missed && Date.now() - started > 45_000) {
          // a person moves a work item to "To Analyse"; its webhook never arrives
          missed = issues[3]![199]!;
          fake.moveIssue(missed, 'To Analyse');
          missedAt = Date.now();
        }
        await new Promise((r) => setTimeout(r, LOAD_EVERY_MS));
      }
      // the last 30 s: no new load; everything written must go out
      const pending = async () => (await sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE delivered_at IS NULL`.execute(db)).rows[0]!.n;
      const task = await waitFor(() => getLiveTaskByIssue(db, missed!), Math.max(5_000, RUN_MS - 5_000 - (Date.now() - started)), 'a task for the missed "To Analyse"');
      const foundAfterS = (task.created_at.getTime() - missedAt) / 1000;
      // the task's own reports (in progress, the pick-up comment) go through the same outbox
      await waitFor(async () => (await pending()) === 0, Math.max(5_000, RUN_MS - (Date.now() - started)), 'the outbox drained');
      written = { set_state: written.set_state + 1, comment: written.comment + 1 };
      // the loops keep running for the whole three minutes; then everything must still be out
      await new Promise((r) => setTimeout(r, Math.max(0, RUN_MS - (Date.now() - started))));
      await waitFor(async () => (await pending()) === 0, 10_000, 'the outbox drained at the end');
      const elapsedMin = (Date.now() - started) / 60_000;
      for (const p of procs) p.kill('SIGTERM');
      await Promise.all(procs.map((p) => p));

      const outboxCalls = fake.requests.filter(isOutboxCall);
      const limited = fake.requests.filter((r) => r.status === 429);
      const latency = await sql<{ p50: number; p95: number; max: number }>`
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at))::float8 AS p50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at))::float8 AS p95,
               max(extract(epoch FROM delivered_at - created_at))::float8 AS max
        FROM outbox`.execute(db);
      // the figures, for the record (benches print them too: bench/plane-fleet.ts)
      process.stdout.write(
        `[plane-fleet] ${fake.requests.length} requests in ${elapsedMin.toFixed(2)} min (${(fake.requests.length / elapsedMin).toFixed(1)}/min), ` +
          `${outboxCalls.length} outbox calls, ${limited.length} × 429; delivery p50 ${latency.rows[0]!.p50.toFixed(2)} s, p95 ${latency.rows[0]!.p95.toFixed(2)} s, max ${latency.rows[0]!.max.toFixed(2)} s; the missed "To Analyse" found after ${foundAfterS.toFixed(1)} s\n`,
      );

      expect(outboxCalls.filter((r) => r.status === 429)).toEqual([]);
      expect(await pending()).toBe(0);
      expect(fake.stateChanges).toHaveLength(written.set_state);
      expect(fake.comments).toHaveLength(written.comment);
      expect(task.plane_issue_id).toBe(missed);
      // the poll listed from the list alone: no GET of a single work item
      expect(fake.requests.filter((r) => r.method === 'GET' && /\/work-items\/[0-9a-f-]{36}\/$/.test(r.path))).toEqual([]);
      // the poll read the lists at Plane's largest page, once per project per interval for the fleet
      const lists = fake.requests.filter((r) => r.method === 'GET' && /\/work-items\/$/.test(r.path));
      expect(lists.every((r) => new URLSearchParams(r.query).get('per_page') === '1000')).toBe(true);
      expect(lists.length).toBeLessThanOrEqual(Math.ceil(elapsedMin * 6 + 1) * projects.length);
    },
    RUN_MS + 120_000,
  );
});
