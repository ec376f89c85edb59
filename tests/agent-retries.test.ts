/**
 * Context for the next attempt, with the fake claude (the real CLI's shapes) as a scripted agent
 * that does real work in the worktree and reads its prompt:
 * - a failing test command: the second attempt's prompt says which command, its exit code and
 *   the tail of its output; told why, the agent fixes it (2 attempts). With a repository template
 *   that leaves `{{previous_failure}}` out, the same agent repeats its mistake until the task is
 *   blocked (3 attempts) — and the task's events name the template that ran;
 * - a merge conflict: the implementation after it is told the conflicting files and the base;
 * - session resume on / off / gone (ORCH_AGENT_RESUME), only from this host.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { createAgent } from '@orch/shared/agents/index';
import { getJobRun, resumableSession } from '@orch/shared/db/queries/agent-runs';
import { listEvents } from '@orch/shared/db/queries/events';
import { listTaskJobs } from '@orch/shared/db/queries/jobs';
import { getTask } from '@orch/shared/db/queries/tasks';
import { git } from '@orch/shared/host/git';
import { createTask } from '@orch/shared/pipeline/tasks';
import { loadConfig } from '@orch/shared/runtime/config';
import { fakeBin } from './support/fake-agents.ts';
import { startOrch, tempDir, waitFor, type Orch } from './support/harness.ts';

let orch: Orch | undefined;
let dir: string | undefined;
afterEach(async () => {
  await orch?.close();
  orch = undefined;
  if (dir) await fs.rm(dir, { recursive: true, force: true });
  dir = undefined;
});

const ANALYSIS = { when: { stage: 'analysis' }, steps: [{ artefact: '# plan\n\nWrite greeting.txt.\n' }] };
const REVIEW = { when: { stage: 'review' }, steps: [{ artefact: 'VERDICT: APPROVE\n\nFine.\n' }] };

/** Tests of the greeting: TAP-like output, the failure on the last line. */
const TEST_CMD =
  'for i in 1 2 3; do echo "ok $i setup"; done; v="$(cat greeting.txt 2>/dev/null)"; ' +
  'if [ "$v" = "Hello, Ada!" ]; then echo "ok 4 greet"; else echo "not ok 4 greet: expected \\"Hello, Ada!\\", got \\"$v\\""; exit 1; fi';

/** Writes the greeting without its punctuation, unless its prompt shows the failing test. */
const GREETER = {
  rules: [
    ANALYSIS,
    REVIEW,
    { when: { stage: 'implementation', promptIncludes: 'expected "Hello, Ada!"' }, steps: [{ write: { path: 'greeting.txt', content: 'Hello, Ada!\n' } }, { commit: 'greet with punctuation' }, { say: 'Fixed the greeting.' }] },
    { when: { stage: 'implementation' }, steps: [{ write: { path: 'greeting.txt', content: 'Hello Ada\n' } }, { commit: 'greet' }, { say: 'Greeting written.' }] },
  ],
};

async function start(scenario: unknown, env: Record<string, string> = {}, project: Record<string, unknown> = {}) {
  dir ??= await tempDir('orch-agent-retries-');
  const fake = await fakeBin(dir, 'claude', scenario);
  const o = (orch = await startOrch({ env: { ORCH_AGENT: 'claude', ORCH_CLAUDE_BIN: fake.bin, ...env }, project: { test_cmd: TEST_CMD, ...project } }));
  await o.worker({ agent: await createAgent(loadConfig(o.env)) });
  return { o, fake };
}

/** A commit on the remote's main (a repository file, or base moving under a task). */
async function commitToMain(o: Orch, files: Record<string, string>, message: string): Promise<void> {
  const clone = path.join(o.dir, `clone-${Math.random().toString(36).slice(2)}`);
  await git(['clone', '--quiet', o.repo, clone]);
  for (const [f, content] of Object.entries(files)) {
    await fs.mkdir(path.dirname(path.join(clone, f)), { recursive: true });
    await fs.writeFile(path.join(clone, f), content);
  }
  await git(['add', '-A'], { cwd: clone });
  await git(['-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '--quiet', '-m', message], { cwd: clone });
  await git(['push', '--quiet', 'origin', 'main'], { cwd: clone });
}

const settled = (o: Orch, id: number) =>
  waitFor(async () => {
    const t = await getTask(o.rt.svc.db, id);
    return t && (t.stage === 'done' || t.blocked_at) ? t : null;
  }, 60_000, `task ${id} done or blocked`);

const implementationPrompts = async (fake: { prompts(): Promise<string[]> }) => (await fake.prompts()).filter((p) => p.includes('Stage: implementation') || p.startsWith('Implement'));

describe('the next attempt is told why the last one failed', () => {
  it('failing tests: the second prompt has the command, its exit code and the output tail; told why, the agent fixes it in 2 attempts', async () => {
    const { o, fake } = await start(GREETER);
    const task = await createTask(o.rt.svc, { project: 'p', title: 'Greet Ada' }, 'test');
    const t = await settled(o, task.id);
    expect(t.stage).toBe('done');
    const impl = (await listTaskJobs(o.rt.svc.db, task.id)).filter((j) => j.stage === 'implementation');
    expect(impl.map((j) => [j.attempt, j.status, j.reason, j.failure_class])).toEqual([
      [1, 'failed', 'tests_failed_exit_1', 'agent'],
      [2, 'done', null, null],
    ]);
    expect(impl[0]!.detail).toContain('implementation gate: the test command `' + TEST_CMD + '` exited 1. The last lines of its output:');
    expect(impl[0]!.detail).toContain('not ok 4 greet: expected "Hello, Ada!", got "Hello Ada"');
    // an agent failure is retried at once, not after the backoff
    expect(new Date(impl[1]!.run_after).getTime() - new Date(impl[0]!.finished_at!).getTime()).toBeLessThan(1000);
    const [first, second] = await implementationPrompts(fake);
    expect(first).not.toContain('Why the previous attempt failed');
    expect(second).toContain('Stage: implementation (attempt 2)');
    expect(second).toContain('## Why the previous attempt failed');
    expect(second).toContain('Attempt 1 of implementation failed (`tests_failed_exit_1`): implementation gate: the test command');
    expect(second).toContain('exited 1.');
    expect(second).toContain('ok 1 setup');
    expect(second).toContain('not ok 4 greet: expected "Hello, Ada!", got "Hello Ada"');
    expect(second).toContain("The agent's last message in that attempt:\n\n> Greeting written.");
    const events = await listEvents(o.rt.svc.db, task.id);
    const started = events.filter((e) => e.kind === 'agent_started');
    expect(started.map((e) => e.reason)).toEqual(['built-in', 'built-in', 'built-in', 'built-in']);
    expect(started.map((e) => (e.data as { previous_failure: string | null }).previous_failure)).toEqual([null, null, 'tests_failed_exit_1', null]);
  }, 90_000);

  it('a repository template without {{previous_failure}} overrides the built-in one: the same agent is never told, and uses every attempt', async () => {
    const { o, fake } = await start(GREETER, {}, { plane_project: 'plane-proj-1' });
    await commitToMain(o, { '.orch/prompts/implementation.md': 'Implement: {{title}} (attempt {{attempt}}). Commit your work.\n' }, 'our own prompt');
    const task = await createTask(o.rt.svc, { project: 'p', title: 'Greet Ada' }, 'test');
    await sql`UPDATE tasks SET plane_issue_id = 'issue-77' WHERE id = ${task.id}`.execute(o.rt.svc.db);
    const t = await settled(o, task.id);
    expect(t.stage).toBe('implementation');
    const impl = (await listTaskJobs(o.rt.svc.db, task.id)).filter((j) => j.stage === 'implementation');
    expect(impl.map((j) => j.status)).toEqual(['failed', 'failed', 'failed']);
    expect(t.blocked_reason).toMatch(/^attempts_exhausted: tests_failed_exit_1 — implementation gate: the test command .* exited 1\. The last lines of its output:\n/);
    expect(t.blocked_reason).toContain('not ok 4 greet');
    const prompts = await implementationPrompts(fake);
    expect(prompts).toEqual(['Implement: Greet Ada (attempt 1). Commit your work.', 'Implement: Greet Ada (attempt 2). Commit your work.', 'Implement: Greet Ada (attempt 3). Commit your work.']);
    const started = (await listEvents(o.rt.svc.db, task.id)).filter((e) => e.kind === 'agent_started').map((e) => e.reason);
    expect(started).toEqual(['built-in', '.orch/prompts/implementation.md', '.orch/prompts/implementation.md', '.orch/prompts/implementation.md']);
    // the Plane comment on block carries the words, the output as preformatted text
    const comments = await sql<{ html: string }>`SELECT payload->>'html' AS html FROM outbox WHERE task_id = ${task.id} AND kind = 'comment'`.execute(o.rt.svc.db);
    const html = comments.rows.at(-1)!.html;
    expect(html).toMatch(/^<p>orch: task blocked in <b>implementation<\/b>: attempts_exhausted: tests_failed_exit_1 — implementation gate: the test command/);
    expect(html).toContain('<pre>ok 1 setup\nok 2 setup\nok 3 setup\nnot ok 4 greet: expected &quot;Hello, Ada!&quot;, got &quot;Hello Ada&quot;</pre>');
    expect(html).toContain(`<code>orch task retry ${task.id}</code>`);
  }, 90_000);

  it('a merge conflict: the implementation after it is told the conflicting files and the base to catch up with', async () => {
    dir = await tempDir('orch-agent-retries-');
    const marker = path.join(dir, 'base-moved');
    // the review moves main under the task once (a conflicting edit of conflict.txt); told of the
    // conflict, the implementation merges origin/main keeping its side
    const scenario = {
      rules: [
        ANALYSIS,
        {
          when: { stage: 'review' },
          steps: [
            {
              bash: `if [ ! -f '${marker}' ]; then d=$(mktemp -d) && git clone -q "$(git remote get-url origin)" "$d" && echo 'main version' > "$d/conflict.txt" && git -C "$d" add -A && git -C "$d" -c user.name=m -c user.email=m@m commit -qm 'main moves' && git -C "$d" push -q origin main && touch '${marker}'; fi`,
            },
            { artefact: 'VERDICT: APPROVE\n' },
          ],
        },
        { when: { stage: 'implementation', promptIncludes: '`conflict.txt`' }, steps: [{ bash: 'git fetch -q origin && git -c user.name=a -c user.email=a@a merge -q -s ours origin/main -m "merge main"' }, { say: 'Merged main.' }] },
        { when: { stage: 'implementation' }, steps: [{ write: { path: 'conflict.txt', content: 'task version\n' } }, { commit: 'task edit' }] },
      ],
    };
    const { o, fake } = await start(scenario, {}, { test_cmd: undefined });
    const task = await createTask(o.rt.svc, { project: 'p', title: 'Edit conflict' }, 'test');
    const t = await settled(o, task.id);
    expect(t.stage).toBe('done');
    const jobs = await listTaskJobs(o.rt.svc.db, task.id);
    expect(jobs.map((j) => `${j.stage}:${j.status}${j.reason ? `:${j.reason}` : ''}`)).toEqual([
      'analysis:done',
      'implementation:done',
      'review:done',
      'merge:failed:merge_conflict',
      'implementation:done',
      'review:done',
      'merge:done',
    ]);
    const merge = jobs.find((j) => j.reason === 'merge_conflict')!;
    expect(merge.detail).toMatch(/^merge gate: orch\/\d+-edit-conflict conflicts with main in `conflict\.txt` \(.*\)\. Bring the branch up to date with origin\/main/);
    const prompts = await implementationPrompts(fake);
    expect(prompts).toHaveLength(2);
    expect(prompts[1]).toContain('## Why the previous attempt failed');
    expect(prompts[1]).toContain('The merge of this branch failed (`merge_conflict`):');
    expect(prompts[1]).toContain('conflicts with main in `conflict.txt`');
    expect(prompts[1]).toContain('git merge origin/main');
    const sentBack = (await listEvents(o.rt.svc.db, task.id)).find((e) => e.kind === 'sent_back')!;
    expect(sentBack.reason).toBe('merge_conflict');
    expect((sentBack.data as { detail: string }).detail).toBe(merge.detail);
  }, 90_000);
});

describe('session resume (ORCH_AGENT_RESUME)', () => {
  const argvs = async (fake: { argvFile: string }) => JSON.parse(await fs.readFile(fake.argvFile, 'utf8')) as string[];

  it('on: the retry continues the session of the failed attempt on this host; its cost is its own', async () => {
    const { o, fake } = await start(GREETER, { ORCH_AGENT_RESUME: 'true' });
    const task = await createTask(o.rt.svc, { project: 'p', title: 'Greet Ada' }, 'test');
    expect((await settled(o, task.id)).stage).toBe('done');
    const impl = (await listTaskJobs(o.rt.svc.db, task.id)).filter((j) => j.stage === 'implementation');
    const [r1, r2] = await Promise.all(impl.map(async (j) => (await getJobRun(o.rt.svc.db, j.id))!));
    expect(r1!.resumed_session_id).toBeNull();
    expect(r2!.resumed_session_id).toBe(r1!.session_id);
    expect(r2!.session_id).toBe(r1!.session_id);
    const started = (await listEvents(o.rt.svc.db, task.id)).filter((e) => e.kind === 'agent_started').map((e) => (e.data as { resumes: string | null }).resumes);
    expect(started).toEqual([null, null, r1!.session_id, null]);
    // claude reports the session's cumulative cost; the run records its own part
    const transcriptResult = r2!.log_tail.split('\n').filter((l) => l.includes('"type":"result"')).at(-1)!;
    const total = (JSON.parse(transcriptResult) as { total_cost_usd: number }).total_cost_usd;
    expect(Number(r2!.cost_usd)).toBeCloseTo(total - Number(r1!.cost_usd), 5);
    // only this host resumes: seen from another host there is nothing to resume
    const here = await resumableSession(o.rt.svc.db, { taskId: task.id, stage: 'implementation', host: 'test-host', agent: 'claude', beforeJobId: impl[1]!.id + 1000 });
    expect(here?.sessionId).toBe(r1!.session_id);
    expect(await resumableSession(o.rt.svc.db, { taskId: task.id, stage: 'implementation', host: 'other-host', agent: 'claude', beforeJobId: impl[1]!.id + 1000 })).toBeNull();
  }, 90_000);

  it('off (the default): every attempt starts a new session', async () => {
    const { o, fake } = await start(GREETER);
    const task = await createTask(o.rt.svc, { project: 'p', title: 'Greet Ada' }, 'test');
    expect((await settled(o, task.id)).stage).toBe('done');
    const impl = (await listTaskJobs(o.rt.svc.db, task.id)).filter((j) => j.stage === 'implementation');
    const [r1, r2] = await Promise.all(impl.map(async (j) => (await getJobRun(o.rt.svc.db, j.id))!));
    expect(r2!.resumed_session_id).toBeNull();
    expect(r2!.session_id).not.toBe(r1!.session_id);
    expect(await argvs(fake)).not.toContain('--resume');
  }, 90_000);

  it('gone: the session file was removed; orch starts fresh in the same job and says so', async () => {
    const { o } = await start(GREETER, { ORCH_AGENT_RESUME: 'true' });
    // the project's test command (it runs after the agent exited) removes claude's sessions from the agent home
    const home = path.join(o.env.ORCH_WORKTREE_ROOT!, 'agent-home', 'claude');
    await sql`UPDATE projects SET test_command = ${`rm -rf '${home}/projects'; ${TEST_CMD}`} WHERE id = ${o.project.id}`.execute(o.rt.svc.db);
    const task = await createTask(o.rt.svc, { project: 'p', title: 'Greet Ada' }, 'test');
    const t = await settled(o, task.id);
    expect(t.stage, t.blocked_reason ?? '').toBe('done');
    const impl = (await listTaskJobs(o.rt.svc.db, task.id)).filter((j) => j.stage === 'implementation');
    expect(impl.map((j) => j.status)).toEqual(['failed', 'done']);
    const [r1, r2] = await Promise.all(impl.map(async (j) => (await getJobRun(o.rt.svc.db, j.id))!));
    expect(r2).toMatchObject({ exit_code: 0, resumed_session_id: null });
    expect(r2!.session_id).not.toBe(r1!.session_id);
    const events = await listEvents(o.rt.svc.db, task.id);
    const missing = events.filter((e) => e.kind === 'session_missing');
    expect(missing).toHaveLength(1);
    expect(missing[0]).toMatchObject({ job_id: impl[1]!.id, reason: 'started fresh', data: { session: r1!.session_id, agent: 'claude' } });
  }, 90_000);
});
