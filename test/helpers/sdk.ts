import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';

export const KILN = path.resolve(import.meta.dirname, '../../bin/kiln');

export interface SdkRun {
  code: number | null;
  result: { ok: boolean; error?: { code: string; message: string }; stages: { name: string }[] };
  log: string;
}

/** `kiln sdk build` of a Dockerfile file into `out`, as a Jenkins job runs it; resolves once it has exited. */
export async function runSdkBuild(
  dockerfile: string,
  out: string,
  o: { format?: string; buildArgs?: Record<string, string>; env?: Record<string, string> } = {},
): Promise<SdkRun> {
  const argv = ['sdk', 'build', '--dockerfile', dockerfile, '--out', out, '--format', o.format ?? 'raw'];
  for (const [k, v] of Object.entries(o.buildArgs ?? {})) argv.push('--build-arg', `${k}=${v}`);
  const code = await new Promise<number | null>((resolve, reject) => {
    const p = spawn(KILN, argv, { env: { ...process.env, ...o.env }, stdio: 'ignore' });
    p.on('error', reject);
    p.on('close', resolve);
  });
  return {
    code,
    result: JSON.parse(await fsp.readFile(path.join(out, 'result.json'), 'utf8')) as SdkRun['result'],
    log: await fsp.readFile(path.join(out, 'build.log'), 'utf8'),
  };
}
