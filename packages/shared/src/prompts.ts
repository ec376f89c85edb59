/**
 * Stage prompts: `{{name}}` templates. A repository may carry its own, `.orch/prompts/<stage>.md`
 * on the branch the agent works on, which orch uses over the built-in template of
 * packages/shared/prompts/<stage>.md (same variables, PROMPT_VARIABLES); the task's
 * `agent_started` event says which one ran. An unknown variable renders empty.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { lastLines } from './pipeline/failures.ts';

const TEMPLATE_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'prompts');

/** Where a repository keeps its own templates, relative to its root. */
const REPO_PROMPT_DIR = path.join('.orch', 'prompts');

/** Every variable a template may use, and what it holds (the README's table). */
export const PROMPT_VARIABLES: Readonly<Record<string, string>> = {
  task_id: "the task's id",
  project: "the project's slug",
  title: "the task's title",
  body: "the task's description",
  stage: 'the stage: analysis, implementation or review',
  attempt: 'the attempt of this stage, from 1',
  branch: 'the feature branch, checked out',
  base: 'the base branch',
  artefact_dir: 'where the stage writes its artefact (`analysis.md`, `review.md`)',
  analysis: "the analysis artefact, or `(none)`",
  review_feedback: 'after a review asked for changes: that review; else empty',
  test_hint: "a sentence naming the project's test command, when it has one",
  previous_failure:
    'when the last attempt failed (this stage\'s previous attempt, or the merge that conflicted): a section "Why the previous attempt failed" with its reason — the unmet gate, the test command\'s exit code and output tail, the conflicting files and the base to catch up with, the agent\'s last message; else empty',
};

export interface RenderedPrompt {
  text: string;
  /** `built-in`, or the repository's template path (`.orch/prompts/<stage>.md`) */
  template: string;
}

const FALLBACK_TEMPLATE = 'Task {{task_id}}: {{title}}\n\n{{body}}\n\nStage: {{stage}}.\n\n{{previous_failure}}\n';

export async function renderPrompt(
  stage: string,
  vars: Record<string, string | number>,
  opts: { repoDir?: string; templateDir?: string } = {},
): Promise<RenderedPrompt> {
  let template: string | null = null;
  let source = 'built-in';
  if (opts.repoDir) {
    const own = path.join(REPO_PROMPT_DIR, `${stage}.md`);
    template = await fs.readFile(path.join(opts.repoDir, own), 'utf8').catch(() => null);
    if (template !== null && template.trim() !== '') source = own;
    else template = null;
  }
  template ??= await fs.readFile(path.join(opts.templateDir ?? TEMPLATE_DIR, `${stage}.md`), 'utf8').catch(() => FALLBACK_TEMPLATE);
  const all: Record<string, string | number> = { stage, ...vars };
  const text = template.replace(/\{\{(\w+)\}\}/g, (_, k: string) => String(all[k] ?? ''));
  return { text: text.replace(/\n{4,}/g, '\n\n\n'), template: source };
}

/** What is known about the attempt before this one, for the next prompt. */
export interface PreviousFailure {
  stage: string;
  attempt: number;
  /** the stable code (jobs.reason) */
  reason: string;
  /** the words (jobs.detail) */
  detail: string | null;
  /** the test command's output of that attempt, when its tests failed */
  testOutput?: string | null;
  /** that attempt's agent, its last message */
  lastMessage?: string | null;
}

/** Lines of test output a prompt quotes. */
const PROMPT_TEST_TAIL_LINES = 60;

/** Reasons whose words are carried by another variable (review_feedback) or say nothing to an agent. */
const SILENT_REASONS: ReadonlySet<string> = new Set(['changes_requested', 'cancel_requested']);

const quote = (s: string) => s.split('\n').map((l) => `> ${l}`).join('\n');

/** The section "Why the previous attempt failed" (`{{previous_failure}}`), or '' when there is nothing to say. */
export function previousFailureSection(p: PreviousFailure | null): string {
  if (!p || SILENT_REASONS.has(p.reason)) return '';
  const what = p.stage === 'merge' ? `The merge of this branch failed (\`${p.reason}\`)` : `Attempt ${p.attempt} of ${p.stage} failed (\`${p.reason}\`)`;
  const out = ['## Why the previous attempt failed', ''];
  const detail = (p.detail ?? '').trim();
  const tail = p.testOutput ? lastLines(p.testOutput, PROMPT_TEST_TAIL_LINES, 6000) : '';
  if (tail) {
    // the detail's first line names the command and its exit code; the prompt quotes more output than it does
    out.push(`${what}: ${detail.split('\n')[0] ?? ''}`, '', 'The last lines of the test command\'s output:', '', '```', tail, '```');
  } else {
    out.push(detail ? `${what}:` : `${what}.`);
    if (detail) out.push('', detail);
  }
  const last = (p.lastMessage ?? '').trim();
  if (last) out.push('', "The agent's last message in that attempt:", '', quote(last.length > 3000 ? `${last.slice(0, 2999)}…` : last));
  out.push('', 'Fix what made it fail; do not repeat it.');
  return out.join('\n');
}
