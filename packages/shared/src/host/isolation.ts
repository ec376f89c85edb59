/**
 * A worker's isolation, found once at start (is bubblewrap usable here, how can limits be
 * enforced), and the command line of each step process under it: the limits wrapper, then
 * bwrap with the job's plan, then the command. `sandbox.ts` holds the pure parts (arguments,
 * the decision), `limits.ts` the cgroups; docs/adr/0012 says why each choice.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import type { WorkerIsolation } from '../db/queries/workers.ts';
import type { Config } from '../runtime/config.ts';
import { createJobCgroups, describeLimits, detectLimits, limitedArgv, removeJobCgroups, type LimitsPlan } from './limits.ts';
import { bwrapArgs, decideIsolation, PROBE_PLAN, type SandboxPlan, type SandboxProbe } from './sandbox.ts';

export interface Isolation {
  sandbox: 'bwrap' | 'none';
  /** the bwrap executable (absolute), when sandboxed */
  bwrap: string | null;
  network: boolean;
  limits: LimitsPlan;
  /** shown at start, in GET /queue, `orch status` and the dashboard: agents run unsandboxed */
  warning: string | null;
}

/** What GET /queue, the worker row and `orch doctor` show: the worker row's shape. */
export type IsolationView = WorkerIsolation;

export class SandboxUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SandboxUnavailableError';
  }
}

/** orch's installation (the checkout with its runtime and packages): shown read-only in the sandbox. */
const ORCH_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');

function findOnPath(name: string, pathVar: string | undefined): string | null {
  for (const dir of (pathVar ?? '').split(':').filter(Boolean)) {
    const file = path.join(dir, name);
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      /* next */
    }
  }
  return null;
}

/** Run bubblewrap for real, with every namespace a job's sandbox uses. */
export async function probeBwrap(pathVar: string | undefined): Promise<SandboxProbe & { bin: string | null }> {
  const bin = findOnPath('bwrap', pathVar);
  if (!bin) return { ok: false, reason: 'bwrap is not installed (not on PATH)', version: null, bin: null };
  const r = await execa(bin, [...bwrapArgs(PROBE_PLAN), '--', 'true'], { reject: false, stdin: 'ignore', timeout: 10_000, env: { PATH: '/usr/bin:/bin' }, extendEnv: false });
  const v = await execa(bin, ['--version'], { reject: false, stdin: 'ignore', timeout: 5000 });
  const version = v.exitCode === 0 ? String(v.stdout).trim() : null;
  if (r.exitCode === 0) return { ok: true, reason: null, version, bin };
  const why = String(r.stderr ?? '').trim().split('\n').at(-1) || `exit ${r.exitCode}`;
  return { ok: false, reason: `bwrap does not start a sandbox here (${why})`, version, bin };
}

/**
 * The isolation this worker runs with. ORCH_AGENT_SANDBOX=bwrap without a working bubblewrap
 * throws SandboxUnavailableError (one line, with how to install it); `auto` falls back with a
 * warning. `probed`: a probe already made (`orch doctor` shows it too).
 */
export async function detectIsolation(config: Config, pathVar: string | undefined, probed?: Awaited<ReturnType<typeof probeBwrap>>): Promise<Isolation> {
  const a = config.agent.sandbox;
  const probe = a.mode === 'none' ? { ok: false, reason: null, version: null, bin: null } : (probed ?? (await probeBwrap(pathVar)));
  const decision = decideIsolation(a.mode, probe);
  if ('refuse' in decision) throw new SandboxUnavailableError(decision.refuse);
  return {
    sandbox: decision.sandbox,
    bwrap: decision.sandbox === 'bwrap' ? probe.bin : null,
    network: a.network === 'on',
    limits: detectLimits(a.maxProcs, a.maxMemoryMb),
    warning: decision.warning,
  };
}

export function isolationView(iso: Isolation): IsolationView {
  return { sandbox: iso.sandbox, network: iso.network ? 'on' : 'off', limits: describeLimits(iso.limits), warning: iso.warning };
}

export function describeIsolation(iso: Isolation): string {
  const v = isolationView(iso);
  return `sandbox ${v.sandbox === 'bwrap' ? 'bwrap' : 'none (unsandboxed)'}, network ${v.network}, limits: ${v.limits}`;
}

export interface StepFiles {
  /** the task's repository (the process's cwd) */
  repo: string;
  /** read-only inputs: the mirror the repository borrows objects from, the prompt file */
  inputs: string[];
  /** the job's artefact dir, HOME and TMPDIR, the agent's home */
  writable: string[];
}

export interface IsolatedCommand {
  file: string;
  args: string[];
  /** the process runs in a pid namespace of its own (stops signal its members) */
  sandboxed: boolean;
  /** remove the job's cgroups (after the process and its namespace are gone) */
  release(): Promise<void>;
}

function real(p: string): string | null {
  try {
    return fs.realpathSync(p);
  } catch {
    return null;
  }
}

function under(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/** The plan of one step: what it sees, what it may write. */
function sandboxPlan(config: Config, iso: Isolation, files: StepFiles, env: Record<string, string>, command: string | null): SandboxPlan {
  const uniq = (xs: Array<string | null>) => [...new Set(xs.filter((x): x is string => x !== null && x !== '/'))];
  const hide = uniq([os.homedir(), '/tmp', os.tmpdir(), '/run/postgresql', '/var/run/postgresql', '/dev/shm'].map(real));
  const shown = [ORCH_ROOT, ...(env.PATH ?? '').split(':'), ...(config.agent.sandbox.readOnly ?? [])];
  if (command && path.isAbsolute(command)) shown.push(path.dirname(command));
  const readOnly = uniq(shown.map((p) => (p ? real(p) : null))).filter((p) => hide.some((h) => under(p, h)));
  const blank = uniq([real(path.join(ORCH_ROOT, '.env'))]);
  const hideAgain = uniq([real(config.home), real(config.worktreeRoot)]);
  const pinned = uniq(['config', 'hooks', 'objects/info'].map((f) => real(path.join(files.repo, '.git', f))));
  return {
    hide,
    readOnly,
    blank,
    hideAgain,
    inputs: uniq(files.inputs.map(real)),
    writable: uniq([files.repo, ...files.writable, ...(config.agent.sandbox.writable ?? [])].map(real)),
    pinned,
    network: iso.network,
    cwd: real(files.repo) ?? files.repo,
  };
}

/** A step's command line under this worker's isolation (limits, sandbox), and its cleanup. */
export function isolateCommand(
  config: Config,
  iso: Isolation,
  cmd: { jobId: number; file: string; args: string[]; shell: boolean; sandboxed: boolean; env: Record<string, string>; files: StepFiles },
): IsolatedCommand {
  const argv = cmd.shell ? ['/bin/sh', '-c', cmd.file, ...cmd.args] : [cmd.file, ...cmd.args];
  const sandboxed = cmd.sandboxed && iso.sandbox === 'bwrap' && iso.bwrap !== null;
  const inner = sandboxed ? [iso.bwrap!, ...bwrapArgs(sandboxPlan(config, iso, cmd.files, cmd.env, cmd.shell ? null : cmd.file)), '--', ...argv] : argv;
  const cgroups = createJobCgroups(iso.limits, cmd.jobId);
  const [file, ...args] = limitedArgv(iso.limits, cgroups, inner);
  return { file: file!, args, sandboxed, release: () => removeJobCgroups(cgroups) };
}
