import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { LocalBackend } from '../../src/glue/backends/local/index.js';
import { fakeSpec, kilnSnapshot, writeFakeSdk } from '../helpers/glue.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

let KILN = '';
const snap = tempDir('kiln-glue-cli-bin-');
beforeAll(async () => {
  KILN = await kilnSnapshot(snap.dir);
});
afterAll(() => snap.cleanup());

/** Runs `bin/kiln glue` as OpenSSH would: request in SSH_ORIGINAL_COMMAND (unless `argv` is given), body on stdin. */
function glue(
  dataDir: string,
  req: { command?: string; argv?: string[]; stdin?: string },
): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, KILN_DATA_DIR: dataDir };
    if (req.command !== undefined) env.SSH_ORIGINAL_COMMAND = req.command;
    const child = spawn(KILN, ['glue', ...(req.argv ?? [])], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => {
      err += c;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }));
    child.stdin.end(req.stdin ?? '');
  });
}

describe('kiln glue (the OpenSSH forced command)', () => {
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir('kiln-glue-cli-');
  });
  afterEach(() => tmp.cleanup());

  it('answers from SSH_ORIGINAL_COMMAND, which wins over argv', async () => {
    const r = await glue(tmp.dir, { command: 'ping', argv: ['build.status', '1', '1'] });
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(r.stdout.toString())).toMatchObject({ protocol: 1, backend: 'local' });
  });

  it('takes argv joined by spaces when SSH_ORIGINAL_COMMAND is unset, and maps errors to exit codes', async () => {
    const r = await glue(tmp.dir, { argv: ['build.status', '4', '1'] });
    expect(r.code).toBe(3);
    expect(r.stdout.length).toBe(0);
    expect(JSON.parse(r.stderr)).toEqual({ error: { code: 'not_found', message: 'No such job' } });
  });

  it.each([
    'job.put 7; touch MARKER',
    'job.put $(touch MARKER)',
    'job.put `touch MARKER`',
    'job.put 7\ntouch MARKER',
    'job.put 7 && touch MARKER',
    'job.put 7 | touch MARKER',
    'touch MARKER',
    'sh -c touch',
    '',
    'job.put -x',
    'build.artifact 1 1 ../../etc/shadow',
    'job.build 99999999999999 abcdefgh',
  ])(
    'case 26: refuses %j: exit 2, JSON on stderr, audit line, nothing spawned, backend never started',
    async (command) => {
      const r = await glue(tmp.dir, { command: command.replaceAll('MARKER', path.join(tmp.dir, 'MARKER')) });
      expect(r.code).toBe(2);
      expect(r.stdout.length).toBe(0);
      expect(JSON.parse(r.stderr)).toMatchObject({ error: { code: 'invalid_input' } });
      expect(existsSync(path.join(tmp.dir, 'MARKER'))).toBe(false);
      expect(existsSync(path.join(tmp.dir, 'glue/jobs'))).toBe(false); // the backend was not even started
      const audit = readFileSync(path.join(tmp.dir, 'glue/audit.log'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(audit).toHaveLength(1);
      expect(audit[0]).toMatchObject({ audit: true, door: 'openssh', outcome: 'invalid_input' });
    },
  );

  it('records builds for the runner sharing the data directory, and streams artifacts on stdout', async () => {
    const put = await glue(tmp.dir, { command: 'job.put 5', stdin: JSON.stringify(fakeSpec()) });
    expect(put.stderr).toBe('');
    expect(JSON.parse(put.stdout.toString())).toEqual({ job: 5, created: true });
    const b = await glue(tmp.dir, { command: 'job.build 5 cli-key-001' });
    expect(JSON.parse(b.stdout.toString())).toEqual({ job: 5, build: 1, created: true });
    const q = await glue(tmp.dir, { command: 'build.status 5 1' });
    expect(JSON.parse(q.stdout.toString())).toMatchObject({ state: 'queued' });

    const runner = new LocalBackend({ dataDir: tmp.dir, sdkCommand: writeFakeSdk(tmp.dir), pollMs: 50 });
    await runner.start();
    try {
      const state = await until(
        async () => {
          const st = (
            JSON.parse((await glue(tmp.dir, { command: 'build.status 5 1' })).stdout.toString()) as { state: string }
          ).state;
          return !['queued', 'running'].includes(st) && st;
        },
        60_000,
        50,
      );
      expect(state).toBe('succeeded');
    } finally {
      await runner.close();
    }
    const a = await glue(tmp.dir, { command: 'build.artifact 5 1 image.raw 4' });
    expect(a).toMatchObject({ code: 0, stderr: '' });
    expect(a.stdout.toString()).toBe('IMAGE-BYTES');
    const bad = await glue(tmp.dir, {
      command: 'job.put 6',
      stdin: '{"owner":"x","name":"n","dockerfile":"FROM x","shell":"id"}',
    });
    expect(bad.code).toBe(2);
    expect(JSON.parse(bad.stderr).error.message).toMatch(/invalid job spec/);
    const audit = readFileSync(path.join(tmp.dir, 'glue/audit.log'), 'utf8');
    expect(audit).not.toContain('FROM debian');
  });
});
