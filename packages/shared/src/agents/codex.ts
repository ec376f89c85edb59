/**
 * The `codex` agent: OpenAI Codex CLI in exec (non-interactive) mode with JSONL events.
 *
 *   codex exec --json --sandbox <mode> --skip-git-repo-check [--model X] [...extraArgs]
 *              [resume <thread_id>] <prompt>
 *
 * `codex exec` never asks for approval, so no approval flag is needed. The sandbox is the
 * project's `codex_sandbox`, else `danger-full-access` inside orch's sandbox (the boundary is
 * orch's bubblewrap; codex's own would need the user namespaces orch's forbids) and
 * `workspace-write` without it (docs/adr/0012; it keeps `.git` read-only, so the agent cannot
 * commit — choose `danger-full-access` per project where that is acceptable). `exec resume` has
 * no --sandbox of its own: the exec options go before `resume`.
 *
 * Facts of codex-cli 0.171.0 this relies on (measured; docs/adr/0011):
 * - stdin must be /dev/null (with an open pipe it waits for EOF forever).
 * - events: `thread.started {thread_id}` (first line; the id `exec resume` takes), `turn.started`,
 *   `item.started|updated|completed {item}` (`agent_message`, `reasoning`, `command_execution`
 *   {command, aggregated_output, exit_code, status}, `file_change` {changes}, `mcp_tool_call`,
 *   `web_search`, `todo_list`, and `error` items — warnings, not progress), `turn.completed
 *   {usage}` — the thread's cumulative total, `input_tokens` including `cached_input_tokens` —,
 *   `turn.failed {error: {message}}` and top-level `error {message}`: retry notices
 *   ("Reconnecting... 2/5 …", then byte-identical "waiting for network" lines about every 63 s,
 *   forever when offline). None of the latter is terminal; only orch's stall watchdog ends that.
 * - no usage is streamed before `turn.completed`, and no cost ever: until then the tokens are
 *   estimated from the stream's text (about 4 characters a token; each model call re-reads the
 *   context so far), and marked as an estimate.
 * - exit 2 = usage error (stderr), 1 = failure (turn failed; resume id unknown: stderr
 *   `no rollout found for thread id …`; CODEX_HOME missing), 0 = success.
 * - CODEX_HOME holds logins and sessions; it must exist, and lie outside TMPDIR for codex's own
 *   sandbox to work.
 */
import type { AgentAdapter, AgentContext, AgentInvocation, AgentStreamParser, AgentUsage, LineEffect, RunOutput, TokenCounts, UsageBaseline } from './types.ts';
import { emptyUsage, totalsOf } from './types.ts';
import { promptArgument } from './claude.ts';
import { isObject, jsonObjectLine, num, type Json } from './json.ts';
import { createTranscript, describeToolCall } from './transcript.ts';

export interface CodexAdapterOptions {
  /** the executable; default `codex` */
  bin?: string;
  model?: string;
  /** appended after the adapter's own options, before `resume` and the prompt */
  extraArgs?: string[];
  /** `--sandbox`: read-only | workspace-write | danger-full-access (default) */
  sandbox?: string;
  /** the agent home (CODEX_HOME): logins and sessions of this host */
  home?: string;
}

/** Credentials and endpoints codex reads from its environment. */
const CODEX_PASS_ENV: readonly string[] = ['OPENAI_API_KEY', 'CODEX_API_KEY', 'OPENAI_BASE_URL', 'OPENAI_ORG_ID', 'OPENAI_PROJECT_ID', 'HTTPS_PROXY', 'HTTP_PROXY', 'NO_PROXY'];

/** The model key codex's tokens are priced under when no model is configured (codex does not name it in the stream). */
export const CODEX_DEFAULT_MODEL = 'codex-default-model';

const SESSION_GONE = /no rollout found for thread id/i;

export function createCodexAdapter(opts: CodexAdapterOptions = {}): AgentAdapter {
  const bin = opts.bin ?? 'codex';
  return {
    name: 'codex',
    resumable: true,
    invocation(ctx: AgentContext): AgentInvocation {
      const args = ['exec', '--json'];
      // The project's choice, else: inside orch's sandbox codex's own is redundant (and cannot
      // work: orch's forbids user namespaces), outside it workspace-write is the safe default.
      const sandbox = ctx.codexSandbox ?? opts.sandbox ?? (ctx.orchSandbox === false ? 'workspace-write' : 'danger-full-access');
      args.push('--sandbox', sandbox);
      // orch chooses the cwd (a worktree, or a clone of the task's own)
      args.push('--skip-git-repo-check');
      if (opts.model) args.push('--model', opts.model);
      args.push(...(opts.extraArgs ?? []));
      const resumes = ctx.resumeSessionId ?? null;
      if (resumes) args.push('resume', resumes);
      const prompt = promptArgument(ctx.promptFile);
      args.push(prompt);
      const home = opts.home ? { env: 'CODEX_HOME', dir: opts.home } : null;
      return {
        file: bin,
        args,
        shell: false,
        env: home ? { [home.env]: home.dir } : {},
        passEnv: [...CODEX_PASS_ENV],
        home,
        parser: createCodexStreamParser({ model: opts.model, promptChars: prompt.length, baseline: resumes ? ctx.resumeBaseline : null }),
        resumes,
      };
    },
    sessionMissing(out: RunOutput): boolean {
      return out.exitCode !== 0 && SESSION_GONE.test(out.tail);
    },
    loginHint(): string {
      const dir = opts.home ? `CODEX_HOME=${opts.home} ` : '';
      return `log in as orch runs codex, on this host: \`${dir}${bin} login\` (or \`printenv OPENAI_API_KEY | ${dir}${bin} login --with-api-key\`); ORCH_CODEX_BIN names the binary`;
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

/** About four characters a token: the stream's text gives a running estimate until codex reports usage. */
const CHARS_PER_TOKEN = 4;
const tokensOfText = (chars: number) => Math.ceil(chars / CHARS_PER_TOKEN);

export function createCodexStreamParser(opts: { model?: string; promptChars?: number; baseline?: UsageBaseline | null; now?: () => number } = {}): AgentStreamParser {
  const model = opts.model ?? CODEX_DEFAULT_MODEL;
  const baseline = opts.baseline ?? null;
  const transcript = createTranscript(opts.now);
  let reported: TokenCounts | null = null;
  let result: string | null = null;
  let threadId: string | null = null;
  /** a turn that failed: final */
  let failed: string | null = null;
  let final = false;
  /**
   * the last top-level `error`: codex prints these for transient trouble (reconnect attempts);
   * it is the run's error only if no turn completes after it
   */
  let pendingError: string | null = null;
  let lastRetry: string | null = null;
  // the running estimate: every model call re-reads the context so far
  let contextTokens = tokensOfText(opts.promptChars ?? 0);
  const estimate: TokenCounts = { input: 0, cacheRead: 0, cacheWrite: 0, output: 0 };
  const seenCalls = new Set<string>();

  /** an item the model produced: one more call over the context; its text is output, then context */
  function modelCall(id: string, outputChars: number): void {
    if (seenCalls.has(id)) return;
    seenCalls.add(id);
    estimate.input += contextTokens;
    const out = tokensOfText(outputChars);
    estimate.output += out;
    contextTokens += out;
  }

  function onItem(phase: string, item: Json): boolean {
    const id = str(item.id) ?? `#${seenCalls.size}`;
    switch (item.type) {
      case 'error':
        // a warning (model metadata, transport fallback, model rerouted): not progress
        if (phase === 'item.completed') transcript.add('warning', str(item.message) ?? 'warning');
        return false;
      case 'agent_message': {
        const text = str(item.text);
        if (phase === 'item.completed' && text !== null) {
          result = text;
          transcript.add('message', text);
          modelCall(id, text.length);
        }
        return true;
      }
      case 'reasoning': {
        const text = str(item.text);
        if (phase === 'item.completed' && text) {
          transcript.add('thinking', text.length > 300 ? `${text.slice(0, 299)}…` : text);
          estimate.output += tokensOfText(text.length);
        }
        return true;
      }
      case 'command_execution': {
        const command = str(item.command) ?? '';
        if (phase === 'item.started') {
          transcript.add('tool', `shell: ${command}`);
          modelCall(id, command.length);
        } else if (phase === 'item.completed') {
          if (!seenCalls.has(id)) {
            transcript.add('tool', `shell: ${command}`);
            modelCall(id, command.length);
          }
          const output = str(item.aggregated_output) ?? '';
          const code = num(item.exit_code);
          const bad = item.status === 'failed' || item.status === 'declined' || (code !== null && code !== 0);
          transcript.add('output', `${output}${code !== null && code !== 0 ? `\n(exit ${code})` : item.status === 'declined' ? '\n(declined)' : ''}`, { failed: bad });
          contextTokens += tokensOfText(output.length);
        }
        return true;
      }
      case 'file_change': {
        if (phase === 'item.completed' || phase === 'item.started') {
          const changes = Array.isArray(item.changes) ? item.changes.filter(isObject) : [];
          const what = changes.map((c) => `${str(c.kind) ?? 'update'} ${str(c.path) ?? '?'}`).join(', ');
          if (!seenCalls.has(id)) transcript.add('tool', `edit: ${what || '(files)'}`);
          // the stream names the files, not the patch: count a modest patch per file
          modelCall(id, Math.max(1, changes.length) * 2000);
          if (phase === 'item.completed' && item.status === 'failed') transcript.add('output', 'patch failed', { failed: true });
        }
        return true;
      }
      case 'mcp_tool_call': {
        const name = `${str(item.server) ?? 'mcp'}.${str(item.tool) ?? 'tool'}`;
        if (!seenCalls.has(id)) {
          transcript.add('tool', describeToolCall(name, item.arguments));
          modelCall(id, JSON.stringify(item.arguments ?? {}).length);
        }
        if (phase === 'item.completed') {
          const err = errorMessage(item.error);
          const res = isObject(item.result) ? JSON.stringify(item.result.content ?? item.result) : '';
          transcript.add('output', err ?? res, { failed: err !== null || item.status === 'failed' });
          contextTokens += tokensOfText(res.length);
        }
        return true;
      }
      case 'web_search':
        if (!seenCalls.has(id)) transcript.add('tool', `web search: ${str(item.query) ?? ''}`);
        modelCall(id, (str(item.query) ?? '').length);
        return true;
      case 'todo_list': {
        if (phase === 'item.completed' || phase === 'item.started') {
          const items = Array.isArray(item.items) ? item.items.filter(isObject) : [];
          transcript.add('thinking', `plan: ${items.map((t) => `[${t.completed === true ? 'x' : ' '}] ${str(t.text) ?? ''}`).join('; ')}`);
        }
        return true;
      }
      default:
        return true; // an item of a kind this version does not know: still the agent at work
    }
  }

  function handle(line: string): boolean {
    const ev = jsonObjectLine(line);
    if (ev === null || typeof ev.type !== 'string') return false;
    switch (ev.type) {
      case 'thread.started':
        threadId = str(ev.thread_id) ?? threadId;
        transcript.add('start', `thread ${threadId ?? '?'}${opts.model ? ` · model ${opts.model}` : ''}`);
        return true;
      case 'turn.started':
        return true;
      case 'turn.completed': {
        final = true;
        pendingError = null;
        const u = ev.usage;
        if (isObject(u)) {
          // the thread's total so far: replace, never add; a resumed thread's earlier runs are subtracted
          const input = num(u.input_tokens) ?? 0;
          const cached = Math.min(input, num(u.cached_input_tokens) ?? 0);
          reported = { input: input - cached, cacheRead: cached, cacheWrite: num(u.cache_write_input_tokens) ?? 0, output: num(u.output_tokens) ?? 0 };
        }
        transcript.add('result', result ?? 'turn completed');
        return true;
      }
      case 'turn.failed':
        final = true;
        failed = errorMessage(ev.error) ?? pendingError ?? 'turn failed';
        transcript.add('error', failed);
        return true;
      case 'error': {
        const message = errorMessage(ev.message) ?? errorMessage(ev.error) ?? 'error';
        pendingError = message;
        // retry notices repeat byte for byte: one transcript entry per distinct text
        if (message !== lastRetry) transcript.add('retry', message);
        lastRetry = message;
        return false;
      }
      default:
        if (ev.type.startsWith('item.') && isObject(ev.item)) return onItem(ev.type, ev.item);
        return false;
    }
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
      if (reported) {
        u.models = { [model]: reported };
        const t = totalsOf(u.models);
        u.tokensIn = Math.max(0, t.tokensIn - (baseline?.tokensIn ?? 0));
        u.tokensOut = Math.max(0, t.tokensOut - (baseline?.tokensOut ?? 0));
        if (baseline) {
          // this run's share of the thread's input, split like the total
          const scale = t.tokensIn > 0 ? u.tokensIn / t.tokensIn : 0;
          const part = (n: number) => Math.round(n * scale);
          u.models = { [model]: { input: part(reported.input), cacheRead: part(reported.cacheRead), cacheWrite: part(reported.cacheWrite), output: u.tokensOut } };
        }
      } else if (estimate.input + estimate.output > 0) {
        u.models = { [model]: { ...estimate } };
        u.tokensEstimated = true;
        u.tokensIn = estimate.input;
        u.tokensOut = estimate.output;
      }
      u.result = result;
      u.error = failed ?? pendingError;
      u.errorCode = failed ? 'turn_failed' : pendingError ? 'stream_error' : null;
      u.sessionId = threadId;
      u.final = final;
      return u;
    },
    transcript: () => transcript.entries(),
  };
}
