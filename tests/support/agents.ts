import path from 'node:path';
import { ROOT } from './harness.ts';

export const GOOD_AGENT = path.join(ROOT, 'tests', 'fixtures', 'agents', 'good-agent.sh');

/** A command-agent line: `VAR=… sh good-agent.sh` (env set inline: in-process workers share process.env). */
export function agentCmd(vars: Record<string, string> = {}): string {
  const prefix = Object.entries(vars)
    .map(([k, v]) => `${k}='${v}'`)
    .join(' ');
  return `${prefix} sh ${GOOD_AGENT}`.trim();
}
