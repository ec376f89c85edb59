/**
 * Records tests/fixtures/real-cli/*.json from the installed claude and codex (run it after
 * upgrading either: `node tests/support/capture-real-cli.ts [case…]`). The failure
 * classification's table test reads these files; the contract test runs the same cases live.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { CASES, FIXTURE_DIR, captureCase, sandbox, sanitize, versions } from './real-cli.ts';

const v = await versions();
await fs.mkdir(FIXTURE_DIR, { recursive: true });
const names = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(CASES);
for (const name of names) {
  const s = await sandbox();
  try {
    const c = await captureCase(name, s);
    const { tail: _tail, ...capture } = c;
    const clean = sanitize({ ...capture, version: c.agent === 'claude' ? v.claude : v.codex }, s);
    await fs.writeFile(path.join(FIXTURE_DIR, `${name}.json`), `${JSON.stringify(clean, null, 2)}\n`);
    process.stdout.write(`${name}: exit ${c.exitCode}, ${c.stdout.length} stdout lines${c.stoppedAfterMs ? `, stopped after ${c.stoppedAfterMs} ms` : ''}\n`);
  } finally {
    await fs.rm(s.dir, { recursive: true, force: true });
  }
}
