/**
 * The claude and codex adapters: their command lines and what they declare (environment, agent
 * home), and their stream parsers over the real CLIs' recorded output (tests/fixtures/real-cli)
 * and over the fakes (tests/fixtures/bin, the real shapes) run as real processes: success with
 * cost, tokens, session and transcript, the CLI's own error, SIGTERM mid-stream, a resumed
 * session's cumulative figures.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLAUDE_PASS_ENV, createClaudeAdapter, createClaudeStreamParser, DEFAULT_CLAUDE_ALLOWED_TOOLS, MAX_INLINE_PROMPT_BYTES } from '@orch/shared/agents/claude';
import { CODEX_DEFAULT_MODEL, createCodexAdapter, createCodexStreamParser } from '@orch/shared/agents/codex';
import { createLineSplitter } from '@orch/shared/agents/line-splitter';
import { createAgent } from '@orch/shared/agents/index';
import { formatTranscript } from '@orch/shared/agents/transcript';
import type { AgentAdapter, AgentContext, AgentStreamParser, AgentUsage } from '@orch/shared/agents/types';
import { loadConfig } from '@orch/shared/runtime/config';
import { git } from '@orch/shared/host/git';
import { startGroupProcess } from '@orch/shared/host/process-group';
import { loadFixture } from './support/real-cli.ts';

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'bin');

function feed(parser: AgentStreamParser, lines: string[]): AgentUsage {
  for (const line of lines) parser.onLine(line);
  return parser.usage();
}

let tmp: string;
let ctx: AgentContext;
const PROMPT = 'You are working on task 42 of project demo: **Greet with punctuation**\n\nChange greet().\n';

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'orch-agents-'));
  const artefactDir = path.join(tmp, 'artefacts');
  const worktree = path.join(tmp, 'wt');
  await fsp.mkdir(artefactDir, { recursive: true });
  await git(['init', '--quiet', '--initial-branch=main', worktree]);
  await fsp.writeFile(path.join(worktree, 'README.md'), '# wt\n');
  await git(['add', '.'], { cwd: worktree });
  await git(['commit', '--quiet', '-m', 'initial'], { cwd: worktree });
  const promptFile = path.join(tmp, 'prompt.md');
  await fsp.writeFile(promptFile, PROMPT);
  ctx = { taskId: 42, stage: 'implementation', attempt: 1, worktree, promptFile, artefactDir };
});

afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

/** Run a fake CLI with the adapter's own command line, as orch runs it: stdout → parser. */
async function runFake(adapter: AgentAdapter, scenario: unknown, opts: { ctx?: Partial<AgentContext>; env?: Record<string, string>; stopWhen?: (u: AgentUsage) => boolean } = {}) {
  const inv = adapter.invocation({ ...ctx, ...opts.ctx });
  if (inv.home) await fsp.mkdir(inv.home.dir, { recursive: true });
  const lines: string[] = [];
  const parser = inv.parser!;
  const proc = startGroupProcess({
    file: inv.file,
    args: inv.args,
    shell: false,
    cwd: ctx.worktree,
    env: { ...(process.env as Record<string, string>), ORCH_STAGE: ctx.stage, ORCH_ARTEFACT_DIR: ctx.artefactDir, FAKE_SCENARIO_JSON: JSON.stringify(scenario), ...opts.env, ...inv.env },
    onStdoutLine: (l) => {
      lines.push(l);
      parser.onLine(l);
      if (opts.stopWhen?.(parser.usage())) void proc.stop(2);
    },
  });
  const exit = await proc.exited;
  return { inv, lines, parser, usage: parser.usage(), exit, tail: proc.tail() };
}

const fakeClaude = (o: Parameters<typeof createClaudeAdapter>[0] = {}) => createClaudeAdapter({ bin: path.join(BIN, 'claude'), home: path.join(tmp, 'home', 'claude'), ...o });
const fakeCodex = (o: Parameters<typeof createCodexAdapter>[0] = {}) => createCodexAdapter({ bin: path.join(BIN, 'codex'), home: path.join(tmp, 'home', 'codex'), ...o });

describe('line splitter', () => {
  it('reassembles lines across chunks, strips CRLF, decodes split UTF-8 and flushes the last line', () => {
    const lines: string[] = [];
    const s = createLineSplitter((l) => lines.push(l));
    s.push('{"a":');
    s.push('1}\r\n{"b"');
    s.push(':2}\n\n');
    const euro = Buffer.from('€uro\n', 'utf8'); // € is three bytes: split it across chunks
    s.push(euro.subarray(0, 1));
    s.push(euro.subarray(1, 2));
    s.push(euro.subarray(2));
    s.push('tail without newline\r');
    expect(lines).toEqual(['{"a":1}', '{"b":2}', '', '€uro']);
    s.end();
    s.end();
    expect(lines).toEqual(['{"a":1}', '{"b":2}', '', '€uro', 'tail without newline']);
  });
});

describe('claude stream parser', () => {
  it('the real not-logged-in run: key order does not matter (the result line starts with duration_api_ms)', () => {
    const c = loadFixture('claude-not-logged-in');
    expect(c.stdout.at(-1)!.startsWith('{"duration_api_ms"')).toBe(true);
    const p = createClaudeStreamParser();
    const effects = c.stdout.map((l) => p.onLine(l).progress);
    expect(effects).toEqual([true, true, true]);
    expect(p.usage()).toMatchObject({ final: true, error: 'Not logged in · Please run /login', errorCode: 'authentication_failed', result: 'Not logged in · Please run /login' });
    const kinds = p.transcript().map((e) => e.kind);
    expect(kinds).toEqual(['start', 'error']); // the result's text repeats the synthetic message: once
    expect(formatTranscript(p.transcript())).toContain('✗ Not logged in · Please run /login');
  });

  it('a resume that finds no session: the error_during_execution result carries errors[] and no result', () => {
    const p = createClaudeStreamParser();
    const u = feed(p, loadFixture('claude-resume-missing').stdout);
    expect(u).toMatchObject({ errorCode: 'error_during_execution', sessionId: '00000000-0000-4000-8000-000000000000', final: true });
    expect(u.error).toBe('No conversation found with session ID: 00000000-0000-4000-8000-000000000000');
  });

  it('offline with a key: api_retry lines are retries in the transcript, not progress', () => {
    const p = createClaudeStreamParser();
    const c = loadFixture('claude-offline-with-key');
    expect(c.stdout.map((l) => p.onLine(l).progress)).toEqual([true, false, true, true]);
    expect(p.transcript().find((e) => e.kind === 'retry')?.text).toBe('API retry 1/1 (unknown), next in 0.6 s');
    expect(p.usage()).toMatchObject({ errorCode: 'server_error:connection_failed', error: "API Error: Can't reach the API server — check your internet or DNS (ENOTFOUND)" });
  });

  it('success (the fake, real shapes): cost and tokens of the result, the session, the transcript of messages, tool calls and results', async () => {
    const { usage, lines, parser, exit } = await runFake(fakeClaude(), {
      default: [{ say: 'Looking at greet.' }, { bash: 'echo hello from bash' }, { write: { path: 'greet.txt', content: 'Hello, Ada!\n' } }, { commit: 'greet with punctuation' }, { result: 'Done: greet now punctuates.' }],
    });
    expect(exit.exitCode).toBe(0);
    const result = JSON.parse(lines.at(-1)!) as { total_cost_usd: number; modelUsage: Record<string, { inputTokens: number; cacheReadInputTokens: number; cacheCreationInputTokens: number; outputTokens: number }> };
    const m = result.modelUsage['claude-sonnet-4-5']!;
    expect(usage).toMatchObject({
      costUsd: result.total_cost_usd,
      tokensIn: m.inputTokens + m.cacheReadInputTokens + m.cacheCreationInputTokens,
      tokensOut: m.outputTokens,
      result: 'Done: greet now punctuates.',
      error: null,
      errorCode: null,
      final: true,
    });
    expect(usage.sessionId).toBe((JSON.parse(lines[0]!) as { session_id: string }).session_id);
    const text = formatTranscript(parser.transcript());
    expect(text).toContain('» Looking at greet.');
    expect(text).toContain('$ Bash: echo hello from bash');
    expect(text).toContain('│ hello from bash');
    expect(text).toMatch(/\$ Write: .*greet\.txt/);
    expect(text).toContain("$ Bash: git add -A && git commit -q -m 'greet with punctuation'");
    expect(text).toContain('■ Done: greet now punctuates.');
    expect(text).not.toContain('{"type"');
  });

  it('streamed usage counts each API message once however many lines repeat it; the result line wins', () => {
    const msg = (id: string, output: number, block: unknown) =>
      JSON.stringify({
        type: 'assistant',
        message: { diagnostics: null, id, container: null, model: 'claude-sonnet-4-5', role: 'assistant', stop_details: null, stop_reason: null, stop_sequence: null, type: 'message', usage: { output_tokens_details: null, input_tokens: 3, output_tokens: output, cache_creation_input_tokens: 100, cache_read_input_tokens: 1000 }, content: [block], context_management: null },
        parent_tool_use_id: null,
        session_id: 's1',
        uuid: `${id}-${output}`,
      });
    const p = createClaudeStreamParser();
    feed(p, [msg('msg_1', 40, { type: 'text', text: 'a' }), msg('msg_1', 60, { type: 'tool_use', id: 't1', name: 'Read', input: { file_path: 'x.ts' } }), msg('msg_2', 10, { type: 'text', text: 'b' })]);
    expect(p.usage()).toMatchObject({ tokensIn: 2 * 1103, tokensOut: 70, costUsd: null, final: false, models: { 'claude-sonnet-4-5': { input: 6, cacheRead: 2000, cacheWrite: 200, output: 70 } } });
    expect(p.transcript().map((e) => e.text)).toEqual(['a', 'Read: x.ts', 'b']);
    for (const junk of ['', '{', '[]', 'null', '{"type":null}', '{"type":"assistant","message":{"usage":"x"}}', 'x'.repeat(100_000)]) expect(() => p.onLine(junk)).not.toThrow();
    expect(p.usage().tokensOut).toBe(70);
  });

  it('SIGTERM mid-stream: exit 143, no result, the usage seen so far kept', async () => {
    const { usage, exit } = await runFake(
      fakeClaude(),
      { default: [{ say: 'one' }, { say: 'two' }, { sleep: 5000 }, { say: 'never' }] },
      { stopWhen: (u) => (u.tokensOut ?? 0) >= 240 },
    );
    expect(exit.exitCode).toBe(143);
    expect(usage).toMatchObject({ costUsd: null, tokensOut: 240, final: false, result: 'two' });
  });

  it('claude stops itself: --max-turns and --max-budget-usd end with their error subtypes', async () => {
    const turns = await runFake(fakeClaude({ maxTurns: 1 }), { default: [{ say: 'one' }, { say: 'two' }] });
    expect(turns.exit.exitCode).toBe(1);
    expect(turns.usage).toMatchObject({ errorCode: 'error_max_turns', error: 'Reached maximum number of turns (1)' });
    const budget = await runFake(fakeClaude(), { default: [{ usage: { input: 0, output: 20_000, cacheRead: 0, cacheWrite: 0 } }, { say: 'one' }, { say: 'two' }] }, { ctx: { maxCostUsd: 0.2 } });
    expect(budget.inv.args.slice(-2)).toEqual(['--max-budget-usd', '0.2']);
    expect(budget.usage).toMatchObject({ errorCode: 'error_max_budget_usd', error: 'Reached maximum budget ($0.2)' });
    expect(budget.usage.costUsd).toBeCloseTo(0.3, 6);
  });

  it('resume: the session continues, its cumulative cost and tokens are reported for this run only', async () => {
    const first = await runFake(fakeClaude(), { default: [{ say: 'first run' }] });
    const sessionId = first.usage.sessionId!;
    const baseline = { costUsd: first.usage.costUsd!, tokensIn: first.usage.tokensIn!, tokensOut: first.usage.tokensOut! };
    const second = await runFake(fakeClaude(), { default: [{ say: 'second run' }, { say: 'more' }] }, { ctx: { resumeSessionId: sessionId, resumeBaseline: baseline } });
    expect(second.inv.args.slice(-2)).toEqual(['--resume', sessionId]);
    expect(second.inv.resumes).toBe(sessionId);
    const result = JSON.parse(second.lines.at(-1)!) as { session_id: string; total_cost_usd: number };
    expect(result.session_id).toBe(sessionId);
    expect(second.usage.costUsd).toBeCloseTo(result.total_cost_usd - baseline.costUsd, 9);
    expect(second.usage.tokensOut).toBe(240);
    const gone = await runFake(fakeClaude(), { default: [{ say: 'x' }] }, { ctx: { resumeSessionId: '11111111-2222-4333-8444-555555555555' } });
    expect(gone.exit.exitCode).toBe(1);
    expect(fakeClaude().sessionMissing({ exitCode: gone.exit.exitCode, usage: gone.usage, tail: gone.tail })).toBe(true);
  });
});

describe('codex stream parser', () => {
  it('the real offline run: thread id; reconnect notices and the error item are not progress', () => {
    const p = createCodexStreamParser();
    const c = loadFixture('codex-offline');
    const progress = c.stdout.map((l) => p.onLine(l).progress);
    expect(progress).toEqual([true, true, false, false, false, false, false, false]);
    expect(p.usage()).toMatchObject({ final: false, tokensIn: null, errorCode: 'stream_error' });
    expect(p.usage().sessionId).toBe((JSON.parse(c.stdout[0]!) as { thread_id: string }).thread_id);
    // identical notices are one transcript entry each time the text changes
    const retries = p.transcript().filter((e) => e.kind === 'retry').map((e) => e.text);
    expect(new Set(retries).size).toBe(retries.length);
    expect(p.transcript().some((e) => e.kind === 'warning' && e.text.startsWith('Falling back from WebSockets'))).toBe(true);
  });

  it('success (the fake, real shapes): tokens from turn.completed, the last agent message, the transcript', async () => {
    const { usage, lines, parser, exit } = await runFake(fakeCodex(), { default: [{ think: 'Plan: edit greet.' }, { bash: 'echo from codex' }, { write: { path: 'c.txt', content: 'C\n' } }, { say: 'Updated greet.' }] });
    expect(exit.exitCode).toBe(0);
    const done = JSON.parse(lines.at(-1)!) as { type: string; usage: { input_tokens: number; cached_input_tokens: number; output_tokens: number } };
    expect(done.type).toBe('turn.completed');
    expect(usage).toMatchObject({ tokensIn: done.usage.input_tokens, tokensOut: done.usage.output_tokens, tokensEstimated: false, costUsd: null, result: 'Updated greet.', error: null, final: true });
    expect(usage.models[CODEX_DEFAULT_MODEL]).toEqual({ input: done.usage.input_tokens - done.usage.cached_input_tokens, cacheRead: done.usage.cached_input_tokens, cacheWrite: 0, output: done.usage.output_tokens });
    const text = formatTranscript(parser.transcript());
    expect(text).toContain('… Plan: edit greet.');
    expect(text).toContain('$ shell: /bin/bash -lc "echo from codex"');
    expect(text).toContain('│ from codex');
    expect(text).toMatch(/\$ edit: add .*c\.txt/);
    expect(text).toContain('» Updated greet.');
  });

  it('turn.failed is the error; an error notice only while no turn completes after it', async () => {
    const failed = await runFake(fakeCodex(), { default: [{ retry: 2 }, { fail: 'stream disconnected before completion: error sending request' }] });
    expect(failed.exit.exitCode).toBe(1);
    expect(failed.usage).toMatchObject({ error: 'stream disconnected before completion: error sending request', errorCode: 'turn_failed', final: true });
    const recovered = feed(createCodexStreamParser(), ['{"type":"error","message":"Reconnecting... 2/5 (x)"}', '{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":0,"output_tokens":5}}']);
    expect(recovered).toMatchObject({ error: null, errorCode: null, tokensIn: 10, tokensOut: 5 });
  });

  it('resume: `exec … resume <id>` after the exec options; the thread total minus what earlier runs reported', async () => {
    const first = await runFake(fakeCodex(), { default: [{ say: 'first' }] });
    const id = first.usage.sessionId!;
    const baseline = { costUsd: 0, tokensIn: first.usage.tokensIn!, tokensOut: first.usage.tokensOut! };
    const second = await runFake(fakeCodex({ model: 'gpt-5-codex' }), { default: [{ say: 'second' }] }, { ctx: { resumeSessionId: id, resumeBaseline: baseline } });
    expect(second.inv.args.slice(0, 7)).toEqual(['exec', '--json', '--sandbox', 'danger-full-access', '--skip-git-repo-check', '--model', 'gpt-5-codex']);
    expect(second.inv.args.slice(7, 9)).toEqual(['resume', id]);
    expect(second.usage.sessionId).toBe(id);
    const done = JSON.parse(second.lines.at(-1)!) as { usage: { input_tokens: number; output_tokens: number } };
    expect(second.usage.tokensIn).toBe(done.usage.input_tokens - baseline.tokensIn);
    expect(second.usage.tokensOut).toBe(done.usage.output_tokens - baseline.tokensOut);
    const gone = await runFake(fakeCodex(), { default: [{ say: 'x' }] }, { ctx: { resumeSessionId: '019ae000-0000-7000-8000-00000000dead' } });
    expect(gone.exit.exitCode).toBe(1);
    expect(gone.tail).toContain('no rollout found for thread id 019ae000-0000-7000-8000-00000000dead');
    expect(fakeCodex().sessionMissing({ exitCode: 1, usage: gone.usage, tail: gone.tail })).toBe(true);
  });
});

describe('adapters build the command line and declare what they need', () => {
  it('claude, defaults', () => {
    const inv = createClaudeAdapter({}).invocation(ctx);
    expect(inv.file).toBe('claude');
    expect(inv.shell).toBe(false);
    expect(inv.env).toEqual({});
    expect(inv.home).toBeNull();
    expect(inv.resumes).toBeNull();
    expect(inv.args).toEqual(['-p', PROMPT, '--output-format', 'stream-json', '--verbose', '--permission-mode', 'acceptEdits', '--allowedTools', 'Bash,Read,Edit,Write,Glob,Grep']);
    expect(DEFAULT_CLAUDE_ALLOWED_TOOLS.join(',')).toBe('Bash,Read,Edit,Write,Glob,Grep');
    expect(inv.passEnv).toEqual(expect.arrayContaining(['ANTHROPIC_API_KEY', 'CLAUDE_CODE_OAUTH_TOKEN']));
  });

  it('claude, every option: budget, resume, home', () => {
    const adapter = createClaudeAdapter({
      bin: '/opt/claude/bin/claude',
      maxTurns: 40,
      permissionMode: 'dontAsk',
      allowedTools: ['Bash(git commit:*)', 'Edit'],
      model: 'claude-opus-4-5',
      home: '/srv/orch/agent-home/claude',
      extraArgs: ['--add-dir', '/srv/shared'],
    });
    const inv = adapter.invocation({ ...ctx, maxCostUsd: 1.5, resumeSessionId: '8cb4c532-e261-40a5-aa61-1d23a31e8c95' });
    expect(inv.file).toBe('/opt/claude/bin/claude');
    expect(inv.args).toEqual([
      '-p',
      PROMPT,
      '--output-format',
      'stream-json',
      '--verbose',
      '--max-turns',
      '40',
      '--permission-mode',
      'dontAsk',
      '--allowedTools',
      'Bash(git commit:*),Edit',
      '--model',
      'claude-opus-4-5',
      '--max-budget-usd',
      '1.5',
      '--resume',
      '8cb4c532-e261-40a5-aa61-1d23a31e8c95',
      '--add-dir',
      '/srv/shared',
    ]);
    expect(inv.home).toEqual({ env: 'CLAUDE_CONFIG_DIR', dir: '/srv/orch/agent-home/claude' });
    expect(inv.env).toEqual({ CLAUDE_CONFIG_DIR: '/srv/orch/agent-home/claude' });
    expect(inv.passEnv).toEqual([...CLAUDE_PASS_ENV]);
    expect(adapter.loginHint()).toContain('CLAUDE_CONFIG_DIR=/srv/orch/agent-home/claude /opt/claude/bin/claude /login');
    const fresh = adapter.invocation(ctx);
    expect(fresh.args).not.toContain('--resume');
    expect(fresh.args).not.toContain('--max-budget-usd');
    expect(fresh.parser).not.toBe(inv.parser);
  });

  it('codex, defaults and every option', () => {
    const inv = createCodexAdapter({}).invocation(ctx);
    expect(inv.file).toBe('codex');
    expect(inv.args).toEqual(['exec', '--json', '--sandbox', 'danger-full-access', '--skip-git-repo-check', PROMPT]);
    expect(inv.passEnv).toEqual(expect.arrayContaining(['OPENAI_API_KEY', 'CODEX_API_KEY']));
    const all = createCodexAdapter({ bin: '/usr/local/bin/codex', model: 'gpt-5-codex', sandbox: 'workspace-write', home: '/srv/h/codex', extraArgs: ['-c', 'model_reasoning_effort=high'] });
    const inv2 = all.invocation({ ...ctx, resumeSessionId: '019ae000-0000-7000-8000-000000000001' });
    expect(inv2.args).toEqual(['exec', '--json', '--sandbox', 'workspace-write', '--skip-git-repo-check', '--model', 'gpt-5-codex', '-c', 'model_reasoning_effort=high', 'resume', '019ae000-0000-7000-8000-000000000001', PROMPT]);
    expect(inv2.env).toEqual({ CODEX_HOME: '/srv/h/codex' });
    expect(all.loginHint()).toContain('CODEX_HOME=/srv/h/codex /usr/local/bin/codex login');
  });

  it('prompt edge cases: a leading "-", a prompt too large for argv, a missing file', async () => {
    const dashed = path.join(tmp, 'dashed.md');
    await fsp.writeFile(dashed, '--- front matter ---\nDo it.\n');
    expect(createClaudeAdapter({}).invocation({ ...ctx, promptFile: dashed }).args[1]).toBe('\n--- front matter ---\nDo it.\n');
    expect(createCodexAdapter({}).invocation({ ...ctx, promptFile: dashed }).args.at(-1)).toBe('\n--- front matter ---\nDo it.\n');
    const huge = path.join(tmp, 'huge.md');
    await fsp.writeFile(huge, 'x'.repeat(MAX_INLINE_PROMPT_BYTES + 1));
    const hugeArg = createClaudeAdapter({}).invocation({ ...ctx, promptFile: huge }).args[1];
    expect(hugeArg).toBe(`Read the file ${huge} and follow the instructions in it exactly.`);
    expect(createCodexAdapter({}).invocation({ ...ctx, promptFile: huge }).args.at(-1)).toBe(hugeArg);
    const missing = path.join(tmp, 'missing.md');
    expect(createClaudeAdapter({}).invocation({ ...ctx, promptFile: missing }).args[1]).toContain(missing);
  });

  it('createAgent: each CLI gets its home under ORCH_AGENT_HOME', async () => {
    const claude = await createAgent(loadConfig({ ORCH_AGENT: 'claude', ORCH_AGENT_HOME: '/srv/agents' }));
    const codex = await createAgent(loadConfig({ ORCH_AGENT: 'codex', ORCH_WORKTREE_ROOT: '/srv/wt' }));
    expect(claude.invocation(ctx).home).toEqual({ env: 'CLAUDE_CONFIG_DIR', dir: '/srv/agents/claude' });
    expect(codex.invocation(ctx).home).toEqual({ env: 'CODEX_HOME', dir: '/srv/wt/agent-home/codex' });
    expect(claude.resumable && codex.resumable).toBe(true);
  });
});
