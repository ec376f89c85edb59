/** Stage prompts: templates in packages/shared/prompts/<stage>.md, `{{name}}` placeholders. */
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const TEMPLATE_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'prompts');

export async function renderPrompt(stage: string, vars: Record<string, string | number>, templateDir = TEMPLATE_DIR): Promise<string> {
  let template: string;
  try {
    template = await fs.readFile(path.join(templateDir, `${stage}.md`), 'utf8');
  } catch {
    template = 'Task {{task_id}}: {{title}}\n\n{{body}}\n\nStage: {{stage}}.\n';
  }
  const all: Record<string, string | number> = { stage, ...vars };
  return template.replace(/\{\{(\w+)\}\}/g, (_, k: string) => String(all[k] ?? ''));
}
