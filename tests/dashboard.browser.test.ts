/**
 * The dashboard in a real browser (Chromium through playwright-core) against the app on a real
 * port, with an in-process worker whose agent sleeps: the board shows the running task, its STOP
 * button (after the confirm dialog) cancels it in the database, and the page follows without a
 * reload — the card moves to the cancelled column. With ORCH_API_TOKEN set, the page asks for the
 * token once and keeps it for the session. A screenshot proves something was actually drawn.
 */
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'kysely';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '@orch/api/app';
import { serveApp, type Served } from '@orch/api/serve';
import { loadConfig } from '@orch/shared/runtime/config';
import { getTask } from '@orch/shared/db/queries/tasks';
import { createTask } from '@orch/shared/pipeline/tasks';
import { createAgent } from '@orch/shared/agents/index';
import { startOrch, waitFor, type Orch } from './support/harness.ts';
import { HAVE_REAL_CLIS, REAL_CLAUDE } from './support/real-cli.ts';

// page.evaluate bodies run in the browser; the tests compile without the DOM lib
interface Canvas2d {
  drawImage(img: unknown, x: number, y: number): void;
  getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray };
}
interface El {
  getBoundingClientRect(): { left: number; top: number; width: number; height: number };
  contains(other: El | null): boolean;
}
declare const document: {
  createElement(tag: 'canvas'): { width: number; height: number; getContext(kind: '2d'): Canvas2d | null };
  querySelector(selector: string): El | null;
  elementFromPoint(x: number, y: number): El | null;
};
declare const Image: new () => { src: string; width: number; height: number; decode(): Promise<void> };
declare const window: { marker?: number };
declare const sessionStorage: { getItem(key: string): string | null };

const CHROMIUM = '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);

let orch: Orch;
let browser: Browser | undefined;
const servers: Served[] = [];

beforeAll(async () => {
  if (!HAVE_CHROMIUM) return;
  orch = await startOrch({ env: { ORCH_AGENT: 'command', ORCH_AGENT_CMD: 'sleep 30' }, project: { max_concurrency: 4 } });
  await orch.worker();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
});
afterAll(async () => {
  await browser?.close();
  for (const s of servers) await s.close();
  await orch?.close();
});

async function serve(env: Record<string, string> = {}): Promise<string> {
  const { db, boss, log } = orch.rt.svc;
  const app = createApp({ db, boss, config: loadConfig({ ...orch.env, ...env }), log });
  const s = await serveApp(app, 0, '127.0.0.1');
  servers.push(s);
  return `http://127.0.0.1:${s.port}`;
}

/** A task whose agent (sleep 30) is running. */
async function runningTask(title: string): Promise<number> {
  const t = await createTask(orch.rt.svc, { project: 'p', title }, 'test');
  await waitFor(
    async () => (await orch.rt.svc.db.selectFrom('agent_runs').innerJoin('jobs', 'jobs.id', 'agent_runs.job_id').select('agent_runs.id').where('jobs.task_id', '=', t.id).executeTakeFirst()),
    20_000,
    `agent of task ${t.id} running`,
  );
  return t.id;
}

/** The element is laid out and not clipped or covered: the point at its top centre hits it. */
function shownAt(page: Page, selector: string): Promise<boolean> {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    if (!el) return false;
    const r = el.getBoundingClientRect();
    return r.width > 100 && el.contains(document.elementFromPoint(r.left + r.width / 2, r.top + 8));
  }, selector);
}

const card = (stage: string, id: number) => `.column[data-stage="${stage}"] .card[data-task-id="${id}"]`;

async function stageOf(id: number): Promise<string | undefined> {
  return (await getTask(orch.rt.svc.db, id))?.stage;
}

/** Decode a PNG in the browser (its own decoder) and count the distinct colours of a pixel grid. */
async function distinctColours(page: Page, png: Buffer): Promise<number> {
  return page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.width;
    c.height = img.height;
    const ctx = c.getContext('2d')!;
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, c.width, c.height).data;
    const seen = new Set<number>();
    for (let y = 0; y < c.height; y += 7) for (let x = 0; x < c.width; x += 7) {
      const i = (y * c.width + x) * 4;
      seen.add((data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!);
    }
    return seen.size;
  }, png.toString('base64'));
}

describe('dashboard in Chromium', () => {
  it.skipIf(!HAVE_CHROMIUM)('shows the running task; STOP (confirmed) cancels it and the card moves to cancelled without a reload', async () => {
    const base = await serve();
    const id = await runningTask('sleepy task for the board');
    // the psql view agrees with what the page will show
    const view = await sql<{ task_id: number; host: string; age_s: number; heartbeat_age_s: number; finished_age_s: number | null }>`
      SELECT task_id, host, age_s, heartbeat_age_s, finished_age_s FROM v_running_jobs`.execute(orch.rt.svc.db);
    expect(view.rows).toHaveLength(1);
    expect(view.rows[0]).toMatchObject({ task_id: id, host: 'test-host', finished_age_s: null });
    expect(view.rows[0]!.age_s).toBeGreaterThanOrEqual(0);

    const page = await browser!.newPage({ viewport: { width: 1400, height: 900 } });
    const dialogs: string[] = [];
    page.on('dialog', (d) => {
      dialogs.push(d.type());
      void d.accept();
    });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));

    await page.goto(base);
    // the board: the task in its stage, marked running, with a STOP button
    await page.waitForSelector(`${card('analysis', id)} .tag.running`, { timeout: 10_000 });
    expect(await page.textContent(card('analysis', id))).toContain('sleepy task for the board');
    // every column of the board is laid out side by side and visible (none clipped away)
    const columns = ['analysis', 'implementation', 'review', 'merge', 'deploy', 'done', 'cancelled'];
    expect(await page.locator('.column').evaluateAll((els) => els.map((e) => (e as unknown as { dataset: Record<string, string> }).dataset.stage))).toEqual(columns);
    for (const stage of columns) expect(await shownAt(page, `.column[data-stage="${stage}"]`), `column ${stage} is visible`).toBe(true);
    // the running jobs table and the workers table come from GET /queue
    const runningRow = page.locator('#running tbody tr').first();
    await expect.poll(() => runningRow.textContent(), { timeout: 5000 }).toContain('analysis');
    expect(await page.textContent('#workers')).toContain('test-host');
    // its agents run unsandboxed (the suite's ORCH_AGENT_SANDBOX, unless ORCH_TEST_SANDBOX=bwrap): a banner says so
    if (orch.config.agent.sandbox.mode !== 'bwrap') {
      expect(await page.textContent('#warnings')).toContain('test-host: agents run unsandboxed');
      expect(await shownAt(page, '#warnings')).toBe(true);
    } else {
      expect(await page.textContent('#workers')).toContain('bwrap');
    }
    expect(await page.textContent('#reaper')).toContain('leader');
    expect(await page.textContent('#merge')).toContain('no merge lease held');

    // elapsed time is live: it changes while we watch, without a reload
    await page.evaluate(() => (window.marker = 42));
    const elapsed = page.locator('#running tbody tr td:nth-child(7)').first();
    const e1 = await elapsed.textContent();
    await expect.poll(() => elapsed.textContent(), { timeout: 5000 }).not.toBe(e1);

    // the timeline of the task on click
    await page.click(`${card('analysis', id)} .title`);
    await page.waitForSelector('#drawer.open');
    await expect.poll(() => page.textContent('#detail'), { timeout: 5000 }).toContain('Timeline');
    expect(await page.textContent('#detail')).toContain('running');
    await page.keyboard.press('Escape');

    // STOP, confirmed
    await page.click(`${card('analysis', id)} button.stop`);
    expect(dialogs).toEqual(['confirm']);
    await waitFor(async () => (await stageOf(id)) === 'cancelled', 20_000, 'task cancelled in the database');
    await page.waitForSelector(card('cancelled', id), { timeout: 10_000 });
    expect(await shownAt(page, card('cancelled', id)), 'the cancelled card is on screen').toBe(true);
    expect(await page.locator(card('analysis', id)).count()).toBe(0);
    expect(await page.locator(`${card('cancelled', id)} button.stop`).count()).toBe(0);
    // the same document all along: no reload happened
    expect(await page.evaluate(() => window.marker)).toBe(42);
    await expect.poll(() => page.locator('#running tbody tr').count(), { timeout: 5000 }).toBe(0);

    // the drawer shows the cancelled job in the timeline
    await page.click(`${card('cancelled', id)} .title`);
    await expect.poll(() => page.textContent('#detail'), { timeout: 5000 }).toContain('cancelled');

    // a screenshot that is not blank
    const file = path.join(orch.dir, 'dashboard.png');
    await page.screenshot({ path: file, fullPage: true });
    const png = await fs.readFile(file);
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    expect(png.length).toBeGreaterThan(20_000);
    const blank = await browser!.newPage({ viewport: { width: 1400, height: 900 } });
    const blankPng = await blank.screenshot();
    expect(await distinctColours(blank, blankPng)).toBeLessThanOrEqual(2);
    expect(await distinctColours(blank, png)).toBeGreaterThan(10);
    expect(png.length).toBeGreaterThan(blankPng.length * 3);
    await blank.close();

    expect(errors).toEqual([]);
    await page.close();
  });

  it.skipIf(!HAVE_CHROMIUM)('with ORCH_API_TOKEN the page asks for the token once and keeps it in sessionStorage', async () => {
    const base = await serve({ ORCH_API_TOKEN: 'dash-s3cret' });
    const a = await runningTask('first to stop');
    const b = await runningTask('second to stop');
    const page = await browser!.newPage();
    const dialogs: string[] = [];
    page.on('dialog', (d) => {
      dialogs.push(d.type());
      void (d.type() === 'prompt' ? d.accept('dash-s3cret') : d.accept());
    });
    await page.goto(base);

    await page.waitForSelector(`${card('analysis', a)} button.stop`, { timeout: 10_000 });
    await page.click(`${card('analysis', a)} button.stop`);
    await waitFor(async () => (await stageOf(a)) === 'cancelled', 20_000, 'first task cancelled');
    await page.waitForSelector(card('cancelled', a), { timeout: 10_000 });
    expect(dialogs).toEqual(['confirm', 'prompt']);
    expect(await page.evaluate(() => sessionStorage.getItem('orch-token'))).toBe('dash-s3cret');

    await page.click(`${card('analysis', b)} button.stop`);
    await waitFor(async () => (await stageOf(b)) === 'cancelled', 20_000, 'second task cancelled');
    await page.waitForSelector(card('cancelled', b), { timeout: 10_000 });
    expect(dialogs).toEqual(['confirm', 'prompt', 'confirm']);
    await page.close();
  });

  it.skipIf(!HAVE_CHROMIUM)('dismissing the confirm dialog stops nothing', async () => {
    const base = await serve();
    const id = await runningTask('not to be stopped');
    const page = await browser!.newPage();
    page.on('dialog', (d) => void d.dismiss());
    await page.goto(base);
    await page.waitForSelector(`${card('analysis', id)} button.stop`, { timeout: 10_000 });
    await page.click(`${card('analysis', id)} button.stop`);
    await new Promise((r) => setTimeout(r, 1500));
    const t = await getTask(orch.rt.svc.db, id);
    expect(t?.cancel_requested_at).toBeNull();
    expect(t?.stage).toBe('analysis');
    await page.close();
  });

  it.skipIf(!HAVE_CHROMIUM || !HAVE_REAL_CLIS || Boolean(process.env.ANTHROPIC_API_KEY))(
    'a task the real, unauthenticated claude could not run: blocked after one attempt, "Not logged in" and the hint in the task view, its transcript not raw JSON',
    async () => {
      const o = await startOrch({ env: { ORCH_AGENT: 'claude', ORCH_CLAUDE_BIN: REAL_CLAUDE } });
      try {
        await o.worker({ agent: await createAgent(loadConfig(o.env)) });
        const app = createApp({ db: o.rt.svc.db, boss: o.rt.svc.boss, config: o.config, log: o.log });
        const s = await serveApp(app, 0, '127.0.0.1');
        servers.push(s);
        const t = await createTask(o.rt.svc, { project: 'p', title: 'needs a login' }, 'test');
        await waitFor(async () => (await getTask(o.rt.svc.db, t.id))?.blocked_at, 30_000, 'task blocked');
        const page = await browser!.newPage({ viewport: { width: 1400, height: 900 } });
        await page.goto(`http://127.0.0.1:${s.port}`);
        await page.waitForSelector(`${card('analysis', t.id)} .tag.blocked`, { timeout: 10_000 });
        expect(await page.textContent(`${card('analysis', t.id)} .tag.blocked`)).toContain('blocked: agent_auth — claude: Not logged in');
        await page.click(`${card('analysis', t.id)} .title`);
        await page.waitForSelector('#blocked-reason');
        const reason = await page.textContent('#blocked-reason');
        expect(reason).toContain('Not logged in · Please run /login');
        expect(reason).toContain('/login');
        expect(reason).toContain('ANTHROPIC_API_KEY');
        expect(await shownAt(page, '#blocked-reason')).toBe(true);
        const why = await page.textContent('#detail .why:not(#blocked-reason)');
        expect(why).toContain('analysis #1 failed (config): agent_auth');
        const transcript = await page.textContent('#detail details.run .transcript');
        expect(transcript).toContain('✗ Not logged in · Please run /login');
        expect(transcript).not.toContain('{"type"');
        await page.close();
      } finally {
        await o.close();
      }
    },
    60_000,
  );
});
