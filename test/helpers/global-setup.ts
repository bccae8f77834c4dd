import { spawnSync } from 'node:child_process';

/**
 * Compiles src/ once so tests that spawn `bin/kiln` (glue over OpenSSH, the SDK as a subprocess) run current code.
 * tsc emits even with type errors; type errors fail `make test` in its own typecheck step, not here.
 */
export default function setup(): void {
  spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
}
