/**
 * The claude and codex adapters: their command lines, their stream parsers over recorded
 * transcripts (tests/fixtures/transcripts), and the fake executables (tests/fixtures/bin) run as
 * real processes whose stdout feeds the parsers — success, reported error, SIGTERM mid-stream.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClaudeAdapter, createClaudeStreamParser, DEFAULT_CLAUDE_ALLOWED_TOOLS, MAX_INLINE_PROMPT_BYTES } from '@orch/shared/agents/claude';
import { createCodexAdapter, createCodexStreamParser } from '@orch/shared/agents/codex';
import { createLineSplitter } from '@orch/shared/agents/line-splitter';
import { createAgent } from '@orch/shared/agents/index';
import type { AgentContext, AgentUsage, UsageParser } from '@orch/shared/agents/types';
import type { Config } from '@orch/shared/runtime/config';
import { startGroupProcess } from '@orch/shared/host/process-group';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
const BIN = path.join(FIXTURES, 'bin');
const TRANSCRIPTS = path.join(FIXTURES, 'transcripts');

function transcript(name: string): string {
  return path.join(TRANSCRIPTS, name);
}

function transcriptLines(name: string): string[] {
  return fs.readFileSync(transcript(name), 'utf8').split('\n').filter((l, i, all) => i < all.length - 1 || l !== '');
}

function feed(parser: UsageParser, lines: string[]): AgentUsage {
  for (const line of lines) parser.onLine(line);
  return parser.usage();
}

/** every line but the final `result` line (which must be last) */
function withoutResult(lines: string[]): string[] {
  expect(JSON.parse(lines[lines.length - 1]).type).toBe('result');
  return lines.slice(0, -1);
}

let tmp: string;
let ctx: AgentContext;
const PROMPT = 'You are working on task 42 of project demo: **Greet with punctuation**\n\nChange greet().\n';

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'orch-agents-'));
  const artefactDir = path.join(tmp, 'artefacts');
  const worktree = path.join(tmp, 'wt');
  await fsp.mkdir(artefactDir, { recursive: true });
  await fsp.mkdir(worktree, { recursive: true });
  const promptFile = path.join(tmp, 'prompt.md');
  await fsp.writeFile(promptFile, PROMPT);
  ctx = { taskId: 42, stage: 'implementation', attempt: 1, worktree, promptFile, artefactDir };
});

afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

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

  it('emits nothing on end() when the stream ended with a newline', () => {
    const lines: string[] = [];
    const s = createLineSplitter((l) => lines.push(l));
    s.push('one\ntwo\n');
    s.end();
    expect(lines).toEqual(['one', 'two']);
  });
});

describe('claude stream parser', () => {
  it('success: the result line gives cost, tokens (cached input included) and the final message', () => {
    const u = feed(createClaudeStreamParser(), transcriptLines('claude-success.jsonl'));
    expect(u).toEqual({
      costUsd: 0.0873215,
      tokensIn: 23 + 5480 + 78210,
      tokensOut: 934,
      result: 'Done: `greet` now returns `Hello, <name>!` and the change is committed on the feature branch.',
      error: null,
    });
  });

  it('accumulates usage from assistant messages while streaming, counting a message once however many lines repeat it', () => {
    const p = createClaudeStreamParser();
    const lines = withoutResult(transcriptLines('claude-success.jsonl'));
    // after the first assistant line
    feed(p, lines.slice(0, 2));
    expect(p.usage()).toMatchObject({ tokensIn: 3 + 4120 + 11876, tokensOut: 97, costUsd: null });
    // the second line of the same message (msg_01QmA8…) repeats its usage: no change
    feed(p, lines.slice(2, 3));
    expect(p.usage()).toMatchObject({ tokensIn: 3 + 4120 + 11876, tokensOut: 97 });
    const u = feed(p, lines.slice(3));
    expect(u).toEqual({ costUsd: null, tokensIn: 83713, tokensOut: 97 + 72 + 410 + 95 + 60, result: null, error: null });
  });

  it('the result line overrides the streamed totals', () => {
    const p = createClaudeStreamParser();
    const lines = transcriptLines('claude-success.jsonl');
    feed(p, withoutResult(lines));
    expect(p.usage().tokensOut).toBe(734);
    feed(p, lines.slice(-1));
    expect(p.usage()).toMatchObject({ tokensOut: 934, costUsd: 0.0873215 });
  });

  it('killed (no result line): the usage seen so far is kept', () => {
    const u = feed(createClaudeStreamParser(), transcriptLines('claude-killed.jsonl'));
    expect(u).toEqual({
      costUsd: null,
      tokensIn: 3 + 3900 + 11876 + (6 + 612 + 15776) + (5 + 240 + 16388),
      tokensOut: 118 + 66 + 230,
      result: null,
      error: null,
    });
  });

  it('is_error: true sets the error to the reported message, with cost and tokens', () => {
    const u = feed(createClaudeStreamParser(), transcriptLines('claude-error.jsonl'));
    expect(u.error).toMatch(/^API Error: 529 .*overloaded_error/);
    expect(u.result).toBe(u.error);
    expect(u).toMatchObject({ costUsd: 0.0213877, tokensIn: 3 + 4010 + 11876, tokensOut: 58 });
  });

  it('an error_* result subtype is an error even without is_error', () => {
    const u = feed(createClaudeStreamParser(), [
      '{"type":"result","subtype":"error_max_turns","is_error":false,"duration_ms":61000,"num_turns":31,"session_id":"s","total_cost_usd":0.41,"usage":{"input_tokens":60,"cache_creation_input_tokens":9000,"cache_read_input_tokens":300000,"output_tokens":5200},"permission_denials":[],"errors":[]}',
    ]);
    expect(u).toEqual({ costUsd: 0.41, tokensIn: 309060, tokensOut: 5200, result: null, error: 'error_max_turns' });
    const v = feed(createClaudeStreamParser(), [
      '{"type":"result","subtype":"error_during_execution","is_error":true,"num_turns":3,"total_cost_usd":0.02,"usage":{"input_tokens":1,"output_tokens":2},"errors":["Tool permission stream closed"]}',
    ]);
    expect(v.error).toBe('error_during_execution');
  });

  it('malformed, partial, non-object and unknown lines are ignored, never thrown', () => {
    const lines = transcriptLines('claude-malformed.jsonl');
    const p = createClaudeStreamParser();
    // everything before the complete result line (the truncated result line included)
    const beforeResult = lines.slice(0, -1);
    expect(() => feed(p, beforeResult)).not.toThrow();
    expect(p.usage()).toEqual({ costUsd: null, tokensIn: 4 + 2100 + 9000 + (3 + 180 + 11100), tokensOut: 52 + 35, result: null, error: null });
    const u = feed(p, lines.slice(-1));
    expect(u).toEqual({ costUsd: 0.0118452, tokensIn: 7 + 2280 + 20100, tokensOut: 161, result: 'The loader is fine; nothing to change.', error: null });
    for (const junk of ['', '{', '}', '{}', '\u0000\u0001', '{"type":null}', '{"type":"assistant","message":{"usage":"x"}}', 'x'.repeat(100_000)]) {
      expect(() => p.onLine(junk)).not.toThrow();
    }
    expect(p.usage()).toEqual(u);
  });

  it('a parser that saw nothing reports nothing', () => {
    expect(createClaudeStreamParser().usage()).toEqual({ costUsd: null, tokensIn: null, tokensOut: null, result: null, error: null });
  });
});

describe('codex stream parser', () => {
  it('success: tokens from turn.completed, the last agent message as result, no cost', () => {
    const u = feed(createCodexStreamParser(), transcriptLines('codex-success.jsonl'));
    expect(u).toEqual({
      costUsd: null,
      tokensIn: 24763,
      tokensOut: 1187,
      result: 'Updated `greet` to return `Hello, <name>!`, adjusted `test/greeting.test.ts`, and committed the change (8e1a7b2).',
      error: null,
    });
  });

  it('turn.failed sets the error (its message, not the reconnect notices before it)', () => {
    const u = feed(createCodexStreamParser(), transcriptLines('codex-failed.jsonl'));
    expect(u).toEqual({
      costUsd: null,
      tokensIn: null,
      tokensOut: null,
      result: null,
      error: 'stream disconnected before completion: error sending request for url (https://api.openai.com/v1/responses)',
    });
  });

  it('an error event is reported only if no turn completes after it', () => {
    const reconnect = '{"type":"error","message":"Reconnecting... 1/5 (stream disconnected before completion)"}';
    const recovered = feed(createCodexStreamParser(), [reconnect, '{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":0,"output_tokens":5}}']);
    expect(recovered.error).toBeNull();
    const killed = feed(createCodexStreamParser(), ['{"type":"thread.started","thread_id":"t"}', reconnect]);
    expect(killed.error).toBe('Reconnecting... 1/5 (stream disconnected before completion)');
  });

  it('turn.completed usage is the running total: the last one wins', () => {
    const u = feed(createCodexStreamParser(), [
      '{"type":"turn.completed","usage":{"input_tokens":1000,"cached_input_tokens":800,"output_tokens":100}}',
      '{"type":"turn.completed","usage":{"input_tokens":2500,"cached_input_tokens":1800,"output_tokens":240}}',
    ]);
    expect(u).toMatchObject({ tokensIn: 2500, tokensOut: 240 });
  });

  it('reads the older {"msg":{…}} event format', () => {
    const withTotals = feed(createCodexStreamParser(), [
      '{"id":"0","msg":{"type":"task_started","model_context_window":272000}}',
      '{"id":"0","msg":{"type":"agent_message","message":"Working on it."}}',
      '{"id":"0","msg":{"type":"token_count","info":{"total_token_usage":{"input_tokens":5000,"cached_input_tokens":4000,"output_tokens":300,"reasoning_output_tokens":120,"total_tokens":5300},"last_token_usage":{"input_tokens":5000,"cached_input_tokens":4000,"output_tokens":300,"reasoning_output_tokens":120,"total_tokens":5300}}}}',
      '{"id":"0","msg":{"type":"token_count","info":{"total_token_usage":{"input_tokens":9100,"cached_input_tokens":7900,"output_tokens":610,"reasoning_output_tokens":200,"total_tokens":9710}}}}',
      '{"id":"0","msg":{"type":"task_complete","last_agent_message":"All done."}}',
    ]);
    expect(withTotals).toEqual({ costUsd: null, tokensIn: 9100, tokensOut: 610, result: 'All done.', error: null });
    const flat = feed(createCodexStreamParser(), [
      '{"id":"0","msg":{"type":"token_count","input_tokens":1200,"cached_input_tokens":0,"output_tokens":80,"total_tokens":1280}}',
      '{"id":"0","msg":{"type":"token_count","input_tokens":1500,"cached_input_tokens":1100,"output_tokens":40,"total_tokens":1540}}',
      '{"id":"0","msg":{"type":"error","message":"unexpected status 401 Unauthorized"}}',
    ]);
    expect(flat).toEqual({ costUsd: null, tokensIn: 2700, tokensOut: 120, result: null, error: 'unexpected status 401 Unauthorized' });
  });

  it('malformed lines are ignored, never thrown', () => {
    const p = createCodexStreamParser();
    const lines = transcriptLines('codex-success.jsonl');
    const noisy = ['garbage', '{"type":"turn.completed","usage":', '[]', 'null', '{"type":"item.completed","item":null}', '{"type":"turn.completed","usage":{"input_tokens":"9"}}', ...lines, '{"type":"item.completed"'];
    expect(() => feed(p, noisy)).not.toThrow();
    expect(p.usage()).toEqual(feed(createCodexStreamParser(), lines));
  });
});

describe('adapters build the command line', () => {
  it('claude, defaults', () => {
    const inv = createClaudeAdapter({}).invocation(ctx);
    expect(inv.file).toBe('claude');
    expect(inv.shell).toBe(false);
    expect(inv.env).toEqual({});
    expect(inv.args).toEqual([
      '-p',
      PROMPT,
      '--output-format',
      'stream-json',
      '--verbose',
      '--permission-mode',
      'acceptEdits',
      '--allowedTools',
      'Bash,Read,Edit,Write,Glob,Grep',
    ]);
    expect(DEFAULT_CLAUDE_ALLOWED_TOOLS.join(',')).toBe('Bash,Read,Edit,Write,Glob,Grep');
    expect(inv.parser).not.toBeNull();
  });

  it('claude, every option', () => {
    const adapter = createClaudeAdapter({
      bin: '/opt/claude/bin/claude',
      maxTurns: 40,
      permissionMode: 'bypassPermissions',
      allowedTools: ['Bash(git commit:*)', 'Edit'],
      model: 'claude-opus-4-5',
      extraArgs: ['--add-dir', '/srv/shared'],
    });
    expect(adapter.name).toBe('claude');
    const inv = adapter.invocation(ctx);
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
      'bypassPermissions',
      '--allowedTools',
      'Bash(git commit:*),Edit',
      '--model',
      'claude-opus-4-5',
      '--add-dir',
      '/srv/shared',
    ]);
  });

  it('claude: no --allowedTools for [], a fresh parser per invocation', () => {
    const adapter = createClaudeAdapter({ allowedTools: [] });
    const a = adapter.invocation(ctx);
    const b = adapter.invocation(ctx);
    expect(a.args).not.toContain('--allowedTools');
    expect(a.parser).not.toBe(b.parser);
  });

  it('codex, defaults and every option', () => {
    const inv = createCodexAdapter({}).invocation(ctx);
    expect(inv.file).toBe('codex');
    expect(inv.shell).toBe(false);
    expect(inv.env).toEqual({});
    expect(inv.args).toEqual(['exec', '--json', '--sandbox', 'danger-full-access', PROMPT]);
    const all = createCodexAdapter({ bin: '/usr/local/bin/codex', model: 'gpt-5-codex', sandbox: 'workspace-write', extraArgs: ['-c', 'model_reasoning_effort=high'] });
    expect(all.name).toBe('codex');
    const inv2 = all.invocation(ctx);
    expect(inv2.file).toBe('/usr/local/bin/codex');
    expect(inv2.args).toEqual(['exec', '--json', '--sandbox', 'workspace-write', '--model', 'gpt-5-codex', '-c', 'model_reasoning_effort=high', PROMPT]);
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

  it('createAgent resolves claude and codex', async () => {
    const claude = await createAgent({ agent: { kind: 'claude' } } as unknown as Config);
    const codex = await createAgent({ agent: { kind: 'codex' } } as unknown as Config);
    expect(claude.name).toBe('claude');
    expect(codex.name).toBe('codex');
    expect(claude.invocation(ctx).args.slice(0, 2)).toEqual(['-p', PROMPT]);
    expect(codex.invocation(ctx).args.slice(0, 2)).toEqual(['exec', '--json']);
  });
});

describe('fake executables as real processes', () => {
  function fakeEnv(name: string, extra: Record<string, string> = {}): Record<string, string> {
    return {
      FAKE_AGENT_TRANSCRIPT: transcript(name),
      ORCH_TASK_ID: String(ctx.taskId),
      ORCH_STAGE: ctx.stage,
      ORCH_ATTEMPT: String(ctx.attempt),
      ORCH_PROMPT_FILE: ctx.promptFile,
      ORCH_ARTEFACT_DIR: ctx.artefactDir,
      ...extra,
    };
  }

  /** start the adapter's command line with execa, stdout → line splitter → parser */
  function run(kind: 'claude' | 'codex', env: Record<string, string>) {
    const adapter = kind === 'claude' ? createClaudeAdapter({ bin: path.join(BIN, 'claude') }) : createCodexAdapter({ bin: path.join(BIN, 'codex') });
    const inv = adapter.invocation(ctx);
    const parser = inv.parser!;
    const child = execa(inv.file, inv.args, { cwd: ctx.worktree, env: { ...env, ...inv.env }, reject: false, buffer: false, stdin: 'ignore' });
    const splitter = createLineSplitter((l) => parser.onLine(l));
    child.stdout!.on('data', (chunk: Buffer) => splitter.push(chunk));
    child.stdout!.on('end', () => splitter.end());
    return { inv, parser, child };
  }

  async function until(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
    const start = Date.now();
    while (!cond()) {
      if (Date.now() - start > timeoutMs) throw new Error('condition not met in time');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  it('claude success: exit 0, argv as built, lines split across writes reassembled, artefact written', async () => {
    const argvFile = path.join(tmp, 'claude-argv.json');
    const { inv, parser, child } = run('claude', fakeEnv('claude-success.jsonl', { FAKE_AGENT_ARGV_FILE: argvFile, FAKE_AGENT_SPLIT_WRITES: '1', FAKE_AGENT_WRITE_ARTEFACT: '1', FAKE_AGENT_LINE_DELAY_MS: '1' }));
    const r = await child;
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(await fsp.readFile(argvFile, 'utf8'))).toEqual(inv.args);
    expect(parser.usage()).toEqual(feed(createClaudeStreamParser(), transcriptLines('claude-success.jsonl')));
    expect(parser.usage()).toMatchObject({ costUsd: 0.0873215, tokensOut: 934, error: null });
    expect(await fsp.readFile(path.join(ctx.artefactDir, 'implementation.md'), 'utf8')).toMatch(/^VERDICT: APPROVE/);
  });

  it('claude is_error: exit 1 and the error in the usage', async () => {
    const { parser, child } = run('claude', fakeEnv('claude-error.jsonl', { FAKE_AGENT_EXIT: '1' }));
    const r = await child;
    expect(r.exitCode).toBe(1);
    expect(parser.usage().error).toMatch(/^API Error: 529/);
    expect(parser.usage().costUsd).toBe(0.0213877);
  });

  it('claude SIGTERM mid-stream: exit 143, no result, the partial usage kept', async () => {
    const { parser, child } = run('claude', fakeEnv('claude-success.jsonl', { FAKE_AGENT_LINE_DELAY_MS: '150' }));
    // the first message (two lines, same usage) has arrived; the next message is 300 ms away
    await until(() => parser.usage().tokensOut !== null);
    child.kill('SIGTERM');
    const r = await child;
    expect(r.exitCode).toBe(143);
    expect(parser.usage()).toEqual({ costUsd: null, tokensIn: 3 + 4120 + 11876, tokensOut: 97, result: null, error: null });
  });

  it('claude hanging after its stream, stopped through the process group: 143, usage of every line', async () => {
    const adapter = createClaudeAdapter({ bin: path.join(BIN, 'claude') });
    const inv = adapter.invocation(ctx);
    const parser = inv.parser!;
    const proc = startGroupProcess({
      file: inv.file,
      args: inv.args,
      shell: inv.shell,
      cwd: ctx.worktree,
      env: { ...(process.env as Record<string, string>), ...fakeEnv('claude-killed.jsonl', { FAKE_AGENT_HANG: '1' }), ...inv.env },
      onStdoutLine: (l) => parser.onLine(l),
    });
    await until(() => parser.usage().tokensOut === 414);
    const exit = await proc.stop(5);
    expect(exit.exitCode).toBe(143);
    expect(parser.usage()).toEqual({ costUsd: null, tokensIn: 48806, tokensOut: 414, result: null, error: null });
  });

  it('codex success: exit 0, argv as built, usage parsed', async () => {
    const argvFile = path.join(tmp, 'codex-argv.json');
    const { inv, parser, child } = run('codex', fakeEnv('codex-success.jsonl', { FAKE_AGENT_ARGV_FILE: argvFile }));
    const r = await child;
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(await fsp.readFile(argvFile, 'utf8'))).toEqual(inv.args);
    expect(parser.usage()).toMatchObject({ costUsd: null, tokensIn: 24763, tokensOut: 1187, error: null });
    expect(parser.usage().result).toMatch(/^Updated `greet`/);
  });

  it('codex turn.failed: exit 1 and the error in the usage', async () => {
    const { parser, child } = run('codex', fakeEnv('codex-failed.jsonl', { FAKE_AGENT_EXIT: '1' }));
    const r = await child;
    expect(r.exitCode).toBe(1);
    expect(parser.usage().error).toMatch(/^stream disconnected before completion/);
  });
});
