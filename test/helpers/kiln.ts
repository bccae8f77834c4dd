import { spawn } from 'node:child_process';
import path from 'node:path';

export const repo = path.resolve(import.meta.dirname, '../..');
/** The real entry point; it runs dist/, which the global setup compiles. */
export const kiln = path.join(repo, 'bin/kiln');

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `bin/kiln ARGS` to its end with extra environment variables, collecting its output. */
export function kilnRun(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(kiln, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
    });
    p.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
