import { spawn, type ChildProcess } from 'node:child_process';
import { kiln, type Run } from './kiln.js';

/** The variables a CI runner sets that `kiln client` reads (and Kiln's own): kept out unless a test sets them. */
const CI_OR_KILN = /^(CI|CI_.+|GITLAB_.+|GITHUB_.+|BUILD_TAG|JENKINS_URL|KILN_.+)$/;

/** This process's environment without CI or Kiln variables, plus `extra`: what a test's CI job sees. */
export function ciEnv(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !CI_OR_KILN.test(k)) env[k] = v;
  return { ...env, ...extra };
}

export interface RunningClient {
  child: ChildProcess;
  /** What it printed so far. */
  out(): { stdout: string; stderr: string };
  done: Promise<Run>;
}

/** Starts `bin/kiln ARGS` with exactly `env` (see ciEnv), collecting its output. */
export function startKiln(args: string[], env: Record<string, string>, stdin?: string): RunningClient {
  const child = spawn(kiln, args, { env, stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  if (stdin !== undefined) child.stdin!.end(stdin);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<Run>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  return { child, out: () => ({ stdout, stderr }), done };
}

/** Runs `bin/kiln ARGS` to its end with exactly `env`. */
export const runKiln = (args: string[], env: Record<string, string>, stdin?: string): Promise<Run> =>
  startKiln(args, env, stdin).done;
