/**
 * The `codex` agent: OpenAI Codex CLI in exec (non-interactive) mode with JSONL events.
 *
 *   codex exec --json --sandbox <mode> [--model X] [...extraArgs] <prompt>
 *
 * `codex exec` never asks for approval, so no approval flag is needed. The default sandbox is
 * `danger-full-access`: the agent must commit in the task's worktree, and a git worktree keeps
 * its index and refs in the main repository's git directory, outside the cwd that
 * `workspace-write` allows (which also keeps `.git` read-only). Pass `sandbox: 'workspace-write'`
 * where commits are not needed.
 *
 * Events (codex ≥ 0.4x): `thread.started`, `turn.started`, `item.started|updated|completed`
 * (`item.type` = `agent_message` with `text`, `reasoning`, `command_execution`, `file_change`…),
 * `turn.completed` with `usage` {input_tokens, cached_input_tokens, output_tokens} — the thread's
 * running total, `input_tokens` including the cached ones — `turn.failed` {error: {message}} and
 * `error` {message}. Older versions printed `{"id":…,"msg":{"type":"token_count"|"agent_message"|
 * "task_complete"|"error",…}}`; both are read. Codex reports no cost.
 */
import type { AgentAdapter, AgentContext, AgentInvocation, AgentUsage, UsageParser } from './types.ts';
import { emptyUsage } from './types.ts';
import { promptArgument } from './claude.ts';
import { isObject, jsonObjectLine, num, type Json } from './json.ts';

export interface CodexAdapterOptions {
  /** the executable; default `codex` */
  bin?: string;
  model?: string;
  /** appended after the adapter's own options, before the prompt */
  extraArgs?: string[];
  /** `--sandbox`: read-only | workspace-write | danger-full-access (default) */
  sandbox?: string;
}

export function createCodexAdapter(opts: CodexAdapterOptions = {}): AgentAdapter {
  const bin = opts.bin ?? 'codex';
  const sandbox = opts.sandbox ?? 'danger-full-access';
  return {
    name: 'codex',
    invocation(ctx: AgentContext): AgentInvocation {
      const args = ['exec', '--json'];
      if (sandbox) args.push('--sandbox', sandbox);
      if (opts.model) args.push('--model', opts.model);
      args.push(...(opts.extraArgs ?? []));
      args.push(promptArgument(ctx.promptFile));
      return { file: bin, args, shell: false, env: {}, parser: createCodexStreamParser() };
    },
  };
}


function str(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

function errorMessage(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (isObject(v)) return str(v.message);
  return null;
}

export function createCodexStreamParser(): UsageParser {
  let tokensIn: number | null = null;
  let tokensOut: number | null = null;
  let result: string | null = null;
  /** a turn that failed: final */
  let failed: string | null = null;
  /**
   * an `error` event: codex also prints these for transient trouble (reconnect attempts); it is
   * reported only if no turn completes after it
   */
  let pendingError: string | null = null;

  function setTotals(usage: Json): void {
    const i = num(usage.input_tokens);
    const o = num(usage.output_tokens);
    if (i !== null) tokensIn = i;
    if (o !== null) tokensOut = o;
  }

  function onThreadEvent(ev: Json): void {
    switch (ev.type) {
      case 'turn.completed':
        // the thread's total so far (one turn per `codex exec`): replace, never add
        if (isObject(ev.usage)) setTotals(ev.usage);
        pendingError = null;
        break;
      case 'turn.failed':
        failed = errorMessage(ev.error) ?? pendingError ?? 'turn failed';
        break;
      case 'error':
        pendingError = errorMessage(ev.message) ?? errorMessage(ev.error) ?? 'error';
        break;
      case 'item.completed': {
        const item = ev.item;
        if (isObject(item) && item.type === 'agent_message') {
          const text = str(item.text);
          if (text !== null) result = text;
        }
        break;
      }
      default:
        break; // thread.started, turn.started, item.started, item.updated, future types
    }
  }

  /** codex < 0.4x: `{"id":"0","msg":{"type":…}}` */
  function onLegacyEvent(msg: Json): void {
    switch (msg.type) {
      case 'token_count': {
        const info = msg.info;
        if (isObject(info) && isObject(info.total_token_usage)) {
          setTotals(info.total_token_usage);
        } else {
          // the oldest versions: this response's usage, flat on the event
          const i = num(msg.input_tokens);
          const o = num(msg.output_tokens);
          if (i !== null) tokensIn = (tokensIn ?? 0) + i;
          if (o !== null) tokensOut = (tokensOut ?? 0) + o;
        }
        break;
      }
      case 'agent_message': {
        const text = str(msg.message);
        if (text !== null) result = text;
        break;
      }
      case 'task_complete': {
        const text = str(msg.last_agent_message);
        if (text !== null) result = text;
        pendingError = null;
        break;
      }
      case 'error':
        pendingError = str(msg.message) ?? 'error';
        break;
      default:
        break;
    }
  }

  function onLine(line: string): void {
    const ev = jsonObjectLine(line);
    if (ev === null) return;
    if (typeof ev.type === 'string' && ev.type !== 'event_msg') onThreadEvent(ev);
    else if (isObject(ev.msg)) onLegacyEvent(ev.msg);
    else if (isObject(ev.payload)) onLegacyEvent(ev.payload);
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
      u.tokensIn = tokensIn;
      u.tokensOut = tokensOut;
      u.result = result;
      u.error = failed ?? pendingError;
      return u;
    },
  };
}
