/**
 * The sandbox around a step process (agent, test command, deploy command): bubblewrap's
 * command line, built from a plan of what the process may see, and the decision of which
 * isolation a host runs with (docs/adr/0012). Both are pure; `isolation.ts` does the I/O.
 *
 * What a sandboxed process gets:
 * - its own PID namespace (it sees only its own processes: no worker's /proc/<pid>/environ, no
 *   pid of the worker to signal), IPC and UTS namespaces, a new session (no TIOCSTI into a
 *   terminal), and `--die-with-parent`: when the worker dies, the kernel kills the sandbox's
 *   pid 1 and with it every process of the namespace;
 * - a user namespace with every capability dropped and no further user namespaces
 *   (`--disable-userns`: nothing nested can regain privileges);
 * - the host's filesystem read-only; the plan's `hide` paths replaced by empty tmpfs (ORCH_HOME,
 *   the worktree root, the worker's HOME, /tmp, Postgres's socket directories), some shown again
 *   read-only (the tools on PATH, orch's own installation), and only the task's own files
 *   writable;
 * - no network at all with `network: false` (`--unshare-net`: a loopback of its own).
 */

export type SandboxMode = 'auto' | 'bwrap' | 'none';

export interface SandboxPlan {
  /** host paths covered by an empty tmpfs, first */
  hide: string[];
  /** paths shown again, read-only, over what was hidden (tools, orch's installation) */
  readOnly: string[];
  /** files shown as empty (/dev/null) wherever they are (orch's .env) */
  blank: string[];
  /** orch's state inside a tree shown read-only: hidden again */
  hideAgain: string[];
  /** the task's read-only inputs: the mirror its repository borrows objects from, the prompt */
  inputs: string[];
  /** the task's repository, its artefact dir, the job's HOME and TMPDIR, the agent's home */
  writable: string[];
  /** the task's files inside its writable repository that stay read-only (its git config, hooks) */
  pinned: string[];
  network: boolean;
  cwd: string;
}

/** Nothing hidden, shown or writable, no network: the plan a probe runs `true` with (every namespace a job uses). */
export const PROBE_PLAN: SandboxPlan = { hide: [], readOnly: [], blank: [], hideAgain: [], inputs: [], writable: [], pinned: [], network: false, cwd: '/' };

/** bubblewrap's arguments for a plan (everything before `--` and the command). */
export function bwrapArgs(plan: SandboxPlan): string[] {
  const a = [
    '--ro-bind', '/', '/',
    '--dev', '/dev',
    '--proc', '/proc',
    '--unshare-user', '--disable-userns', '--cap-drop', 'ALL',
    '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try',
    '--hostname', 'orch-sandbox',
    '--new-session', '--die-with-parent',
  ];
  if (!plan.network) a.push('--unshare-net');
  for (const p of plan.hide) a.push('--tmpfs', p);
  for (const p of plan.readOnly) a.push('--ro-bind', p, p);
  for (const f of plan.blank) a.push('--ro-bind', '/dev/null', f);
  for (const p of plan.hideAgain) a.push('--tmpfs', p);
  for (const p of plan.inputs) a.push('--ro-bind', p, p);
  for (const p of plan.writable) a.push('--bind', p, p);
  for (const p of plan.pinned) a.push('--ro-bind', p, p);
  a.push('--chdir', plan.cwd);
  return a;
}

export interface SandboxProbe {
  ok: boolean;
  /** why bubblewrap cannot be used here, in one line (not installed, no user namespaces, …) */
  reason: string | null;
  version: string | null;
}

export type IsolationDecision =
  | { sandbox: 'bwrap' | 'none'; warning: string | null }
  | { refuse: string };

const INSTALL_HINT = 'install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap)';

/** Which isolation a worker runs with, from ORCH_AGENT_SANDBOX and what the host can do. */
export function decideIsolation(mode: SandboxMode, probe: SandboxProbe): IsolationDecision {
  if (mode === 'none') return { sandbox: 'none', warning: 'agents run unsandboxed (ORCH_AGENT_SANDBOX=none): they can read what this worker can read' };
  if (probe.ok) return { sandbox: 'bwrap', warning: null };
  if (mode === 'bwrap') return { refuse: `ORCH_AGENT_SANDBOX=bwrap, but the sandbox does not work on this host: ${probe.reason}; ${INSTALL_HINT}, or set ORCH_AGENT_SANDBOX=auto` };
  return { sandbox: 'none', warning: `agents run unsandboxed: ${probe.reason} (ORCH_AGENT_SANDBOX=auto); ${INSTALL_HINT}` };
}
