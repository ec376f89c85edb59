/**
 * The `claude` agent: Claude Code in print mode with its stream-json output.
 *
 *   claude -p <prompt> --output-format stream-json --verbose [--max-turns N]
 *          [--permission-mode M] [--allowedTools a,b] [--model X] [--max-budget-usd U]
 *          [--resume <session>] [...extraArgs]
 *
 * Facts of Claude Code 2.1.332 this relies on (measured; docs/adr/0011):
 * - stream-json needs --verbose; stdin must be /dev/null (orch's processes get no stdin).
 * - stdout is one JSON object per line; key order is not fixed (the result line does not start
 *   with "type"), so every line is parsed, never prefix-matched.
 * - line types: `system` (`init` with session_id and model; `api_retry` {attempt, max_retries,
 *   error, error_status}), `assistant` (one line per content block: text, tool_use, thinking;
 *   lines of one API message share `message.id` and repeat its usage; an API or auth failure is
 *   a synthetic message with `error`, e.g. "authentication_failed"), `user` (tool_result blocks)
 *   and `result`.
 * - success ⇔ `is_error: false` and exit 0. `subtype: "success"` with `is_error: true` is an API
 *   or auth error whose text is `result` ("Not logged in · Please run /login"); the error
 *   subtypes (error_during_execution, error_max_turns, error_max_budget_usd, …) carry `errors[]`
 *   and no `result`.
 * - `total_cost_usd` and `modelUsage` are cumulative for the session, also across --resume:
 *   the run's figures are those minus what earlier runs of the session reported.
 * - pre-session failures (bad flag, root bypass) print nothing on stdout, only stderr; a resume
 *   whose session is gone prints a result with `errors: ["No conversation found with session
 *   ID: <id>"]`.
 * - CLAUDE_CONFIG_DIR holds logins and sessions (`projects/<cwd>/<session>.jsonl`).
 */
import fs from 'node:fs';
import type { AgentAdapter, AgentContext, AgentInvocation, AgentStreamParser, AgentUsage, LineEffect, RunOutput, TokenCounts, UsageBaseline } from './types.ts';
import { emptyUsage, totalsOf, zeroTokens } from './types.ts';
import { isObject, jsonObjectLine, num, type Json } from './json.ts';
import { createTranscript, describeToolCall } from './transcript.ts';

export interface ClaudeAdapterOptions {
  /** the executable; default `claude` (spawn the native binary, `…/@anthropic-ai/claude-code/bin/claude.exe`) */
  bin?: string;
  maxTurns?: number;
  /** `--permission-mode`; default `acceptEdits` (edits are applied without asking) */
  permissionMode?: string;
  /**
   * `--allowedTools`, comma-joined; default {@link DEFAULT_CLAUDE_ALLOWED_TOOLS}. Headless runs
   * cannot answer a permission prompt, so a tool that needs one and is not listed is denied — the
   * default lets the agent run shell commands (tests, `git commit`). `[]` passes no flag.
   */
  allowedTools?: string[];
  model?: string;
  /** the agent home (CLAUDE_CONFIG_DIR): logins and sessions of this host */
  home?: string;
  /** appended after the adapter's own options */
  extraArgs?: string[];
}

export const DEFAULT_CLAUDE_ALLOWED_TOOLS: readonly string[] = ['Bash', 'Read', 'Edit', 'Write', 'Glob', 'Grep'];

/** Credentials and endpoints claude reads from its environment. */
export const CLAUDE_PASS_ENV: readonly string[] = [
  'ANTHROPIC_API_KEY',
  'ANTHROPIC_AUTH_TOKEN',
  'ANTHROPIC_BASE_URL',
  'ANTHROPIC_CUSTOM_HEADERS',
  'CLAUDE_CODE_OAUTH_TOKEN',
  'CLAUDE_CODE_USE_BEDROCK',
  'CLAUDE_CODE_USE_VERTEX',
  'CLAUDE_CODE_MAX_RETRIES',
  'ANTHROPIC_VERTEX_PROJECT_ID',
  'CLOUD_ML_REGION',
  'GOOGLE_APPLICATION_CREDENTIALS',
  'AWS_REGION',
  'AWS_PROFILE',
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'HTTPS_PROXY',
  'HTTP_PROXY',
  'NO_PROXY',
];

/**
 * Linux limits one argv string to 128 KiB (MAX_ARG_STRLEN). A prompt larger than this is not
 * passed inline; the agent is told to read the prompt file instead.
 */
export const MAX_INLINE_PROMPT_BYTES = 100_000;

/**
 * The prompt as one command-line argument: the rendered prompt file's text, or — when it is too
 * large for argv — an instruction to read the file. A leading `-` would be taken for an option,
 * so such a prompt gets a leading newline.
 */
export function promptArgument(promptFile: string): string {
  let text: string;
  try {
    text = fs.readFileSync(promptFile, 'utf8');
  } catch {
    text = '';
  }
  if (text.trim() === '' || Buffer.byteLength(text) > MAX_INLINE_PROMPT_BYTES) {
    text = `Read the file ${promptFile} and follow the instructions in it exactly.`;
  }
  return text.startsWith('-') ? `\n${text}` : text;
}

const SESSION_GONE = /No conversation found with session ID/i;

export function createClaudeAdapter(opts: ClaudeAdapterOptions = {}): AgentAdapter {
  const bin = opts.bin ?? 'claude';
  const permissionMode = opts.permissionMode ?? 'acceptEdits';
  const allowedTools = opts.allowedTools ?? DEFAULT_CLAUDE_ALLOWED_TOOLS;
  return {
    name: 'claude',
    resumable: true,
    invocation(ctx: AgentContext): AgentInvocation {
      // The prompt comes right after -p (--print is a flag; the prompt is the positional
      // argument), before any variadic option such as --allowedTools could swallow it.
      const args = ['-p', promptArgument(ctx.promptFile), '--output-format', 'stream-json', '--verbose'];
      if (opts.maxTurns !== undefined) args.push('--max-turns', String(opts.maxTurns));
      const mode = ctx.claudePermissionMode ?? permissionMode;
      if (mode) args.push('--permission-mode', mode);
      if (allowedTools.length > 0) args.push('--allowedTools', allowedTools.join(','));
      if (opts.model) args.push('--model', opts.model);
      // claude's own budget (this invocation's spend): it stops itself with error_max_budget_usd
      if (ctx.maxCostUsd && ctx.maxCostUsd > 0) args.push('--max-budget-usd', String(ctx.maxCostUsd));
      const resumes = ctx.resumeSessionId ?? null;
      if (resumes) args.push('--resume', resumes);
      args.push(...(opts.extraArgs ?? []));
      const home = opts.home ? { env: 'CLAUDE_CONFIG_DIR', dir: opts.home } : null;
      return {
        file: bin,
        args,
        shell: false,
        env: home ? { [home.env]: home.dir } : {},
        passEnv: [...CLAUDE_PASS_ENV],
        home,
        parser: createClaudeStreamParser({ baseline: resumes ? ctx.resumeBaseline : null }),
        resumes,
      };
    },
    sessionMissing(out: RunOutput): boolean {
      if (out.exitCode === 0) return false;
      return SESSION_GONE.test(out.usage?.error ?? '') || SESSION_GONE.test(out.tail);
    },
    loginHint(): string {
      const dir = opts.home ? `CLAUDE_CONFIG_DIR=${opts.home} ` : '';
      return `log in as orch runs claude, on this host: \`${dir}${bin} /login\` (or \`setup-token\`), or give the worker ANTHROPIC_API_KEY; ORCH_CLAUDE_BIN names the binary`;
    },
  };
}

/**
 * tokens of a usage object: `input_tokens` are the uncached ones; cache reads and writes are
 * counted apart (they are priced apart) and summed into tokensIn, so that it is comparable with
 * codex, whose `input_tokens` include the cached ones.
 */
function countsOf(usage: unknown): TokenCounts | null {
  if (!isObject(usage)) return null;
  const input = num(usage.input_tokens);
  const output = num(usage.output_tokens);
  const cacheWrite = num(usage.cache_creation_input_tokens);
  const cacheRead = num(usage.cache_read_input_tokens);
  if (input === null && output === null && cacheWrite === null && cacheRead === null) return null;
  return { input: input ?? 0, output: output ?? 0, cacheWrite: cacheWrite ?? 0, cacheRead: cacheRead ?? 0 };
}

/** `modelUsage` of a result: `{ model: { inputTokens, outputTokens, cacheReadInputTokens, cacheCreationInputTokens, costUSD } }`. */
function modelUsageOf(v: unknown): Record<string, TokenCounts> | null {
  if (!isObject(v)) return null;
  const out: Record<string, TokenCounts> = {};
  for (const [model, u] of Object.entries(v)) {
    if (!isObject(u)) continue;
    out[model] = {
      input: num(u.inputTokens) ?? 0,
      output: num(u.outputTokens) ?? 0,
      cacheRead: num(u.cacheReadInputTokens) ?? 0,
      cacheWrite: num(u.cacheCreationInputTokens) ?? 0,
    };
  }
  return Object.keys(out).length > 0 ? out : null;
}

function maxCounts(a: TokenCounts, b: TokenCounts): TokenCounts {
  return { input: Math.max(a.input, b.input), output: Math.max(a.output, b.output), cacheRead: Math.max(a.cacheRead, b.cacheRead), cacheWrite: Math.max(a.cacheWrite, b.cacheWrite) };
}

function str(v: unknown): string | null {
  return typeof v === 'string' && v !== '' ? v : null;
}

/** A tool_result's content: a string, or text blocks. */
function resultText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((b) => (isObject(b) && typeof b.text === 'string' ? b.text : '')).filter(Boolean).join('\n');
  return '';
}

export function createClaudeStreamParser(opts: { baseline?: UsageBaseline | null; now?: () => number } = {}): AgentStreamParser {
  const baseline = opts.baseline ?? null;
  const transcript = createTranscript(opts.now);
  /**
   * Claude Code prints one `assistant` line per content block, and every line of the same API
   * message repeats that message's usage (growing until final): usage is kept per message id,
   * the largest seen, never summed per line.
   */
  const perMessage = new Map<string, { model: string; counts: TokenCounts }>();
  let anonymous = 0;
  let model: string | null = null;
  let reported: { costUsd: number | null; tokensIn: number | null; tokensOut: number | null } | null = null;
  let lastText: string | null = null;
  let result: string | null = null;
  let error: string | null = null;
  let errorCode: string | null = null;
  let sessionId: string | null = null;
  let final = false;

  function onSystem(ev: Json): boolean {
    if (ev.subtype === 'init') {
      if (str(ev.model)) model = ev.model as string;
      transcript.add('start', `session ${sessionId ?? '?'} · model ${model ?? '?'} · claude ${str(ev.claude_code_version) ?? '?'} · ${str(ev.permissionMode) ?? ''}`);
      return true;
    }
    if (ev.subtype === 'api_retry') {
      const code = [str(ev.error), num(ev.error_status) !== null ? String(ev.error_status) : null].filter(Boolean).join(' ');
      transcript.add('retry', `API retry ${num(ev.attempt) ?? '?'}/${num(ev.max_retries) ?? '?'}${code ? ` (${code})` : ''}, next in ${Math.round((num(ev.retry_delay_ms) ?? 0) / 100) / 10} s`);
      if (str(ev.error)) errorCode = ev.error as string;
      return false;
    }
    return false;
  }

  function onAssistant(ev: Json): void {
    const message = ev.message;
    if (!isObject(message)) return;
    const msgModel = str(message.model);
    const synthetic = msgModel === '<synthetic>';
    const counts = countsOf(message.usage);
    if (counts && !synthetic) {
      const id = str(message.id) ?? `#${anonymous++}`;
      const seen = perMessage.get(id);
      perMessage.set(id, { model: msgModel ?? model ?? 'unknown', counts: seen ? maxCounts(seen.counts, counts) : counts });
    }
    const blocks = Array.isArray(message.content) ? message.content : [];
    const texts: string[] = [];
    for (const b of blocks) {
      if (!isObject(b)) continue;
      if (b.type === 'text' && typeof b.text === 'string') {
        texts.push(b.text);
        transcript.add(ev.error ? 'error' : 'message', b.text);
      } else if (b.type === 'tool_use') {
        transcript.add('tool', describeToolCall(str(b.name) ?? 'tool', b.input));
      } else if (b.type === 'thinking' && typeof b.thinking === 'string') {
        transcript.add('thinking', b.thinking.length > 300 ? `${b.thinking.slice(0, 299)}…` : b.thinking);
      }
    }
    if (texts.length > 0) lastText = texts.join('\n');
    // an API or auth failure: a synthetic message with the error's kind and its words
    if (str(ev.error)) {
      errorCode = [ev.error as string, str(ev.api_error)].filter(Boolean).join(':');
      if (texts.length > 0) error = texts.join('\n');
    }
  }

  function onUser(ev: Json): void {
    const message = ev.message;
    if (!isObject(message) || !Array.isArray(message.content)) return;
    for (const b of message.content) {
      if (isObject(b) && b.type === 'tool_result') transcript.add('output', resultText(b.content), { failed: b.is_error === true });
    }
  }

  function onResult(ev: Json): void {
    final = true;
    // `modelUsage` (every model, subagents included) is cumulative for the session, like the
    // cost; `usage` is this query's main loop only, the fallback when modelUsage is empty
    const fromModels = modelUsageOf(ev.modelUsage);
    const mainLoop = countsOf(ev.usage);
    const counts = fromModels ? totalsOf(fromModels) : mainLoop ? totalsOf({ main: mainLoop }) : null;
    // this run's part: what the session reported minus what its earlier runs did
    const minus = (v: number, b: number | undefined) => Math.max(0, v - (b ?? 0));
    const cost = num(ev.total_cost_usd);
    reported = {
      costUsd: cost === null ? null : minus(cost, baseline?.costUsd),
      tokensIn: counts ? minus(counts.tokensIn, fromModels ? baseline?.tokensIn : 0) : null,
      tokensOut: counts ? minus(counts.tokensOut, fromModels ? baseline?.tokensOut : 0) : null,
    };
    result = typeof ev.result === 'string' ? ev.result : null;
    const subtype = str(ev.subtype) ?? '';
    const errors = Array.isArray(ev.errors) ? ev.errors.filter((e): e is string => typeof e === 'string' && e !== '') : [];
    if (subtype.startsWith('error')) {
      // error_max_turns, error_during_execution, error_max_budget_usd…: the run did not finish
      error = errors.length > 0 ? errors.join('; ') : subtype;
      errorCode = subtype;
      transcript.add('error', `${subtype}: ${error}`);
    } else if (ev.is_error === true) {
      error = result ?? (errors.length > 0 ? errors.join('; ') : 'claude reported an error');
      errorCode = errorCode ?? (str(ev.api_error) ?? str(ev.terminal_reason) ?? 'is_error');
      // the synthetic message before it usually said the same
      const last = transcript.entries().at(-1);
      if (!(last?.kind === 'error' && last.text === error.trim())) transcript.add('error', error);
    } else {
      error = null;
      errorCode = null;
      transcript.add('result', result ?? '(no result text)');
    }
  }

  function handle(line: string): boolean {
    const ev = jsonObjectLine(line);
    if (ev === null) return false;
    if (str(ev.session_id)) sessionId = ev.session_id as string;
    switch (ev.type) {
      case 'system':
        return onSystem(ev);
      case 'assistant':
        onAssistant(ev);
        return true;
      case 'user':
        onUser(ev);
        return true;
      case 'result':
        onResult(ev);
        return true;
      case 'stream_event':
        return true;
      default:
        return false; // whatever future versions add
    }
  }

  function streamed(): Record<string, TokenCounts> {
    const models: Record<string, TokenCounts> = {};
    for (const { model: m, counts } of perMessage.values()) {
      const t = (models[m] ??= zeroTokens());
      t.input += counts.input;
      t.output += counts.output;
      t.cacheRead += counts.cacheRead;
      t.cacheWrite += counts.cacheWrite;
    }
    return models;
  }

  return {
    onLine(line: string): LineEffect {
      try {
        return { progress: handle(line) };
      } catch {
        return { progress: false }; // a parser never throws
      }
    },
    usage(): AgentUsage {
      const u = emptyUsage();
      u.models = streamed();
      const running = perMessage.size > 0 ? totalsOf(u.models) : null;
      // The result line's totals win; a field it lacks falls back to the streamed sum.
      u.tokensIn = reported?.tokensIn ?? running?.tokensIn ?? null;
      u.tokensOut = reported?.tokensOut ?? running?.tokensOut ?? null;
      u.costUsd = reported?.costUsd ?? null;
      u.result = result ?? lastText;
      u.error = error;
      u.errorCode = error === null && final ? null : errorCode;
      u.sessionId = sessionId;
      u.final = final;
      return u;
    },
    transcript: () => transcript.entries(),
  };
}
