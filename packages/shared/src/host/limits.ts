/**
 * Resource limits of a step process: a process count (fork bombs) and memory. Where the host
 * lets this process create cgroups (v2 with the controllers delegated, or v1 hierarchies it can
 * write, as root usually can), every job gets a cgroup of its own under this process's cgroup,
 * with `pids.max` and the memory limit, and the process enters it before it execs (a two-line
 * `sh` wrapper: `echo $$ > cgroup.procs; exec …`), so everything it starts is counted, inside a
 * sandbox or not. Elsewhere `prlimit` sets RLIMIT_NPROC and RLIMIT_DATA — weaker: the kernel does
 * not apply RLIMIT_NPROC to root, it counts every process of the uid, and RLIMIT_DATA bounds one
 * process's heap, not the tree's. What is in force is reported (`orch doctor`, GET /queue).
 */
import fs from 'node:fs';
import path from 'node:path';
import { processAlive } from './process-group.ts';

export type LimitsHow = 'cgroup2' | 'cgroup1' | 'prlimit' | 'none';

export interface LimitsPlan {
  how: LimitsHow;
  maxProcs: number;
  maxMemoryMb: number;
  /** cgroup directories new job cgroups are made in: one (v2) or one per controller (v1) */
  parents: string[];
}

const CGROUP_ROOT = '/sys/fs/cgroup';
const PREFIX = 'orch-job-';

function ownCgroups(): Map<string, string> {
  // /proc/self/cgroup: "hierarchy-id:controllers:path"; v2 is "0::path"
  const out = new Map<string, string>();
  let text = '';
  try {
    text = fs.readFileSync('/proc/self/cgroup', 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    for (const c of m[1]!.split(',')) out.set(c, m[2]!);
  }
  return out;
}

/** A cgroup directory we can create children in (tried for real: mkdir, then rmdir). */
function canCreateIn(dir: string, needs: string[]): boolean {
  const probe = path.join(dir, `${PREFIX}probe-${process.pid}`);
  try {
    fs.mkdirSync(probe);
  } catch {
    return false;
  }
  try {
    return needs.every((f) => fs.existsSync(path.join(probe, f)));
  } finally {
    try {
      fs.rmdirSync(probe);
    } catch {
      /* gone meanwhile */
    }
  }
}

/** Detect how limits can be enforced on this host (once, at worker start). */
export function detectLimits(maxProcs: number, maxMemoryMb: number): LimitsPlan {
  const base = { maxProcs, maxMemoryMb };
  if (maxProcs === 0 && maxMemoryMb === 0) return { how: 'none', ...base, parents: [] };
  const own = ownCgroups();
  const needs = (v: 1 | 2) => [...(maxProcs ? ['pids.max'] : []), ...(maxMemoryMb ? [v === 2 ? 'memory.max' : 'memory.limit_in_bytes'] : [])];
  if (fs.existsSync(path.join(CGROUP_ROOT, 'cgroup.controllers')) && own.has('')) {
    const dir = path.join(CGROUP_ROOT, own.get('')!);
    if (canCreateIn(dir, needs(2))) return { how: 'cgroup2', ...base, parents: [dir] };
  } else {
    const parents: string[] = [];
    for (const [controller, file] of [['pids', 'pids.max'], ['memory', 'memory.limit_in_bytes']] as const) {
      if ((controller === 'pids' && !maxProcs) || (controller === 'memory' && !maxMemoryMb)) continue;
      const dir = path.join(CGROUP_ROOT, controller, own.get(controller) ?? '/');
      if (canCreateIn(dir, [file])) parents.push(dir);
    }
    if (parents.length === needs(1).length) return { how: 'cgroup1', ...base, parents };
  }
  return fs.existsSync('/usr/bin/prlimit') ? { how: 'prlimit', ...base, parents: [] } : { how: 'none', ...base, parents: [] };
}

export function describeLimits(p: LimitsPlan): string {
  if (p.how === 'none') return p.maxProcs || p.maxMemoryMb ? 'no limits (no writable cgroup, no prlimit)' : 'no limits (off)';
  const what = [p.maxProcs ? `${p.maxProcs} processes` : null, p.maxMemoryMb ? `${p.maxMemoryMb} MB` : null].filter(Boolean).join(', ');
  const how = p.how === 'cgroup2' ? 'cgroup v2' : p.how === 'cgroup1' ? 'cgroup v1' : process.getuid?.() === 0 ? 'prlimit; the process count is not enforced for root' : 'prlimit, per process';
  return `${what} (${how})`;
}

function cgroupName(jobId: number): string {
  return `${PREFIX}${jobId}-w${process.pid}`;
}

/** The job's cgroups, made and limited; [] when limits are not enforced through cgroups. */
export function createJobCgroups(p: LimitsPlan, jobId: number): string[] {
  if (p.how !== 'cgroup1' && p.how !== 'cgroup2') return [];
  const made: string[] = [];
  for (const parent of p.parents) {
    const dir = path.join(parent, cgroupName(jobId));
    fs.mkdirSync(dir, { recursive: true });
    made.push(dir);
    const write = (file: string, value: number) => fs.existsSync(path.join(dir, file)) && fs.writeFileSync(path.join(dir, file), String(value));
    if (p.maxProcs) write('pids.max', p.maxProcs);
    if (p.maxMemoryMb) {
      const bytes = p.maxMemoryMb * 1024 * 1024;
      write(p.how === 'cgroup2' ? 'memory.max' : 'memory.limit_in_bytes', bytes);
      if (p.how === 'cgroup2') write('memory.swap.max', 0);
    }
  }
  return made;
}

/** Remove a job's cgroups once its processes are gone (a cgroup with members stays). */
export async function removeJobCgroups(dirs: string[]): Promise<void> {
  for (const dir of dirs) {
    for (let i = 0; i < 20; i++) {
      try {
        fs.rmdirSync(dir);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        await new Promise((r) => setTimeout(r, 50)); // EBUSY: the kernel is still tearing down
      }
    }
  }
}

/**
 * Cgroups a crashed worker of this host left (its pid is gone), or of this worker's jobs that
 * are no longer running. rmdir only removes an empty cgroup, so a live one is never touched.
 */
export function sweepJobCgroups(p: LimitsPlan, runningJobIds: ReadonlySet<number>): number {
  let removed = 0;
  for (const parent of p.parents) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(parent).filter((n) => n.startsWith(PREFIX));
    } catch {
      continue;
    }
    for (const name of names) {
      const m = /^orch-job-(\d+)-w(\d+)$/.exec(name);
      if (!m) continue;
      const [jobId, pid] = [Number(m[1]), Number(m[2])];
      const ownerAlive = pid === process.pid ? runningJobIds.has(jobId) : processAlive(pid);
      if (ownerAlive) continue;
      try {
        fs.rmdirSync(path.join(parent, name));
        removed++;
      } catch {
        /* busy or gone */
      }
    }
  }
  return removed;
}

/** The command line that enters the cgroups, or applies the rlimits, then execs `argv`. */
export function limitedArgv(p: LimitsPlan, cgroups: string[], argv: string[]): string[] {
  if (cgroups.length) {
    const script = 'while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs" || exit 125; shift; done; shift; exec "$@"';
    return ['/bin/sh', '-c', script, 'orch-limits', ...cgroups, '--', ...argv];
  }
  if (p.how === 'prlimit') {
    const flags = [...(p.maxProcs ? [`--nproc=${p.maxProcs}`] : []), ...(p.maxMemoryMb ? [`--data=${p.maxMemoryMb * 1024 * 1024}`] : [])];
    return ['/usr/bin/prlimit', ...flags, '--', ...argv];
  }
  return argv;
}
