/**
 * `node bench/run.ts [dispatch|overhead|throughput|requeue|stop|sandbox|claim-scale|all]` — prints a markdown table
 * per benchmark and writes the same to bench/results/latest.md. Figures only: no assertion on time.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ROOT, renderSection, type Section } from './support.ts';

const BENCHES: Record<string, () => Promise<Section[]>> = {
  dispatch: async () => (await import('./dispatch.ts')).benchDispatch(),
  overhead: async () => (await import('./overhead.ts')).benchOverhead(),
  throughput: async () => (await import('./throughput.ts')).benchThroughput(),
  requeue: async () => (await import('./requeue.ts')).benchRequeue(),
  stop: async () => (await import('./stop.ts')).benchStop(),
  sandbox: async () => (await import('./sandbox.ts')).benchSandbox(),
  'claim-scale': async () => (await import('./claim-scale.ts')).benchClaimScale(),
};

async function main(): Promise<number> {
  const arg = process.argv[2] ?? 'all';
  const names = arg === 'all' ? Object.keys(BENCHES) : [arg];
  for (const n of names) {
    if (!BENCHES[n]) {
      process.stderr.write(`usage: node bench/run.ts [${Object.keys(BENCHES).join('|')}|all]\n`);
      return 2;
    }
  }
  const started = Date.now();
  const head = [
    `# orch benchmarks — ${new Date().toISOString()}`,
    '',
    `host: ${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, node ${process.version}, run: \`node bench/run.ts ${arg}\``,
    '',
  ].join('\n');
  process.stdout.write(`${head}\n`);
  const out: string[] = [head];
  for (const n of names) {
    const t = Date.now();
    process.stderr.write(`[bench] ${n} …\n`);
    let text: string;
    try {
      const sections = await BENCHES[n]!();
      text = sections.map(renderSection).join('\n');
    } catch (err) {
      text = `## ${n}\n\nFAILED: ${(err as Error).stack ?? String(err)}\n`;
    }
    text += `\n_${n}: ${((Date.now() - t) / 1000).toFixed(1)} s_\n`;
    process.stdout.write(`${text}\n`);
    out.push(text);
  }
  const tail = `\n_total: ${((Date.now() - started) / 1000).toFixed(1)} s_\n`;
  process.stdout.write(tail);
  out.push(tail);
  const dir = path.join(ROOT, 'bench', 'results');
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'latest.md'), out.join('\n'));
  return out.some((t) => t.includes('FAILED:')) ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
