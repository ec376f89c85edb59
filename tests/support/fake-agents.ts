/**
 * The fake claude and codex (tests/fixtures/bin, the real CLIs' shapes) as agent executables for
 * an in-process worker: a shell wrapper that sets the fake's variables (in-process workers share
 * process.env, so they are set here rather than there), starts a long-lived child in the same
 * process group (it must die with the agent), and execs the fake.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { ROOT } from './harness.ts';

const FAKE_CLI = (kind: 'claude' | 'codex') => path.join(ROOT, 'tests', 'fixtures', 'bin', kind);

export interface FakeBin {
  bin: string;
  /** pid of the wrapper's long-lived child */
  childPidFile: string;
  /** the fake's last argv, as JSON */
  argvFile: string;
  /** every prompt the fake got, separated by a line "=====" */
  promptLog: string;
  prompts(): Promise<string[]>;
}

export async function fakeBin(dir: string, kind: 'claude' | 'codex', scenario: unknown, vars: Record<string, string> = {}): Promise<FakeBin> {
  const bin = path.join(dir, `${kind}-${Math.random().toString(36).slice(2)}`);
  const childPidFile = `${bin}.child`;
  const argvFile = `${bin}.argv`;
  const promptLog = `${bin}.prompts`;
  await fs.writeFile(`${bin}.json`, JSON.stringify(scenario));
  const exports = Object.entries({ FAKE_SCENARIO: `${bin}.json`, FAKE_AGENT_ARGV_FILE: argvFile, FAKE_PROMPT_LOG: promptLog, ...vars })
    .map(([k, v]) => `export ${k}='${v}'`)
    .join('\n');
  await fs.writeFile(bin, `#!/bin/sh\n${exports}\nsleep 300 &\necho $! > '${childPidFile}'\nexec '${process.execPath}' '${FAKE_CLI(kind)}' "$@"\n`, { mode: 0o755 });
  return {
    bin,
    childPidFile,
    argvFile,
    promptLog,
    prompts: async () => (await fs.readFile(promptLog, 'utf8').catch(() => '')).split('\n=====\n').map((p) => p.trim()).filter((p) => p !== ''),
  };
}
