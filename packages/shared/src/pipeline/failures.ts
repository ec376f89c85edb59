/**
 * Why a job failed, in a stable machine code and in words, and what a retry can do about it.
 * Pure functions of what was observed (an agent's exit, its stream, its output tail; a stop
 * reason); the finalizer acts on the class (transitions.ts):
 * - `config`: authentication or configuration (not logged in, a flag the CLI refuses, an unknown
 *   model, a missing binary) — no retry can fix it: the task is blocked at once, with a hint.
 * - `transient`: network, rate limit, 5xx, overload, a stall, a dead worker — back off and retry.
 * - `agent`: the agent's own failure (tests red, gate unmet, timeout, budget) — retry at once, and
 *   the next attempt's prompt says why this one failed.
 * The patterns come from the real CLIs' output (claude 2.1.332, codex 0.171.0; docs/adr/0011 and
 * the table test in tests/failures.test.ts).
 */

export const FAILURE_CLASSES = ['config', 'transient', 'agent'] as const;
export type FailureClass = (typeof FAILURE_CLASSES)[number];

export interface Failure {
  /** stable machine code: `agent_auth`, `tests_failed_exit_1`, `stalled`, … */
  code: string;
  class: FailureClass;
  /** for a person (task show, logs, dashboard, blocked_reason, Plane), with a hint when there is one */
  detail: string;
}

/** `code — detail`: how a failure reads in one line (jobs.reason stays the bare code). */
export function failureText(f: { code: string; detail?: string | null }): string {
  return f.detail ? `${f.code} — ${f.detail}` : f.code;
}

export interface AgentRunFacts {
  /** the adapter's name (claude, codex, command, demo) */
  agent: string;
  exitCode: number | null;
  signal: string | null;
  /** the stream's machine-readable error (claude `error`/`subtype`, codex `turn_failed`) */
  errorCode: string | null;
  /** the agent's error in its own words, from its stream */
  error: string | null;
  /** the agent's last message */
  lastMessage: string | null;
  /** last bytes of stdout+stderr */
  tail: string;
  /** one sentence: how to log this agent in on this host (the adapter's) */
  loginHint?: string;
}

/** The setting that names each agent's executable: what a "missing binary" hint points at. */
const BIN_SETTING: Readonly<Record<string, string>> = { claude: 'ORCH_CLAUDE_BIN', codex: 'ORCH_CODEX_BIN', command: 'ORCH_AGENT_CMD' };

const AUTH_CODES = /\b(authentication_failed|oauth_org_not_allowed|account_on_hold|verification_required|billing_error|cloud_credential_error)\b/;
const AUTH_TEXT =
  /Not logged in|Please run \/login|Invalid API key|Authentication required|invalid x-api-key|\b401\b.*Unauthorized|Unauthorized.*\b401\b|Missing bearer|Credit balance is too low|not logged in/i;
const MODEL_CODES = /\bmodel_not_found\b/;
const MODEL_TEXT = /model_not_found|(unknown|invalid|unsupported) model|model .{1,80} (does not exist|not found|is not supported)/i;
const USAGE_TEXT =
  /error: unknown option|error: unexpected argument|error: option '[^']+' argument .* is invalid|error: invalid value '[^']*' for|requires --verbose|error: missing required argument|Invalid session ID\. Must be a valid UUID|requires a valid session ID/i;
const CONFIG_TEXT =
  /cannot be used with root\/sudo privileges|Error finding codex home|Not inside a trusted directory|claude native binary not installed|Missing optional dependency @openai\/codex/i;
const TRANSIENT_CODES = /\b(rate_limit|overloaded|server_error|connection_failed|stream_error|unknown)\b/;
/** in the agent's own error words */
const TRANSIENT_SAID =
  /overloaded|rate.?limit|\b429\b|\b5\d\d\b.*(error|status)|(error|status).*\b5\d\d\b|ECONNRESET|ECONNREFUSED|ENOTFOUND|ETIMEDOUT|EAI_AGAIN|Can't reach the API|Connection failed|stream disconnected|Reconnecting\.\.\.|temporarily unavailable|network (is )?unreachable|socket hang up/i;
/** in raw output, where a number next to "error" means nothing: network failures only */
const TRANSIENT_TAIL = /ECONNRESET|ECONNREFUSED|ENOTFOUND|ETIMEDOUT|EAI_AGAIN|Can't reach the API|stream disconnected before completion|network (is )?unreachable/i;
const NOT_FOUND_TEXT = /ENOENT|not found|No such file or directory|command not found/i;

/** The last `n` non-empty lines of a text, for a person. */
export function lastLines(text: string, n: number, maxChars = 1500): string {
  const lines = text.replace(/\r/g, '').split('\n').map((l) => l.trimEnd()).filter((l) => l.trim() !== '');
  let out = lines.slice(-n).join('\n');
  if (out.length > maxChars) out = `…${out.slice(out.length - maxChars + 1)}`;
  return out;
}

function firstMatchingLine(text: string, re: RegExp): string | null {
  for (const l of text.split('\n')) if (re.test(l)) return l.trim();
  return null;
}

function sentence(s: string): string {
  const t = s.trim();
  return /[.!?…)]$/.test(t) ? t : `${t}.`;
}

/**
 * A failed agent run (exit ≠ 0, or killed) in a class, a code and words. Order matters: a
 * missing binary and a refused command line first (nothing ran), then authentication (a real
 * CLI that is not logged in prints nothing else), then a bad model, then transient trouble,
 * then the agent's own stops (its budget, its turns), then anything else the agent did.
 */
export function classifyAgentRun(f: AgentRunFacts): Failure {
  const name = f.agent;
  const said = f.error ?? '';
  const all = `${said}\n${f.errorCode ?? ''}\n${f.tail}`;
  const bin = BIN_SETTING[name];

  if (f.exitCode === 127 && (f.tail.trim() === '' || NOT_FOUND_TEXT.test(f.tail))) {
    const line = firstMatchingLine(f.tail, NOT_FOUND_TEXT) ?? 'command not found (exit 127)';
    return { code: 'agent_missing', class: 'config', detail: `${name} could not be started: ${sentence(line)}${bin ? ` Install it or point ${bin} at it.` : ''}` };
  }
  const configLine = firstMatchingLine(f.tail, CONFIG_TEXT);
  if (configLine) {
    const hint = /root\/sudo/.test(configLine)
      ? ' Run the worker as a non-root user, or use a permission mode other than bypassPermissions (ORCH_CLAUDE_PERMISSION_MODE).'
      : /codex home/i.test(configLine)
        ? ' orch creates the agent home (ORCH_AGENT_HOME); check that it is writable.'
        : /native binary|optional dependency/i.test(configLine)
          ? ` Reinstall the CLI with its platform package${bin ? `, or point ${bin} at the native binary` : ''}.`
          : '';
    return { code: 'agent_config', class: 'config', detail: `${name} refused to start: ${sentence(configLine)}${hint}` };
  }
  const usageLine = firstMatchingLine(f.tail, USAGE_TEXT);
  if (usageLine && (f.exitCode === 1 || f.exitCode === 2)) {
    return {
      code: 'agent_usage',
      class: 'config',
      detail: `${name} refused its command line: ${sentence(usageLine)} Check the ORCH_${name.toUpperCase()}_* settings and ORCH_AGENT_MODEL against \`${name} --help\` of the installed version.`,
    };
  }
  if (AUTH_CODES.test(f.errorCode ?? '') || AUTH_TEXT.test(said) || (said === '' && AUTH_TEXT.test(f.tail))) {
    const words = AUTH_TEXT.test(said) ? said : (firstMatchingLine(f.tail, AUTH_TEXT) ?? (said || 'authentication failed'));
    const model = /\[claude-code:unrecognized_model\] (\{.*\})/.exec(f.tail);
    let also = '';
    if (model) {
      try {
        also = ` Also: claude did not recognize the model \`${(JSON.parse(model[1]!) as { model?: string }).model ?? '?'}\` (ORCH_AGENT_MODEL).`;
      } catch {
        also = ' Also: claude did not recognize the model (ORCH_AGENT_MODEL).';
      }
    }
    return { code: 'agent_auth', class: 'config', detail: `${name}: ${sentence(words)}${f.loginHint ? ` Hint: ${sentence(f.loginHint)}` : ''}${also}` };
  }
  if (MODEL_CODES.test(f.errorCode ?? '') || MODEL_TEXT.test(said)) {
    return { code: 'agent_model', class: 'config', detail: `${name}: ${sentence(said || 'model not found')} Set ORCH_AGENT_MODEL to a model this account can use.` };
  }
  if (TRANSIENT_CODES.test(f.errorCode ?? '') || TRANSIENT_SAID.test(said) || (said === '' && TRANSIENT_TAIL.test(f.tail))) {
    const words = said || firstMatchingLine(f.tail, TRANSIENT_TAIL) || f.errorCode || 'a transient error';
    return { code: 'agent_transient', class: 'transient', detail: `${name}: ${sentence(words)} (network, rate limit or overload: retried after a backoff)` };
  }
  if (f.errorCode === 'error_max_budget_usd') {
    return { code: 'budget_exceeded', class: 'agent', detail: `${name} stopped itself at its budget: ${sentence(said || 'maximum budget reached')} (ORCH_AGENT_MAX_COST_USD)` };
  }
  if (f.errorCode === 'error_max_turns') {
    return { code: 'agent_max_turns', class: 'agent', detail: `${name} ran out of turns: ${sentence(said || 'maximum number of turns reached')} (ORCH_CLAUDE_MAX_TURNS)` };
  }
  if (f.exitCode === null || f.signal) {
    return { code: 'agent_killed', class: 'transient', detail: `${name} was killed${f.signal ? ` by ${f.signal}` : ''} without orch asking.${f.tail.trim() ? ` Its last output: ${lastLines(f.tail, 3, 400)}` : ''}` };
  }
  const words = said || f.lastMessage || lastLines(f.tail, 5, 800) || 'no output';
  return { code: `agent_exit_${f.exitCode}`, class: 'agent', detail: `${name} exited ${f.exitCode}: ${sentence(words)}` };
}

/** What orch stopped a job for (or found it in), as a failure. */
export type StopCause = 'stalled' | 'agent_timeout' | 'budget_exceeded' | 'dead_owner' | 'max_running' | 'worker_shutdown' | 'worker_error';

const STOPS: Readonly<Record<StopCause, { class: FailureClass; words: string }>> = {
  stalled: { class: 'transient', words: 'the agent stalled' },
  agent_timeout: { class: 'agent', words: 'the agent ran out of time (ORCH_AGENT_TIMEOUT_S)' },
  budget_exceeded: { class: 'agent', words: 'the agent ran over its budget' },
  dead_owner: { class: 'transient', words: 'the worker running the job died (its heartbeat stopped)' },
  // the reaper's backstop, not a verdict on the agent (whose own clock is ORCH_AGENT_TIMEOUT_S)
  max_running: { class: 'transient', words: 'the job ran longer than ORCH_REAPER_MAX_RUNNING_S' },
  worker_shutdown: { class: 'transient', words: 'the worker was shut down while the job ran' },
  worker_error: { class: 'transient', words: 'orch failed while running the job' },
};

export function stopFailure(cause: StopCause, detail?: string | null): Failure {
  const s = STOPS[cause];
  return { code: cause, class: s.class, detail: detail ? `${s.words}: ${detail}` : s.words };
}
