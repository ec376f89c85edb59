/**
 * The pure decisions behind Plane and Gitea as they are today (ADR 0008), as tables: a Plane body
 * as Markdown, Plane's datetimes as UTC instants, the poll's "is this a move?", how far back a pass
 * lists, what an outbox row stands for, the words on a pull request, a PushRejected message.
 */
import { describe, expect, it } from 'vitest';
import { giteaCallOf } from '@orch/shared/forge/gitea-reports';
import { pushRejectedMessage } from '@orch/shared/forge/gitea';
import { listSince, pollDecision, FULL_PASS_EVERY } from '@orch/shared/intake/reconcile';
import { analysisComment, pullRequestBody, reviewComment, taskUrl } from '@orch/shared/pipeline/forge-report';
import { planeHtmlToMarkdown, planeIssueBody } from '@orch/shared/tracker/plane-body';
import { planeCallOf } from '@orch/shared/tracker/plane-outbox';
import { utcInstant } from '@orch/shared/tracker/plane-time';

describe('planeHtmlToMarkdown: Plane editor markup (packages/editor) → Markdown', () => {
  const cases: Array<[string, string, string]> = [
    ['a paragraph with the editor class and block id', '<p class="editor-paragraph-block" data-id="9f">Users want it.</p>', 'Users want it.'],
    ['paragraphs stay apart (strip_tags would glue them)', '<p>one</p><p>two</p>', 'one\n\ntwo'],
    ['lxml wraps several blocks in a div', '<div><p>a</p><p>b</p></div>', 'a\n\nb'],
    ['text is not escaped', '<p>snake_case *stars* #hash 1. one</p>', 'snake_case *stars* #hash 1. one'],
    ['entities are decoded', '<p>a &lt;b&gt; &amp; c</p>', 'a <b> & c'],
    ['bold, italic, inline code', '<p><strong>b</strong> <em>i</em> <code class="rounded-sm bg-layer-3" spellcheck="false">x()</code></p>', '**b** *i* `x()`'],
    ['headings', '<h1 class="editor-heading-block">T</h1><h3 class="editor-heading-block">S</h3>', '# T\n\n### S'],
    ['bullet list of paragraphs', '<ul class="list-disc pl-7"><li class="not-prose space-y-2"><p>a</p></li><li><p>b</p></li></ul>', '- a\n- b'],
    ['ordered list with a start', '<ol start="3" class="list-decimal pl-7"><li><p>c</p></li><li><p>d</p></li></ol>', '3. c\n4. d'],
    [
      'task list',
      '<ul data-type="taskList" class="not-prose pl-2 space-y-2"><li data-type="taskItem" data-checked="true"><label><input type="checkbox" checked><span></span></label><div><p>done</p></div></li><li data-type="taskItem" data-checked="false"><label><input type="checkbox"><span></span></label><div><p>todo</p></div></li></ul>',
      '- [x] done\n- [ ] todo',
    ],
    ['code block with its language', '<pre><code class="language-ts">const a = 1;\nf(a);</code></pre>', '```ts\nconst a = 1;\nf(a);\n```'],
    ['a mention keeps its place and the spaces around it', '<p>ask <mention-component id="m1" entity_identifier="u-7" entity_name="user_mention"></mention-component> now</p>', 'ask @u-7 now'],
    ['an image', '<image-component src="https://assets.example/a.png" width="35%" alignment="left"></image-component>', '![image](https://assets.example/a.png)'],
    ['a table', '<table><tbody><tr><th><p>h1</p></th><th><p>h2</p></th></tr><tr><td><p>a|b</p></td><td><p>c</p></td></tr></tbody></table>', '| h1 | h2 |\n| --- | --- |\n| a\\|b | c |'],
    ['a line break', '<p>a<br>b</p>', 'a\nb'],
    ["Plane's empty editor", '<p></p>', ''],
  ];
  it.each(cases)('%s', (_name, html, md) => {
    expect(planeHtmlToMarkdown(html)).toBe(md);
  });

  it('planeIssueBody: the HTML when there is any, else the stripped text, blank → null', () => {
    expect(planeIssueBody('<p>x</p>', 'ignored')).toBe('x');
    expect(planeIssueBody('<p></p>', '')).toBeNull();
    expect(planeIssueBody(null, 'old payload text')).toBe('old payload text');
    expect(planeIssueBody(undefined, '  ')).toBeNull();
    expect(planeIssueBody('', null)).toBeNull();
  });
});

describe('utcInstant: Plane datetimes (REST in the owner\'s zone, webhooks in UTC) as one instant', () => {
  const cases: Array<[string | null, string | null]> = [
    ['2024-05-01T10:00:00.123456Z', '2024-05-01T10:00:00.123456Z'],
    ['2024-05-01T15:30:00.123456+05:30', '2024-05-01T10:00:00.123456Z'],
    ['2024-05-01T06:00:00.123456-04:00', '2024-05-01T10:00:00.123456Z'],
    ['2024-05-01T10:00:00Z', '2024-05-01T10:00:00.000000Z'],
    ['2024-05-01T10:00:00.5+00:00', '2024-05-01T10:00:00.500000Z'],
    ['2024-05-01T10:00:00.1234567Z', '2024-05-01T10:00:00.123456Z'],
    ['2024-05-01T00:30:00+01:00', '2024-04-30T23:30:00.000000Z'],
    ['2024-05-01T10:00:00', null],
    ['yesterday', null],
    [null, null],
  ];
  it.each(cases)('%s → %s', (input, want) => {
    expect(utcInstant(input)).toBe(want);
  });
});

describe('the poll acts only on a move', () => {
  const A = 'state-a';
  const B = 'state-b';
  const cases: Array<[string, { state_id: string; state_at: string } | undefined, string, string, ReturnType<typeof pollDecision>]> = [
    ['never seen', undefined, A, '2024-05-01T10:00:00.000000Z', 'act'],
    ['the same state (the webhook, or orch, saw it already), even after an edit', { state_id: A, state_at: '2024-05-01T10:00:00.000000Z' }, A, '2024-05-01T11:00:00.000000Z', 'same_state'],
    ['known elsewhere before: moved back', { state_id: B, state_at: '2024-05-01T10:00:00.000000Z' }, A, '2024-05-01T10:00:00.000001Z', 'act'],
    ['known elsewhere since: the list is older than what orch knows', { state_id: B, state_at: '2024-05-01T10:00:01.000000Z' }, A, '2024-05-01T10:00:00.000000Z', 'stale'],
  ];
  it.each(cases)('%s', (_n, last, state, at, want) => {
    expect(pollDecision(last, state, at)).toBe(want);
  });

  it('listSince: everything on the first pass and every FULL_PASS_EVERY intervals, else a minute before the watermark', () => {
    const w = new Date('2024-05-01T10:00:00Z');
    expect(listSince({ watermark: null, fullAgeS: null }, 60)).toBeNull();
    expect(listSince({ watermark: w, fullAgeS: null }, 60)).toBeNull();
    expect(listSince({ watermark: w, fullAgeS: FULL_PASS_EVERY * 60 }, 60)).toBeNull();
    expect(listSince({ watermark: w, fullAgeS: 120 }, 60)).toEqual(new Date('2024-05-01T09:59:00Z'));
  });
});

describe('outbox rows', () => {
  it('planeCallOf', () => {
    expect(planeCallOf({ kind: 'set_state', payload: { projectId: 'p', issueId: 'i', role: 'done' } })).toEqual({ kind: 'set_state', projectId: 'p', issueId: 'i', role: 'done' });
    expect(planeCallOf({ kind: 'comment', payload: JSON.stringify({ projectId: 'p', issueId: 'i', html: '<p>x</p>' }) })).toEqual({ kind: 'comment', projectId: 'p', issueId: 'i', html: '<p>x</p>' });
    expect(planeCallOf({ kind: 'set_state', payload: { projectId: 'p', issueId: 'i', role: 'start' } })).toMatch(/no valid role/);
    expect(planeCallOf({ kind: 'comment', payload: { projectId: 'p' } })).toMatch(/lacks/);
    expect(planeCallOf({ kind: 'pr_comment', payload: { projectId: 'p', issueId: 'i' } })).toMatch(/not a Plane kind/);
  });

  it('giteaCallOf', () => {
    const ref = { owner: 'acme', repo: 'web', pr: 3 };
    expect(giteaCallOf({ kind: 'pr_comment', payload: { ...ref, body: 'hi' } })).toEqual({ kind: 'pr_comment', c: { ...ref, body: 'hi' } });
    expect(giteaCallOf({ kind: 'commit_status', payload: { ...ref, sha: 'abc', context: 'orch/review', state: 'success', description: 'ok', targetUrl: null } })).toEqual({
      kind: 'commit_status',
      s: { ...ref, sha: 'abc', context: 'orch/review', state: 'success', description: 'ok', targetUrl: null },
    });
    expect(giteaCallOf({ kind: 'commit_status', payload: { ...ref, sha: 'abc', context: 'c', state: 'skipped' } })).toMatch(/no valid state/);
    expect(giteaCallOf({ kind: 'pr_comment', payload: { ...ref, pr: 0, body: 'x' } })).toMatch(/owner\/repo\/pr/);
    expect(giteaCallOf({ kind: 'set_state', payload: { ...ref } })).toMatch(/not a Gitea kind/);
  });
});

describe('what a pull request shows', () => {
  it('taskUrl and pullRequestBody link back when ORCH_PUBLIC_URL is set', () => {
    expect(taskUrl(undefined, 4)).toBeNull();
    expect(taskUrl('https://orch.example.com/', 4)).toBe('https://orch.example.com/#task=4');
    expect(pullRequestBody({ id: 4, body: 'Do it.' }, { publicUrl: 'https://orch.example.com' })).toBe('Do it.\n\n---\nOpened by orch for [task 4](https://orch.example.com/#task=4).');
    expect(pullRequestBody({ id: 4, body: '' }, {})).toBe('Opened by orch for task 4.');
  });

  it('reviewComment: the verdict line, then the text; analysisComment', () => {
    expect(reviewComment('VERDICT: APPROVE\n\nLooks good.', 0)).toBe('**orch: review — APPROVE**\n\nLooks good.');
    expect(reviewComment('VERDICT: REQUEST_CHANGES\nAdd a test.', 1)).toBe('**orch: review (round 2) — REQUEST_CHANGES**\n\nAdd a test.');
    expect(reviewComment('no verdict here', 0)).toBe('**orch: review — no verdict**\n\nno verdict here');
    expect(reviewComment(undefined, 0)).toBe('**orch: review — no verdict**');
    expect(analysisComment('# Plan\n\nsteps')).toBe('**orch: analysis**\n\n# Plan\n\nsteps');
    expect(analysisComment('')).toMatch(/no analysis artefact/);
    expect(analysisComment('x'.repeat(70_000)).length).toBeLessThan(61_000);
  });

  it("pushRejectedMessage: the hook's words from Gitea's PushRejected answer", () => {
    expect(pushRejectedMessage('PushRejected with remote message: main is frozen')).toBe('main is frozen');
    expect(pushRejectedMessage('PushRejected with remote message: line one\nline two')).toBe('line one\nline two');
    expect(pushRejectedMessage('PushRejected without remote error message')).toBe('');
  });
});
