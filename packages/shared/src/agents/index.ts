/** The agent adapters by name (`ORCH_AGENT`). */
import { fileURLToPath } from 'node:url';
import type { Config } from '../runtime/config.ts';
import type { AgentAdapter } from './types.ts';

const DEMO_AGENT = fileURLToPath(new URL('./demo-agent.ts', import.meta.url));

export function createDemoAdapter(delayMs: number): AgentAdapter {
  return {
    name: 'demo',
    invocation: () => ({ file: process.execPath, args: [DEMO_AGENT], shell: false, env: { ORCH_DEMO_DELAY_MS: String(delayMs) }, parser: null }),
  };
}

export function createCommandAdapter(command: string): AgentAdapter {
  return { name: 'command', invocation: () => ({ file: command, args: [], shell: true, env: {}, parser: null }) };
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
      });
    }
    case 'codex': {
      const { createCodexAdapter } = await import('./codex.ts');
      return createCodexAdapter({ bin: config.agent.codex?.bin, model: config.agent.model });
    }
  }
}
