/** The agent adapters by name (`ORCH_AGENT`). */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../runtime/config.ts';
import type { AgentAdapter, AgentInvocation } from './types.ts';

const DEMO_AGENT = fileURLToPath(new URL('./demo-agent.ts', import.meta.url));

/** What the adapters without a stream share: no parser, no home, nothing to resume. */
function plain(inv: Pick<AgentInvocation, 'file' | 'args' | 'shell' | 'env'>): AgentInvocation {
  return { ...inv, passEnv: [], home: null, parser: null, resumes: null };
}

const noSession = { resumable: false, sessionMissing: () => false, loginHint: () => '' } as const;

export function createDemoAdapter(delayMs: number): AgentAdapter {
  return {
    name: 'demo',
    ...noSession,
    invocation: () => plain({ file: process.execPath, args: [DEMO_AGENT], shell: false, env: { ORCH_DEMO_DELAY_MS: String(delayMs) } }),
  };
}

export function createCommandAdapter(command: string): AgentAdapter {
  return { name: 'command', ...noSession, invocation: () => plain({ file: command, args: [], shell: true, env: {} }) };
}

/** This host's state directory of an agent (logins, sessions): `<ORCH_AGENT_HOME>/<agent>`. */
function agentHomeDir(config: Config, agent: string): string {
  return path.join(config.agent.home, agent);
}

export async function createAgent(config: Config): Promise<AgentAdapter> {
  switch (config.agent.kind) {
    case 'demo':
      return createDemoAdapter(config.agent.demoDelayMs);
    case 'command':
      return createCommandAdapter(config.agent.command!);
    case 'claude': {
      const { createClaudeAdapter } = await import('./claude.ts');
      const c = config.agent.claude;
      return createClaudeAdapter({
        bin: c?.bin,
        maxTurns: c?.maxTurns,
        permissionMode: c?.permissionMode,
        allowedTools: c?.allowedTools,
        model: config.agent.model,
        home: config.agent.home ? agentHomeDir(config, 'claude') : undefined,
      });
    }
    case 'codex': {
      const { createCodexAdapter } = await import('./codex.ts');
      return createCodexAdapter({ bin: config.agent.codex?.bin, model: config.agent.model, home: config.agent.home ? agentHomeDir(config, 'codex') : undefined });
    }
  }
}
