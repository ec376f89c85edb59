/**
 * The pure parts of "retry only what a retry can fix": the failure classification over the real
 * CLIs' output (tests/fixtures/real-cli, captured from claude 2.1.332 and codex 0.171.0), the
 * retry decision by class, the price table, the run monitor's budgets and stall watchdog, and the
 * prompt section that tells the next attempt why the last one failed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createClaudeAdapter, createClaudeStreamParser } from '@orch/shared/agents/claude';
import { createCodexAdapter, createCodexStreamParser } from '@orch/shared/agents/codex';
import { createRunMonitor, runCost } from '@orch/shared/agents/monitor';
import { DEFAULT_PRICE_TABLE, DEFAULT_PRICES, FALLBACK_PRICE, estimateCost, parsePrices, priceOf, priceTable } from '@orch/shared/agents/prices';
import type { AgentStreamParser } from '@orch/shared/agents/types';
import { deployVerdict, exitVerdict, implementationVerdict, stepOutcome } from '@orch/shared/gates/verdicts';
import { classifyAgentRun, failureText, stopFailure, type FailureClass } from '@orch/shared/pipeline/failures';
import { decideAfterAbort, decideAfterGate, retryOrBlock, type AfterGateInput } from '@orch/shared/pipeline/transitions';
import { PROMPT_VARIABLES, previousFailureSection } from '@orch/shared/prompts';
import { ROOT } from './support/harness.ts';
import { loadFixture } from './support/real-cli.ts';
import { AFTER_GATE_BASE } from './support/decisions.ts';

const HOME = '/srv/orch/agent-home';
const claude = createClaudeAdapter({ home: `${HOME}/claude` });
const codex = createCodexAdapter({ home: `${HOME}/codex` });

/** A recorded real run, through orch's parser and classifier as the worker does at its exit. */
function classifyFixture(name: string) {
  const c = loadFixture(name);
  const adapter = c.agent === 'claude' ? claude : codex;
  const parser: AgentStreamParser = c.agent === 'claude' ? createClaudeStreamParser() : createCodexStreamParser();
  for (const l of c.stdout) parser.onLine(l);
  const usage = parser.usage();
  const tail = [...c.stdout, c.stderr].join('\n');
  const failure = classifyAgentRun({
    agent: c.agent,
    exitCode: c.exitCode,
    signal: null,
    errorCode: usage.errorCode,
    error: usage.error,
    lastMessage: usage.result,
    tail,
    loginHint: adapter.loginHint(),
  });
  return { c, usage, failure, sessionMissing: adapter.sessionMissing({ exitCode: c.exitCode, usage, tail }) };
}

describe('failure classification over real CLI output', () => {
  const table: Array<[string, FailureClass, string, RegExp[]]> = [
    ['claude-not-logged-in', 'config', 'agent_auth', [/Not logged in · Please run \/login/, /CLAUDE_CONFIG_DIR=\/srv\/orch\/agent-home\/claude \S*claude \/login/, /ANTHROPIC_API_KEY/]],
    ['claude-unknown-model', 'config', 'agent_auth', [/Not logged in/, /did not recognize the model `not-a-model` \(ORCH_AGENT_MODEL\)/]],
    ['claude-bad-flag', 'config', 'agent_usage', [/error: unknown option '--no-such-flag'/]],
    ['claude-bad-permission-mode', 'config', 'agent_usage', [/argument 'bogus' is invalid/]],
    ['claude-no-verbose', 'config', 'agent_usage', [/requires --verbose/]],
    ['claude-offline-with-key', 'transient', 'agent_transient', [/Can't reach the API server/]],
    ['codex-bad-flag', 'config', 'agent_usage', [/unexpected argument '--no-such-flag'/]],
    ['codex-bad-sandbox', 'config', 'agent_usage', [/invalid value 'bogus' for '--sandbox/]],
    ['codex-home-missing', 'config', 'agent_config', [/Error finding codex home/, /ORCH_AGENT_HOME/]],
    // stopped from outside (the capture's SIGTERM; orch's stall watchdog): retry noise to the end
    ['codex-offline', 'transient', 'agent_transient', [/waiting for network/]],
  ];
  it.each(table)('%s → %s (%s)', (name, cls, code, words) => {
    const { c, failure } = classifyFixture(name);
    expect(c.exitCode).not.toBe(0);
    expect(failure.class).toBe(cls);
    expect(failure.code).toBe(code);
    for (const w of words) expect(failure.detail).toMatch(w);
  });

  it('a resume whose session is gone is recognised (claude: its result line; codex: stderr), not blamed on the agent', () => {
    for (const name of ['claude-resume-missing', 'codex-resume-missing']) {
      const r = classifyFixture(name);
      expect(r.sessionMissing, name).toBe(true);
    }
    expect(classifyFixture('claude-not-logged-in').sessionMissing).toBe(false);
    expect(classifyFixture('codex-offline').sessionMissing).toBe(false);
  });

  it('the not-logged-in stream parses to its session, its words and no cost', () => {
    const { usage } = classifyFixture('claude-not-logged-in');
    expect(usage).toMatchObject({ error: 'Not logged in · Please run /login', errorCode: 'authentication_failed', costUsd: 0, final: true, tokensIn: 0, tokensOut: 0 });
    expect(usage.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    const offline = classifyFixture('codex-offline').usage;
    expect(offline.sessionId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7/); // UUIDv7
    expect(offline).toMatchObject({ final: false, costUsd: null, errorCode: 'stream_error' });
  });

  it('exit codes without a stream: a missing binary is configuration, an unknown exit the agent’s', () => {
    const missing = classifyAgentRun({ agent: 'claude', exitCode: 127, signal: null, errorCode: null, error: null, lastMessage: null, tail: 'spawn /opt/claude ENOENT\n' });
    expect(missing).toMatchObject({ code: 'agent_missing', class: 'config' });
    expect(missing.detail).toContain('ORCH_CLAUDE_BIN');
    const sh = classifyAgentRun({ agent: 'command', exitCode: 127, signal: null, errorCode: null, error: null, lastMessage: null, tail: 'sh: 1: my-agent: not found\n' });
    expect(sh).toMatchObject({ code: 'agent_missing', class: 'config' });
    expect(sh.detail).toContain('ORCH_AGENT_CMD');
    const plain = classifyAgentRun({ agent: 'command', exitCode: 3, signal: null, errorCode: null, error: null, lastMessage: null, tail: 'line 1: error 502 in parser\nboom\n' });
    expect(plain).toMatchObject({ code: 'agent_exit_3', class: 'agent' });
    expect(plain.detail).toContain('boom');
    const network = classifyAgentRun({ agent: 'command', exitCode: 1, signal: null, errorCode: null, error: null, lastMessage: null, tail: 'fetch failed: read ECONNRESET\n' });
    expect(network).toMatchObject({ code: 'agent_transient', class: 'transient' });
    const killed = classifyAgentRun({ agent: 'claude', exitCode: 137, signal: 'SIGKILL', errorCode: null, error: null, lastMessage: null, tail: '' });
    expect(killed).toMatchObject({ code: 'agent_killed', class: 'transient' });
  });

  it('the agent’s own stops: its budget and its turns are the agent’s to fix; rate limits and overload are transient', () => {
    const c = (errorCode: string | null, error: string) => classifyAgentRun({ agent: 'claude', exitCode: 1, signal: null, errorCode, error, lastMessage: null, tail: '' });
    expect(c('error_max_budget_usd', 'Reached maximum budget ($0.5)')).toMatchObject({ code: 'budget_exceeded', class: 'agent' });
    expect(c('error_max_turns', 'Reached maximum number of turns (3)')).toMatchObject({ code: 'agent_max_turns', class: 'agent' });
    expect(c('rate_limit', 'API Error: Rate limit reached')).toMatchObject({ class: 'transient' });
    expect(c('overloaded', 'API Error: 529 {"type":"error","error":{"type":"overloaded_error"}}')).toMatchObject({ class: 'transient' });
    expect(c('server_error:connection_failed', "API Error: Can't reach the API server")).toMatchObject({ class: 'transient' });
    expect(c('billing_error', 'Credit balance is too low')).toMatchObject({ code: 'agent_auth', class: 'config' });
    expect(c('model_not_found', 'API Error: 404 model: claude-x not found')).toMatchObject({ code: 'agent_model', class: 'config' });
    expect(c('turn_failed', 'unexpected status 401 Unauthorized: Missing bearer or basic authentication in header')).toMatchObject({ code: 'agent_auth', class: 'config' });
    expect(c('error_during_execution', 'Tool permission stream closed')).toMatchObject({ code: 'agent_exit_1', class: 'agent' });
  });

  it('orch’s stops: a stall is transient, a timeout or a budget the agent’s', () => {
    expect(stopFailure('stalled', 'no progress for 300 s')).toEqual({ code: 'stalled', class: 'transient', detail: 'the agent stalled: no progress for 300 s' });
    expect(stopFailure('agent_timeout').class).toBe('agent');
    expect(stopFailure('budget_exceeded').class).toBe('agent');
    expect(stopFailure('dead_owner').class).toBe('transient');
    expect(failureText({ code: 'stalled', detail: 'x' })).toBe('stalled — x');
    expect(failureText({ code: 'stalled' })).toBe('stalled');
  });
});

describe('retry by class', () => {
  const base: AfterGateInput = { ...AFTER_GATE_BASE, stage: 'implementation' };
  const fail = (failure: FailureClass, attempt = 1) => decideAfterGate({ ...base, attempt, verdict: { verdict: 'fail', reason: 'x', detail: 'words', failure } });
  it('config blocks on the first attempt, with the words', () => {
    expect(fail('config')).toEqual({ job: 'failed', reason: 'x', then: { kind: 'block', reason: 'x — words' } });
  });
  it('transient backs off; the agent’s own failure retries at once (its prompt says why)', () => {
    expect(fail('transient').then).toEqual({ kind: 'retry', attempt: 2, delayS: 10 });
    expect(fail('transient', 2).then).toEqual({ kind: 'retry', attempt: 3, delayS: 20 });
    expect(fail('agent').then).toEqual({ kind: 'retry', attempt: 2, delayS: 0 });
    expect(fail('agent', 3).then).toEqual({ kind: 'block', reason: 'attempts_exhausted: x — words' });
    // a verdict without a class is the agent's
    expect(decideAfterGate({ ...base, verdict: { verdict: 'fail', reason: 'y' } }).then).toEqual({ kind: 'retry', attempt: 2, delayS: 0 });
  });
  it('aborts follow the same rule; a stall backs off', () => {
    const a = { attempt: 1, maxAttempts: 3, taskTerminal: false, cancelRequested: false, sameAttempt: false, backoffBaseS: 10, reason: 'stalled', detail: 'd' };
    expect(decideAfterAbort({ ...a, failure: 'transient' })).toEqual({ kind: 'retry', attempt: 2, delayS: 10 });
    expect(decideAfterAbort({ ...a, reason: 'budget_exceeded', failure: 'agent' })).toEqual({ kind: 'retry', attempt: 2, delayS: 0 });
    expect(decideAfterAbort({ ...a, attempt: 3, failure: 'transient' })).toEqual({ kind: 'block', reason: 'attempts_exhausted: stalled — d' });
    expect(retryOrBlock({ attempt: 1, maxAttempts: 1, backoffBaseS: 5 }, { code: 'z', failure: 'agent' })).toEqual({ kind: 'block', reason: 'attempts_exhausted: z' });
  });
});

describe('gate verdicts in words', () => {
  it('failed tests: the exit code and the last lines of the output', () => {
    const out = Array.from({ length: 40 }, (_, i) => `line ${i + 1}`).join('\n') + '\nFAIL greet: expected "Hello, Ada!"\n';
    const v = implementationVerdict({ commitsAhead: 1, testCommand: 'npm test', testExitCode: 1, testOutput: out, branch: 'orch/1-x', base: 'main' });
    expect(v).toMatchObject({ verdict: 'fail', reason: 'tests_failed_exit_1', failure: 'agent' });
    const d = (v as { detail: string }).detail;
    expect(d).toContain('`npm test` exited 1');
    expect(d).toContain('FAIL greet: expected "Hello, Ada!"');
    expect(d).not.toContain('line 20\n');
    expect(implementationVerdict({ commitsAhead: 0, testCommand: null, testExitCode: null, branch: 'orch/1-x', base: 'main' })).toMatchObject({ reason: 'no_commits_ahead_of_base' });
  });
  it('a recorded agent failure is the verdict; the deploy command backs off; the step outcome is a value', () => {
    const run = { agent: 'claude', exit_code: 1, signal: null, error: 'claude: Not logged in · Please run /login.', failure_code: 'agent_auth', failure_class: 'config' as const, last_message: null, log_tail: '' };
    expect(exitVerdict(run)).toEqual({ verdict: 'fail', reason: 'agent_auth', failure: 'config', detail: run.error });
    expect(exitVerdict({ ...run, exit_code: 0 })).toBeNull();
    expect(exitVerdict(undefined)).toMatchObject({ reason: 'no_exit_code', failure: 'transient' });
    expect(deployVerdict({ ...run, agent: 'deploy', failure_code: null, failure_class: null, error: null, log_tail: 'rsync: connection refused\n' })).toMatchObject({
      reason: 'deploy_failed_exit_1',
      failure: 'transient',
    });
    expect(stepOutcome({ exit_code: 0 }, true)).toEqual({ kind: 'exited', exitCode: 0 });
    expect(stepOutcome({ exit_code: null }, true)).toEqual({ kind: 'no_exit' });
    expect(stepOutcome(undefined, false)).toEqual({ kind: 'no_process' });
  });
});

describe('prices', () => {
  it('the built-in table, overrides in front, the fallback marked', () => {
    expect(priceOf(DEFAULT_PRICE_TABLE, 'claude-opus-5-5')).toMatchObject({ fallback: false, price: { input: 5, output: 25 } });
    expect(priceOf(DEFAULT_PRICE_TABLE, 'claude-opus-4-1-20250805')).toMatchObject({ price: { input: 15, output: 75 } });
    expect(priceOf(DEFAULT_PRICE_TABLE, 'claude-sonnet-4-5')).toMatchObject({ price: { input: 3, output: 15, cacheRead: 0.3, cacheWrite: 3.75 } });
    expect(priceOf(DEFAULT_PRICE_TABLE, 'gpt-5-codex')).toMatchObject({ price: { input: 1.25, output: 10, cacheRead: 0.125 } });
    expect(priceOf(DEFAULT_PRICE_TABLE, 'gpt-6.2-sol')).toMatchObject({ fallback: true, price: { input: 15, output: 75 } });
    const t = priceTable(parsePrices('gpt-6*=2/12, *=1/2'));
    expect(priceOf(t, 'gpt-6.2-sol')).toMatchObject({ fallback: false, price: { input: 2, output: 12, cacheRead: 0.2 } });
    expect(priceOf(t, 'who-knows')).toMatchObject({ fallback: true, price: { input: 1, output: 2 } });
    expect(() => parsePrices('gpt=abc')).toThrow(/bad price entry "gpt=abc"/);
    const e = estimateCost(DEFAULT_PRICE_TABLE, { 'claude-sonnet-4-5': { input: 1_000_000, output: 100_000, cacheRead: 1_000_000, cacheWrite: 0 }, mystery: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 } });
    expect(e.usd).toBeCloseTo(3 + 1.5 + 0.3, 6);
    expect(e.fallbackModels).toEqual(['mystery']);
  });

  it('docs/agents.md documents the built-in table as it is', () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs', 'agents.md'), 'utf8');
    for (const p of [...DEFAULT_PRICES, FALLBACK_PRICE]) expect(doc).toContain(`| \`${p.pattern}\` | ${p.input} | ${p.output} | ${p.cacheRead} | ${p.cacheWrite} |`);
  });
});

describe('run monitor', () => {
  const assistantLine = (id: string, u: { input: number; output: number; cacheRead: number; cacheWrite: number }, model = 'claude-sonnet-4-5') =>
    JSON.stringify({
      type: 'assistant',
      message: { diagnostics: null, id, container: null, model, role: 'assistant', stop_details: null, stop_reason: null, stop_sequence: null, type: 'message', usage: { input_tokens: u.input, output_tokens: u.output, cache_creation_input_tokens: u.cacheWrite, cache_read_input_tokens: u.cacheRead }, content: [{ type: 'text', text: 'working' }], context_management: null },
      parent_tool_use_id: null,
      session_id: 's',
      uuid: id,
    });
  const limits = { maxCostUsd: 0, maxTokens: 0, stallS: 0, prices: DEFAULT_PRICE_TABLE };

  it('a cost budget acts on the running estimate, before the result line', () => {
    const m = createRunMonitor(createClaudeStreamParser(), { ...limits, maxCostUsd: 0.05 }, 0);
    // 10k cache reads + 1k output at sonnet prices ≈ $0.018 per message
    const u = { input: 3, output: 1000, cacheRead: 10_000, cacheWrite: 0 };
    expect(m.onLine(assistantLine('msg_1', u), 10)).toBeNull();
    expect(m.onLine(assistantLine('msg_1', u), 11)).toBeNull(); // same message, second block: counted once
    expect(m.onLine(assistantLine('msg_2', u), 20)).toBeNull();
    const stop = m.onLine(assistantLine('msg_3', u), 30);
    expect(stop?.reason).toBe('budget_exceeded');
    expect(stop?.detail).toMatch(/^the run cost \$0\.05\d+ \(estimated from its token usage and the price table\), over the budget ORCH_AGENT_MAX_COST_USD=0\.05$/);
    expect(m.onLine(assistantLine('msg_4', u), 40)).toBeNull(); // once
    expect(m.cost()).toMatchObject({ source: 'estimated' });
  });

  it('an unknown model is priced at the fallback, and the words say so', () => {
    const m = createRunMonitor(createClaudeStreamParser(), { ...limits, maxCostUsd: 0.01 }, 0);
    const stop = m.onLine(assistantLine('msg_1', { input: 1000, output: 1000, cacheRead: 0, cacheWrite: 0 }, 'claude-next-9'), 1);
    expect(stop?.detail).toContain('claude-next-9 priced at the fallback price');
    expect(runCost(m.usage(), DEFAULT_PRICE_TABLE).source).toBe('estimated_fallback');
  });

  it('a token budget on codex acts on the estimate from its text, before turn.completed', () => {
    const m = createRunMonitor(createCodexStreamParser({ promptChars: 4000 }), { ...limits, maxTokens: 30_000 }, 0);
    const lines = [
      '{"type":"thread.started","thread_id":"019ae000-0000-7000-8000-000000000001"}',
      '{"type":"turn.started"}',
      '{"type":"item.started","item":{"id":"item_0","type":"command_execution","command":"/bin/bash -lc cat big.log","aggregated_output":"","exit_code":null,"status":"in_progress"}}',
      JSON.stringify({ type: 'item.completed', item: { id: 'item_0', type: 'command_execution', command: '/bin/bash -lc cat big.log', aggregated_output: 'x'.repeat(120_000), exit_code: 0, status: 'completed' } }),
      '{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"Read it."}}',
    ];
    const stops = lines.map((l, i) => m.onLine(l, i));
    expect(stops.slice(0, 4)).toEqual([null, null, null, null]);
    expect(stops[4]?.reason).toBe('budget_exceeded');
    expect(stops[4]?.detail).toMatch(/estimated from the stream's text\), over the budget ORCH_AGENT_MAX_TOKENS=30000/);
    expect(m.usage().tokensEstimated).toBe(true);
  });

  it('a cost budget works for codex too: its text-based estimate, priced (at the fallback without a known model)', () => {
    const m = createRunMonitor(createCodexStreamParser({ promptChars: 40_000 }), { ...limits, maxCostUsd: 0.1 }, 0);
    const item = (i: number) => JSON.stringify({ type: 'item.completed', item: { id: `item_${i}`, type: 'agent_message', text: 'y'.repeat(4000) } });
    const stops = [0, 1, 2, 3].map((i) => m.onLine(item(i), i));
    const stop = stops.find(Boolean);
    expect(stop?.reason).toBe('budget_exceeded');
    expect(stop?.detail).toContain('codex-default-model priced at the fallback price');
    const known = createRunMonitor(createCodexStreamParser({ model: 'gpt-5-codex', promptChars: 40_000 }), { ...limits, maxCostUsd: 0.1 }, 0);
    expect([0, 1, 2, 3].map((i) => known.onLine(item(i), i)).every((x) => x === null)).toBe(true);
    expect(known.cost()).toMatchObject({ source: 'estimated' });
  });

  it('stall: progress resets the clock; retry notices, warnings and identical reconnect lines do not', () => {
    const offline = loadFixture('codex-offline').stdout;
    const m = createRunMonitor(createCodexStreamParser(), { ...limits, stallS: 5 }, 0);
    m.onLine(offline[0]!, 100); // thread.started
    m.onLine(offline[1]!, 200); // turn.started
    for (const [i, l] of offline.slice(2).entries()) m.onLine(l, 1000 + i * 1000); // errors, an error item
    expect(m.check(5100)).toBeNull();
    const stop = m.check(5200);
    expect(stop?.reason).toBe('stalled');
    expect(stop?.detail).toMatch(/no progress .* for 5 s, ORCH_AGENT_STALL_S=5; its last line: .*waiting for network/);
    expect(m.check(9000)).toBeNull(); // once
    // claude: an api_retry line is not progress, an assistant line is
    const c = createRunMonitor(createClaudeStreamParser(), { ...limits, stallS: 2 }, 0);
    c.onLine('{"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"retry_delay_ms":500,"error_status":null,"error":"unknown","session_id":"s","uuid":"u"}', 1500);
    expect(c.check(2100)?.reason).toBe('stalled');
    const d = createRunMonitor(createClaudeStreamParser(), { ...limits, stallS: 2 }, 0);
    d.onLine(assistantLine('msg_1', { input: 1, output: 1, cacheRead: 0, cacheWrite: 0 }), 1500);
    expect(d.check(2100)).toBeNull();
    expect(d.check(3600)?.reason).toBe('stalled');
  });
});

describe('the next prompt says why the last attempt failed', () => {
  it('failed tests: code, command, a longer tail of the output, the agent’s last message', () => {
    const out = Array.from({ length: 100 }, (_, i) => `ok ${i + 1}`).join('\n') + '\nnot ok 101 greet: expected "Hello, Ada!", got "Hello Ada"\n';
    const s = previousFailureSection({
      stage: 'implementation',
      attempt: 1,
      reason: 'tests_failed_exit_1',
      detail: 'implementation gate: the test command `npm test` exited 1. The last lines of its output:\n…',
      testOutput: out,
      lastMessage: 'Done: greet() updated.',
    });
    expect(s).toMatch(/^## Why the previous attempt failed\n/);
    expect(s).toContain('Attempt 1 of implementation failed (`tests_failed_exit_1`): implementation gate: the test command `npm test` exited 1.');
    expect(s).toContain('not ok 101 greet: expected "Hello, Ada!", got "Hello Ada"');
    expect(s).toContain('ok 50');
    expect(s).not.toContain('ok 30\n');
    expect(s).toContain('> Done: greet() updated.');
  });
  it('a merge conflict: its words; a review’s request and nothing are silent', () => {
    const s = previousFailureSection({ stage: 'merge', attempt: 1, reason: 'merge_conflict', detail: 'merge gate: orch/1-x conflicts with main in `a.txt`. Bring the branch up to date with origin/main…' });
    expect(s).toContain('The merge of this branch failed (`merge_conflict`):');
    expect(s).toContain('`a.txt`');
    expect(previousFailureSection({ stage: 'review', attempt: 1, reason: 'changes_requested', detail: 'x' })).toBe('');
    expect(previousFailureSection(null)).toBe('');
  });
  it('the README documents every template variable', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    for (const v of Object.keys(PROMPT_VARIABLES)) expect(readme).toContain(`{{${v}}}`);
  });
});
