import { spawnSync } from 'node:child_process';

/**
 * Compiles src/ once so tests that spawn `bin/kiln` (glue over OpenSSH, the SDK as a subprocess) run current code.
 * tsc emits even with type errors; type errors fail `make test` in its own typecheck step, not here.
 */
export default function setup(): void {
  // Vitest runs the global setup once per project (vitest.config.ts), all in this one process: compile once.
  if (process.env.KILN_TEST_COMPILED === '1') return;
  process.env.KILN_TEST_COMPILED = '1';
  spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
}
