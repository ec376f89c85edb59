/**
 * The CLI as a user meets it: `--help` of every command (exit 0, a usage line, every option
 * explained), `orch status` text and `--json`, and `orch logs` of a finished task and, with
 * `--follow`, of a running one until it is done.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commands } from '@orch/cli/commands/index';
import { getTask } from '@orch/shared/db/queries/tasks';
import { createTask } from '@orch/shared/pipeline/tasks';
import { startOrch, waitFor, type Orch } from './support/harness.ts';

let orch: Orch;
beforeAll(async () => {
  orch = await startOrch({ env: { ORCH_DEMO_DELAY_MS: '300' } });
});
afterAll(async () => orch?.close());

describe('--help', () => {
  it('orch --help lists every command', async () => {
    const r = await orch.spawn(['--help']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^usage: orch <command>/m);
    for (const name of Object.keys(commands)) expect(r.stdout, name).toMatch(new RegExp(`^  ${name}\\s`, 'm'));
  });

  it.each(Object.keys(commands))('orch %s --help: exit 0, a usage line, every option explained', async (name) => {
    const r = await orch.spawn([name, '--help']);
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(new RegExp(`^usage: orch ${name}\\b`, 'm'));
    // a one-line summary comes first
    const stdout = String(r.stdout);
    expect(stdout.split('\n')[0]!.length).toBeGreaterThan(10);
    const options = stdout.split('\noptions:\n')[1] ?? '';
    expect(options).toMatch(/^ {2}--help\s+\S/m);
    for (const line of options.split('\n').filter((l) => l.startsWith('  --'))) expect(line, `option without a description: ${line}`).toMatch(/^ {2}--\S+( <value>)?\s{2,}\S/);
  });

  it('an unknown option is a usage error (exit 2), not a crash', async () => {
    const r = await orch.spawn(['status', '--bogus']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('usage: orch status');
  });
});

describe('orch status', () => {
  it('prints the jobs, workers, reaper, stop and merge blocks; --json is the /queue snapshot', async () => {
    const text = await orch.spawn(['status']);
    expect(text.exitCode).toBe(0);
    for (const heading of ['jobs', 'workers', 'reaper', 'stop', 'merge']) expect(text.stdout, heading).toMatch(new RegExp(`^${heading}\\s`, 'm'));
    expect(text.stdout).toMatch(/^jobs\s+queued \d+\s+running \d+\s+done \d+\s+failed \d+\s+cancelled \d+$/m);

    const json = await orch.spawn(['status', '--json']);
    expect(json.exitCode).toBe(0);
    const snap = JSON.parse(String(json.stdout)) as Record<string, unknown>;
    expect(Object.keys(snap).sort()).toEqual(['jobs', 'merge', 'reaper', 'stop', 'warnings', 'workers']);
    expect(snap.jobs).toMatchObject({ counts: { queued: expect.any(Number), running: expect.any(Number) }, running: expect.any(Array) });
  });
});

describe('orch logs', () => {
  it('prints the events and agent runs of a finished task in time order', async () => {
    const w = await orch.worker();
    const t = await createTask(orch.rt.svc, { project: 'p', title: 'logs of a done task' }, 'test');
    await waitFor(async () => (await getTask(orch.rt.svc.db, t.id))?.stage === 'done', 30_000, 'task done');
    await w.stop();

    const r = await orch.spawn(['logs', String(t.id)]);
    expect(r.exitCode).toBe(0);
    const out = String(r.stdout);
    const lines = out.split('\n').filter((l) => /^\d{4}-\d\d-\d\d /.test(l));
    // in time order
    const times = lines.map((l) => l.slice(0, 23));
    expect([...times].sort()).toEqual(times);
    expect(lines[0]).toMatch(/event {2}created\b/);
    for (const stage of ['analysis', 'implementation', 'review']) {
      expect(out).toMatch(new RegExp(`run {4}job \\d+ ${stage}#1: demo started`));
      expect(out).toMatch(new RegExp(`run {4}job \\d+ ${stage}#1: demo exited 0`));
    }
    expect(out).toMatch(/event {2}stage_changed/);
    expect(out).toMatch(/event {2}pr_merged/);
    // the log tails, indented under their run
    expect(out).toMatch(/^ {4}│ .*"agent":"demo"/m);

    const byIssue = await orch.spawn(['logs', '999999']);
    expect(byIssue.exitCode).toBe(3);
    expect(byIssue.stderr).toContain('unknown task');
  });

  it('--follow prints new lines as the task runs and exits when it is terminal', async () => {
    const t = await createTask(orch.rt.svc, { project: 'p', title: 'followed' }, 'test');
    const child = orch.spawn(['logs', String(t.id), '--follow']);
    let seen = '';
    child.stdout!.on('data', (b: Buffer) => (seen += b.toString()));
    await waitFor(async () => seen.includes('event  created'), 15_000, 'the first line');
    expect(seen).not.toContain('stage_changed');
    const w = await orch.worker();
    const r = await Promise.race([child, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('logs --follow did not exit')), 40_000))]);
    expect(r.exitCode).toBe(0);
    expect(seen).toMatch(/run {4}job \d+ review#1: demo exited 0/);
    expect(seen).toMatch(/event {2}pr_merged/);
    expect(seen.trimEnd().split('\n').at(-1)).toBe(`-- task ${t.id} is done`);
    // every line once
    const events = seen.split('\n').filter((l) => l.includes('event  created'));
    expect(events).toHaveLength(1);
    await w.stop();
  });

  it('--follow exits 0 on SIGINT', async () => {
    // no worker runs now: the task stays queued
    const t = await createTask(orch.rt.svc, { project: 'p', title: 'waits forever' }, 'test');
    const child = orch.spawn(['logs', String(t.id), '-f']);
    let seen = '';
    child.stdout!.on('data', (b: Buffer) => (seen += b.toString()));
    await waitFor(async () => seen.includes('event  created'), 15_000, 'the first line');
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode).toBe(0);
  });
});
