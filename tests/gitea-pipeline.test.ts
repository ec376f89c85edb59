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
import { createGiteaReporter, giteaOutboxChannel } from '@orch/shared/forge/gitea-reports';
import { createTask } from '@orch/shared/pipeline/tasks';
import { createOutboxDeliverer } from '@orch/shared/tracker/outbox-deliverer';
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

describe('the work shown on the pull request', () => {
  const PUBLIC = 'http://orch.example.test';
  const pendingGitea = async (o: Orch) =>
    (await sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE target = 'gitea' AND delivered_at IS NULL`.execute(o.rt.svc.db)).rows[0]!.n;

  /** what a person sees on the PR: its comments and, per context, the states in the order posted */
  async function shownOn(name: string, prNumber: number, sha: string) {
    const comments = gitea.comments(OWNER, name, prNumber).map((c) => c.body);
    const byContext: Record<string, string[]> = {};
    for (const s of gitea.statuses(OWNER, name, sha)) (byContext[s.context] ??= []).push(s.state);
    return { comments, byContext, statuses: gitea.statuses(OWNER, name, sha) };
  }

  function expectShown(shown: Awaited<ReturnType<typeof shownOn>>, taskId: number) {
    const link = `${PUBLIC}/#task=${taskId}`;
    expect(shown.comments).toHaveLength(2);
    expect(shown.comments[0]).toMatch(/^\*\*orch: analysis\*\*/);
    expect(shown.comments[1]).toMatch(/^\*\*orch: review — APPROVE\*\*/);
    for (const c of shown.comments) expect(c).toContain(`[orch task ${taskId}](${link})`);
    expect(shown.byContext).toEqual({
      'orch/implementation': ['pending', 'success'],
      'orch/review': ['pending', 'success'],
      'orch/merge': ['pending', 'success'],
    });
    expect(shown.statuses.every((s) => s.target_url === link)).toBe(true);
  }

  it('a task run to done leaves the analysis and the review as comments and a status per gate on the PR head', async () => {
    const { orch: o, name } = await giteaOrch({ ORCH_PUBLIC_URL: PUBLIC });
    await o.worker();
    const deliverer = createOutboxDeliverer({ db: o.rt.svc.db, channel: giteaOutboxChannel(createGiteaReporter({ baseUrl: gitea.url, token: TOKEN })), log: o.log });
    deliverer.start(0.1);
    try {
      const task = await createTask(o.rt.svc, { project: 'p', title: 'Shown on the PR', body: 'please' }, 'test');
      await waitFor(async () => (await stageOf(o, task.id)) === 'done', 45_000, 'task done');
      await waitFor(async () => (await pendingGitea(o)) === 0, 10_000, 'gitea outbox drained');
      const t = (await getTask(o.rt.svc.db, task.id))!;
      const head = (await sql<{ sha: string }>`SELECT data->>'sha' AS sha FROM task_events WHERE task_id = ${task.id} AND kind = 'branch_pushed' ORDER BY id DESC LIMIT 1`.execute(o.rt.svc.db)).rows[0]!.sha;
      expectShown(await shownOn(name, t.pr_number!, head), task.id);
      // the PR links back to the task too
      const pr = (await (await fetch(`${gitea.url}/api/v1/repos/${OWNER}/${name}/pulls/${t.pr_number}`, { headers: { authorization: `token ${TOKEN}` } })).json()) as { body: string };
      expect(pr.body).toBe(`please\n\n---\nOpened by orch for [task ${task.id}](${PUBLIC}/#task=${task.id}).`);
    } finally {
      await deliverer.stop();
    }
  });

  it('Gitea down while they are posted: nothing is lost, everything arrives later in order', async () => {
    const { orch: o, name } = await giteaOrch({ ORCH_PUBLIC_URL: PUBLIC });
    await o.worker();
    const db = o.rt.svc.db;
    const deliverer = createOutboxDeliverer({ db, channel: giteaOutboxChannel(createGiteaReporter({ baseUrl: gitea.url, token: TOKEN })), log: o.log });
    // comments and statuses fail (503) for as long as the outage lasts; the pipeline itself goes on
    gitea.failNext(1_000_000, 503, /\/(issues\/\d+\/comments|statuses\/)/);
    try {
      deliverer.start(0.1);
      const task = await createTask(o.rt.svc, { project: 'p', title: 'Posted after an outage' }, 'test');
      await waitFor(async () => (await stageOf(o, task.id)) === 'done', 45_000, 'task done');
      await waitFor(async () => (await sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE target = 'gitea' AND attempts > 0`.execute(db)).rows[0]!.n > 0, 10_000, 'failed attempts');
      const t = (await getTask(db, task.id))!;
      expect(gitea.comments(OWNER, name, t.pr_number!)).toEqual([]);
      expect(await pendingGitea(o)).toBe(8); // 2 comments + 3 gates × (pending, success)
      const errors = await sql<{ last_error: string }>`SELECT last_error FROM outbox WHERE target = 'gitea' AND last_error IS NOT NULL`.execute(db);
      expect(errors.rows.every((r) => /HTTP 503/.test(r.last_error) && !r.last_error.includes(TOKEN))).toBe(true);
      // Gitea is back; the backoff would wait up to 10 min, so make the rows due now
      gitea.failNext(0, 503);
      await sql`UPDATE outbox SET next_attempt_at = now() WHERE target = 'gitea' AND delivered_at IS NULL`.execute(db);
      await waitFor(async () => (await pendingGitea(o)) === 0, 15_000, 'gitea outbox drained');
      const head = (await sql<{ sha: string }>`SELECT data->>'sha' AS sha FROM task_events WHERE task_id = ${task.id} AND kind = 'branch_pushed' ORDER BY id DESC LIMIT 1`.execute(db)).rows[0]!.sha;
      expectShown(await shownOn(name, t.pr_number!, head), task.id);
    } finally {
      gitea.failNext(0, 503);
      await deliverer.stop();
    }
  });

  it('a merge push the server rejects: the job says so in words (push_rejected: …), one merge call, no out-of-date loop', async () => {
    // three attempts allowed: a refusal by the server blocks at once (a configuration failure)
    const { orch: o, name, bare } = await giteaOrch({ ORCH_JOB_MAX_ATTEMPTS: '3' });
    await gitea.rejectPushes(OWNER, name, 'main', 'protected: releases only');
    await o.worker();
    const since = gitea.requests.length;
    const task = await createTask(o.rt.svc, { project: 'p', title: 'Refused by a hook' }, 'test');
    const blocked = await waitFor(async () => {
      const t = await getTask(o.rt.svc.db, task.id);
      return t?.blocked_at ? t : null;
    }, 45_000, 'task blocked');
    expect(blocked.stage).toBe('merge');
    const merge = (await listTaskJobs(o.rt.svc.db, task.id)).filter((j) => j.stage === 'merge');
    expect(merge).toHaveLength(1);
    expect(merge[0]!.reason).toBe('push_rejected');
    expect(merge[0]!.failure_class).toBe('config');
    expect(merge[0]!.detail).toContain('the Gitea server rejected the merge push (a hook or branch protection): protected: releases only');
    expect(blocked.blocked_reason).toMatch(/^push_rejected — .*the Gitea server rejected the merge push/);
    const mergeCalls = gitea.requests.slice(since).filter((r) => r.method === 'POST' && r.path.endsWith(`/repos/${OWNER}/${name}/pulls/${blocked.pr_number}/merge`));
    expect(mergeCalls.map((r) => r.status)).toEqual([409]);
    expect(gitea.requests.slice(since).some((r) => r.path.endsWith('/update'))).toBe(false);
    expect(await branchesOf(bare)).toContain('main');
  });
});
