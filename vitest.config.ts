import { defineConfig } from 'vitest/config';

/**
 * Two projects, one file at a time each (the machine has 2 cores); scripts/run-tests.sh (`make test`) runs them
 * side by side as two vitest processes, since one process shares a single worker pool across its projects:
 * - `machine`: files that drive the shared Docker engine, QEMU or whole crash-injected stacks. One at a time, since
 *   they contend for the engine's lock, its layer cache and both cores' worth of TCG.
 * - `service`: everything else (web, database, glue, Jenkins double, policy, properties): processes and sockets
 *   of their own, so they overlap the machine files instead of waiting behind them.
 * A new file that builds or boots belongs in MACHINE below.
 */
const MACHINE = [
  'test/sdk/**/*.test.ts',
  'test/e2e/**/*.test.ts',
  'test/compat/**/*.test.ts',
  'test/chaos/**/*.test.ts',
  'test/dockerfile/engine-diff.test.ts',
  'test/jenkins/backend.test.ts',
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
      { extends: true, test: { ...shared, name: 'machine', include: MACHINE } },
      { extends: true, test: { ...shared, name: 'service', include: ['test/**/*.test.ts'], exclude: MACHINE } },
    ],
  },
});
