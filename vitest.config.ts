import { defineConfig } from 'vitest/config';

/**
 * Three projects, one file at a time each (the machine has 2 cores); scripts/run-tests.sh (`make test`) runs them
 * side by side as three vitest processes, since one process shares a single worker pool across its projects:
 * - `machine` and `stacks`: files that drive the shared Docker engine, QEMU or whole crash-injected stacks. Split in
 *   two lanes balanced by their measured durations (bench/RESULTS-ci.md): much of their time is waiting (a boot to
 *   its prompt, a stack to settle), so two lanes finish well before one, and builds share the engine's layer cache.
 * - `service`: everything else (web, database, glue, Jenkins double, policy, properties): processes and sockets
 *   of their own, so they overlap the machine files instead of waiting behind them.
 * A new file that builds or boots belongs in MACHINE or STACKS below.
 */
const MACHINE = ['test/sdk/**/*.test.ts'];
const STACKS = [
  'test/e2e/**/*.test.ts',
  'test/compat/**/*.test.ts',
  'test/chaos/**/*.test.ts',
  'test/dockerfile/engine-diff.test.ts',
  'test/jenkins/backend.test.ts',
  // SDK files moved here for balance (each a few build or boot minutes).
  'test/sdk/expect-console.test.ts',
  'test/sdk/xattr.test.ts',
  'test/sdk/build-trust.test.ts',
];

const shared = {
  testTimeout: 60_000,
  hookTimeout: 600_000,
  fileParallelism: false,
};

export default defineConfig({
  test: {
    globalSetup: ['test/helpers/global-setup.ts'],
    reporters: ['default'],
    projects: [
      { extends: true, test: { ...shared, name: 'machine', include: MACHINE, exclude: STACKS } },
      { extends: true, test: { ...shared, name: 'stacks', include: STACKS } },
      {
        extends: true,
        test: { ...shared, name: 'service', include: ['test/**/*.test.ts'], exclude: [...MACHINE, ...STACKS] },
      },
    ],
  },
});
