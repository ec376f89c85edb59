/**
 * The real claude and codex CLIs, as installed for the tests (tests/package.json pins
 * @anthropic-ai/claude-code and @openai/codex), run the way orch runs them: own process group,
 * stdin /dev/null, an agent home of their own, no credentials, no network. `captureCase` runs
 * one named case and returns what a fixture records; `tests/fixtures/real-cli/*.json` are
 * captures of these cases (paths of the temp dirs replaced), and the contract test runs them live
 * again to see that the installed versions still behave as recorded.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createClaudeAdapter } from '@orch/shared/agents/claude';
import { createCodexAdapter } from '@orch/shared/agents/codex';
import type { AgentAdapter, AgentContext } from '@orch/shared/agents/types';
import { git } from '@orch/shared/host/git';
import { startGroupProcess } from '@orch/shared/host/process-group';
import { ROOT } from './harness.ts';

/** The native claude binary (pnpm's `.bin/claude` is an sh shim that keeps itself as the parent). */
export const REAL_CLAUDE = path.join(ROOT, 'tests', 'node_modules', '@anthropic-ai', 'claude-code', 'bin', 'claude.exe');
/** codex's npm launcher: under Node ≥ 22 it execve's the native binary (same pid). */
export const REAL_CODEX = path.join(ROOT, 'tests', 'node_modules', '@openai', 'codex', 'bin', 'codex.js');
export const HAVE_REAL_CLIS = fs.existsSync(REAL_CLAUDE) && fs.existsSync(REAL_CODEX);

export interface Capture {
  name: string;
  agent: 'claude' | 'codex';
  /** what the case is (for a person reading the fixture) */
  what: string;
  version: string;
  args: string[];
  exitCode: number | null;
  stdout: string[];
  stderr: string;
  /** the case was stopped by the capture after this many ms (a CLI that never ends offline) */
  stoppedAfterMs?: number;
}

export interface Sandbox {
  dir: string;
  repo: string;
  home: string;
  ctx: AgentContext;
  /** the environment orch gives an agent here: PATH, HOME, and nothing secret */
  env: Record<string, string>;
}

/** A repository (git, one commit), an agent home outside TMPDIR's codex check, a prompt file. */
export async function sandbox(prefix = 'orch-real-cli-'): Promise<Sandbox> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  const repo = path.join(dir, 'repo');
  const home = path.join(dir, 'agent-home');
  await fsp.mkdir(repo, { recursive: true });
  await fsp.mkdir(path.join(home, 'claude'), { recursive: true });
  await fsp.mkdir(path.join(home, 'codex'), { recursive: true });
  await git(['init', '--quiet', '--initial-branch=main', repo]);
  await fsp.writeFile(path.join(repo, 'README.md'), '# probe\n');
  await git(['add', '.'], { cwd: repo });
  await git(['commit', '--quiet', '-m', 'initial'], { cwd: repo });
  const artefactDir = path.join(dir, 'artefacts');
  await fsp.mkdir(artefactDir, { recursive: true });
  const promptFile = path.join(dir, 'prompt.md');
  await fsp.writeFile(promptFile, 'Say hi.\n');
  const ctx: AgentContext = { taskId: 1, stage: 'analysis', attempt: 1, worktree: repo, promptFile, artefactDir };
  const env: Record<string, string> = {
    PATH: `${path.dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`,
    HOME: path.join(dir, 'home'),
    ORCH_STAGE: 'analysis',
  };
  await fsp.mkdir(env.HOME!, { recursive: true });
  return { dir, repo, home, ctx, env };
}

export function claudeAdapter(s: Sandbox, extra: Partial<Parameters<typeof createClaudeAdapter>[0]> = {}): AgentAdapter {
  return createClaudeAdapter({ bin: REAL_CLAUDE, home: path.join(s.home, 'claude'), maxTurns: 3, model: 'claude-sonnet-4-5', ...extra });
}

export function codexAdapter(s: Sandbox, extra: Partial<Parameters<typeof createCodexAdapter>[0]> = {}): AgentAdapter {
  return createCodexAdapter({ bin: REAL_CODEX, home: path.join(s.home, 'codex'), ...extra });
}

/** Run a command line as orch runs an agent; stop it after `stopAfterMs` (or once `until` holds). */
export async function runReal(
  file: string,
  args: string[],
  s: Sandbox,
  env: Record<string, string>,
  opts: { stopAfterMs?: number; until?: (stdout: string[]) => boolean } = {},
): Promise<{ exitCode: number | null; stdout: string[]; stderr: string; stoppedAfterMs?: number; tail: string }> {
  const stdout: string[] = [];
  const started = Date.now();
  const proc = startGroupProcess({ file, args, cwd: s.repo, env: { ...s.env, ...env }, onStdoutLine: (l) => stdout.push(l) });
  let stoppedAfterMs: number | undefined;
  const limit = opts.stopAfterMs ?? 60_000;
  const poll = setInterval(() => {
    if (Date.now() - started >= limit || opts.until?.(stdout)) {
      clearInterval(poll);
      stoppedAfterMs = Date.now() - started;
      void proc.stop(2);
    }
  }, 50);
  const exit = await proc.exited;
  clearInterval(poll);
  const tail = proc.tail();
  const stderr = tail
    .split('\n')
    .filter((l) => !stdout.includes(l))
    .join('\n')
    .trim();
  return { exitCode: exit.exitCode, stdout: stdout.filter((l) => l !== ''), stderr, stoppedAfterMs, tail };
}

export async function versions(): Promise<{ claude: string; codex: string }> {
  const s = { repo: os.tmpdir(), env: { PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin`, HOME: os.tmpdir() } } as unknown as Sandbox;
  const c = await runReal(REAL_CLAUDE, ['--version'], s, {});
  const x = await runReal(REAL_CODEX, ['--version'], s, {});
  return { claude: c.stdout[0] ?? '?', codex: x.stdout[0] ?? '?' };
}

type CaseDef = { agent: 'claude' | 'codex'; what: string; args: (s: Sandbox) => string[]; stopAfterMs?: number; until?: (stdout: string[]) => boolean; env?: (s: Sandbox) => Record<string, string> };

/** orch's own command line for the adapter, with `more` options inserted before the end. */
function orchArgs(adapter: AgentAdapter, s: Sandbox, more: string[] = [], ctx: Partial<AgentContext> = {}): string[] {
  const inv = adapter.invocation({ ...s.ctx, ...ctx });
  return [...inv.args, ...more];
}

export const CASES: Readonly<Record<string, CaseDef>> = {
  'claude-not-logged-in': { agent: 'claude', what: "orch's command line (every flag it passes, --max-budget-usd included), no credentials", args: (s) => orchArgs(claudeAdapter(s), s, [], { maxCostUsd: 0.5 }) },
  'claude-unknown-model': { agent: 'claude', what: 'an unknown --model, no credentials', args: (s) => orchArgs(claudeAdapter(s, { model: 'not-a-model' }), s) },
  'claude-bad-flag': { agent: 'claude', what: 'an option claude does not know', args: (s) => orchArgs(claudeAdapter(s, { extraArgs: ['--no-such-flag'] }), s) },
  'claude-bad-permission-mode': { agent: 'claude', what: 'ORCH_CLAUDE_PERMISSION_MODE=bogus', args: (s) => orchArgs(claudeAdapter(s, { permissionMode: 'bogus' }), s) },
  'claude-no-verbose': { agent: 'claude', what: 'stream-json without --verbose', args: () => ['-p', 'say hi', '--output-format', 'stream-json'] },
  'claude-resume-missing': {
    agent: 'claude',
    what: '--resume of a session that does not exist',
    args: (s) => orchArgs(claudeAdapter(s), s, [], { resumeSessionId: '00000000-0000-4000-8000-000000000000' }),
  },
  'codex-offline': {
    agent: 'codex',
    what: "orch's command line, no credentials, no network: reconnect notices forever (stopped by the capture)",
    args: (s) => orchArgs(codexAdapter(s), s),
    stopAfterMs: 15_000,
    until: (out) => out.filter((l) => l.includes('waiting for network')).length >= 2,
  },
  'codex-bad-flag': { agent: 'codex', what: 'an option codex exec does not know', args: (s) => orchArgs(codexAdapter(s, { extraArgs: ['--no-such-flag'] }), s) },
  'codex-bad-sandbox': { agent: 'codex', what: 'a sandbox mode codex does not know', args: (s) => orchArgs(codexAdapter(s, { sandbox: 'bogus' }), s) },
  'codex-resume-missing': {
    agent: 'codex',
    what: 'exec resume of a thread that does not exist',
    args: (s) => orchArgs(codexAdapter(s), s, [], { resumeSessionId: '019adf00-0000-7000-8000-000000000000' }),
  },
  'codex-home-missing': {
    agent: 'codex',
    what: 'CODEX_HOME pointing at a directory that does not exist',
    args: (s) => orchArgs(codexAdapter(s), s),
    env: (s) => ({ CODEX_HOME: path.join(s.dir, 'no-such-home') }),
  },
};

/** Run one case live. */
export async function captureCase(name: string, s: Sandbox): Promise<Capture & { tail: string }> {
  const c = CASES[name]!;
  const args = c.args(s);
  const adapter = c.agent === 'claude' ? claudeAdapter(s) : codexAdapter(s);
  const inv = adapter.invocation(s.ctx);
  const file = c.agent === 'claude' ? REAL_CLAUDE : REAL_CODEX;
  const r = await runReal(file, args, s, { ...inv.env, ...(c.env?.(s) ?? {}) }, { stopAfterMs: c.stopAfterMs, until: c.until });
  return { name, agent: c.agent, what: c.what, version: '', args, exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr, stoppedAfterMs: r.stoppedAfterMs, tail: r.tail };
}

/** A capture with the sandbox's paths replaced, as the fixtures keep it (no temp paths committed). */
export function sanitize(c: Capture, s: Sandbox): Capture {
  const swap = (t: string) =>
    t
      .split(s.dir)
      .join('/srv/orch-fixture')
      // claude names its project dirs after the cwd with every "/" (and ".") a "-"
      .split(s.dir.replace(/[^A-Za-z0-9]/g, '-'))
      .join('-srv-orch-fixture')
      .split(path.dirname(process.execPath))
      .join('/usr/local/bin')
      .replace(/\/tmp\//g, '/srv/tmp/');
  return { ...c, args: c.args.map(swap), stdout: c.stdout.map(swap), stderr: swap(c.stderr) };
}

export const FIXTURE_DIR = path.join(ROOT, 'tests', 'fixtures', 'real-cli');

export function loadFixture(name: string): Capture {
  return JSON.parse(fs.readFileSync(path.join(FIXTURE_DIR, `${name}.json`), 'utf8')) as Capture;
}
