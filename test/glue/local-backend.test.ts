import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { LocalBackend, periodOf, type LocalBackendOptions } from '../../src/glue/backends/local/index.js';
import { jobSpecSchema, type BuildState } from '../../src/protocol/index.js';
import { fakeSpec, writeFakeSdk } from '../helpers/glue.js';
import { tempDir } from '../helpers/tmp.js';

const spec = (mode?: string, extra: Record<string, unknown> = {}) => jobSpecSchema.parse(fakeSpec(mode, extra));
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function make(opts: Partial<LocalBackendOptions> = {}, dir?: string) {
  let d = dir;
  if (!d) {
    const t = tempDir('kiln-glue-local-');
    cleanups.push(t.cleanup);
    d = t.dir;
  }
  const b = new LocalBackend({ dataDir: d, sdkCommand: writeFakeSdk(d), pollMs: 50, ...opts });
  await b.start();
  cleanups.push(() => b.close());
  return { b, dir: d };
}

async function waitFor(b: LocalBackend, job: number, build: number, states: BuildState[], ms = 20_000) {
  const end = Date.now() + ms;
  for (;;) {
    const st = await b.status(job, build);
    if (states.includes(st.state)) return st;
    if (Date.now() > end) throw new Error(`build ${job}/${build} still ${st.state}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('local backend', () => {
  it('keeps a Jenkins-shaped data directory and runs the SDK with the documented argv', async () => {
    const { b, dir } = await make();
    expect(await b.putJob(3, spec(undefined, { formats: ['raw', 'qcow2'], buildArgs: { VERSION: '1 2', X: 'y' } }))).toEqual({ created: true });
    expect(await b.putJob(3, spec(undefined, { formats: ['raw', 'qcow2'], buildArgs: { VERSION: '1 2', X: 'y' } }))).toEqual({ created: false });
    const jobDir = path.join(dir, 'glue/jobs/kiln-job-3');
    expect(JSON.parse(readFileSync(path.join(jobDir, 'config.json'), 'utf8'))).toMatchObject({ owner: 'alice', name: 'demo', enabled: true });
    expect(readFileSync(path.join(jobDir, 'Dockerfile'), 'utf8')).toContain('FROM debian:bookworm');
    expect(readFileSync(path.join(jobDir, 'nextBuildNumber'), 'utf8').trim()).toBe('1');

    const { build } = await b.build(3, 'first-build-key');
    expect(build).toBe(1);
    const st = await waitFor(b, 3, 1, ['succeeded', 'failed']);
    expect(st).toMatchObject({ job: 3, build: 1, state: 'succeeded', artifacts: [{ name: 'image.raw', size: 15 }, { name: 'result.json', size: expect.any(Number) }, { name: 'SHA256SUMS', size: 64 + 2 + 9 + 1 }] });
    expect(st.startedAt && st.finishedAt && st.queuedAt).toBeTruthy();
    const archive = path.join(jobDir, 'builds/1/archive');
    const argv = readFileSync(path.join(archive, 'argv.txt'), 'utf8').trim().split('\n');
    expect(argv).toEqual([
      '--dockerfile', path.join(jobDir, 'builds/1/ws/Dockerfile'), '--out', archive, '--format', 'raw,qcow2',
      '--build-arg', 'VERSION=1 2', '--build-arg', 'X=y',
    ]);
    expect(existsSync(path.join(jobDir, 'builds/1/ws'))).toBe(false);
    expect(readFileSync(path.join(jobDir, 'nextBuildNumber'), 'utf8').trim()).toBe('2');

    const chunks: Buffer[] = [];
    for await (const c of await b.artifact(3, 1, 'image.raw', 4)) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('IMAGE-BYTES');
    await expect(b.artifact(3, 1, 'image.raw', 99)).rejects.toMatchObject({ code: 'invalid_input' });
    await expect(b.artifact(3, 1, 'image.qcow2', 0)).rejects.toMatchObject({ code: 'not_found' });
  });

  it('numbers builds per job and honours the idempotency key', async () => {
    const { b } = await make();
    await b.putJob(1, spec());
    await b.putJob(2, spec());
    expect(await b.build(1, 'aaaaaaaa')).toEqual({ build: 1, created: true });
    expect(await b.build(1, 'aaaaaaaa')).toEqual({ build: 1, created: false });
    expect(await b.build(1, 'bbbbbbbb')).toEqual({ build: 2, created: true });
    expect(await b.build(2, 'aaaaaaaa')).toEqual({ build: 1, created: true });
    // Concurrent retries of one trigger still make one build.
    const same = await Promise.all([1, 2, 3, 4].map(() => b.build(1, 'cccccccc')));
    expect(new Set(same.map((s) => s.build))).toEqual(new Set([3]));
    expect(same.filter((s) => s.created)).toHaveLength(1);
    await expect(b.build(9, 'aaaaaaaa')).rejects.toMatchObject({ code: 'not_found' });
    await waitFor(b, 1, 3, ['succeeded']);
  });

  it('runs the queue in order, `concurrency` at a time', async () => {
    const { b } = await make({ concurrency: 2 });
    await b.putJob(1, spec('sleep 1'));
    for (const k of ['k0000001', 'k0000002', 'k0000003']) await b.build(1, k);
    await new Promise((r) => setTimeout(r, 400));
    const states = await Promise.all([1, 2, 3].map(async (n) => (await b.status(1, n)).state));
    expect(states).toEqual(['running', 'running', 'queued']);
    expect((await b.listQueue()).map((q) => [q.job, q.backendName])).toEqual([[1, 'kiln-job-1']]);
    const s3 = await waitFor(b, 1, 3, ['succeeded']);
    const s1 = await b.status(1, 1);
    const s2 = await b.status(1, 2);
    expect(s3.startedAt! >= s1.finishedAt! || s3.startedAt! >= s2.finishedAt!).toBe(true);
  });

  it('runs one build at a time by default, first queued first', async () => {
    const { b } = await make();
    await b.putJob(1, spec('sleep 0.3'));
    await b.putJob(2, spec('sleep 0.3'));
    await b.build(2, 'k0000001');
    await b.build(1, 'k0000001');
    await b.build(2, 'k0000002');
    const a = await waitFor(b, 2, 1, ['succeeded']);
    const c = await waitFor(b, 1, 1, ['succeeded']);
    const d = await waitFor(b, 2, 2, ['succeeded']);
    expect(a.finishedAt! <= c.startedAt!).toBe(true);
    expect(c.finishedAt! <= d.startedAt!).toBe(true);
  });

  it('reports failure with the SDK reason, and progress while running', async () => {
    const { b } = await make();
    await b.putJob(1, spec('fail'));
    await b.build(1, 'k0000001');
    const st = await waitFor(b, 1, 1, ['succeeded', 'failed']);
    expect(st).toMatchObject({ state: 'failed', reason: 'RUN step 2 failed: exit 100' });
    await b.putJob(2, spec('sleep 2'));
    await b.build(2, 'k0000001');
    const run = await waitFor(b, 2, 1, ['running']);
    await new Promise((r) => setTimeout(r, 300));
    expect((await b.status(2, 1)).progress).toEqual({ stage: 'build', percent: 10, message: 'building the Dockerfile' });
    expect(run.artifacts).toEqual([]);
  });

  it('cancels queued and running builds (the whole process group)', async () => {
    const { b } = await make();
    await b.putJob(1, spec('sleep 30'));
    await b.build(1, 'k0000001');
    await b.build(1, 'k0000002');
    await waitFor(b, 1, 1, ['running']);
    await new Promise((r) => setTimeout(r, 200));
    expect(await b.cancel(1, 2)).toEqual({ state: 'cancelled' });
    const t0 = Date.now();
    expect(await b.cancel(1, 1)).toEqual({ state: 'cancelled' });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(await b.status(1, 1)).toMatchObject({ state: 'cancelled', reason: 'cancelled by request' });
    expect(await b.status(1, 2)).toMatchObject({ state: 'cancelled', reason: 'cancelled while queued' });
    expect(await b.cancel(1, 1)).toEqual({ state: 'cancelled' });
    await expect(b.cancel(1, 3)).rejects.toMatchObject({ code: 'not_found' });
    expect(await b.listQueue()).toEqual([]);
  });

  it('withdraws by idempotency key: the build it became is cancelled, an unknown key withdraws nothing', async () => {
    const { b } = await make();
    await b.putJob(1, spec('sleep 30'));
    await b.build(1, 'k0000001');
    await b.build(1, 'k0000002');
    expect(await b.withdraw(1, 'k0000002')).toEqual({ withdrawn: true, build: 2, state: 'cancelled' });
    expect(await b.withdraw(1, 'k0000009')).toEqual({ withdrawn: false });
    await waitFor(b, 1, 1, ['running']);
    expect(await b.withdraw(1, 'k0000001')).toEqual({ withdrawn: true, build: 1, state: 'cancelled' });
    expect(await b.listQueue()).toEqual([]);
  });

  it('a cancel from another process (an OpenSSH kiln glue) stops the runner\'s build', async () => {
    const { b, dir } = await make();
    await b.putJob(1, spec('sleep 30'));
    await b.build(1, 'k0000001');
    await waitFor(b, 1, 1, ['running']);
    const cli = new LocalBackend({ dataDir: dir, runner: false });
    await cli.start();
    const t0 = Date.now();
    expect(await cli.cancel(1, 1)).toEqual({ state: 'cancelled' });
    expect(Date.now() - t0).toBeLessThan(8000);
    expect(await b.status(1, 1)).toMatchObject({ state: 'cancelled', reason: 'cancelled by request' });
    await cli.close();
  });

  it('after a restart, queued builds resume and running ones end failed: interrupted', async () => {
    const { dir } = await make({ runner: false });
    const sdk = writeFakeSdk(dir);
    // A first runner starts a long build and dies without cleaning up (simulated: its records stay "running").
    const first = new LocalBackend({ dataDir: dir, sdkCommand: sdk, pollMs: 50 });
    await first.start();
    await first.putJob(1, spec('sleep 30'));
    await first.build(1, 'k0000001');
    await waitFor(first, 1, 1, ['running']);
    await first.putJob(2, spec());
    await first.build(2, 'k0000001');
    const buildJson = path.join(dir, 'glue/jobs/kiln-job-1/builds/1/build.json');
    await new Promise((r) => setTimeout(r, 200));
    const crashed = readFileSync(buildJson, 'utf8');
    const pid = (JSON.parse(crashed) as { pid: number }).pid;
    expect(pid).toBeGreaterThan(0);
    await first.close();
    writeFileSync(buildJson, crashed); // what a SIGKILLed runner leaves behind

    const { b } = await make({}, dir);
    expect(await b.status(1, 1)).toMatchObject({ state: 'failed', reason: 'interrupted' });
    expect((await b.log(1, 1, 0)).text).toContain('interrupted');
    await waitFor(b, 2, 1, ['succeeded']);
  });

  it('restart recovery with a real SIGKILL of the runner process', async () => {
    const t = tempDir('kiln-glue-local-kill-');
    cleanups.push(t.cleanup);
    const sdk = writeFakeSdk(t.dir);
    const { spawn } = await import('node:child_process');
    const script = `
      import { LocalBackend } from ${JSON.stringify(path.resolve('dist/glue/backends/local/index.js'))};
      const b = new LocalBackend({ dataDir: ${JSON.stringify(t.dir)}, sdkCommand: ${JSON.stringify(sdk)}, pollMs: 50 });
      await b.start();
      await b.putJob(1, { owner: 'a', name: 'n', dockerfile: 'FROM x\\n# fake: sleep 30\\n', formats: ['raw'], schedule: 'off', enabled: true, buildArgs: {} });
      await b.build(1, 'k0000001');
      await b.putJob(2, { owner: 'a', name: 'n', dockerfile: 'FROM x\\n', formats: ['raw'], schedule: 'off', enabled: true, buildArgs: {} });
      await b.build(2, 'k0000001');
      process.stdout.write('ready\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (c: Buffer) => { if (String(c).includes('ready')) resolve(); });
      child.on('exit', (c) => reject(new Error(`runner exited ${c}`)));
    });
    const buildJson = path.join(t.dir, 'glue/jobs/kiln-job-1/builds/1/build.json');
    const end = Date.now() + 10_000;
    let pid: number | undefined;
    while (!(pid = (JSON.parse(readFileSync(buildJson, 'utf8')) as { pid?: number }).pid) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(pid).toBeGreaterThan(0);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // The SDK's process group outlived its runner; recovery must reap it and fail the build.
    expect(() => process.kill(-pid!, 0)).not.toThrow();
    const { b } = await make({}, t.dir);
    const st = await b.status(1, 1);
    expect(st).toMatchObject({ state: 'failed', reason: 'interrupted' });
    // Gone, or a zombie waiting for init to reap it: either way no longer running.
    await new Promise((r) => setTimeout(r, 200));
    const state = (() => { try { return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]![0]; } catch { return 'gone'; } })();
    expect(['gone', 'Z']).toContain(state);
    await waitFor(b, 2, 1, ['succeeded']);
  });

  it('serves log chunks from offsets, never splitting a character, and caps the log', async () => {
    const { b } = await make({ logCapBytes: 40 * 1024 });
    await b.putJob(1, spec('noise 100'));
    await b.build(1, 'k0000001');
    await waitFor(b, 1, 1, ['succeeded', 'failed']);
    let off = 0;
    let text = '';
    for (;;) {
      const c = await b.log(1, 1, off);
      expect(c.offset).toBe(off);
      text += c.text;
      off = c.nextOffset;
      if (!c.more && c.text === '') break;
    }
    expect(text).toContain('log truncated at 40960 bytes');
    expect(text.length).toBeLessThan(42 * 1024);
    const end = await b.log(1, 1, off + 100);
    expect(end).toMatchObject({ text: '', more: false });

    await b.putJob(2, spec(undefined, { dockerfile: 'FROM x\n' }));
    await b.build(2, 'k0000001');
    await waitFor(b, 2, 1, ['succeeded']);
    const log = path.join(b['buildDir'](2, 1), 'log');
    writeFileSync(log, 'aé€😀b');
    for (let o = 0; o < 12; o++) {
      const c = await b.log(2, 1, o);
      expect(Buffer.byteLength(c.text)).toBe(c.nextOffset - c.offset);
      expect(c.text).not.toContain('\uFFFD');
    }
  });

  it('case 22: refuses a symlink artifact (image.qcow2 -> /etc/shadow) and never lists it', async () => {
    const { b } = await make();
    await b.putJob(1, spec('symlink'));
    await b.build(1, 'k0000001');
    const st = await waitFor(b, 1, 1, ['succeeded']);
    expect(st.artifacts.map((a) => a.name)).toEqual(['image.raw', 'result.json', 'SHA256SUMS']);
    await expect(b.artifact(1, 1, 'manifest.json', 0)).rejects.toMatchObject({ code: 'not_found' });
    await expect(b.artifact(1, 1, 'image.qcow2', 0)).rejects.toMatchObject({ code: 'not_found' });
    // Even a symlinked archive directory is refused.
    await b.build(1, 'k0000002');
    await waitFor(b, 1, 2, ['succeeded']);
    const arch = path.join(b['buildDir'](1, 2), 'archive');
    const { renameSync } = await import('node:fs');
    renameSync(arch, arch + '.real');
    symlinkSync(arch + '.real', arch);
    await expect(b.artifact(1, 2, 'image.raw', 0)).rejects.toMatchObject({ code: 'not_found' });
    expect((await b.status(1, 2)).artifacts).toEqual([]);
  });

  it('disable refuses builds; enable, delete and jobs.list are idempotent', async () => {
    const { b } = await make();
    await b.putJob(5, spec(undefined, { schedule: 'daily' }));
    await b.setEnabled(5, false);
    await b.setEnabled(5, false);
    await expect(b.build(5, 'k0000001')).rejects.toMatchObject({ code: 'conflict' });
    expect(await b.listJobs()).toEqual([{ job: 5, backendName: 'kiln-job-5', managed: true, enabled: false, schedule: 'daily' }]);
    await b.setEnabled(5, true);
    await expect(b.setEnabled(6, true)).rejects.toMatchObject({ code: 'not_found' });
    expect(await b.deleteJob(5)).toEqual({ deleted: true });
    expect(await b.deleteJob(5)).toEqual({ deleted: false });
    expect(await b.listJobs()).toEqual([]);
    await expect(b.status(5, 1)).rejects.toMatchObject({ code: 'not_found' });
  });

  it('fires a daily schedule once per day, not for the day it was set, and not when disabled', async () => {
    let now = new Date('2026-03-10T12:00:00Z');
    const { b } = await make({ now: () => now, scheduleCheckMs: 3_600_000 });
    await b.putJob(1, spec(undefined, { schedule: 'daily' }));
    await b.putJob(2, spec(undefined, { schedule: 'weekly' }));
    await b.putJob(3, spec(undefined, { schedule: 'daily', enabled: false }));
    const fire = () => (b as unknown as { fireSchedules(): Promise<void> }).fireSchedules();
    await fire();
    expect((await b.listJobs()).map((j) => j.lastBuild)).toEqual([undefined, undefined, undefined]);
    now = new Date('2026-03-11T00:30:00Z');
    await fire();
    await fire();
    expect((await b.listJobs()).map((j) => j.lastBuild)).toEqual([1, undefined, undefined]);
    now = new Date('2026-03-16T00:30:00Z'); // a Monday
    await fire();
    expect((await b.listJobs()).map((j) => j.lastBuild)).toEqual([2, 1, undefined]);
    expect(periodOf('weekly', new Date('2026-03-22T23:00:00Z')).key).toBe('weekly-20260316');
  });
});
