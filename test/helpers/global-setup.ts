import { execFileSync } from 'node:child_process';

/** Compiles src/ once so tests that spawn `bin/kiln` (glue over OpenSSH, the SDK as a subprocess) run current code. */
export default function setup(): void {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
}
