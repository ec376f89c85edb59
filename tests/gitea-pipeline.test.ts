/**
 * The pipeline through the real Gitea forge (against the fake Gitea): a project with
 * `gitea: owner/repo` runs a task to done — the PR is opened by implementation, merged by the merge
 * stage with the head sha, the branch deleted — and a merge conflict sends a task back to
 * implementation.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { listEvents } from '@orch/shared/db/queries/events';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getTask } from '@orch/shared/db/queries/tasks';
import { git } from '@orch/shared/host/git';
import { createTask } from '@orch/shared/pipeline/tasks';
import { startFakeGitea, type FakeGitea } from './fakes/fake-gitea.ts';
import { branchesOf, startOrch, tempDir, waitFor, type Orch } from './support/harness.ts';

const TOKEN = 'gitea-token-abc';
const OWNER = 'acme';

let gitea: FakeGitea;
let root: string;
let repoCount = 0;
let orch: Orch | undefined;

beforeAll(async () => {
  root = await tempDir('orch-gitea-pipeline-');
  gitea = await startFakeGitea({ reposRoot: path.join(root, 'repos'), token: TOKEN });
});
afterAll(async () => {
  await gitea?.close();
  if (root) await fs.rm(root, { recursive: true, force: true });
});
afterEach(async () => {
  await orch?.close();
  orch = undefined;
});

async function giteaOrch(env: Record<string, string> = {}) {
  const name = `app-${++repoCount}`;
  const bare = await gitea.createRepo(OWNER, name);
  orch = await startOrch({
    env: { GITEA_BASE_URL: gitea.url, GITEA_TOKEN: TOKEN, ...env },
    project: { slug: 'p', repo: bare, gitea: `${OWNER}/${name}` },
  });
  return { orch, bare, name, repoPath: `/api/v1/repos/${OWNER}/${name}` };
}

const stageOf = async (o: Orch, id: number) => (await getTask(o.rt.svc.db, id))?.stage;

describe('pipeline through the Gitea forge', () => {
  it('a demo task runs to done: PR opened by implementation, merged by merge, branch deleted', async () => {
    const { orch: o, bare, repoPath } = await giteaOrch();
    expect(o.project).toMatchObject({ gitea_owner: OWNER, gitea_repo: expect.stringMatching(/^app-/) });
    await o.worker();
    const since = gitea.requests.length;
    const task = await createTask(o.rt.svc, { project: 'p', title: 'Hello via Gitea' }, 'test');
    await waitFor(async () => (await stageOf(o, task.id)) === 'done', 45_000, 'task done');
    const t = (await getTask(o.rt.svc.db, task.id))!;
    // the worker deletes the feature branch right after the finalize that made the task done
    await waitFor(async () => (await branchesOf(bare)).length === 1, 10_000, 'feature branch deleted');

    const calls = gitea.requests.slice(since).filter((r) => r.path.startsWith(repoPath));
    const created = calls.find((r) => r.method === 'POST' && r.path === `${repoPath}/pulls`);
    expect(created?.status).toBe(201);
    const merge = calls.filter((r) => r.method === 'POST' && /\/pulls\/\d+\/merge$/.test(r.path));
    expect(merge.map((r) => r.status)).toContain(200);
    const del = calls.find((r) => r.method === 'DELETE' && r.path.startsWith(`${repoPath}/branches/`));
    expect(del?.status).toBe(204);
    // the PR was opened before the merge stage ran: by implementation
    expect(calls.indexOf(created!)).toBeLessThan(calls.indexOf(merge[0]!));
    const jobs = await listTaskJobs(o.rt.svc.db, task.id);
    expect(jobs.map((j) => `${j.stage}:${j.status}`)).toEqual(['analysis:done', 'implementation:done', 'review:done', 'merge:done']);

    // base has the merge commit whose second parent is the feature branch's head; branch gone
    const parents = (await git(['rev-list', '--parents', '-n', '1', 'main'], { cwd: bare })).stdout.split(' ');
    expect(parents).toHaveLength(3);
    expect(await branchesOf(bare)).toEqual(['main']);
    expect(t.merged_sha).toBe(parents[0]);
  });

  it('a merge conflict sends the task back to implementation (sent_back event)', async () => {
    // Both tasks rewrite the first line of README.md; implementation waits until both have
    // committed, so both branches fork from the same base and the second merge conflicts.
    const barrier = path.join(root, `barrier-${repoCount + 1}`);
    await fs.mkdir(barrier, { recursive: true });
    const agent = path.join(root, `conflict-agent-${repoCount + 1}.sh`);
    await fs.writeFile(
      agent,
      `#!/bin/sh
set -e
mkdir -p "$ORCH_ARTEFACT_DIR"
case "$ORCH_STAGE" in
  analysis) echo "# analysis of $ORCH_TASK_ID" > "$ORCH_ARTEFACT_DIR/analysis.md" ;;
  implementation)
    echo "README rewritten by task $ORCH_TASK_ID, attempt $ORCH_ATTEMPT, $$" > README.md
    git add README.md
    git commit --quiet -m "task $ORCH_TASK_ID rewrites README"
    touch "${barrier}/$ORCH_TASK_ID"
    i=0
    while [ "$(ls "${barrier}" | wc -l)" -lt 2 ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
    ;;
  review) echo "VERDICT: APPROVE" > "$ORCH_ARTEFACT_DIR/review.md" ;;
esac
`,
    );
    const { orch: o, bare } = await giteaOrch({ ORCH_AGENT: 'command', ORCH_AGENT_CMD: `sh ${agent}`, ORCH_MAX_REVIEW_ROUNDS: '1' });
    await o.worker();
    const a = await createTask(o.rt.svc, { project: 'p', title: 'first edit' }, 'test');
    const b = await createTask(o.rt.svc, { project: 'p', title: 'second edit' }, 'test');
    const db = o.rt.svc.db;

    const sentBack = await waitFor(async () => {
      const r = await sql<{ task_id: number; reason: string | null; data: { from?: string; to?: string } }>`
        SELECT task_id, reason, data FROM task_events WHERE kind = 'sent_back' AND task_id IN (${a.id}, ${b.id})`.execute(db);
      return r.rows[0] ?? null;
    }, 45_000, 'a sent_back event');
    expect(sentBack.reason).toMatch(/merge_conflict/);
    expect(sentBack.data).toMatchObject({ from: 'merge', to: 'implementation' });

    // the other task landed; the one sent back is in implementation (or past it again), not done
    const winner = sentBack.task_id === a.id ? b.id : a.id;
    await waitFor(async () => (await stageOf(o, winner)) === 'done', 30_000, 'the first merge done');
    const loser = (await getTask(db, sentBack.task_id))!;
    expect(loser.stage).not.toBe('done');
    const mergeJobs = (await listTaskJobs(db, sentBack.task_id)).filter((j) => j.stage === 'merge');
    expect(mergeJobs[0]!.reason).toMatch(/merge_conflict/);
    const events = await listEvents(db, sentBack.task_id);
    expect(events.some((e) => e.kind === 'sent_back')).toBe(true);
    // base holds exactly the winner's README, no conflict markers
    const readme = (await git(['show', 'main:README.md'], { cwd: bare })).stdout;
    expect(readme).toContain(`task ${winner},`);
    expect(readme).not.toMatch(/<<<<<<<|>>>>>>>/);
  });
});
