/**
 * sandbox (issue 16): what the sandbox costs on the dispatch path, and what the task repository
 * costs beside the linked worktree it replaced.
 * - enqueue → agent started, one idle worker, ORCH_AGENT_SANDBOX=none and =bwrap in the same
 *   run (the agent's own `date +%s%N` is its start);
 * - bare bubblewrap: `bwrap … -- true` against `sh -c true`, the floor of the sandbox's cost;
 * - a task's tree made fresh: the task repository (git init, alternates, fetch of two refs from
 *   the mirror, checkout) against `git worktree add` of the mirror, on the same repository.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { git, prepareWorktree, syncMirror } from '../packages/shared/src/host/git.ts';
import { probeBwrap } from '../packages/shared/src/host/isolation.ts';
import { bwrapArgs, PROBE_PLAN } from '../packages/shared/src/host/sandbox.ts';
import { dispatchSamples } from './dispatch.ts';
import { execa } from './deps.ts';
import { LATENCY_HEADER, latencyRow, nowMs, startBenchOrch, summary, fmt, type Section } from './support.ts';

export async function benchSandbox(opts: { samples?: number } = {}): Promise<Section[]> {
  const samples = opts.samples ?? 100;
  const probe = await probeBwrap(process.env.PATH);
  if (!probe.ok) return [{ title: 'sandbox', header: ['measure'], rows: [[`skipped: ${probe.reason}`]], notes: [] }];
  const off = await dispatchSamples(samples, { ORCH_AGENT_SANDBOX: 'none' });
  const on = await dispatchSamples(samples, { ORCH_AGENT_SANDBOX: 'bwrap' });

  const bare: number[] = [];
  const shell: number[] = [];
  const plan = { ...PROBE_PLAN, hide: ['/tmp'], network: true };
  for (let i = 0; i < 50; i++) {
    let t = nowMs();
    await execa(probe.bin!, [...bwrapArgs(plan), '--', '/bin/sh', '-c', 'true'], { stdin: 'ignore' });
    bare.push(nowMs() - t);
    t = nowMs();
    await execa('/bin/sh', ['-c', 'true'], { stdin: 'ignore' });
    shell.push(nowMs() - t);
  }

  const { repoRows, files } = await treeTimings();
  const d = summary(on.endToEnd).p50 - summary(off.endToEnd).p50;
  return [
    {
      title: 'sandbox — what bubblewrap and the task repository cost',
      header: LATENCY_HEADER,
      rows: [
        latencyRow('**enqueue → agent started, ORCH_AGENT_SANDBOX=none**', off.endToEnd),
        latencyRow('  spawn: jobs.started_at → agent started', off.spawn),
        latencyRow('**enqueue → agent started, ORCH_AGENT_SANDBOX=bwrap**', on.endToEnd),
        latencyRow('  spawn: jobs.started_at → agent started', on.spawn),
        latencyRow('  isolated: `sh -c true`', shell),
        latencyRow('  isolated: `bwrap <a job\'s namespaces> -- sh -c true`', bare),
        ...repoRows,
      ],
      notes: [
        `${samples} samples each after 5 warm-up, same run, one in-process worker; the sandbox adds ${fmt(d)} ms at p50 on the dispatch path.`,
        `task trees made on a repository of ${files} files; the task repository's objects are the mirror's (alternates), so nothing is copied.`,
        `${probe.version}; limits as \`orch doctor\` reports them on this host.`,
      ],
    },
  ];
}

async function treeTimings(n = 30): Promise<{ repoRows: string[][]; files: number }> {
  const orch = await startBenchOrch({ ORCH_AGENT: 'command', ORCH_AGENT_CMD: 'true' });
  try {
    // a repository with some body: 400 files in 20 directories, 5 commits
    const seed = path.join(orch.dir, 'seed');
    await git(['clone', '--quiet', orch.repo, seed]);
    for (let c = 0; c < 5; c++) {
      for (let f = 0; f < 80; f++) {
        const dir = path.join(seed, `d${(c * 80 + f) % 20}`);
        await fs.mkdir(dir, { recursive: true });
        await fs.writeFile(path.join(dir, `f${c}-${f}.txt`), `${'line\n'.repeat(50)}${c}-${f}\n`);
      }
      await git(['add', '-A'], { cwd: seed });
      await git(['-c', 'user.name=b', '-c', 'user.email=b@b', 'commit', '--quiet', '-m', `c${c}`], { cwd: seed });
    }
    await git(['push', '--quiet', 'origin', 'HEAD:main'], { cwd: seed });
    const root = path.join(orch.dir, 'scratch');
    const repo = await syncMirror(root, 'p', orch.repo);
    const taskRepo: number[] = [];
    const worktree: number[] = [];
    for (let i = 0; i < n; i++) {
      let t = nowMs();
      await prepareWorktree(repo, path.join(root, 'p', 'worktrees', 'a'), { branch: 'orch/1-x', base: 'main' });
      taskRepo.push(nowMs() - t);
      const wt = path.join(root, 'p', 'linked', 'b');
      t = nowMs();
      await git(['worktree', 'remove', '--force', wt], { cwd: repo.mirror, allowFail: true });
      await fs.rm(wt, { recursive: true, force: true });
      await git(['worktree', 'prune'], { cwd: repo.mirror });
      await git(['rev-parse', '--verify', '--quiet', 'refs/remotes/origin/main'], { cwd: repo.mirror });
      await git(['worktree', 'add', '--quiet', '-f', '-B', 'orch/2-x', wt, 'refs/remotes/origin/main'], { cwd: repo.mirror });
      worktree.push(nowMs() - t);
    }
    return {
      repoRows: [
        latencyRow('  isolated: task repository, made fresh (rm, init, alternates, fetch from the mirror, checkout)', taskRepo),
        latencyRow('  isolated: linked worktree, made fresh (remove, prune, rev-parse, worktree add) — before', worktree),
      ],
      files: 400 + 1,
    };
  } finally {
    await orch.close();
  }
}
