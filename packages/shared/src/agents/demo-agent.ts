/**
 * The demo agent: deterministic, no network, a configurable delay. Used by `orch up` and the
 * tests. analysis → writes analysis.md; implementation → adds a file and commits it;
 * review → approves.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const env = process.env;
const stage = env.ORCH_STAGE ?? '';
const taskId = env.ORCH_TASK_ID ?? '0';
const attempt = env.ORCH_ATTEMPT ?? '1';
const artefactDir = env.ORCH_ARTEFACT_DIR ?? '.';
const delayMs = Number(env.ORCH_DEMO_DELAY_MS ?? '300');

process.on('SIGTERM', () => process.exit(143));

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ agent: 'demo', stage, ...event })}\n`);
}

setTimeout(() => {
  emit({ type: 'start', task: taskId, attempt });
  fs.mkdirSync(artefactDir, { recursive: true });
  switch (stage) {
    case 'analysis':
      fs.writeFileSync(
        path.join(artefactDir, 'analysis.md'),
        `# Analysis of task ${taskId}\n\nThe demo agent will add orch-demo/task-${taskId}.md.\n`,
      );
      break;
    case 'implementation': {
      const file = path.join('orch-demo', `task-${taskId}.md`);
      fs.mkdirSync('orch-demo', { recursive: true });
      fs.appendFileSync(file, `task ${taskId}, attempt ${attempt}\n`);
      execFileSync('git', ['add', file]);
      execFileSync('git', ['commit', '--quiet', '-m', `demo: task ${taskId} (attempt ${attempt})`]);
      break;
    }
    case 'review':
      fs.writeFileSync(path.join(artefactDir, 'review.md'), 'VERDICT: APPROVE\n\nThe demo change is fine.\n');
      break;
    default:
      break;
  }
  emit({ type: 'result', ok: true });
}, delayMs);
