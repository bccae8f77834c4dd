import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 600_000,
    // Real services (dockerd, QEMU) are shared and the machine has 2 cores: files run one at a time.
    fileParallelism: false,
    reporters: ['default'],
  },
});
