/**
 * The `claude` agent: Claude Code in print mode with its stream-json output.
 *
 *   claude -p <prompt> --output-format stream-json --verbose [--max-turns N]
 *          [--permission-mode M] [--allowedTools a,b] [--model X] [...extraArgs]
 *
 * stream-json prints one JSON object per line: `system` (subtype `init`), `assistant` and `user`
 * messages, and a final `result` (`subtype`, `is_error`, `result`, `total_cost_usd`, `usage`,
 * `num_turns`). Usage is accumulated from the assistant messages while they stream, so a run
 * that is stopped before its result line still reports the tokens seen so far; the result line,
 * when it comes, is authoritative and replaces the running totals.
 */
import fs from 'node:fs';
import type { AgentAdapter, AgentContext, AgentInvocation, AgentUsage, UsageParser } from './types.ts';
import { emptyUsage } from './types.ts';
import { isObject, jsonObjectLine, num, type Json } from './json.ts';

export interface ClaudeAdapterOptions {
  /** the executable; default `claude` */
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
  /** appended after the adapter's own options */
  extraArgs?: string[];
}

export const DEFAULT_CLAUDE_ALLOWED_TOOLS: readonly string[] = ['Bash', 'Read', 'Edit', 'Write', 'Glob', 'Grep'];

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

export function createClaudeAdapter(opts: ClaudeAdapterOptions = {}): AgentAdapter {
  const bin = opts.bin ?? 'claude';
  const permissionMode = opts.permissionMode ?? 'acceptEdits';
  const allowedTools = opts.allowedTools ?? DEFAULT_CLAUDE_ALLOWED_TOOLS;
  return {
    name: 'claude',
    invocation(ctx: AgentContext): AgentInvocation {
      // The prompt comes right after -p (--print is a flag; the prompt is the positional
      // argument), before any variadic option such as --allowedTools could swallow it.
      const args = ['-p', promptArgument(ctx.promptFile), '--output-format', 'stream-json', '--verbose'];
      if (opts.maxTurns !== undefined) args.push('--max-turns', String(opts.maxTurns));
      if (permissionMode) args.push('--permission-mode', permissionMode);
      if (allowedTools.length > 0) args.push('--allowedTools', allowedTools.join(','));
      if (opts.model) args.push('--model', opts.model);
      args.push(...(opts.extraArgs ?? []));
      return { file: bin, args, shell: false, env: {}, parser: createClaudeStreamParser() };
    },
  };
}


interface Tokens {
  input: number | null;
  output: number | null;
}

/**
 * tokensIn counts every input token the model processed: `input_tokens` (uncached) plus
 * `cache_creation_input_tokens` plus `cache_read_input_tokens`, so it is comparable with codex,
 * whose `input_tokens` already include the cached ones.
 */
function tokensOf(usage: unknown): Tokens {
  if (!isObject(usage)) return { input: null, output: null };
  const parts = [num(usage.input_tokens), num(usage.cache_creation_input_tokens), num(usage.cache_read_input_tokens)];
  const known = parts.filter((p): p is number => p !== null);
  return { input: known.length > 0 ? known.reduce((a, b) => a + b, 0) : null, output: num(usage.output_tokens) };
}

function maxOf(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.max(a, b);
}

export function createClaudeStreamParser(): UsageParser {
  /**
   * Claude Code prints one `assistant` line per content block, and every line of the same API
   * message repeats that message's usage: usage is kept per message id, never summed per line.
   */
  const perMessage = new Map<string, Tokens>();
  let anonymous = 0;
  let final: { tokens: Tokens; costUsd: number | null } | null = null;
  let result: string | null = null;
  let error: string | null = null;

  function onAssistant(ev: Json): void {
    const message = ev.message;
    if (!isObject(message)) return;
    const tokens = tokensOf(message.usage);
    if (tokens.input === null && tokens.output === null) return;
    const id = typeof message.id === 'string' && message.id !== '' ? message.id : `#${anonymous++}`;
    const seen = perMessage.get(id);
    perMessage.set(id, seen ? { input: maxOf(seen.input, tokens.input), output: maxOf(seen.output, tokens.output) } : tokens);
  }

  function onResult(ev: Json): void {
    const cost = num(ev.total_cost_usd) ?? num(ev.cost_usd);
    final = { tokens: tokensOf(ev.usage), costUsd: cost };
    result = typeof ev.result === 'string' ? ev.result : null;
    const subtype = typeof ev.subtype === 'string' ? ev.subtype : '';
    if (ev.is_error === true) {
      error = result ?? (subtype && subtype !== 'success' ? subtype : 'claude reported an error');
    } else if (subtype.startsWith('error')) {
      // error_max_turns, error_during_execution, error_max_budget_usd…: the run did not finish
      const details = Array.isArray(ev.errors) ? ev.errors.filter((e): e is string => typeof e === 'string') : [];
      error = details.length > 0 ? `${subtype}: ${details.join('; ')}` : subtype;
    } else {
      error = null;
    }
  }

  function onLine(line: string): void {
    const ev = jsonObjectLine(line);
    if (ev === null) return;
    switch (ev.type) {
      case 'assistant':
        onAssistant(ev);
        break;
      case 'result':
        onResult(ev);
        break;
      case 'error': {
        // not part of the documented stream, but seen from some versions on fatal errors
        const e = ev.error;
        const message = typeof ev.message === 'string' ? ev.message : isObject(e) && typeof e.message === 'string' ? e.message : typeof e === 'string' ? e : null;
        if (message && final === null) error = message;
        break;
      }
      default:
        break; // system, user, stream_event, and whatever future versions add
    }
  }

  function streamed(): Tokens {
    let input: number | null = null;
    let output: number | null = null;
    for (const t of perMessage.values()) {
      if (t.input !== null) input = (input ?? 0) + t.input;
      if (t.output !== null) output = (output ?? 0) + t.output;
    }
    return { input, output };
  }

  return {
    onLine(line: string): void {
      try {
        onLine(line);
      } catch {
        /* a parser never throws */
      }
    },
    usage(): AgentUsage {
      const u = emptyUsage();
      const running = streamed();
      // The result line's totals win; a field it lacks falls back to the streamed sum.
      u.tokensIn = final?.tokens.input ?? running.input;
      u.tokensOut = final?.tokens.output ?? running.output;
      u.costUsd = final?.costUsd ?? null;
      u.result = result;
      u.error = error;
      return u;
    },
  };
}
