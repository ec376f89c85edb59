/**
 * The audit trail says why (ARCHITECTURE §3 task_events "every transition, with actor and reason";
 * §10 "every transition says why"): a task that goes through a review REQUEST_CHANGES and a merge
 * conflict on the local forge records a reason on every move, and `orch task show` (the real CLI)
 * prints each as `from → to (reason)`, with the reason of the merge job that failed.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { git } from '@orch/shared/host/git';
import { createTask } from '@orch/shared/pipeline/tasks';
import { startOrch, tempDir, waitFor, type Orch } from './support/harness.ts';
import { eventsOf, jobsOf, waitStage } from './support/stop-helpers.ts';

let orch: Orch | undefined;
afterEach(async () => {
  await orch?.close();
  orch = undefined;
});

/**
 * An agent that rewrites README.md in implementation; its first review requests changes, its
 * second approves and then waits for `base-moved` (the test makes main conflict meanwhile); after
 * the conflict, implementation merges main keeping its own README.
 */
async function conflictingAgent(ctl: string): Promise<string> {
  const script = path.join(ctl, 'agent.sh');
  await fs.writeFile(
    script,
    `#!/bin/sh
set -e
mkdir -p "$ORCH_ARTEFACT_DIR"
count() { n=$(cat "${ctl}/$1" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "${ctl}/$1"; echo $n; }
case "$ORCH_STAGE" in
  analysis) echo "# analysis of task $ORCH_TASK_ID" > "$ORCH_ARTEFACT_DIR/analysis.md" ;;
  implementation)
    n=$(count impl)
    if [ -e "${ctl}/base-moved" ]; then
      git merge --quiet -X ours --no-edit -m "merge main, keeping task $ORCH_TASK_ID's README" refs/remotes/origin/main
    else
      echo "README by task $ORCH_TASK_ID, round $n" > README.md
      git add README.md
      git commit --quiet -m "task $ORCH_TASK_ID: README, round $n"
    fi
    ;;
  review)
    n=$(count review)
    if [ "$n" = 1 ]; then
      printf 'VERDICT: REQUEST_CHANGES\\nsay which round this is\\n' > "$ORCH_ARTEFACT_DIR/review.md"
    else
      echo "VERDICT: APPROVE" > "$ORCH_ARTEFACT_DIR/review.md"
      if [ "$n" = 2 ]; then
        touch "${ctl}/approved"
        i=0; while [ ! -e "${ctl}/base-moved" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
      fi
    fi
    ;;
esac
`,
  );
  return `sh ${script}`;
}

describe('every transition says why', () => {
  it('review REQUEST_CHANGES and a merge conflict: the events and orch task show give from → to (reason)', async () => {
    const ctl = await tempDir('orch-audit-');
    orch = await startOrch({ env: { ORCH_AGENT: 'command', ORCH_AGENT_CMD: await conflictingAgent(ctl) } });
    const o = orch;
    const t = await createTask(o.rt.svc, { project: 'p', title: 'Review and conflict' }, 'test');
    await o.worker();

    // the second review approved: make main conflict with the branch before the merge runs
    await waitFor(() => fs.access(path.join(ctl, 'approved')).then(() => true, () => false), 60_000, 'second review approved');
    const clone = await tempDir('orch-audit-main-');
    await git(['clone', '--quiet', o.repo, clone]);
    await fs.writeFile(path.join(clone, 'README.md'), 'README rewritten on main meanwhile\n');
    await git(['-c', 'user.name=op', '-c', 'user.email=op@example.invalid', 'commit', '--quiet', '-am', 'main moves'], { cwd: clone });
    await git(['push', '--quiet', 'origin', 'main'], { cwd: clone });
    await fs.rm(clone, { recursive: true, force: true });
    await fs.writeFile(path.join(ctl, 'base-moved'), '');

    const done = await waitStage(o, t.id, 'done', 90_000);
    expect(done.merged_sha).toMatch(/^[0-9a-f]{40}$/);

    const events = await eventsOf(o, t.id);
    const moves = events
      .filter((e) => e.kind === 'stage_changed' || e.kind === 'sent_back')
      .map((e) => {
        const d = e.data as { from: string; to: string };
        return `${e.kind} ${d.from} → ${d.to} (${e.reason})`;
      });
    expect(moves).toEqual([
      'stage_changed analysis → implementation (gate_passed)',
      'stage_changed implementation → review (gate_passed)',
      'sent_back review → implementation (changes_requested)',
      'stage_changed implementation → review (gate_passed)',
      'stage_changed review → merge (review_approved)',
      'sent_back merge → implementation (merge_conflict)',
      'stage_changed implementation → review (gate_passed)',
      'stage_changed review → merge (review_approved)',
      'stage_changed merge → done (merged)',
    ]);
    // every transition has an actor and a reason; the conflict's detail says what conflicted
    for (const e of events.filter((x) => x.kind === 'stage_changed' || x.kind === 'sent_back')) {
      expect(e.actor, e.kind).toMatch(/\S/);
      expect(e.reason, e.kind).toMatch(/\S/);
    }
    const conflict = events.find((e) => e.kind === 'sent_back' && e.reason === 'merge_conflict')!;
    expect((conflict.data as { detail: string }).detail).toMatch(/^merge gate: .* conflicts with main in `README\.md`/);
    const failedMerge = (await jobsOf(o, t.id)).find((j) => j.stage === 'merge' && j.status === 'failed')!;
    expect(failedMerge.reason).toBe('merge_conflict');
    expect(failedMerge.detail).toMatch(/conflicts with main in `README\.md`/);

    // the CLI an operator reads
    const show = await o.spawn(['task', 'show', String(t.id)]);
    expect(show.exitCode, String(show.stderr)).toBe(0);
    const text = String(show.stdout);
    const eventLines = text.split('\nevents:\n')[1]!.split('\n').filter(Boolean);
    const printed = eventLines.map((l) => / {2}((stage_changed|sent_back) .*?) {2}by /.exec(l)?.[1]).filter(Boolean);
    // each line is `from → to (reason)`, a failure's words after a dash
    expect(printed.map((l) => l!.split(' — ')[0])).toEqual(moves);
    expect(printed.find((l) => l!.startsWith('sent_back merge'))).toMatch(/ — merge gate: .*README\.md/);
    expect(text).toMatch(new RegExp(`^\\s*${failedMerge.id}\\s+merge\\s+1\\s+failed\\s+merge_conflict\\s`, 'm'));
    expect(text).toMatch(new RegExp(`job ${failedMerge.id} merge #1 failed.*: merge_conflict — merge gate: .*conflicts with main`));
    expect(text).toMatch(/^\s*\d+\s+review\s+1\s+done\s+changes_requested/m);
  }, 150_000);
});
