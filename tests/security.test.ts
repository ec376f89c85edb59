/**
 * Security properties (issue 8):
 * - secrets never reach the logs: a pino logger writing to a captured stream, while a webhook
 *   arrives with a bad signature, the Plane client fails with the API key in play, and a task
 *   runs end to end at debug level;
 * - every mutating route needs the bearer token (enumerated from the app, not hand-listed);
 * - the Plane webhook answers 503 while Plane is configured without PLANE_WEBHOOK_SECRET;
 * - the agent's environment does not inherit orch's secrets;
 * - SQL is built only through parameterized queries (a grep of packages/*\/src).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { createApp } from '@orch/api/app';
import { loadConfig } from '@orch/shared/runtime/config';
import { createCommandAdapter } from '@orch/shared/agents/index';
import { insertOutbox } from '@orch/shared/db/queries/outbox';
import { createLogger, type Logger } from '@orch/shared/runtime/logger';
import { createTask } from '@orch/shared/pipeline/tasks';
import { openRuntime } from '@orch/shared/runtime/process-runtime';
import { createOutboxDeliverer } from '@orch/shared/tracker/outbox-deliverer';
import { planeOutboxChannel } from '@orch/shared/tracker/plane-outbox';
import { createPlaneTracker } from '@orch/shared/tracker/plane';
import { createWorker } from '@orch/worker/worker';
import { GOOD_AGENT } from './support/agents.ts';
import { ROOT, startOrch, waitFor, type Orch } from './support/harness.ts';
import { signPlaneBody } from './support/plane-webhook.ts';

const SECRETS = {
  DATABASE_URL: 'postgres://leaky:db-PASSWORD-s3cr3t@127.0.0.1:1/nowhere',
  GITEA_TOKEN: 'gitea-TOKEN-s3cr3t-0001',
  PLANE_API_KEY: 'plane_api_KEY-s3cr3t-0002',
  ORCH_API_TOKEN: 'orch-API-TOKEN-s3cr3t-0003',
  PLANE_WEBHOOK_SECRET: 'whsec-WEBHOOK-s3cr3t-0004',
};
const SECRET_VALUES = Object.values(SECRETS).concat(['db-PASSWORD-s3cr3t']);

let orch: Orch | undefined;
afterEach(async () => {
  await orch?.close();
  orch = undefined;
});

function capturedLogger(level = 'debug'): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const log = createLogger({ level, destination: { write: (s: string) => void lines.push(s) } });
  return { log, lines };
}

function expectNoSecret(texts: string[], what: string): void {
  const all = texts.join('\n');
  for (const s of SECRET_VALUES) expect(all.includes(s), `${what} contains the secret ${s.slice(0, 12)}…`).toBe(false);
}

/** Set variables in this test process's env (vitest runs each file in its own worker). */
function withProcessEnv(vars: Record<string, string>): () => void {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  return () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
}

describe('secrets never logged', () => {
  it('webhook with a bad signature, Plane client failures, a task run at debug level: no secret in the log', async () => {
    const restore = withProcessEnv(SECRETS);
    try {
      const { log, lines } = capturedLogger('debug');
      orch = await startOrch({
        env: {
          PLANE_WEBHOOK_SECRET: SECRETS.PLANE_WEBHOOK_SECRET,
          ORCH_API_TOKEN: SECRETS.ORCH_API_TOKEN,
          GITEA_BASE_URL: 'http://gitea.invalid',
          GITEA_TOKEN: SECRETS.GITEA_TOKEN,
          PLANE_BASE_URL: 'http://plane.invalid',
          PLANE_WORKSPACE_SLUG: 'w',
          PLANE_API_KEY: SECRETS.PLANE_API_KEY,
          ORCH_LOG_LEVEL: 'debug',
          ORCH_AGENT: 'command',
          ORCH_AGENT_CMD: `sh ${GOOD_AGENT}`,
        },
      });
      const s = orch.rt.svc;
      const app = createApp({ db: s.db, boss: s.boss, config: orch.config, log });

      // 1. webhooks: bad signature, signature made with the secret as the body, the secret in headers
      const body = JSON.stringify({ event: 'issue', action: 'updated', data: { id: SECRETS.PLANE_WEBHOOK_SECRET } });
      for (const sig of ['00'.repeat(32), SECRETS.PLANE_WEBHOOK_SECRET, signPlaneBody(body, 'wrong')]) {
        const r = await app.request('/webhooks/plane', { method: 'POST', body, headers: { 'x-plane-signature': sig, authorization: `Bearer ${SECRETS.ORCH_API_TOKEN}` } });
        expect(r.status).toBe(401);
      }
      // wrong and right bearer tokens on a mutating route; a failing request through onError
      const bad = await app.request('/tasks', { method: 'POST', body: '{"project":"p","title":"x"}', headers: { authorization: 'Bearer wrong-token' } });
      expect(bad.status).toBe(401);
      const good = await app.request('/tasks', {
        method: 'POST',
        body: JSON.stringify({ project: 'p', title: 'secure run' }),
        headers: { authorization: `Bearer ${SECRETS.ORCH_API_TOKEN}`, 'content-type': 'application/json' },
      });
      expect(good.status).toBe(201);

      // 2. the Plane client: transport error and an error body that echoes the request headers
      const echoFetch: typeof fetch = async (_url, init) =>
        new Response(`denied: ${JSON.stringify(init?.headers)}`, { status: 401 });
      const throwFetch: typeof fetch = async (url, init) => {
        throw new Error(`connect failed for ${String(url)} with ${JSON.stringify(init?.headers)}`);
      };
      const stateNames = { in_progress: 'In Progress', in_review: 'In Review', done: 'Done', cancelled: 'Cancelled', blocked: 'Blocked' };
      for (const f of [echoFetch, throwFetch]) {
        const tracker = createPlaneTracker({ baseUrl: 'http://plane.invalid', apiKey: SECRETS.PLANE_API_KEY, workspaceSlug: 'w', stateNames, fetch: f });
        const err = await tracker.stateNameOf('p1', 's1').then(() => null, (e: Error) => e);
        expect(err).toBeInstanceOf(Error);
        expect(err!.message).not.toContain(SECRETS.PLANE_API_KEY);
        log.error({ err: err!.message }, 'plane call failed');
        // the outbox loop, wired as the CLI wires it
        await insertOutbox(s.db, { taskId: null, kind: 'comment', payload: { projectId: 'p1', issueId: 'i1', html: '<p>x</p>' } });
        const deliverer = createOutboxDeliverer({ db: s.db, channel: planeOutboxChannel(tracker), log, secrets: [SECRETS.PLANE_API_KEY] });
        const r = await deliverer.tick();
        expect(r.delivered).toBe(0);
        const cErr = await tracker.comment({ projectId: 'p1', issueId: 'i1', html: '<p>x</p>' }).then(() => null, (e: Error) => e);
        expect(cErr!.message).not.toContain(SECRETS.PLANE_API_KEY);
        log.warn({ err: cErr!.message }, 'plane comment failed');
      }

      // 3. a whole task run (the task created through the API above) with the captured logger
      const w = createWorker({ svc: s, agent: createCommandAdapter(orch.config.agent.command!), connectionString: orch.url, log });
      await w.start();
      try {
        await waitFor(async () => (await sql<{ n: number }>`SELECT count(*)::int AS n FROM tasks WHERE stage = 'done'`.execute(s.db)).rows[0]!.n === 1, 60_000, 'task done');
      } finally {
        await w.stop();
      }
      expect(lines.length).toBeGreaterThan(10); // the capture really saw the run
      expect(lines.some((l) => l.includes('plane call failed'))).toBe(true);
      expectNoSecret(lines, 'the log');
    } finally {
      restore();
    }
  });
});

describe('authentication', () => {
  it('every mutating route answers 401 without (or with a wrong) bearer token; GET routes stay open', async () => {
    orch = await startOrch({ env: { ORCH_API_TOKEN: SECRETS.ORCH_API_TOKEN, PLANE_WEBHOOK_SECRET: SECRETS.PLANE_WEBHOOK_SECRET } });
    const s = orch.rt.svc;
    const app = createApp({ db: s.db, boss: s.boss, config: orch.config, log: s.log });
    const mutating = [
      ...new Set(
        app.routes
          .filter((r) => ['POST', 'PUT', 'PATCH', 'DELETE'].includes(r.method) && !r.path.startsWith('/webhooks'))
          .map((r) => `${r.method} ${r.path}`),
      ),
    ].sort();
    for (const must of ['POST /projects', 'POST /tasks', 'POST /tasks/:id/retry', 'POST /tasks/:id/stop']) expect(mutating).toContain(must);
    const t = await createTask(s, { project: 'p', title: 'auth' }, 'test');
    const before = await sql<{ n: number }>`SELECT (SELECT count(*) FROM tasks) + (SELECT count(*) FROM projects) + (SELECT count(*) FROM task_events) AS n`.execute(s.db);
    for (const route of mutating) {
      const [method, p] = route.split(' ') as [string, string];
      const url = p.replace(/:id\b/g, String(t.id)).replace(/:[a-z_]+/g, 'x');
      for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: SECRETS.ORCH_API_TOKEN }, { authorization: `Basic ${SECRETS.ORCH_API_TOKEN}` }]) {
        const r = await app.request(url, { method, body: JSON.stringify({ project: 'p', title: 'x', slug: 'zz', repo: '/tmp/x' }), headers: { 'content-type': 'application/json', ...headers } });
        expect(r.status, `${route} ${JSON.stringify(headers)}`).toBe(401);
        expect(((await r.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
      }
    }
    const after = await sql<{ n: number }>`SELECT (SELECT count(*) FROM tasks) + (SELECT count(*) FROM projects) + (SELECT count(*) FROM task_events) AS n`.execute(s.db);
    expect(after.rows[0]!.n).toBe(before.rows[0]!.n);
    // the right token passes; GET routes are open
    const ok = await app.request(`/tasks/${t.id}/stop`, { method: 'POST', headers: { authorization: `Bearer ${SECRETS.ORCH_API_TOKEN}` } });
    expect([200, 202]).toContain(ok.status);
    for (const g of ['/healthz', '/queue', '/tasks', `/tasks/${t.id}`]) expect((await app.request(g)).status, g).toBe(200);
    // bad input is a 4xx, never a 5xx: NUL characters cannot be stored in Postgres text
    const nul = await app.request('/tasks', {
      method: 'POST',
      body: JSON.stringify({ project: 'p', title: 'nul \u0000 title' }),
      headers: { authorization: `Bearer ${SECRETS.ORCH_API_TOKEN}`, 'content-type': 'application/json' },
    });
    expect(nul.status).toBe(400);
  });

  it('the Plane webhook answers 503 when Plane is configured without PLANE_WEBHOOK_SECRET, and writes nothing', async () => {
    orch = await startOrch({ env: { PLANE_BASE_URL: 'http://plane.invalid', PLANE_API_KEY: SECRETS.PLANE_API_KEY, PLANE_WORKSPACE_SLUG: 'w' } });
    expect(orch.config.plane.api).not.toBeNull();
    expect(orch.config.plane.webhookSecret).toBeUndefined();
    const s = orch.rt.svc;
    const app = createApp({ db: s.db, boss: s.boss, config: orch.config, log: s.log });
    const body = '{"event":"issue","action":"updated","data":{"id":"x"}}';
    for (const sig of [undefined, signPlaneBody(body, ''), 'aa'.repeat(32)]) {
      const r = await app.request('/webhooks/plane', { method: 'POST', body, headers: sig ? { 'x-plane-signature': sig } : {} });
      expect(r.status).toBe(503);
    }
    const n = await sql<{ n: number }>`SELECT count(*)::int AS n FROM webhook_deliveries`.execute(s.db);
    expect(n.rows[0]!.n).toBe(0);
  });
});

describe('agent environment', () => {
  it("an agent that dumps its env sees none of orch's secrets", async () => {
    const restore = withProcessEnv(SECRETS);
    try {
      const cmd = `sh ${GOOD_AGENT} && if [ "$ORCH_STAGE" = analysis ]; then env >> "$ORCH_ARTEFACT_DIR/analysis.md"; fi`;
      orch = await startOrch({ env: { ORCH_AGENT: 'command', ORCH_AGENT_CMD: cmd, ORCH_API_TOKEN: SECRETS.ORCH_API_TOKEN } });
      const t = await createTask(orch.rt.svc, { project: 'p', title: 'env dump' }, 'test');
      await orch.worker();
      const dump = await waitFor(async () => {
        const r = await sql<{ content: string }>`SELECT content FROM artefacts WHERE task_id = ${t.id} AND stage = 'analysis'`.execute(orch!.rt.svc.db);
        return r.rows[0]?.content;
      }, 30_000, 'analysis artefact');
      expect(dump).toContain('ORCH_TASK_ID=');
      expect(dump).toContain('ORCH_ARTEFACT_DIR=');
      for (const name of Object.keys(SECRETS).concat(['TEST_DATABASE_URL'])) expect(dump).not.toMatch(new RegExp(`^${name}=`, 'm'));
      expectNoSecret([dump], 'the agent env');
    } finally {
      restore();
    }
  });
});

describe('SQL is parameterized', () => {
  /** Template literals of a TypeScript source: [start offset, raw text, interpolated?]. */
  function templates(src: string): Array<{ at: number; text: string; interpolated: boolean }> {
    const out: Array<{ at: number; text: string; interpolated: boolean }> = [];
    // stack of open templates (index into out) and the brace depth at which each ${ opened
    const stack: Array<{ idx: number; depth: number }> = [];
    let depth = 0;
    let i = 0;
    const inTemplate = () => stack.length > 0 && stack[stack.length - 1]!.depth === -1;
    while (i < src.length) {
      const c = src[i]!;
      if (inTemplate()) {
        const top = stack[stack.length - 1]!;
        if (c === '\\') {
          out[top.idx]!.text += src.slice(i, i + 2);
          i += 2;
          continue;
        }
        if (c === '`') {
          stack.pop();
          i++;
          continue;
        }
        if (c === '$' && src[i + 1] === '{') {
          out[top.idx]!.interpolated = true;
          out[top.idx]!.text += '${…}';
          top.depth = depth; // back to code until the matching }
          depth++;
          i += 2;
          continue;
        }
        out[top.idx]!.text += c;
        i++;
        continue;
      }
      // code
      if (c === '/' && src[i + 1] === '/') {
        i = src.indexOf('\n', i);
        if (i < 0) break;
        continue;
      }
      if (c === '/' && src[i + 1] === '*') {
        i = src.indexOf('*/', i + 2) + 2;
        if (i < 2) break;
        continue;
      }
      if (c === '"' || c === "'") {
        let j = i + 1;
        while (j < src.length && src[j] !== c && src[j] !== '\n') j += src[j] === '\\' ? 2 : 1;
        i = j + 1;
        continue;
      }
      if (c === '`') {
        out.push({ at: i, text: '', interpolated: false });
        stack.push({ idx: out.length - 1, depth: -1 });
        i++;
        continue;
      }
      if (c === '{') depth++;
      if (c === '}') {
        depth--;
        const top = stack[stack.length - 1];
        if (top && top.depth === depth) {
          top.depth = -1; // back inside the template
          i++;
          continue;
        }
      }
      i++;
    }
    return out;
  }

  const SQL_WORDS = /\b(SELECT|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|WHERE|LISTEN|NOTIFY|CREATE|DROP|ALTER|TRUNCATE)\b/;
  /** the one sanctioned exception: LISTEN takes no parameters; the identifier is quoted by pg */
  const ALLOW = [{ file: 'packages/worker/src/listener.ts', text: /^LISTEN \$\{…\}$/ }];

  async function sources(): Promise<string[]> {
    const out: string[] = [];
    const walk = async (dir: string) => {
      for (const e of await fs.readdir(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory() && e.name !== 'node_modules') await walk(p);
        else if (e.isFile() && /\.(ts|mts)$/.test(e.name)) out.push(p);
      }
    };
    for (const pkg of await fs.readdir(path.join(ROOT, 'packages'))) {
      const src = path.join(ROOT, 'packages', pkg, 'src');
      if (await fs.stat(src).then((s) => s.isDirectory(), () => false)) await walk(src);
    }
    return out;
  }

  it('the scanner itself finds string-built SQL (self-test)', () => {
    const bad = 'const q = `SELECT * FROM t WHERE id = ${id}`; db.query("DELETE FROM t WHERE id = " + id);';
    const good = 'const r = await sql<{ n: number }>`SELECT ${a} FROM t`.execute(db); pool.query(`SELECT 1 FROM t WHERE id = $1`, [id]);';
    expect(templates(bad).filter((t) => t.interpolated && SQL_WORDS.test(t.text))).toHaveLength(1);
    expect(templates(good).filter((t) => t.interpolated)).toHaveLength(1);
    expect(/sql(<[^`]*>)?\s*$/.test(good.slice(0, templates(good)[0]!.at))).toBe(true);
  });

  it('no SQL built from strings in packages/*/src (template literals with ${} must be sql-tagged; no "..." + x concatenation)', async () => {
    const offenders: string[] = [];
    const files = await sources();
    expect(files.length).toBeGreaterThan(20);
    for (const file of files) {
      const rel = path.relative(ROOT, file);
      const src = await fs.readFile(file, 'utf8');
      for (const t of templates(src)) {
        if (!t.interpolated || !SQL_WORDS.test(t.text)) continue;
        const before = src.slice(Math.max(0, t.at - 300), t.at);
        if (/\bsql(<[^`()=]*>)?\s*$/.test(before)) continue; // kysely's sql tag: parameters, not strings
        // messages and HTML that merely mention a word (e.g. "SELECT" in an error text) are not SQL
        if (!/\b(FROM|INTO|SET|WHERE|LISTEN|NOTIFY|TABLE|DATABASE)\b/.test(t.text)) continue;
        if (ALLOW.some((a) => rel === a.file && a.text.test(t.text.trim()))) continue;
        const line = src.slice(0, t.at).split('\n').length;
        offenders.push(`${rel}:${line}: \`${t.text.slice(0, 120)}\``);
      }
      // "SELECT ... " + value
      const concat = /(['"])[^'"\n]*\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|WHERE)\b[^'"\n]*\1\s*\+/g;
      for (const m of src.matchAll(concat)) offenders.push(`${rel}:${src.slice(0, m.index).split('\n').length}: ${m[0].slice(0, 120)}`);
      // sql.raw / sql.lit with anything but a string literal
      for (const m of src.matchAll(/\bsql\.(raw|lit)\(\s*([^'"\s])/g)) offenders.push(`${rel}:${src.slice(0, m.index).split('\n').length}: sql.${m[1]} with a non-literal`);
    }
    expect(offenders).toEqual([]);
  });
});
