/**
 * Budgets that act, with the fake CLIs (tests/fixtures/bin, the real shapes) as real agents:
 * ORCH_AGENT_TIMEOUT_S stops a hanging agent (its whole process group); ORCH_AGENT_MAX_COST_USD
 * stops claude on the running estimate from its per-message usage before its `result` line, and
 * reaches claude as --max-budget-usd (which it obeys itself); ORCH_AGENT_MAX_TOKENS stops codex
 * on the estimate from its text before `turn.completed`; ORCH_AGENT_STALL_S stops an agent that
 * only prints reconnect notices. Each records its reason with the figure.
 */
import fs from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { createAgent } from '@orch/shared/agents/index';
import { ConfigError, loadConfig } from '@orch/shared/runtime/config';
import { getJobRun } from '@orch/shared/db/queries/agent-runs';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getTask } from '@orch/shared/db/queries/tasks';
import { createTask } from '@orch/shared/pipeline/tasks';
import { fakeBin as makeFakeBin, type FakeBin } from './support/fake-agents.ts';
import { startOrch, tempDir, waitFor, type Orch } from './support/harness.ts';

let orch: Orch | undefined;
let dir: string | undefined;
afterEach(async () => {
  await orch?.close();
  orch = undefined;
  if (dir) await fs.rm(dir, { recursive: true, force: true });
  dir = undefined;
});

async function fakeBin(kind: 'claude' | 'codex', scenario: unknown, vars: Record<string, string> = {}): Promise<FakeBin> {
  dir ??= await tempDir('orch-agent-budgets-');
  return makeFakeBin(dir, kind, scenario, vars);
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

async function runOne(env: Record<string, string>) {
  const o = (orch = await startOrch({ env: { ORCH_AGENT: 'claude', ORCH_JOB_MAX_ATTEMPTS: '1', ...env } }));
  const agent = await createAgent(loadConfig(o.env));
  await o.worker({ agent });
  const task = await createTask(o.rt.svc, { project: 'p', title: 'budgeted' }, 'test');
  const job = await waitFor(async () => {
    const jobs = await listTaskJobs(o.rt.svc.db, task.id);
    const j = jobs[0];
    return j && (j.status === 'failed' || j.status === 'done') ? j : null;
  }, 30_000, 'the analysis job finished');
  const run = (await getJobRun(o.rt.svc.db, job.id))!;
  return { o, task, job, run };
}

async function groupGone(fake: { childPidFile: string }, pid: number): Promise<void> {
  const child = Number((await fs.readFile(fake.childPidFile, 'utf8')).trim());
  await waitFor(async () => !alive(pid) && !alive(child), 5000, 'agent and child dead');
  expect(() => process.kill(-pid, 0)).toThrow();
}

/** About $0.018 a message at sonnet prices: 10k cache reads and 1k output. */
const PRICY = { usage: { input: 3, output: 1000, cacheRead: 10_000, cacheWrite: 0 } };
const SLOW_WORK = [PRICY, { say: 'step 1' }, { sleep: 300 }, { say: 'step 2' }, { sleep: 300 }, { say: 'step 3' }, { sleep: 300 }, { say: 'step 4' }, { sleep: 300 }, { say: 'step 5' }, { artefact: '# analysis\n' }];

describe('agent budgets', () => {
  it('ORCH_AGENT_TIMEOUT_S: a hanging agent is stopped, its process group dies, the job fails with agent_timeout and the figure', async () => {
    const fake = await fakeBin('claude', { default: [{ say: 'working on it' }, { hang: true }] });
    const started = Date.now();
    const { o, task, job, run } = await runOne({ ORCH_CLAUDE_BIN: fake.bin, ORCH_AGENT_TIMEOUT_S: '1', ORCH_STOP_GRACE_S: '1' });
    expect(job).toMatchObject({ status: 'failed', reason: 'agent_timeout', failure_class: 'agent' });
    expect(job.detail).toContain('stopped after 1 s (ORCH_AGENT_TIMEOUT_S=1)');
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(run.finished_at).not.toBeNull();
    expect(run.error).toContain('agent_timeout');
    expect(Number(run.tokens_out)).toBeGreaterThan(0); // tokens seen before the stop are kept
    expect(run.transcript.map((e) => e.text)).toContain('working on it');
    await groupGone(fake, run.pid!);
    await waitFor(async () => (await getTask(o.rt.svc.db, task.id))?.blocked_at, 5000, 'task blocked');
    expect((await getTask(o.rt.svc.db, task.id))!.blocked_reason).toMatch(/^attempts_exhausted: agent_timeout — the agent ran out of time/);
  });

  it('ORCH_AGENT_MAX_COST_USD: claude is stopped on the running estimate before its result line, the figure recorded', async () => {
    const fake = await fakeBin('claude', { default: SLOW_WORK });
    const { job, run } = await runOne({ ORCH_CLAUDE_BIN: fake.bin, ORCH_AGENT_MAX_COST_USD: '0.05', ORCH_AGENT_TIMEOUT_S: '60' });
    expect(job).toMatchObject({ status: 'failed', reason: 'budget_exceeded', failure_class: 'agent' });
    expect(job.detail).toMatch(/the run cost \$0\.0[5-9]\d* \(estimated from its token usage and the price table\), over the budget ORCH_AGENT_MAX_COST_USD=0\.05/);
    // before the result line: never printed, and the agent did not get to step 5
    expect(run.log_tail).not.toContain('"type":"result"');
    expect(run.transcript.some((e) => e.kind === 'result')).toBe(false);
    expect(run.transcript.map((e) => e.text)).not.toContain('step 5');
    expect(run.cost_source).toBe('estimated');
    expect(Number(run.cost_usd)).toBeGreaterThan(0.05);
    expect(Number(run.cost_usd)).toBeLessThan(0.08);
    // claude got its own budget too
    const argv = JSON.parse(await fs.readFile(fake.argvFile, 'utf8')) as string[];
    expect(argv[argv.indexOf('--max-budget-usd') + 1]).toBe('0.05');
    await groupGone(fake, run.pid!);
  });

  it('--max-budget-usd: claude stopping itself at its budget is the same budget_exceeded (here orch prices it too cheaply to act first)', async () => {
    const fake = await fakeBin('claude', { default: SLOW_WORK });
    const { job, run } = await runOne({ ORCH_CLAUDE_BIN: fake.bin, ORCH_AGENT_MAX_COST_USD: '0.05', ORCH_AGENT_PRICES: 'claude-*=0.0001/0.0001' });
    expect(job).toMatchObject({ status: 'failed', reason: 'budget_exceeded', failure_class: 'agent' });
    expect(job.detail).toBe('claude stopped itself at its budget: Reached maximum budget ($0.05) (ORCH_AGENT_MAX_COST_USD)');
    expect(run).toMatchObject({ exit_code: 1, failure_code: 'budget_exceeded', cost_source: 'reported' });
  });

  it('ORCH_AGENT_MAX_TOKENS on codex: stopped on the estimate from its text, before turn.completed', async () => {
    const fake = await fakeBin('codex', { default: [{ bash: "head -c 200000 /dev/zero | tr '\\0' x" }, { sleep: 200 }, { say: 'Read the log.' }, { sleep: 300 }, { say: 'more' }, { artefact: '# a\n' }] });
    const { job, run } = await runOne({ ORCH_AGENT: 'codex', ORCH_CODEX_BIN: fake.bin, ORCH_AGENT_MAX_TOKENS: '40000' });
    expect(job).toMatchObject({ status: 'failed', reason: 'budget_exceeded' });
    expect(job.detail).toMatch(/the run used [\d,]+ tokens \([\d,]+ in, cached included, \+ [\d,]+ out; estimated from the stream's text\), over the budget ORCH_AGENT_MAX_TOKENS=40000/);
    expect(run.log_tail).not.toContain('turn.completed');
    expect(Number(run.tokens_in)).toBeGreaterThan(40_000);
    expect(run.session_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7/);
  });

  it('ORCH_AGENT_STALL_S: an agent printing only reconnect notices is stopped as stalled (transient, backed off)', async () => {
    const fake = await fakeBin('codex', { default: [{ retry: 4 }, { offline: 250 }] });
    const started = Date.now();
    const { o, task, job, run } = await runOne({ ORCH_AGENT: 'codex', ORCH_CODEX_BIN: fake.bin, ORCH_AGENT_STALL_S: '2', ORCH_JOB_MAX_ATTEMPTS: '2', ORCH_RETRY_BACKOFF_BASE_S: '30' });
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(job).toMatchObject({ status: 'failed', reason: 'stalled', failure_class: 'transient' });
    expect(job.detail).toMatch(/no progress .* for \d+ s, ORCH_AGENT_STALL_S=2; its last line: .*waiting for network/);
    expect(run.transcript.filter((e) => e.kind === 'retry').map((e) => e.text).at(-1)).toContain('waiting for network');
    await groupGone(fake, run.pid!);
    // retried after the backoff (30 s), not at once
    const retry = await waitFor(async () => (await listTaskJobs(o.rt.svc.db, task.id)).find((j) => j.attempt === 2), 5000, 'retry queued');
    expect(retry.status).toBe('queued');
    expect(new Date(retry.run_after).getTime() - Date.now()).toBeGreaterThan(20_000);
  });

  it('under budget: the same run is not stopped (the gate decides), its reported cost recorded', async () => {
    const fake = await fakeBin('claude', { default: [PRICY, { say: 'one' }, { artefact: '# analysis\n' }] });
    const { job, run } = await runOne({ ORCH_CLAUDE_BIN: fake.bin, ORCH_AGENT_MAX_COST_USD: '1', ORCH_AGENT_MAX_TOKENS: '1000000' });
    expect(job).toMatchObject({ stage: 'analysis', status: 'done' });
    expect(run).toMatchObject({ exit_code: 0, cost_source: 'reported' });
    expect(Number(run.cost_usd)).toBeCloseTo(0.0363, 3);
    expect(run.session_id).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('ORCH_CLAUDE_* and ORCH_AGENT_MODEL reach the command line', async () => {
    const fake = await fakeBin('claude', { default: [{ artefact: '# a\n' }] });
    await runOne({
      ORCH_CLAUDE_BIN: fake.bin,
      ORCH_CLAUDE_MAX_TURNS: '7',
      ORCH_CLAUDE_PERMISSION_MODE: 'dontAsk',
      ORCH_CLAUDE_ALLOWED_TOOLS: 'Bash, Read',
      ORCH_AGENT_MODEL: 'claude-test-model',
    });
    const argv = JSON.parse(await fs.readFile(fake.argvFile, 'utf8')) as string[];
    const after = (flag: string) => argv[argv.indexOf(flag) + 1];
    expect(argv[0]).toBe('-p');
    expect(after('--max-turns')).toBe('7');
    expect(after('--permission-mode')).toBe('dontAsk');
    expect(after('--allowedTools')).toBe('Bash,Read');
    expect(after('--model')).toBe('claude-test-model');
    expect(argv).not.toContain('--max-budget-usd');
  });
});

describe('agent settings', () => {
  it('parse and validate; bad values name the variable', async () => {
    const c = loadConfig({ ORCH_CLAUDE_ALLOWED_TOOLS: 'none', ORCH_CODEX_BIN: '/opt/codex', ORCH_AGENT_MODEL: 'm' });
    expect(c.agent.claude).toMatchObject({ allowedTools: [], bin: undefined, maxTurns: undefined });
    expect(c.agent.codex).toEqual({ bin: '/opt/codex' });
    expect(c.agent).toMatchObject({ maxTokens: 0, stallS: 300, resume: false });
    expect(loadConfig({ ORCH_AGENT_STALL_S: '0', ORCH_AGENT_RESUME: 'on', ORCH_AGENT_MAX_TOKENS: '500000' }).agent).toMatchObject({ stallS: 0, resume: true, maxTokens: 500_000 });
    expect(loadConfig({ ORCH_AGENT_PRICES: 'gpt-6*=2/12' }).agent.prices.entries[0]).toMatchObject({ pattern: 'gpt-6*', input: 2, output: 12 });
    for (const [k, v] of [['ORCH_CLAUDE_MAX_TURNS', '0'], ['ORCH_AGENT_STALL_S', '-1'], ['ORCH_AGENT_MAX_TOKENS', '1.5'], ['ORCH_AGENT_PRICES', 'opus=cheap'], ['ORCH_AGENT_RESUME', 'maybe']]) {
      let err: unknown;
      try {
        loadConfig({ [k!]: v });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues.join('\n')).toContain(k);
    }
    const codex = await createAgent(loadConfig({ ORCH_AGENT: 'codex', ORCH_CODEX_BIN: '/opt/codex', ORCH_AGENT_MODEL: 'gpt-x' }));
    const inv = codex.invocation({ taskId: 1, stage: 'analysis', attempt: 1, worktree: '/srv/w', promptFile: '/nonexistent', artefactDir: '/srv/a' });
    expect(inv.file).toBe('/opt/codex');
    expect(inv.args[inv.args.indexOf('--model') + 1]).toBe('gpt-x');
  });
});
