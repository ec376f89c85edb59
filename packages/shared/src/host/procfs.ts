/**
 * This host's processes, read from Linux /proc (empty elsewhere). The reads are synchronous on
 * purpose: /proc files live in memory and never wait on a disk, and an async read goes through
 * libuv's thread pool four times per file (open, stat, read, close). Measured on 81 processes: a
 * scan of stat and environ took 50 ms async against 1.45 ms sync, and the async one grew the
 * process's RSS by 32 MB of allocator churn in 1,500 scans where the sync one grew it by 15, flat
 * after the first 300.
 * The reaper scans every tick and each worker every 10 s, so this is the cheap way.
 */
import fs from 'node:fs';

export interface ProcInfo {
  pid: number;
  /** one-letter state of /proc/<pid>/stat (R, S, D, T, Z, X, ...) */
  state: string;
  /** parent pid, as this process's pid namespace sees it */
  ppid: number;
  pgrp: number;
  session: number;
}

function readOrNull(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null; // gone meanwhile, or not ours to read
  }
}

/** Live (not zombie, not dead) processes of this host. */
export function liveProcesses(): ProcInfo[] {
  let names: string[];
  try {
    names = fs.readdirSync('/proc');
  } catch {
    return [];
  }
  const out: ProcInfo[] = [];
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readOrNull(`/proc/${name}/stat`);
    if (stat === null) continue;
    // the command name (field 2) is in parentheses and may contain spaces: parse after the last ')'
    const [state = '', ppid, pgrp, session] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (state === 'Z' || state === 'X') continue;
    out.push({ pid: Number(name), state, ppid: Number(ppid), pgrp: Number(pgrp), session: Number(session) });
  }
  return out;
}

/** The value of one variable in a process's environment (as it was at exec), or null. */
export function processEnvVar(pid: number, name: string): string | null {
  const env = readOrNull(`/proc/${pid}/environ`);
  if (env === null) return null;
  const prefix = `${name}=`;
  const hit = env.split('\0').find((kv) => kv.startsWith(prefix));
  return hit === undefined ? null : hit.slice(prefix.length);
}

/** The pid namespace of a process (`pid:[4026531836]`), or null when it is gone or not ours. */
export function pidNamespace(pid: number): string | null {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return null;
  }
}
