/**
 * Agents in a sandbox (docs/adr/0012), against the real thing: bubblewrap, a real `orch worker`
 * process holding real secrets in its environment, real git, the real claude and codex binaries.
 * - a hostile agent, run by that worker with ORCH_AGENT_SANDBOX=bwrap, tries each attack of the
 *   issue and each is asserted from both sides (what the agent saw, what the host shows after);
 *   the same agent without the sandbox succeeds at them, so the probes can fail;
 *   the good part of the agent still commits and the task reaches done;
 * - the real claude and codex start inside the sandbox (claude reaches its authentication step
 *   and keeps its session in the agent home; offline codex is stopped as stalled);
 * - ORCH_AGENT_SANDBOX=bwrap without bwrap: the worker exits 1 with one line; `auto` without it:
 *   the warning is in GET /queue;
 * - the limits hold a fork bomb; a redirected `.git` is refused before a push; the decision and
 *   the environment allowlist as tables.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createAgent } from '@orch/shared/agents/index';
import { getJobRun } from '@orch/shared/db/queries/agent-runs';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getTask } from '@orch/shared/db/queries/tasks';
import { prepareWorktree, pushBranch, syncMirror, worktreePath } from '@orch/shared/host/git';
import { detectIsolation, isolateCommand, probeBwrap, type Isolation } from '@orch/shared/host/isolation';
import { liveProcesses } from '@orch/shared/host/procfs';
import { startGroupProcess } from '@orch/shared/host/process-group';
import { bwrapArgs, decideIsolation } from '@orch/shared/host/sandbox';
import { createTask } from '@orch/shared/pipeline/tasks';
import { loadConfig, stepEnv } from '@orch/shared/runtime/config';
import { filesOnBranch, ROOT, startOrch, tempDir, waitFor, type Orch } from './support/harness.ts';
import { HAVE_REAL_CLIS, REAL_CLAUDE, REAL_CODEX } from './support/real-cli.ts';
import { apiOf, sleep, waitStage } from './support/stop-helpers.ts';

const HOSTILE = path.join(ROOT, 'tests', 'fixtures', 'agents', 'hostile-agent.sh');
const SECRETS = {
  PLANE_BASE_URL: 'http://127.0.0.1:9',
  PLANE_API_KEY: 'plane-secret-4c1d2e',
  PLANE_WORKSPACE_SLUG: 'ws',
  GITEA_BASE_URL: 'http://127.0.0.1:9',
  GITEA_TOKEN: 'gitea-secret-77ab',
  ORCH_API_TOKEN: 'api-secret-0f3e',
  PGPASSWORD: 'pg-secret-19',
};

const BWRAP_WORKS = (await probeBwrap(process.env.PATH)).ok;

let orch: Orch | undefined;
afterEach(async () => {
  await orch?.close();
  orch = undefined;
});

/** Live processes whose command line contains `marker`. */
function processesWith(marker: string): number[] {
  return liveProcesses()
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').replace(/\0/g, ' ').includes(marker);
      } catch {
        return false;
      }
    })
    .map((p) => p.pid);
}

function killAll(marker: string): void {
  for (const pid of processesWith(marker)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
}

/** Run the hostile agent through a real worker process; the probes' lines and what the host shows. */
async function hostileRun(sandbox: 'bwrap' | 'none') {
  const ctrlDir = await tempDir('orch-hostile-ctrl-');
  const ctrl = path.join(ctrlDir, 'ctrl.env');
  const o = (orch = await startOrch({
    env: {
      ORCH_AGENT: 'command',
      ORCH_AGENT_CMD: `CTRL=${ctrl} sh ${HOSTILE}`,
      ORCH_AGENT_SANDBOX: sandbox,
      ORCH_AGENT_NETWORK: 'off',
      ORCH_AGENT_SANDBOX_READ_ONLY: ctrlDir,
    },
  }));
  const root = o.env.ORCH_WORKTREE_ROOT!;
  const home = o.env.ORCH_HOME!;
  await fs.mkdir(home, { recursive: true });
  await fs.writeFile(path.join(home, 'keep'), 'orch data\n');
  // another task's worktree on this host
  const other = worktreePath(root, 'p', 999);
  await fs.mkdir(other, { recursive: true });
  await fs.writeFile(path.join(other, 'keep'), 'another task\n');
  const worker = o.spawn(['worker'], { ...SECRETS, ORCH_LOG_LEVEL: 'warn' });
  const mirror = path.join(root, 'p', 'mirror.git');
  await fs.writeFile(
    ctrl,
    `WORKER_PID=${worker.pid}\nOTHER=${other}\nMIRROR=${mirror}\nORCH_HOME_DIR=${home}\nSECRET=${SECRETS.PLANE_API_KEY}\n`,
  );
  const task = await createTask(o.rt.svc, { project: 'p', title: 'hostile' }, 'test');
  try {
    await waitStage(o, task.id, 'done', 60_000);
  } catch (err) {
    worker.kill('SIGKILL');
    throw new Error(`${(err as Error).message}; worker said: ${String((await worker).stderr).slice(-2000)}`);
  }
  const probes = await o.rt.svc.db.selectFrom('artefacts').select(['content']).where('task_id', '=', task.id).where('name', '=', 'probes.md').executeTakeFirstOrThrow();
  const lines = Object.fromEntries(
    probes.content
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]),
  );
  await sleep(300); // the job's end has swept what it could
  const host = {
    workerAlive: (() => {
      try {
        process.kill(worker.pid!, 0);
        return true;
      } catch {
        return false;
      }
    })(),
    otherPwned: await exists(path.join(other, 'pwned')),
    otherKeep: await fs.readFile(path.join(other, 'keep'), 'utf8').catch(() => null),
    mirrorRef: execFileSync('git', ['--git-dir', mirror, 'for-each-ref', 'refs/heads/pwned']).toString().trim(),
    mirrorFile: await exists(path.join(mirror, 'pwned')),
    homePwned: await exists(path.join(home, 'pwned')),
    leftovers: [...processesWith('sleep 3171'), ...processesWith('sleep 3172')],
    merged: await filesOnBranch(o.repo, 'main'),
  };
  worker.kill('SIGTERM');
  await worker;
  return { task, lines, host };
}

describe.runIf(BWRAP_WORKS)('a hostile agent in the sandbox', () => {
  it('fails at every attack; the host shows nothing touched; its commit still lands and the task is done', async () => {
    const { task, lines, host } = await hostileRun('bwrap');
    try {
      for (const probe of ['proc_environ', 'own_env', 'db_tcp', 'db_socket', 'other_worktree', 'mirror_refs', 'orch_home', 'git_config', 'signal_worker', 'see_worker']) {
        expect(lines[probe], probe).toBe('blocked');
      }
      // a pid namespace of its own: a handful of processes (bwrap's init, the shells, ls)
      expect(Number(lines.pids)).toBeLessThan(10);
      // a HOME of its own, in the job's run dir
      expect(lines.home).toMatch(new RegExp(`/runs/${task.id}/\\d+/home$`));
      expect(host).toMatchObject({ workerAlive: true, otherPwned: false, otherKeep: 'another task\n', mirrorRef: '', mirrorFile: false, homePwned: false, leftovers: [] });
      expect(host.merged).toContain(`hostile-${task.id}.txt`);
    } finally {
      killAll('sleep 317');
    }
  }, 90_000);

  it('the same agent unsandboxed succeeds at them (the probes can tell)', async () => {
    const { lines, host } = await hostileRun('none');
    try {
      expect(lines.proc_environ).toMatch(/^LEAKED .*plane-secret-4c1d2e/);
      expect(lines.git_config).toMatch(/^LEAKED/);
      expect(lines.mirror_refs).toMatch(/^LEAKED/);
      expect(lines.orch_home).toMatch(/^LEAKED/);
      expect(lines.other_worktree).toMatch(/^LEAKED/);
      expect(lines.signal_worker).toMatch(/^LEAKED/);
      // the allowlisted environment holds without the sandbox too: no secret in its own env
      expect(lines.own_env).toBe('blocked');
      expect(host.homePwned).toBe(true);
      // what the sandbox's pid namespace fixes: a child in a session of its own outlives the job
      expect(host.leftovers.length).toBeGreaterThan(0);
    } finally {
      killAll('sleep 317');
    }
  }, 90_000);
});

describe.runIf(BWRAP_WORKS && HAVE_REAL_CLIS && !process.env.ANTHROPIC_API_KEY && !process.env.OPENAI_API_KEY)('the real CLIs inside the sandbox', () => {
  async function start(env: Record<string, string>): Promise<Orch> {
    const o = (orch = await startOrch({ env: { ORCH_AGENT_SANDBOX: 'bwrap', ORCH_RETRY_BACKOFF_BASE_S: '10', ...env } }));
    await o.worker({ agent: await createAgent(loadConfig(o.env)) });
    return o;
  }

  it('claude starts, reaches its authentication step (flags accepted), and keeps its session in the agent home', async () => {
    const o = await start({ ORCH_AGENT: 'claude', ORCH_CLAUDE_BIN: REAL_CLAUDE });
    const task = await createTask(o.rt.svc, { project: 'p', title: 'needs a login' }, 'test');
    await waitFor(async () => (await getTask(o.rt.svc.db, task.id))?.blocked_at, 40_000, 'task blocked');
    const jobs = await listTaskJobs(o.rt.svc.db, task.id);
    expect(jobs.map((j) => [j.stage, j.status, j.reason, j.failure_class])).toEqual([['analysis', 'failed', 'agent_auth', 'config']]);
    const run = (await getJobRun(o.rt.svc.db, jobs[0]!.id))!;
    expect(run).toMatchObject({ exit_code: 1, failure_code: 'agent_auth', last_message: 'Not logged in · Please run /login' });
    expect(run.log_tail).not.toMatch(/bwrap:|unknown option|Usage:/);
    const home = path.join(o.env.ORCH_WORKTREE_ROOT!, 'agent-home', 'claude', 'projects');
    const sessions = (await Promise.all((await fs.readdir(home)).map((d) => fs.readdir(path.join(home, d))))).flat();
    expect(sessions).toContain(`${run.session_id}.jsonl`);
  }, 60_000);

  it('codex starts (flags accepted) and, offline, is stopped as stalled', async () => {
    const o = await start({ ORCH_AGENT: 'codex', ORCH_CODEX_BIN: REAL_CODEX, ORCH_AGENT_STALL_S: '3', ORCH_JOB_MAX_ATTEMPTS: '1' });
    const task = await createTask(o.rt.svc, { project: 'p', title: 'offline' }, 'test');
    const job = await waitFor(async () => (await listTaskJobs(o.rt.svc.db, task.id)).find((j) => j.status === 'failed'), 40_000, 'codex job failed');
    expect(job.reason).toBe('stalled');
    const run = (await getJobRun(o.rt.svc.db, job.id))!;
    expect(run.session_id).toMatch(/^[0-9a-f-]{36}$/); // thread.started: codex ran, inside the sandbox
    expect(run.log_tail).not.toMatch(/bwrap:|unexpected argument|Usage:/);
  }, 60_000);
});

describe('without bubblewrap', () => {
  it('ORCH_AGENT_SANDBOX=bwrap: `orch worker` exits 1 with one line saying how to install it', async () => {
    const o = (orch = await startOrch());
    const r = await o.spawn(['worker'], { ORCH_AGENT_SANDBOX: 'bwrap', PATH: '/nonexistent' });
    expect(r.exitCode).toBe(1);
    const lines = String(r.stderr).trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/ORCH_AGENT_SANDBOX=bwrap, but the sandbox does not work on this host: bwrap is not installed \(not on PATH\); install bubblewrap \(Debian\/Ubuntu: apt-get install bubblewrap\)/);
  }, 30_000);

  it('ORCH_AGENT_SANDBOX=auto: the worker runs, and GET /queue, `orch status` show the warning', async () => {
    const o = (orch = await startOrch());
    const worker = o.spawn(['worker'], { ORCH_AGENT_SANDBOX: 'auto', PATH: '/nonexistent', ORCH_LOG_LEVEL: 'warn' });
    try {
      const api = apiOf(o);
      const q = await waitFor(async () => {
        const body = (await (await api.app.request('/queue')).json()) as { warnings: string[]; workers: Array<{ isolation: { sandbox: string } | null }> };
        return body.workers.length ? body : null;
      }, 20_000, 'worker registered');
      expect(q.workers[0]!.isolation).toMatchObject({ sandbox: 'none' });
      expect(q.warnings).toEqual(['test-host: agents run unsandboxed: bwrap is not installed (not on PATH) (ORCH_AGENT_SANDBOX=auto); install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap)']);
      const status = await o.spawn(['status']);
      expect(status.stdout).toMatch(/^WARNING  test-host: agents run unsandboxed: bwrap is not installed/);
    } finally {
      worker.kill('SIGTERM');
      await worker;
    }
    // and it said so at start
    expect(String((await worker).stderr)).toMatch(/agents run unsandboxed/);
  }, 30_000);
});

describe.runIf(BWRAP_WORKS)('limits and the repository', () => {
  it('a fork bomb is held at ORCH_AGENT_MAX_PROCS (a cgroup where the host allows, else prlimit)', async () => {
    const cfg = loadConfig({ ORCH_AGENT_SANDBOX: 'bwrap', ORCH_AGENT_MAX_PROCS: '40', ORCH_HOME: os.tmpdir() });
    const iso: Isolation = await detectIsolation(cfg, process.env.PATH);
    if (iso.limits.how === 'prlimit' && process.getuid?.() === 0) return; // RLIMIT_NPROC does not bind root
    const dir = await tempDir('orch-forkbomb-');
    const cmd = isolateCommand(cfg, iso, {
      jobId: 424242,
      file: 'i=0; while [ $i -lt 300 ]; do sleep 7.77 & i=$((i+1)); echo $i > count; done; wait',
      args: [],
      shell: true,
      sandboxed: true,
      env: stepEnv([]),
      files: { repo: dir, inputs: [], writable: [] },
    });
    const p = startGroupProcess({ file: cmd.file, args: cmd.args, cwd: dir, env: stepEnv([]), sandboxed: cmd.sandboxed });
    const exit = await p.exited;
    await cmd.release();
    killAll('sleep 7.77');
    expect(exit.exitCode).not.toBe(0);
    expect(p.tail()).toMatch(/fork|Resource temporarily unavailable/i);
    // how many it started before the kernel refused (the shell counts with builtins only)
    const started = Number(await fs.readFile(path.join(dir, 'count'), 'utf8'));
    expect(started).toBeGreaterThan(5);
    expect(started).toBeLessThan(40);
    await fs.rm(dir, { recursive: true, force: true });
  }, 30_000);

  it('a push refuses a task repository whose .git an agent redirected', async () => {
    const dir = await tempDir('orch-gitdir-');
    const bare = path.join(dir, 'remote.git');
    execFileSync('git', ['init', '--quiet', '--bare', '--initial-branch=main', bare]);
    const seed = path.join(dir, 'seed');
    execFileSync('git', ['init', '--quiet', '--initial-branch=main', seed]);
    execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '--quiet', '--allow-empty', '-m', 'init'], { cwd: seed });
    execFileSync('git', ['push', '--quiet', bare, 'main'], { cwd: seed });
    const repo = await syncMirror(path.join(dir, 'root'), 'p', bare);
    const wt = path.join(dir, 'root', 'p', 'worktrees', '1');
    await prepareWorktree(repo, wt, { branch: 'orch/1-x', base: 'main' });
    // the task repository borrows the mirror's objects and has its own refs
    expect(await fs.readFile(path.join(wt, '.git', 'objects', 'info', 'alternates'), 'utf8')).toBe(`${await fs.realpath(path.join(repo.mirror, 'objects'))}\n`);
    execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '--quiet', '--allow-empty', '-m', 'work'], { cwd: wt });
    const { sha, pushed } = await pushBranch(repo, wt, 'orch/1-x', 1);
    expect(pushed).toBe(true);
    expect(execFileSync('git', ['--git-dir', bare, 'rev-parse', 'orch/1-x']).toString().trim()).toBe(sha);
    // a branch that did not move is not pushed again
    expect(await pushBranch(repo, wt, 'orch/1-x', 1, { unlessAt: sha })).toEqual({ sha, pushed: false });
    // an agent replaces its .git with a link to another repository
    await fs.rename(path.join(wt, '.git'), path.join(wt, 'git-moved'));
    await fs.symlink(repo.mirror, path.join(wt, '.git'));
    await expect(pushBranch(repo, wt, 'orch/1-x', 1)).rejects.toThrow(/symlink\): refusing to push/);
    await fs.rm(path.join(wt, '.git'));
    await fs.rename(path.join(wt, 'git-moved'), path.join(wt, '.git'));
    await fs.writeFile(path.join(wt, '.git', 'commondir'), '../../other\n');
    await expect(pushBranch(repo, wt, 'orch/1-x', 1)).rejects.toThrow(/commondir/);
    await fs.rm(dir, { recursive: true, force: true });
  }, 30_000);
});

describe('decisions', () => {
  const works = { ok: true, reason: null, version: 'bubblewrap 0.8.0' };
  const missing = { ok: false, reason: 'bwrap is not installed (not on PATH)', version: null };
  it.each([
    ['auto', works, { sandbox: 'bwrap', warning: null }],
    ['bwrap', works, { sandbox: 'bwrap', warning: null }],
    ['auto', missing, { sandbox: 'none', warning: expect.stringMatching(/^agents run unsandboxed: bwrap is not installed/) }],
    ['bwrap', missing, { refuse: expect.stringMatching(/^ORCH_AGENT_SANDBOX=bwrap, but .* install bubblewrap/) }],
    ['none', works, { sandbox: 'none', warning: expect.stringMatching(/ORCH_AGENT_SANDBOX=none/) }],
  ] as const)('%s with %o → %o', (mode, probe, want) => {
    expect(decideIsolation(mode, probe)).toEqual(want);
  });

  it('bwrap arguments: namespaces first, then hide → show → blank → hide again → inputs → writable → pinned', () => {
    const a = bwrapArgs({ hide: ['/h'], readOnly: ['/h/tools'], blank: ['/o/.env'], hideAgain: ['/w'], inputs: ['/w/m.git'], writable: ['/w/t'], pinned: ['/w/t/.git/config'], network: false, cwd: '/w/t' });
    for (const flag of ['--unshare-pid', '--unshare-user', '--disable-userns', '--new-session', '--die-with-parent', '--unshare-net']) expect(a).toContain(flag);
    const at = (...xs: string[]) => a.join(' ').indexOf(xs.join(' '));
    const order = [at('--tmpfs', '/h'), at('--ro-bind', '/h/tools'), at('--ro-bind', '/dev/null', '/o/.env'), at('--tmpfs', '/w'), at('--ro-bind', '/w/m.git'), at('--bind', '/w/t', '/w/t'), at('--ro-bind', '/w/t/.git/config')];
    expect(order.every((x) => x >= 0)).toBe(true);
    expect([...order].sort((x, y) => x - y)).toEqual(order);
    expect(a.slice(-2)).toEqual(['--chdir', '/w/t']);
    expect(bwrapArgs({ hide: [], readOnly: [], blank: [], hideAgain: [], inputs: [], writable: [], pinned: [], network: true, cwd: '/' })).not.toContain('--unshare-net');
  });

  it('the step environment is an allowlist: secrets never pass, whatever is allowed', () => {
    const env = {
      PATH: '/usr/bin',
      LANG: 'C.UTF-8',
      LC_ALL: 'C',
      HOME: '/root',
      DATABASE_URL: 'postgres://x',
      PLANE_API_KEY: 'k',
      GITEA_TOKEN: 't',
      PGPASSWORD: 'p',
      SSH_AUTH_SOCK: '/s',
      AWS_SECRET_ACCESS_KEY: 'a',
      ANTHROPIC_API_KEY: 'ak',
      MY_TOOL_A: '1',
      MY_TOOL_B: '2',
    };
    expect(stepEnv([], env)).toEqual({ PATH: '/usr/bin', LANG: 'C.UTF-8', LC_ALL: 'C' });
    expect(stepEnv(['ANTHROPIC_API_KEY', 'MY_TOOL_*', 'DATABASE_URL', 'PLANE_API_KEY'], env)).toEqual({
      PATH: '/usr/bin',
      LANG: 'C.UTF-8',
      LC_ALL: 'C',
      ANTHROPIC_API_KEY: 'ak',
      MY_TOOL_A: '1',
      MY_TOOL_B: '2',
    });
  });
});
