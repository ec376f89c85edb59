/**
 * An agent adapter turns a stage invocation into a command line, and (optionally) parses what
 * the agent prints for usage: cost, tokens, the final result. The process itself is started by
 * `process-group.ts` (own process group, SIGTERM → grace → SIGKILL), the same path for every
 * agent, the deploy command and the test command.
 */
export interface AgentContext {
  taskId: number;
  stage: string;
  attempt: number;
  /** the task's worktree: the agent's cwd */
  worktree: string;
  promptFile: string;
  artefactDir: string;
}

export interface AgentUsage {
  costUsd: number | null;
  tokensIn: number | null;
  tokensOut: number | null;
  /** the agent's own final message, when its stream has one */
  result: string | null;
  /** the agent reported an error in its stream (e.g. claude's `is_error`) */
  error: string | null;
}

export interface UsageParser {
  /** Called with every complete line of stdout, as it arrives. Must never throw. */
  onLine(line: string): void;
  usage(): AgentUsage;
}

export interface AgentInvocation {
  file: string;
  args: string[];
  /** run `file` through `sh -c` (the `command` agent) */
  shell: boolean;
  /** extra environment for this agent (on top of the contract variables) */
  env: Record<string, string>;
  parser: UsageParser | null;
}

export interface AgentAdapter {
  readonly name: string;
  invocation(ctx: AgentContext): AgentInvocation;
}

export function emptyUsage(): AgentUsage {
  return { costUsd: null, tokensIn: null, tokensOut: null, result: null, error: null };
}
