import { spawnSync } from 'node:child_process';
import { defineConfig } from 'vitest/config';
import { bwrapArgs, PROBE_PLAN } from './packages/shared/src/host/sandbox.ts';

/**
 * The suites run a second time with every agent in the sandbox (ORCH_AGENT_SANDBOX=bwrap,
 * docs/adr/0012): STOP, crash, shutdown, chaos and the reaper keep their guarantees with it on.
 * (The rest runs unsandboxed: fake CLIs in temp dirs and host pids read by the tests.) Only where
 * bubblewrap works; tests/sandbox.test.ts says so when it does not.
 */
const SANDBOXED_SUITES = [
  'tests/pipeline-happy.test.ts',
  'tests/stop.test.ts',
  'tests/stop-crash.test.ts',
  'tests/stop-storm.test.ts',
  'tests/worker-shutdown.test.ts',
  'tests/reaper-integration.test.ts',
  'tests/reaper-chaos.test.ts',
];
// the same probe as a worker's (host/isolation.ts probeBwrap): every namespace a job uses
const bwrapWorks = spawnSync('bwrap', [...bwrapArgs(PROBE_PLAN), '--', 'true'], { stdio: 'ignore' }).status === 0;

export default defineConfig({
  test: {
    // Integration tests spawn real processes and talk to a real Postgres; each file gets its own
    // database, so files run in parallel, but a two-core machine gains little from more than 2.
    maxWorkers: process.env.CI ? 2 : 3,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    globalSetup: ['tests/support/global-setup.ts'],
    projects: [
      { extends: true, test: { name: 'unsandboxed', include: ['tests/**/*.test.ts'] } },
      ...(bwrapWorks ? [{ extends: true, test: { name: 'sandboxed', include: SANDBOXED_SUITES, env: { ORCH_TEST_SANDBOX: 'bwrap' } } }] : []),
    ],
  },
});
