/**
 * Contract tests against the real CLIs (tests/package.json pins @anthropic-ai/claude-code and
 * @openai/codex), offline and unauthenticated as they are here:
 * - every flag orch passes is accepted: each command line reaches the authentication step
 *   (claude) or its first turn (codex), not a usage error; --resume / exec resume of a real
 *   session continue it;
 * - the recorded cases of tests/fixtures/real-cli still classify the same when run live;
 * - through orch: an unauthenticated claude blocks its task after one attempt, with "Not logged
 *   in" and the hint in `orch task show`, `tasks.blocked_reason` and GET /tasks/:id (what the
 *   dashboard shows); an offline codex is stopped as `stalled` within ORCH_AGENT_STALL_S, not at
 *   the total timeout.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createClaudeStreamParser } from '@orch/shared/agents/claude';
import { createCodexStreamParser } from '@orch/shared/agents/codex';
import { createAgent } from '@orch/shared/agents/index';
import { getJobRun } from '@orch/shared/db/queries/agent-runs';
import { listEvents } from '@orch/shared/db/queries/events';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getTask } from '@orch/shared/db/queries/tasks';
import { classifyAgentRun } from '@orch/shared/pipeline/failures';
import { createTask } from '@orch/shared/pipeline/tasks';
import { loadConfig } from '@orch/shared/runtime/config';
import { createApp } from '@orch/api/app';
import { startOrch, waitFor, type Orch } from './support/harness.ts';
import { CASES, HAVE_REAL_CLIS, REAL_CLAUDE, REAL_CODEX, captureCase, claudeAdapter, codexAdapter, loadFixture, runReal, sandbox, versions, type Sandbox } from './support/real-cli.ts';

// a credential in the test's environment would change what the real CLIs do
const RUN = HAVE_REAL_CLIS && !process.env.ANTHROPIC_API_KEY && !process.env.OPENAI_API_KEY;

let s: Sandbox;
beforeAll(async () => {
  s = await sandbox();
});
afterAll(async () => {
  await fs.rm(s.dir, { recursive: true, force: true });
});

const usageError = /unknown option|unexpected argument|is invalid|invalid value|requires --verbose|Usage:/;

describe.runIf(RUN)('the real claude accepts every flag orch passes', () => {
  it('versions', async () => {
    const v = await versions();
    expect(v.claude).toMatch(/^2\.1\.\d+ \(Claude Code\)$/);
    expect(v.codex).toMatch(/^codex-cli 0\.\d+\.\d+$/);
  });

  const variants: Array<[string, Parameters<typeof claudeAdapter>[1], { maxCostUsd?: number }]> = [
    ['defaults (acceptEdits, the default tools)', { maxTurns: undefined, model: undefined }, {}],
    ['every setting: --max-turns, --allowedTools, --model, --max-budget-usd', { maxTurns: 40, allowedTools: ['Bash(git commit:*)', 'Edit', 'Read'], model: 'claude-sonnet-4-5' }, { maxCostUsd: 2.5 }],
    ['--permission-mode dontAsk', { permissionMode: 'dontAsk' }, {}],
    ['--model opus (an alias)', { model: 'opus' }, {}],
  ];
  it.each(variants)('%s: the run reaches the authentication step', async (_name, opts, ctx) => {
    const adapter = claudeAdapter(s, opts);
    const inv = adapter.invocation({ ...s.ctx, ...ctx });
    const r = await runReal(REAL_CLAUDE, inv.args, s, inv.env);
    expect(r.stderr).not.toMatch(usageError);
    expect(r.exitCode).toBe(1);
    const p = createClaudeStreamParser();
    const progress = r.stdout.map((l) => p.onLine(l).progress);
    expect(progress).toEqual([true, true, true]);
    const init = JSON.parse(r.stdout[0]!) as { subtype: string; permissionMode: string; model: string };
    expect(init.subtype).toBe('init');
    expect(init.permissionMode).toBe(opts?.permissionMode ?? 'acceptEdits');
    expect(p.usage()).toMatchObject({ final: true, error: 'Not logged in · Please run /login', errorCode: 'authentication_failed' });
  });

  it('--resume <session>: the recorded session continues (same id); a missing one is recognised', async () => {
    const adapter = claudeAdapter(s);
    const first = adapter.invocation(s.ctx);
    const r1 = await runReal(REAL_CLAUDE, first.args, s, first.env);
    const p1 = createClaudeStreamParser();
    for (const l of r1.stdout) p1.onLine(l);
    const id = p1.usage().sessionId!;
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    const again = adapter.invocation({ ...s.ctx, resumeSessionId: id });
    const r2 = await runReal(REAL_CLAUDE, again.args, s, again.env);
    expect(r2.stderr).not.toMatch(usageError);
    const p2 = createClaudeStreamParser();
    for (const l of r2.stdout) p2.onLine(l);
    expect(p2.usage().sessionId).toBe(id);
    expect(adapter.sessionMissing({ exitCode: r2.exitCode, usage: p2.usage(), tail: r2.tail })).toBe(false);
  });
});

describe.runIf(RUN)('the real codex accepts every flag orch passes', () => {
  const firstTurn = (out: string[]) => out.some((l) => l.includes('"turn.started"'));
  const variants: Array<[string, Parameters<typeof codexAdapter>[1]]> = [
    ['defaults (danger-full-access, --skip-git-repo-check)', {}],
    ['--sandbox workspace-write, --model', { sandbox: 'workspace-write', model: 'gpt-5-codex' }],
  ];
  it.each(variants)('%s: thread.started and its first turn, no usage error', async (_name, opts) => {
    const inv = codexAdapter(s, opts).invocation(s.ctx);
    const r = await runReal(REAL_CODEX, inv.args, s, inv.env, { until: firstTurn, stopAfterMs: 20_000 });
    expect(r.stderr).not.toMatch(usageError);
    expect(r.exitCode).toBe(143); // stopped by us: offline, it never ends by itself
    const p = createCodexStreamParser();
    for (const l of r.stdout) p.onLine(l);
    expect(p.usage().sessionId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7/);
  });

  it('exec … resume <thread>: the exec options before `resume` are accepted, the thread continues', async () => {
    const adapter = codexAdapter(s, { model: 'gpt-5-codex' });
    const first = adapter.invocation(s.ctx);
    const r1 = await runReal(REAL_CODEX, first.args, s, first.env, { until: firstTurn, stopAfterMs: 20_000 });
    const id = (JSON.parse(r1.stdout[0]!) as { thread_id: string }).thread_id;
    const again = adapter.invocation({ ...s.ctx, resumeSessionId: id });
    expect(again.args).toContain('resume');
    const r2 = await runReal(REAL_CODEX, again.args, s, again.env, { until: firstTurn, stopAfterMs: 20_000 });
    expect(r2.stderr).not.toMatch(usageError);
    expect(JSON.parse(r2.stdout[0]!)).toEqual({ type: 'thread.started', thread_id: id });
    expect(adapter.sessionMissing({ exitCode: r2.exitCode, usage: null, tail: r2.tail })).toBe(false);
  });
});

describe.runIf(RUN)('the recorded cases still hold for the installed versions', () => {
  const quick = Object.keys(CASES).filter((n) => n !== 'codex-offline');
  it.each(quick)('%s', async (name) => {
    const live = await captureCase(name, s);
    const recorded = loadFixture(name);
    expect(live.exitCode).toBe(recorded.exitCode);
    const classify = (agent: 'claude' | 'codex', stdout: string[], stderr: string, exitCode: number | null) => {
      const p = agent === 'claude' ? createClaudeStreamParser() : createCodexStreamParser();
      for (const l of stdout) p.onLine(l);
      const u = p.usage();
      return classifyAgentRun({ agent, exitCode, signal: null, errorCode: u.errorCode, error: u.error, lastMessage: u.result, tail: `${stdout.join('\n')}\n${stderr}` }).code;
    };
    expect(classify(live.agent, live.stdout, live.stderr, live.exitCode)).toBe(classify(recorded.agent, recorded.stdout, recorded.stderr, recorded.exitCode));
    expect(live.stdout.map((l) => (JSON.parse(l) as { type: string }).type)).toEqual(recorded.stdout.map((l) => (JSON.parse(l) as { type: string }).type));
  });
});

describe.runIf(RUN)('through orch, with the real CLIs', () => {
  let orch: Orch | undefined;
  afterEach(async () => {
    await orch?.close();
    orch = undefined;
  });

  async function start(env: Record<string, string>): Promise<Orch> {
    const o = (orch = await startOrch({ env: { ORCH_RETRY_BACKOFF_BASE_S: '10', ...env } }));
    await o.worker({ agent: await createAgent(loadConfig(o.env)) });
    return o;
  }

  it('an unauthenticated claude blocks its task after ONE attempt; "Not logged in" and the hint in task show, blocked_reason and GET /tasks/:id', async () => {
    const o = await start({ ORCH_AGENT: 'claude', ORCH_CLAUDE_BIN: REAL_CLAUDE });
    const task = await createTask(o.rt.svc, { project: 'p', title: 'needs a login' }, 'test');
    const t = await waitFor(async () => {
      const x = await getTask(o.rt.svc.db, task.id);
      return x?.blocked_at ? x : null;
    }, 30_000, 'task blocked');
    const jobs = await listTaskJobs(o.rt.svc.db, task.id);
    expect(jobs.map((j) => [j.stage, j.attempt, j.status, j.reason, j.failure_class])).toEqual([['analysis', 1, 'failed', 'agent_auth', 'config']]);
    const home = path.join(o.env.ORCH_WORKTREE_ROOT!, 'agent-home', 'claude');
    expect(t.blocked_reason).toBe(
      `agent_auth — claude: Not logged in · Please run /login. Hint: log in as orch runs claude, on this host: \`CLAUDE_CONFIG_DIR=${home} ${REAL_CLAUDE} /login\` (or \`setup-token\`), or give the worker ANTHROPIC_API_KEY; ORCH_CLAUDE_BIN names the binary.`,
    );
    const run = (await getJobRun(o.rt.svc.db, jobs[0]!.id))!;
    expect(run).toMatchObject({ exit_code: 1, failure_code: 'agent_auth', failure_class: 'config', last_message: 'Not logged in · Please run /login' });
    expect(run.session_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(run.transcript.map((e) => e.kind)).toEqual(['start', 'error']);
    // the agent home was made and is claude's: its session is there
    const projects = await fs.readdir(path.join(home, 'projects'));
    const sessions = await Promise.all(projects.map((d) => fs.readdir(path.join(home, 'projects', d))));
    expect(sessions.flat(), projects.join()).toContain(`${run.session_id}.jsonl`);
    // a person reads it in `orch task show`…
    const show = await o.spawn(['task', 'show', String(task.id)]);
    expect(show.exitCode).toBe(0);
    expect(show.stdout).toContain('blocked: agent_auth — claude: Not logged in · Please run /login. Hint: log in as orch runs claude');
    expect(show.stdout).toMatch(/job \d+ analysis #1 failed \(config\): agent_auth — claude: Not logged in · Please run \/login/);
    // …in `orch logs` (the transcript, not raw stream-json)…
    const logs = await o.spawn(['logs', String(task.id)]);
    expect(logs.stdout).toContain('✗ Not logged in · Please run /login');
    expect(logs.stdout).toMatch(/exited 1[^\n]*\n\s+agent_auth — claude: Not logged in/);
    expect(logs.stdout).not.toContain('"type":"system"');
    const raw = await o.spawn(['logs', String(task.id), '--raw']);
    expect(raw.stdout).toContain('"type":"system","subtype":"init"');
    // …and in what the dashboard reads
    const app = createApp({ db: o.rt.svc.db, boss: o.rt.svc.boss, config: o.config, log: o.log });
    const body = (await (await app.request(`/tasks/${task.id}`)).json()) as { task: { blocked_reason: string }; jobs: Array<{ detail: string }> };
    expect(body.task.blocked_reason).toContain('Not logged in · Please run /login');
    expect(body.jobs[0]!.detail).toContain('Not logged in · Please run /login');
    const events = await listEvents(o.rt.svc.db, task.id);
    expect(events.find((e) => e.kind === 'agent_started')?.reason).toBe('built-in');
    expect(events.some((e) => e.kind === 'retry_scheduled')).toBe(false);
  }, 60_000);

  it('an offline codex is stopped as stalled within ORCH_AGENT_STALL_S, not at the total timeout', async () => {
    const o = await start({ ORCH_AGENT: 'codex', ORCH_CODEX_BIN: REAL_CODEX, ORCH_AGENT_STALL_S: '3', ORCH_AGENT_TIMEOUT_S: '120', ORCH_JOB_MAX_ATTEMPTS: '2' });
    const task = await createTask(o.rt.svc, { project: 'p', title: 'no network' }, 'test');
    const job = await waitFor(async () => (await listTaskJobs(o.rt.svc.db, task.id)).find((j) => j.status === 'failed'), 40_000, 'job failed');
    const run = (await getJobRun(o.rt.svc.db, job.id))!;
    const ranS = (new Date(run.finished_at!).getTime() - new Date(run.started_at).getTime()) / 1000;
    expect(job).toMatchObject({ reason: 'stalled', failure_class: 'transient' });
    expect(ranS).toBeGreaterThanOrEqual(3);
    expect(ranS).toBeLessThan(15);
    expect(job.detail).toMatch(/no progress \(message, tool call or item\) for \d+ s, ORCH_AGENT_STALL_S=3/);
    expect(run.session_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7/);
    expect(run.transcript.some((e) => e.kind === 'retry' && e.text.startsWith('Reconnecting...'))).toBe(true);
    // transient: retried after a backoff
    const next = await waitFor(async () => (await listTaskJobs(o.rt.svc.db, task.id)).find((j) => j.attempt === 2), 5000, 'retry');
    expect(new Date(next.run_after).getTime() - new Date(job.finished_at!).getTime()).toBeGreaterThanOrEqual(9_000);
  }, 60_000);
});
