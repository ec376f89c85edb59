/**
 * Fuzzing `POST /webhooks/plane` in-process (`createApp(...).request`): 10,000 random and
 * mutated bodies/headers — random bytes, truncated JSON, valid shapes with wrong types, huge
 * strings (under the body limit), a valid signature over garbage, wrong signatures over valid
 * payloads, unicode, missing headers. Never a 5xx; nothing is written without a valid signature
 * (rows of tasks, jobs, webhook_deliveries, task_events, outbox counted before/after); `/healthz`
 * answers fast during and after. Then a batch with VALID signatures over mutated valid payloads:
 * only 2xx/4xx, and the rows written are consistent.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '@orch/api/app';
import { startOrch, type Orch } from './support/harness.ts';
import { PLANE_STATE_IDS, planeStateChangeBody, signPlaneBody } from './support/plane-webhook.ts';

const SECRET = 'whsec-fuzz-secret-0123456789';
const PLANE_PROJECT = '5b1d7e4e-1c2a-4f7b-8a59-0c6f2d1e9a10';
const STATES = PLANE_STATE_IDS;
const STATE_NAMES = Object.fromEntries(Object.entries(STATES).map(([n, id]) => [id, n]));
const UNSIGNED = Number(process.env.FUZZ_UNSIGNED ?? 10_000);
const SIGNED = Number(process.env.FUZZ_SIGNED ?? 1_500);

let orch: Orch;
let app: ReturnType<typeof createApp>;
let bodyLimit: number;

beforeAll(async () => {
  orch = await startOrch({ env: { PLANE_WEBHOOK_SECRET: SECRET }, project: { plane_project: PLANE_PROJECT } });
  const { db, boss, log } = orch.rt.svc;
  bodyLimit = orch.config.api.bodyLimitBytes;
  // a Plane client stand-in that knows the state names (no network: never a 503 for Plane down)
  app = createApp({ db, boss, config: orch.config, log, tracker: { stateNameOf: async (_p, id) => STATE_NAMES[id] ?? null } });
});
afterAll(async () => {
  await orch?.close();
});

const sign = (body: Uint8Array | string, secret = SECRET) => signPlaneBody(body, secret);

function validPayload(issueId: string, stateName: string, name = 'Fuzzed issue'): Record<string, unknown> {
  return planeStateChangeBody({
    issueId,
    name,
    project: PLANE_PROJECT,
    state: { name: stateName, id: STATES[stateName] ?? randomUUID() },
    description: 'from the fuzzer',
    actor: { id: randomUUID() },
    activity: { new_value: STATES[stateName] ?? null },
  });
}

/** Replace the value at a random path of a JSON tree (or delete it, or add a key). */
function mutate(tree: unknown, rnd: () => number, replacement: () => unknown): unknown {
  const clone = JSON.parse(JSON.stringify(tree)) as Record<string, unknown>;
  const paths: Array<[Record<string, unknown>, string]> = [];
  const walk = (o: unknown) => {
    if (o && typeof o === 'object' && !Array.isArray(o)) {
      for (const k of Object.keys(o)) {
        paths.push([o as Record<string, unknown>, k]);
        walk((o as Record<string, unknown>)[k]);
      }
    }
  };
  walk(clone);
  const n = 1 + Math.floor(rnd() * 3);
  for (let i = 0; i < n && paths.length; i++) {
    const [parent, key] = paths[Math.floor(rnd() * paths.length)]!;
    const op = rnd();
    if (op < 0.2) delete parent[key];
    else if (op < 0.3) parent[`extra_${Math.floor(rnd() * 1000)}`] = replacement();
    else parent[key] = replacement();
  }
  return clone;
}

type Req = { kind: string; body: Uint8Array | string; headers: Record<string, string> };

/** The 10,000 unauthenticated (or wrongly signed) requests, drawn with fast-check from a fixed seed. */
function unsignedRequests(n: number): Req[] {
  const anyJson = fc.oneof(fc.anything(), fc.string({ unit: 'grapheme', maxLength: 50 }), fc.integer(), fc.constant(null), fc.array(fc.nat(), { maxLength: 3 }));
  const unicode = fc.string({ unit: 'binary', maxLength: 80 });
  const gen: fc.Arbitrary<Req> = fc.oneof(
    // random bytes, with random or no signature
    fc.record({ kind: fc.constant('bytes'), bytes: fc.uint8Array({ maxLength: 2048 }), sig: fc.option(fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 64, maxLength: 64 })) }).map(
      (r): Req => ({ kind: r.kind, body: r.bytes, headers: r.sig === null ? {} : { 'x-plane-signature': r.sig } }),
    ),
    // truncated JSON of a valid payload, signed with a wrong secret
    fc.record({ kind: fc.constant('truncated'), cut: fc.nat({ max: 600 }) }).map((r) => {
      const raw = JSON.stringify(validPayload(randomUUID(), 'To Analyse'));
      const body = raw.slice(0, r.cut % raw.length);
      return { kind: r.kind, body, headers: { 'x-plane-signature': sign(body, 'not-the-secret') } };
    }),
    // valid shapes with wrong types, no signature / garbage signature
    fc.record({ kind: fc.constant('wrong-types'), seed: fc.integer(), v: anyJson, sig: fc.constantFrom('', 'zz', 'deadbeef', 'g'.repeat(64), ' ') }).map((r): Req => {
      const rnd = mulberry(r.seed);
      const body = JSON.stringify(mutate(validPayload(randomUUID(), 'To Analyse'), rnd, () => r.v));
      return { kind: r.kind, body, headers: r.sig ? { 'x-plane-signature': r.sig } : {} };
    }),
    // a VALID payload with a wrong signature: other body, other secret, truncated, case/space tricks
    fc.record({ kind: fc.constant('wrong-sig'), how: fc.nat({ max: 5 }), state: fc.constantFrom('To Analyse', 'STOP') }).map((r) => {
      const body = JSON.stringify(validPayload(randomUUID(), r.state));
      const good = sign(body);
      const sigs = [
        sign(body + ' '),
        sign(body, SECRET + 'x'),
        good.slice(0, 63),
        good + '0',
        `sha256=${good}`,
        good.replace(/[0-9]/, (d) => String((Number(d) + 1) % 10)),
      ];
      return { kind: r.kind, body, headers: { 'x-plane-signature': sigs[r.how]! } };
    }),
    // huge strings (under the body limit), unsigned
    fc.record({ kind: fc.constant('huge'), size: fc.integer({ min: 10_000, max: 900_000 }) }).map((r) => {
      const body = JSON.stringify(validPayload(randomUUID(), 'To Analyse', 'x'.repeat(r.size)));
      return { kind: r.kind, body, headers: { 'x-plane-signature': sign(body, 'wrong') } };
    }),
    // unicode everywhere, missing or wrong headers
    fc.record({ kind: fc.constant('unicode'), name: unicode, id: unicode, header: fc.option(unicode) }).map((r) => {
      const body = JSON.stringify(validPayload(r.id, 'To Analyse', r.name));
      const headers: Record<string, string> = {};
      // header values must be ByteStrings: keep the latin-1 part
      if (r.header !== null) headers['x-plane-signature'] = r.header.replace(/[^\x20-\x7e]/g, '');
      return { kind: r.kind, body, headers };
    }),
  );
  return fc.sample(gen, { numRuns: n, seed: 8_2026 });
}

/** Valid signatures over mutated valid payloads (a small pool of issue ids, both states). */
function signedRequests(n: number): Req[] {
  const issues = Array.from({ length: 25 }, () => randomUUID());
  const value = fc.oneof(
    fc.anything({ maxDepth: 1 }),
    fc.string({ unit: 'binary', maxLength: 40 }),
    fc.constantFrom('', ' ', '\u0000', 'To Analyse', 'STOP', PLANE_PROJECT, ...Object.values(STATES), 'x'.repeat(600)),
  );
  const gen = fc.record({
    issue: fc.constantFrom(...issues),
    state: fc.constantFrom('To Analyse', 'To Analyse', 'STOP', 'Backlog'),
    mutateIt: fc.boolean(),
    seed: fc.integer(),
    v: value,
    name: fc.oneof(fc.string({ unit: 'grapheme', maxLength: 60 }), fc.constant('Fuzzed issue')),
  }).map((r) => {
    const base = validPayload(r.issue, r.state, r.name);
    const tree = r.mutateIt ? mutate(base, mulberry(r.seed), () => r.v) : base;
    const body = JSON.stringify(tree);
    return { kind: 'signed', body, headers: { 'x-plane-signature': sign(body), 'x-plane-delivery': randomUUID() } };
  });
  return fc.sample(gen, { numRuns: n, seed: 42 });
}

function mulberry(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function counts(): Promise<Record<string, number>> {
  const r = await sql<Record<string, number>>`
    SELECT (SELECT count(*)::int FROM tasks) AS tasks, (SELECT count(*)::int FROM jobs) AS jobs,
           (SELECT count(*)::int FROM webhook_deliveries) AS deliveries, (SELECT count(*)::int FROM task_events) AS events,
           (SELECT count(*)::int FROM outbox) AS outbox`.execute(orch.rt.svc.db);
  return r.rows[0]!;
}

async function post(r: Req): Promise<number> {
  const res = await app.request('/webhooks/plane', {
    method: 'POST',
    body: r.body,
    headers: { 'content-type': 'application/json', ...r.headers },
  });
  await res.arrayBuffer();
  return res.status;
}

/** /healthz sampled every few ms on the same event loop while `work` runs. */
async function withHealthProbe<T>(work: () => Promise<T>): Promise<{ result: T; latencies: number[] }> {
  const latencies: number[] = [];
  let on = true;
  const probe = (async () => {
    while (on) {
      const t0 = performance.now();
      const res = await app.request('/healthz');
      expect(res.status).toBe(200);
      latencies.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  try {
    return { result: await work(), latencies };
  } finally {
    on = false;
    await probe;
  }
}

const p99 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.max(0, Math.ceil(xs.length * 0.99) - 1)] ?? 0;

describe('webhook fuzz', () => {
  it(`${UNSIGNED} unsigned / wrongly signed / malformed requests: never a 5xx, nothing written, /healthz fast`, async () => {
    const reqs = unsignedRequests(UNSIGNED);
    for (const r of reqs) {
      // keep the fuzz under the limit (the 413 path is its own case below)
      const size = typeof r.body === 'string' ? Buffer.byteLength(r.body) : r.body.length;
      expect(size).toBeLessThan(bodyLimit);
    }
    const before = await counts();
    const byStatus: Record<string, number> = {};
    const byKind: Record<string, Record<number, number>> = {};
    const { latencies } = await withHealthProbe(async () => {
      // 8 requests in flight at a time
      for (let i = 0; i < reqs.length; i += 8) {
        const batch = reqs.slice(i, i + 8);
        const statuses = await Promise.all(batch.map(post));
        // in-process requests resolve on microtasks only: yield to timers as a server's I/O would
        await new Promise((r) => setImmediate(r));
        statuses.forEach((s, j) => {
          byStatus[s] = (byStatus[s] ?? 0) + 1;
          const k = (byKind[batch[j]!.kind] ??= {});
          k[s] = (k[s] ?? 0) + 1;
        });
      }
    });
    console.log(`webhook fuzz (unsigned): ${JSON.stringify(byKind)}; healthz p99 ${p99(latencies).toFixed(1)} ms max ${Math.max(...latencies).toFixed(1)} ms (n=${latencies.length})`);
    expect(Object.keys(byStatus).filter((s) => Number(s) >= 500)).toEqual([]);
    // without a valid signature: 401 only
    expect(Object.keys(byStatus)).toEqual(['401']);
    expect(await counts()).toEqual(before);
    expect(p99(latencies)).toBeLessThan(50);
    // after: still fast
    const t0 = performance.now();
    expect((await app.request('/healthz')).status).toBe(200);
    expect(performance.now() - t0).toBeLessThan(50);
  }, 45_000);

  it('a valid signature over garbage is a 400 and writes nothing; an over-limit body is a 413', async () => {
    const before = await counts();
    const garbage = fc.sample(
      fc.oneof(
        fc.uint8Array({ minLength: 1, maxLength: 512 }),
        fc.string({ unit: 'binary', maxLength: 200 }),
        fc.constantFrom('{', '[]', 'null', '1', '"x"', '{"event":"issue"}', '{"event":"issue","action":"updated","data":{}}', '\uFEFF{}'),
      ),
      { numRuns: 500, seed: 7 },
    );
    const statuses: Record<number, number> = {};
    for (const body of garbage) {
      const s = await post({ kind: 'garbage', body, headers: { 'x-plane-signature': sign(body) } });
      statuses[s] = (statuses[s] ?? 0) + 1;
    }
    console.log(`webhook fuzz (signed garbage): ${JSON.stringify(statuses)}`);
    expect(Object.keys(statuses).every((s) => Number(s) >= 400 && Number(s) < 500)).toBe(true);
    expect(await counts()).toEqual(before);
    const big = 'x'.repeat(bodyLimit + 10);
    expect(await post({ kind: 'big', body: big, headers: { 'x-plane-signature': sign(big) } })).toBe(413);
    expect(await counts()).toEqual(before);
  });

  it(`${SIGNED} validly signed mutated payloads: only 2xx/4xx, consistent rows`, async () => {
    const reqs = signedRequests(SIGNED);
    const byStatus: Record<number, number> = {};
    const fivexx: string[] = [];
    const { latencies } = await withHealthProbe(async () => {
      for (let i = 0; i < reqs.length; i += 4) {
        const batch = reqs.slice(i, i + 4);
        const statuses = await Promise.all(batch.map(post));
        statuses.forEach((s, j) => {
          byStatus[s] = (byStatus[s] ?? 0) + 1;
          if (s >= 500 && fivexx.length < 5) fivexx.push(String(batch[j]!.body).slice(0, 400));
        });
      }
    });
    const c = await counts();
    console.log(`webhook fuzz (signed): ${JSON.stringify(byStatus)}; rows ${JSON.stringify(c)}; healthz p99 ${p99(latencies).toFixed(1)} ms (n=${latencies.length})`);
    expect(fivexx).toEqual([]);
    expect(c.tasks).toBeGreaterThan(0); // the batch really created tasks
    expect(p99(latencies)).toBeLessThan(50);

    const q = async (name: string, text: string) => {
      const r = await orch.rt.svc.pool.query(text);
      expect(r.rows, name).toEqual([]);
    };
    await q('tasks without a project', `SELECT t.id FROM tasks t LEFT JOIN projects p ON p.id = t.project_id WHERE p.id IS NULL`);
    await q('tasks with an empty or over-long title', `SELECT id, title FROM tasks WHERE btrim(title) = '' OR length(title) > 500`);
    await q('two live tasks of one Plane issue', `
      SELECT split_part(plane_issue_id, '~', 1) AS issue, count(*) FROM tasks
      WHERE plane_issue_id IS NOT NULL AND plane_issue_id NOT LIKE '%~cancelled~%' GROUP BY 1 HAVING count(*) > 1`);
    await q('tasks of the webhook without a Plane issue', `SELECT id FROM tasks WHERE plane_issue_id IS NULL`);
    await q('live tasks without a job', `
      SELECT t.id FROM tasks t WHERE t.stage NOT IN ('done','cancelled') AND t.waiting_for IS NULL
        AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.task_id = t.id)`);
    await q('more than one live job per task', `SELECT task_id FROM jobs WHERE status IN ('queued','running') GROUP BY task_id HAVING count(*) > 1`);
    await q('task events of unknown tasks', `SELECT e.id FROM task_events e LEFT JOIN tasks t ON t.id = e.task_id WHERE t.id IS NULL`);
    await q('deliveries pointing at unknown tasks', `
      SELECT d.dedupe_key FROM webhook_deliveries d WHERE d.task_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = d.task_id)`);
    await q('acting deliveries without a task', `
      SELECT dedupe_key, outcome FROM webhook_deliveries WHERE outcome IN ('task_created','task_relaunched','stop_requested') AND task_id IS NULL`);
    await q('created tasks without a created event', `
      SELECT t.id FROM tasks t WHERE NOT EXISTS (SELECT 1 FROM task_events e WHERE e.task_id = t.id AND e.kind = 'created')`);
  }, 60_000);
});
