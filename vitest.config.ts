import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    // Integration tests spawn real processes and talk to a real Postgres; each file gets its own
    // database, so files run in parallel, but a two-core machine gains little from more than 2.
    maxWorkers: process.env.CI ? 2 : 3,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    globalSetup: ['tests/support/global-setup.ts'],
  },
});
