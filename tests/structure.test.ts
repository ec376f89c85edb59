/**
 * Rules of the code base that a reader would otherwise have to trust: no import cycles, no
 * upward imports between packages, "finished" spelled in one place, `process.env` read in one
 * module, and the generated settings references up to date.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { envExample, settingEntries, settingsReference } from '@orch/shared/runtime/config';
import { ROOT } from './support/harness.ts';

const PACKAGES = ['shared', 'api', 'worker', 'reaper', 'cli'] as const;

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

const FILES = PACKAGES.flatMap((p) => sourceFiles(path.join(ROOT, 'packages', p, 'src')));
const rel = (f: string) => path.relative(ROOT, f);

/** Static imports (type-only included: a cycle of types is still a cycle of modules to a reader). */
function importsOf(file: string): string[] {
  const src = fs.readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of src.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;'"]*?from\s+['"]([^'"]+)['"]/g)) out.push(m[1]!);
  for (const m of src.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push(m[1]!);
  return out.flatMap((spec) => {
    if (spec.startsWith('.')) return [path.resolve(path.dirname(file), spec)];
    const m = /^@orch\/([a-z]+)\/(.+)$/.exec(spec);
    if (m) return [path.join(ROOT, 'packages', m[1]!, 'src', `${m[2]}.ts`)];
    return [];
  });
}

const GRAPH = new Map(FILES.map((f) => [f, importsOf(f)]));
const pkgOf = (f: string) => rel(f).split(path.sep)[1]!;

describe('the import graph of packages/*/src', () => {
  it('every import resolves to a file', () => {
    const missing = [...GRAPH].flatMap(([f, deps]) => deps.filter((d) => !fs.existsSync(d)).map((d) => `${rel(f)} → ${rel(d)}`));
    expect(missing).toEqual([]);
  });

  it('has no cycle', () => {
    const state = new Map<string, 'visiting' | 'done'>();
    const cycles: string[] = [];
    const stack: string[] = [];
    const visit = (f: string) => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'visiting') {
        cycles.push([...stack.slice(stack.indexOf(f)), f].map(rel).join(' → '));
        return;
      }
      state.set(f, 'visiting');
      stack.push(f);
      for (const d of GRAPH.get(f) ?? []) visit(d);
      stack.pop();
      state.set(f, 'done');
    };
    for (const f of FILES) visit(f);
    expect(cycles).toEqual([]);
  });

  it('imports only downwards: cli → api | worker | reaper → shared', () => {
    const allowed: Record<string, string[]> = { shared: ['shared'], api: ['api', 'shared'], worker: ['worker', 'shared'], reaper: ['reaper', 'shared'], cli: [...PACKAGES] };
    const upward = [...GRAPH].flatMap(([f, deps]) => deps.filter((d) => !allowed[pkgOf(f)]!.includes(pkgOf(d))).map((d) => `${rel(f)} → ${rel(d)}`));
    expect(upward).toEqual([]);
  });
});

describe('one source for each rule', () => {
  it('"finished" is spelled only in stages.ts (TERMINAL_STAGES) and db/queries/terminal.ts', () => {
    // the terminal set as a list, or one half of it compared away: `IN ('done','cancelled')`,
    // `['done', 'cancelled']`, `stage <> 'done'`, `stage === 'cancelled' || … 'done'`
    const patterns = [
      /(\bIN\s*\(|'in',\s*\[|'not in',\s*\[)[^)\]]*'(done|cancelled)'/i,
      /\[\s*'done',\s*'cancelled'\s*\]|\[\s*'cancelled',\s*'done'\s*\]/,
      /stage\s*(<>|!=)\s*'(done|cancelled)'/i,
      /'(<>|!=)'\s*,\s*'(done|cancelled)'/,
      /stage\s*===\s*'(done|cancelled)'\s*\|\|[^\n]*stage\s*===\s*'(done|cancelled)'/,
    ];
    const allowed = new Set([path.join('packages', 'shared', 'src', 'stages.ts'), path.join('packages', 'shared', 'src', 'db', 'queries', 'terminal.ts')]);
    const stray: string[] = [];
    for (const f of FILES) {
      if (allowed.has(rel(f))) continue;
      fs.readFileSync(f, 'utf8')
        .split('\n')
        .forEach((line, i) => {
          if (patterns.some((p) => p.test(line))) stray.push(`${rel(f)}:${i + 1}: ${line.trim()}`);
        });
    }
    expect(stray).toEqual([]);
  });

  it('process.env is read only by runtime/config.ts (and by the demo agent, a process of its own)', () => {
    const readers = FILES.filter((f) => /process\.env\b/.test(fs.readFileSync(f, 'utf8'))).map(rel);
    expect(readers.sort()).toEqual([path.join('packages', 'shared', 'src', 'agents', 'demo-agent.ts'), path.join('packages', 'shared', 'src', 'runtime', 'config.ts')].sort());
  });

  it('every setting is declared once, and docs/configuration.md and .env.example are generated from the declarations', () => {
    const names = settingEntries().map((e) => e.setting.env);
    expect(new Set(names).size).toBe(names.length);
    const hint = 'stale: regenerate with `./orch config --reference > docs/configuration.md` and `./orch config --env-example > .env.example`';
    expect(fs.readFileSync(path.join(ROOT, 'docs', 'configuration.md'), 'utf8'), hint).toBe(settingsReference());
    expect(fs.readFileSync(path.join(ROOT, '.env.example'), 'utf8'), hint).toBe(envExample());
    for (const n of names) expect(settingsReference()).toContain(`\`${n}\``);
  });
});
