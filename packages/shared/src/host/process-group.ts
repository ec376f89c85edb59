/**
 * Child processes in their own process group: agents, the deploy command, the test command.
 * Stopping is always the same path — SIGTERM to the whole group, a grace period, then SIGKILL
 * to the group — and when the leader exits on its own the group is swept with SIGKILL too, so
 * no child or grandchild (shells, test runners, language servers) outlives its step.
 */
import { execa } from 'execa';
import { liveProcesses, pidNamespace } from './procfs.ts';

export interface ProcessSpec {
  file: string;
  args: string[];
  /** run `file` as a shell command line (`sh -c file`) */
  shell?: boolean;
  cwd: string;
  env: Record<string, string>;
  /** every complete stdout line, as it arrives */
  onStdoutLine?: (line: string) => void;
  /** bytes of combined output kept for `tail()` */
  tailBytes?: number;
  /**
   * the process is a sandbox (bwrap) whose command runs in a pid namespace of its own, in a
   * session of its own: a stop sends SIGTERM to the namespace's processes (the agent gets its
   * grace), and SIGKILL to the sandbox, whose death takes the whole namespace with it
   */
  sandboxed?: boolean;
}

export interface ProcessExit {
  exitCode: number | null;
  signal: string | null;
}

export interface GroupProcess {
  readonly pid: number;
  readonly exited: Promise<ProcessExit>;
  /** SIGTERM the group, wait up to graceS, then SIGKILL the group. Resolves once the leader is gone. */
  stop(graceS: number): Promise<ProcessExit>;
  /** the last `tailBytes` of stdout+stderr */
  tail(): string;
  stopRequested(): boolean;
}

export function killGroup(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    return false;
  }
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Live (non-zombie) processes of the group/session `leader` started (Linux /proc; [] elsewhere).
 * The leader itself may be gone while its children remain — a `sh -c` wrapper that obeyed
 * SIGTERM while they ignore it — so orphan sweeps must look at the members, not the leader pid.
 */
export async function groupMembers(leader: number): Promise<number[]> {
  const procs = liveProcesses();
  const members = procs.filter((p) => p.pgrp === leader || p.session === leader).map((p) => p.pid);
  // a sandbox's processes live in a session (and pid namespace) of their own
  return [...new Set([...members, ...sandboxMembers(leader, procs)])];
}

/**
 * The processes of the sandbox `outer` started, but for its pid 1 (bwrap's init, which exits
 * when its command does, and whose exit ends the namespace): what a stop's SIGTERM goes to.
 */
function sandboxMembers(outer: number, procs = liveProcesses()): number[] {
  const own = pidNamespace(process.pid);
  const init = procs.find((p) => p.ppid === outer && pidNamespace(p.pid) !== own);
  const ns = init ? pidNamespace(init.pid) : null;
  // gone meanwhile: no namespace to match (null would match every process we cannot read)
  if (!init || ns === null) return [];
  return procs.filter((p) => p.pid !== init.pid && pidNamespace(p.pid) === ns).map((p) => p.pid);
}

function terminate(pid: number, sandboxed: boolean): void {
  const members = sandboxed ? sandboxMembers(pid) : [];
  // no namespace yet (bwrap still setting up): the sandbox itself goes, and everything with it
  if (members.length === 0) {
    killGroup(pid, 'SIGTERM');
    return;
  }
  for (const m of members) {
    try {
      process.kill(m, 'SIGTERM');
    } catch {
      /* gone meanwhile */
    }
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

class Tail {
  private chunks: string[] = [];
  private size = 0;
  private readonly max: number;
  constructor(max: number) {
    this.max = max;
  }
  push(s: string): void {
    this.chunks.push(s);
    this.size += s.length;
    while (this.size > this.max * 2 && this.chunks.length > 1) this.size -= this.chunks.shift()!.length;
  }
  toString(): string {
    const all = this.chunks.join('');
    return all.length > this.max ? all.slice(all.length - this.max) : all;
  }
}

const LEADER_POLL_MS = 100;

export function startGroupProcess(spec: ProcessSpec): GroupProcess {
  const tail = new Tail(spec.tailBytes ?? 16_384);
  // detached: the child leads its own process group, so the whole tree can be signalled
  const [file, args] = spec.shell ? ['sh', ['-c', spec.file, ...spec.args]] : [spec.file, spec.args];
  const child = execa(file, args, {
    cwd: spec.cwd,
    env: spec.env,
    extendEnv: false,
    detached: true,
    cleanup: false,
    reject: false,
    buffer: false,
    stdin: 'ignore',
  });
  const pid = child.pid;
  if (pid === undefined) {
    // spawn failed synchronously (ENOENT surfaces through the promise as well); its reason is
    // the tail, as a shell would have printed it
    const exited = Promise.resolve(child).then(
      (r) => {
        const cause = (r as { cause?: { message?: string } }).cause?.message ?? (r as { shortMessage?: string }).shortMessage;
        if (cause) tail.push(`${cause}\n`);
        return { exitCode: r.exitCode ?? 127, signal: null };
      },
      (err: Error) => {
        tail.push(`${err.message}\n`);
        return { exitCode: 127, signal: null };
      },
    );
    return { pid: -1, exited, stop: () => exited, tail: () => tail.toString(), stopRequested: () => false };
  }

  let partial = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    tail.push(chunk);
    if (!spec.onStdoutLine) return;
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) !== -1) {
      const line = partial.slice(0, nl).replace(/\r$/, '');
      partial = partial.slice(nl + 1);
      try {
        spec.onStdoutLine(line);
      } catch {
        /* a parser must never break the run */
      }
    }
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => tail.push(chunk));

  let stopping = false;
  // execa settles only once stdout/stderr close, and a child left behind by the leader (a
  // background job, a daemon) keeps them open: without this the step would hang until the
  // agent timeout and the sweep below would never run. So sweep the group the moment the
  // leader exits on its own; during a stop, `stop()` escalates after the grace instead (the
  // leader obeying TERM does not cut its children's grace short).
  // (execa's subprocess is a promise without the ChildProcess events, so the leader is watched
  // with kill(pid, 0): Node reaps its children at once, so a gone leader answers ESRCH.)
  const leaderWatch = setInterval(() => {
    if (!stopping && !processAlive(pid)) {
      clearInterval(leaderWatch);
      killGroup(pid, 'SIGKILL');
    }
  }, LEADER_POLL_MS);
  leaderWatch.unref();
  const exited: Promise<ProcessExit> = Promise.resolve(child)
    .then(
      (r) => finish(r.exitCode ?? null, r.signal ?? null),
      (err: { exitCode?: number; signal?: string }) => finish(err.exitCode ?? null, err.signal ?? null),
    )
    .finally(() => clearInterval(leaderWatch));
  function finish(exitCode: number | null, signal: string | null): ProcessExit {
    if (partial && spec.onStdoutLine) {
      try {
        spec.onStdoutLine(partial);
      } catch {
        /* ignore */
      }
      partial = '';
    }
    // The leader is gone; anything it left in its group goes with it.
    killGroup(pid!, 'SIGKILL');
    if (exitCode === null && signal) exitCode = 128 + (signalNumber(signal) ?? 0);
    return { exitCode, signal };
  }

  async function stop(graceS: number): Promise<ProcessExit> {
    stopping = true;
    terminate(pid!, spec.sandboxed === true);
    const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), graceS * 1000).unref());
    const first = await Promise.race([exited, timer]);
    if (first === 'timeout') killGroup(pid!, 'SIGKILL');
    const result = await exited;
    // Children that ignored SIGTERM while the leader obeyed it.
    if (groupAlive(pid!)) {
      await new Promise((r) => setTimeout(r, Math.min(graceS * 1000, 200)));
      killGroup(pid!, 'SIGKILL');
    }
    return result;
  }

  return { pid, exited, stop, tail: () => tail.toString(), stopRequested: () => stopping };
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15, SIGABRT: 6, SIGPIPE: 13 };
function signalNumber(s: string): number | undefined {
  return SIGNALS[s];
}
