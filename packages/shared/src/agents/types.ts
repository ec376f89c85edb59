/**
 * An agent adapter turns a stage invocation into a command line and declares what the agent needs
 * from its host (environment passed through, a state directory of its own); its stream parser
 * reads what the agent prints: progress, usage per model, cost, the session id, the agent's own
 * error and a readable transcript. The process itself is started by `process-group.ts` (own
 * process group, SIGTERM → grace → SIGKILL), the same path for every agent, the deploy command
 * and the test command; the worker's run monitor (agents/monitor.ts) feeds every stdout line to
 * the parser and stops the agent on a budget or a stall.
 */
import type { TranscriptEntry } from './transcript.ts';

export interface AgentContext {
  taskId: number;
  stage: string;
  attempt: number;
  /** the task's worktree: the agent's cwd */
  worktree: string;
  promptFile: string;
  artefactDir: string;
  /** a session of this task's previous run on this host to continue (`--resume`), when resuming is on */
  resumeSessionId?: string | null;
  /** what the previous runs of that session already reported (cumulative counters are reported as deltas) */
  resumeBaseline?: UsageBaseline | null;
  /** ORCH_AGENT_MAX_COST_USD (0 = none): passed to agents that can enforce it themselves */
  maxCostUsd?: number;
  /** orch's sandbox is around the agent (false: it runs unsandboxed); the CLIs' own defaults follow */
  orchSandbox?: boolean;
  /** the project's choice of codex's own --sandbox */
  codexSandbox?: string | null;
  /** the project's choice of claude's --permission-mode */
  claudePermissionMode?: string | null;
}

/** Tokens of one model, split the way prices are. */
export interface TokenCounts {
  /** input tokens not read from a cache */
  input: number;
  cacheRead: number;
  cacheWrite: number;
  output: number;
}

export interface UsageBaseline {
  costUsd: number;
  tokensIn: number;
  tokensOut: number;
}

export interface AgentUsage {
  /** the cost the agent itself reported for this run (claude's result line); null until then */
  costUsd: number | null;
  /** input tokens of this run, cached ones included (comparable between claude and codex) */
  tokensIn: number | null;
  tokensOut: number | null;
  /** tokens by model, as streamed so far (the running cost estimate prices these) */
  models: Record<string, TokenCounts>;
  /** true when `models` is an estimate from the stream's text rather than reported usage (codex mid-turn) */
  tokensEstimated: boolean;
  /** the agent's own final (or last) message */
  result: string | null;
  /** the agent reported an error in its stream, in its words */
  error: string | null;
  /** the agent's machine-readable error, when it gives one (claude `error`/`subtype`/`api_error`) */
  errorCode: string | null;
  /** the CLI's session (claude session_id, codex thread_id): what `--resume` takes */
  sessionId: string | null;
  /** the stream ended the run (claude `result`, codex `turn.completed`/`turn.failed`) */
  final: boolean;
}

/** What one stdout line meant to the monitor. */
export interface LineEffect {
  /**
   * the agent made progress: a message, a tool call or its result, a turn or item event. Retry
   * and reconnect notices, warnings and unparseable lines are not progress.
   */
  progress: boolean;
}

export interface AgentStreamParser {
  /** Called with every complete line of stdout, as it arrives. Must never throw. */
  onLine(line: string): LineEffect;
  usage(): AgentUsage;
  /** the readable transcript so far (bounded: the newest entries) */
  transcript(): TranscriptEntry[];
}

export interface AgentHome {
  /** the variable that points the CLI at its state (CLAUDE_CONFIG_DIR, CODEX_HOME) */
  env: string;
  /** a directory of this host, created by orch and kept across jobs (logins, sessions for --resume) */
  dir: string;
}

export interface AgentInvocation {
  file: string;
  args: string[];
  /** run `file` through `sh -c` (the `command` agent) */
  shell: boolean;
  /** environment set for this agent (on top of the contract variables); includes `home.env` */
  env: Record<string, string>;
  /**
   * variables the agent needs from the worker's environment when they are set there
   * (credentials, API endpoints): a sandbox with an allowlisted environment passes these through
   */
  passEnv: string[];
  /** the agent's state directory on this host, when it has one: orch creates it, a sandbox binds it */
  home: AgentHome | null;
  parser: AgentStreamParser | null;
  /** the session this invocation continues, if any */
  resumes: string | null;
}

/** What an adapter can tell from a finished run (stdout parsed, stdout+stderr tail). */
export interface RunOutput {
  exitCode: number | null;
  usage: AgentUsage | null;
  tail: string;
}

export interface AgentAdapter {
  readonly name: string;
  /** `--resume` of a recorded session is supported */
  readonly resumable: boolean;
  invocation(ctx: AgentContext): AgentInvocation;
  /** a resumed run failed because its session is gone (start fresh instead) */
  sessionMissing(out: RunOutput): boolean;
  /** what a person does about a failed login on this host, in one sentence */
  loginHint(): string;
}

export function emptyUsage(): AgentUsage {
  return { costUsd: null, tokensIn: null, tokensOut: null, models: {}, tokensEstimated: false, result: null, error: null, errorCode: null, sessionId: null, final: false };
}

export function zeroTokens(): TokenCounts {
  return { input: 0, cacheRead: 0, cacheWrite: 0, output: 0 };
}

/** Input tokens of counts, cached included; output tokens. */
export function totalsOf(models: Record<string, TokenCounts>): { tokensIn: number; tokensOut: number } {
  let tokensIn = 0;
  let tokensOut = 0;
  for (const t of Object.values(models)) {
    tokensIn += t.input + t.cacheRead + t.cacheWrite;
    tokensOut += t.output;
  }
  return { tokensIn, tokensOut };
}
