/**
 * Per-stage budgets with the fake `claude` (tests/fixtures/bin/claude) as a real agent:
 * ORCH_AGENT_TIMEOUT_S stops a hanging agent (its whole process group) and fails the job with
 * `agent_timeout`; ORCH_AGENT_MAX_COST_USD stops an agent whose stream reports more and fails
 * the job with `budget_exceeded`, cost and tokens recorded. The agent settings
 * (ORCH_CLAUDE_BIN, ORCH_CLAUDE_MAX_TURNS, ...) reach the command line through `createAgent`.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createAgent } from '@orch/shared/agents/index';
import { ConfigError, loadConfig } from '@orch/shared/runtime/config';
import { getJobRun } from '@orch/shared/db/queries/agent-runs';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getTask } from '@orch/shared/db/queries/tasks';
import { createTask } from '@orch/shared/pipeline/tasks';
import { ROOT, startOrch, tempDir, waitFor, type Orch } from './support/harness.ts';

const FAKE_CLAUDE = path.join(ROOT, 'tests', 'fixtures', 'bin', 'claude');
const TRANSCRIPTS = path.join(ROOT, 'tests', 'fixtures', 'transcripts');

let orch: Orch | undefined;
let dir: string | undefined;
afterEach(async () => {
  await orch?.close();
  orch = undefined;
  if (dir) await fs.rm(dir, { recursive: true, force: true });
  dir = undefined;
});

/**
 * A `claude` executable: a shell wrapper that sets the fake's variables (in-process workers share
 * process.env, so they are set here rather than there), starts a long-lived child in the same
 * process group (it must die with the agent), and execs the fake.
 */
async function fakeClaudeBin(vars: Record<string, string>): Promise<{ bin: string; childPidFile: string; argvFile: string }> {
  dir ??= await tempDir('orch-agent-budgets-');
  const bin = path.join(dir, `claude-${Math.random().toString(36).slice(2)}`);
  const childPidFile = `${bin}.child`;
  const argvFile = `${bin}.argv`;
  const exports = Object.entries({ ...vars, FAKE_AGENT_ARGV_FILE: argvFile })
    .map(([k, v]) => `export ${k}='${v}'`)
    .join('\n');
  await fs.writeFile(bin, `#!/bin/sh\n${exports}\nsleep 300 &\necho $! > '${childPidFile}'\nexec '${process.execPath}' '${FAKE_CLAUDE}' "$@"\n`, { mode: 0o755 });
  return { bin, childPidFile, argvFile };
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
  expect(agent.name).toBe('claude');
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

describe('agent budgets', () => {
  it('ORCH_AGENT_TIMEOUT_S: a hanging agent is stopped, its process group dies, the job fails with agent_timeout', async () => {
    const fake = await fakeClaudeBin({ FAKE_AGENT_TRANSCRIPT: path.join(TRANSCRIPTS, 'claude-killed.jsonl'), FAKE_AGENT_HANG: '1' });
    const started = Date.now();
    const { o, task, job, run } = await runOne({ ORCH_CLAUDE_BIN: fake.bin, ORCH_AGENT_TIMEOUT_S: '1', ORCH_STOP_GRACE_S: '1' });
    expect(job.status).toBe('failed');
    expect(job.reason).toBe('agent_timeout');
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(run.finished_at).not.toBeNull();
    expect(run.error).toContain('agent_timeout');
    // tokens seen before the stop are kept
    expect(Number(run.tokens_out)).toBeGreaterThan(0);
    // no process of the agent's group survives: the agent and the child its wrapper started
    const child = Number((await fs.readFile(fake.childPidFile, 'utf8')).trim());
    await waitFor(async () => !alive(run.pid!) && !alive(child), 5000, 'agent and child dead');
    expect(() => process.kill(-run.pid!, 0)).toThrow();
    // not retried (one attempt), the task is blocked in analysis with the reason
    const t = (await getTask(o.rt.svc.db, task.id))!;
    expect(t.stage).toBe('analysis');
    await waitFor(async () => (await getTask(o.rt.svc.db, task.id))?.blocked_at, 5000, 'task blocked');
    expect((await getTask(o.rt.svc.db, task.id))!.blocked_reason).toContain('agent_timeout');
  });

  it('ORCH_AGENT_MAX_COST_USD: a run reporting more is stopped; job fails budget_exceeded; cost and tokens recorded', async () => {
    // the fake prints the whole transcript (result: $0.0873) then hangs: only the budget stops it
    const fake = await fakeClaudeBin({ FAKE_AGENT_TRANSCRIPT: path.join(TRANSCRIPTS, 'claude-success.jsonl'), FAKE_AGENT_HANG: '1' });
    const { job, run } = await runOne({ ORCH_CLAUDE_BIN: fake.bin, ORCH_AGENT_MAX_COST_USD: '0.01', ORCH_AGENT_TIMEOUT_S: '60' });
    expect(job.status).toBe('failed');
    expect(job.reason).toBe('budget_exceeded');
    expect(Number(run.cost_usd)).toBeCloseTo(0.0873215, 5);
    expect(Number(run.tokens_in)).toBeGreaterThan(0);
    expect(Number(run.tokens_out)).toBeGreaterThan(0);
    const child = Number((await fs.readFile(fake.childPidFile, 'utf8')).trim());
    await waitFor(async () => !alive(run.pid!) && !alive(child), 5000, 'agent and child dead');
  });

  it('under budget: the same run is not stopped (the gate decides), cost recorded', async () => {
    const fake = await fakeClaudeBin({ FAKE_AGENT_TRANSCRIPT: path.join(TRANSCRIPTS, 'claude-success.jsonl'), FAKE_AGENT_WRITE_ARTEFACT: '1' });
    const { job, run } = await runOne({ ORCH_CLAUDE_BIN: fake.bin, ORCH_AGENT_MAX_COST_USD: '1' });
    expect(job.stage).toBe('analysis');
    expect(job.status).toBe('done');
    expect(run.exit_code).toBe(0);
    expect(Number(run.cost_usd)).toBeCloseTo(0.0873215, 5);
  });

  it('ORCH_CLAUDE_* and ORCH_AGENT_MODEL reach the command line', async () => {
    const fake = await fakeClaudeBin({ FAKE_AGENT_TRANSCRIPT: path.join(TRANSCRIPTS, 'claude-success.jsonl'), FAKE_AGENT_WRITE_ARTEFACT: '1' });
    await runOne({
      ORCH_CLAUDE_BIN: fake.bin,
      ORCH_CLAUDE_MAX_TURNS: '7',
      ORCH_CLAUDE_PERMISSION_MODE: 'bypassPermissions',
      ORCH_CLAUDE_ALLOWED_TOOLS: 'Bash, Read',
      ORCH_AGENT_MODEL: 'claude-test-model',
    });
    const argv = JSON.parse(await fs.readFile(fake.argvFile, 'utf8')) as string[];
    const after = (flag: string) => argv[argv.indexOf(flag) + 1];
    expect(argv[0]).toBe('-p');
    expect(after('--max-turns')).toBe('7');
    expect(after('--permission-mode')).toBe('bypassPermissions');
    expect(after('--allowedTools')).toBe('Bash,Read');
    expect(after('--model')).toBe('claude-test-model');
  });
});

describe('agent settings', () => {
  it('parse and validate; bad values name the variable', async () => {
    const c = loadConfig({ ORCH_CLAUDE_ALLOWED_TOOLS: 'none', ORCH_CODEX_BIN: '/opt/codex', ORCH_AGENT_MODEL: 'm' });
    expect(c.agent.claude).toMatchObject({ allowedTools: [], bin: undefined, maxTurns: undefined });
    expect(c.agent.codex).toEqual({ bin: '/opt/codex' });
    expect(c.tracker).toEqual({ outboxIntervalS: 2, reconcileS: 60 });
    expect(loadConfig({ ORCH_PLANE_RECONCILE_S: '0' }).tracker.reconcileS).toBe(0);
    for (const [k, v] of [['ORCH_CLAUDE_MAX_TURNS', '0'], ['ORCH_CLAUDE_MAX_TURNS', 'many'], ['ORCH_PLANE_RECONCILE_S', '-1'], ['ORCH_OUTBOX_INTERVAL_S', 'x']]) {
      let err: unknown;
      try {
        loadConfig({ [k!]: v });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues.join('\n')).toContain(k);
    }
    // codex: bin and model reach the command line
    const codex = await createAgent(loadConfig({ ORCH_AGENT: 'codex', ORCH_CODEX_BIN: '/opt/codex', ORCH_AGENT_MODEL: 'gpt-x' }));
    const inv = codex.invocation({ taskId: 1, stage: 'analysis', attempt: 1, worktree: '/tmp', promptFile: '/nonexistent', artefactDir: '/tmp' });
    expect(inv.file).toBe('/opt/codex');
    expect(inv.args.slice(0, 2)).toEqual(['exec', '--json']);
    expect(inv.args[inv.args.indexOf('--model') + 1]).toBe('gpt-x');
  });
});
