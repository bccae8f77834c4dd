import { afterEach, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { LocalBackend, periodOf, type LocalBackendOptions } from '../../src/glue/backends/local/index.js';
import { jobSpecSchema, specSha256, type BuildState } from '../../src/protocol/index.js';
import { fakeSpec, openGate, writeFakeSdk } from '../helpers/glue.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

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

function waitFor(b: LocalBackend, job: number, build: number, states: BuildState[]) {
  return until(
    async () => {
      const st = await b.status(job, build);
      return states.includes(st.state) && st;
    },
    60_000,
    50,
  );
}

/** The SDK's process identity, once the runner has recorded it in build.json. */
const recordedPid = (buildJson: string) =>
  until(() => (JSON.parse(readFileSync(buildJson, 'utf8')) as { process?: { pid: number } }).process?.pid, 60_000, 50);

describe('local backend', () => {
  it('keeps a Jenkins-shaped data directory and runs the SDK with the documented argv', async () => {
    const { b, dir } = await make();
    const baseNames = [
      { name: 'corp/debian:12', base: 'debian:bookworm' },
      { name: 'ghcr.io/x/base', base: 'debian:trixie-slim' },
    ];
    expect(
      await b.putJob(
        3,
        spec(undefined, { formats: ['raw', 'qcow2'], buildArgs: { VERSION: '1 2', X: 'y' }, baseNames }),
      ),
    ).toEqual({ created: true });
    expect(
      await b.putJob(
        3,
        spec(undefined, { formats: ['raw', 'qcow2'], buildArgs: { VERSION: '1 2', X: 'y' }, baseNames }),
      ),
    ).toEqual({ created: false });
    const jobDir = path.join(dir, 'glue/jobs/kiln-job-3');
    expect(JSON.parse(readFileSync(path.join(jobDir, 'config.json'), 'utf8'))).toMatchObject({
      owner: 'alice',
      name: 'demo',
      enabled: true,
    });
    expect(readFileSync(path.join(jobDir, 'Dockerfile'), 'utf8')).toContain('FROM debian:bookworm');
    expect(readFileSync(path.join(jobDir, 'nextBuildNumber'), 'utf8').trim()).toBe('1');

    const { build } = await b.build(3, 'first-build-key');
    expect(build).toBe(1);
    const st = await waitFor(b, 3, 1, ['succeeded', 'failed']);
    expect(st).toMatchObject({
      job: 3,
      build: 1,
      state: 'succeeded',
      artifacts: [
        { name: 'image.raw', size: 15 },
        { name: 'result.json', size: expect.any(Number) },
        { name: 'SHA256SUMS', size: 64 + 2 + 9 + 1 },
      ],
    });
    expect(st.startedAt && st.finishedAt && st.queuedAt).toBeTruthy();
    const archive = path.join(jobDir, 'builds/1/archive');
    const argv = readFileSync(path.join(archive, 'argv.txt'), 'utf8').trim().split('\n');
    expect(argv).toEqual([
      '--dockerfile',
      path.join(jobDir, 'builds/1/ws/Dockerfile'),
      '--out',
      archive,
      '--format',
      'raw,qcow2',
      '--build-arg',
      'VERSION=1 2',
      '--build-arg',
      'X=y',
      // The site's base names, as the SDK takes them; it checks each against its own sdk.bases.
      '--base-name',
      'corp/debian:12=debian:bookworm',
      '--base-name',
      'ghcr.io/x/base=debian:trixie-slim',
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
    const { b, dir } = await make({ concurrency: 2 });
    await b.putJob(1, spec('gate order'));
    for (const k of ['k0000001', 'k0000002', 'k0000003']) await b.build(1, k);
    await waitFor(b, 1, 1, ['running']);
    await waitFor(b, 1, 2, ['running']);
    // Both runners are busy (held at the gate): the third waits in the queue.
    expect((await b.status(1, 3)).state).toBe('queued');
    expect((await b.listQueue()).map((q) => [q.job, q.backendName])).toEqual([[1, 'kiln-job-1']]);
    openGate(dir, 'order');
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
    expect(await until(async () => (await b.status(2, 1)).progress)).toEqual({
      stage: 'build',
      percent: 10,
      message: 'building the Dockerfile',
    });
    expect(run.artifacts).toEqual([]);
  });

  it('cancels queued and running builds (the whole process group)', async () => {
    const { b, dir } = await make();
    await b.putJob(1, spec('sleep 30'));
    await b.build(1, 'k0000001');
    await b.build(1, 'k0000002');
    await waitFor(b, 1, 1, ['running']);
    const pid = await recordedPid(path.join(dir, 'glue/jobs/kiln-job-1/builds/1/build.json'));
    expect(await b.cancel(1, 2)).toEqual({ state: 'cancelled' });
    // `cancelled`, not `running`: the SDK's group stopped before cancel() stopped waiting for it.
    expect(await b.cancel(1, 1)).toEqual({ state: 'cancelled' });
    // The whole process group goes (the fake SDK's `sleep` child too), not just its leader.
    await until(
      () => {
        try {
          process.kill(-pid, 0);
          return false;
        } catch {
          return true;
        }
      },
      60_000,
      50,
    );
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

  it('a cancelled build leaves no work dir, while the runner lives on: cancelled or withdrawn while queued, or running after its SDK was SIGKILLed', async () => {
    // make test's crash injection (pg stack) found the ws/ of cancelled builds left behind by a runner that never
    // restarted: only its recovery used to remove the scratch of a build cancelled while queued.
    const { b, dir } = await make();
    await b.putJob(1, spec('sleep 30'));
    for (const k of ['k0000001', 'k0000002', 'k0000003', 'k0000004']) await b.build(1, k);
    const bdir = (n: number) => path.join(dir, `glue/jobs/kiln-job-1/builds/${n}`);
    await waitFor(b, 1, 1, ['running']);
    const pid = await recordedPid(path.join(bdir(1), 'build.json'));
    for (const n of [2, 3, 4]) expect(existsSync(path.join(bdir(n), 'ws/Dockerfile'))).toBe(true);

    expect(await b.cancel(1, 2)).toEqual({ state: 'cancelled' });
    expect(existsSync(path.join(bdir(2), 'ws'))).toBe(false);
    expect(await b.withdraw(1, 'k0000003')).toEqual({ withdrawn: true, build: 3, state: 'cancelled' });
    expect(existsSync(path.join(bdir(3), 'ws'))).toBe(false);
    // A queued cancel from a `kiln glue` process (no runner of its own) too.
    const cli = new LocalBackend({ dataDir: dir, runner: false });
    await cli.start();
    cleanups.push(() => cli.close());
    expect(await cli.cancel(1, 4)).toEqual({ state: 'cancelled' });
    expect(existsSync(path.join(bdir(4), 'ws'))).toBe(false);

    // The SDK itself SIGKILLed (its `sleep` child still holds the group and the output pipe), then the cancel.
    process.kill(pid, 'SIGKILL');
    expect(await b.cancel(1, 1)).toEqual({ state: 'cancelled' });
    expect(await b.status(1, 1)).toMatchObject({ state: 'cancelled', reason: 'cancelled by request' });
    await until(() => !existsSync(path.join(bdir(1), 'ws')) && !existsSync(path.join(bdir(1), 'tmp')), 60_000, 50);
    // Only the scratch goes: each build's record stays.
    for (const n of [1, 2, 3, 4]) expect(existsSync(path.join(bdir(n), 'build.json'))).toBe(true);
    expect(await b.listQueue()).toEqual([]);
  });

  it('after a restart, an ended build whose work dir a kill left (between its end and the removal) loses it and does not run', async () => {
    const { b: cli, dir } = await make({ runner: false });
    await cli.putJob(1, spec());
    await cli.build(1, 'k0000001');
    const bdir = path.join(dir, 'glue/jobs/kiln-job-1/builds/1');
    // What a process SIGKILLed after recording the end but before removing the scratch leaves.
    const rec = JSON.parse(readFileSync(path.join(bdir, 'build.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(
      path.join(bdir, 'build.json'),
      JSON.stringify({
        ...rec,
        state: 'cancelled',
        reason: 'cancelled while queued',
        finishedAt: new Date().toISOString(),
      }),
    );
    for (const q of readdirSync(path.join(dir, 'glue/queue'))) rmSync(path.join(dir, 'glue/queue', q));
    mkdirSync(path.join(bdir, 'tmp/kiln-sdk-x'), { recursive: true });
    const { b } = await make({}, dir);
    expect(existsSync(path.join(bdir, 'ws'))).toBe(false);
    expect(existsSync(path.join(bdir, 'tmp'))).toBe(false);
    expect(await b.status(1, 1)).toMatchObject({ state: 'cancelled' });
    expect(existsSync(path.join(bdir, 'archive/argv.txt'))).toBe(false); // never ran
  });

  it("a cancel from another process (an OpenSSH kiln glue) stops the runner's build", async () => {
    const { b, dir } = await make();
    await b.putJob(1, spec('sleep 30'));
    await b.build(1, 'k0000001');
    await waitFor(b, 1, 1, ['running']);
    const cli = new LocalBackend({ dataDir: dir, runner: false });
    await cli.start();
    expect(await cli.cancel(1, 1)).toEqual({ state: 'cancelled' });
    expect(await b.status(1, 1)).toMatchObject({ state: 'cancelled', reason: 'cancelled by request' });
    await cli.close();
  });

  it('after a restart, queued builds resume and running ones end lost (interrupted), for the web to requeue', async () => {
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
    expect(await recordedPid(buildJson)).toBeGreaterThan(0);
    const crashed = readFileSync(buildJson, 'utf8');
    await first.close();
    expect(await first.status(1, 1)).toMatchObject({
      state: 'lost',
      reason: expect.stringMatching(/^interrupted: the build service stopped/),
    });
    writeFileSync(buildJson, crashed); // what a SIGKILLed runner leaves behind

    const { b } = await make({}, dir);
    expect(await b.status(1, 1)).toMatchObject({
      state: 'lost',
      reason: expect.stringMatching(/^interrupted: the build service restarted/),
    });
    expect((await b.log(1, 1, 0)).text).toContain('interrupted');
    await waitFor(b, 2, 1, ['succeeded']);
  });

  it('after a restart, a build whose SDK finished while the runner was down ends as its result.json says, and does not run again', async () => {
    const { dir } = await make({ runner: false });
    const sdk = writeFakeSdk(dir);
    const first = new LocalBackend({ dataDir: dir, sdkCommand: sdk, pollMs: 50, concurrency: 2 });
    await first.start();
    await first.putJob(1, spec('sleep 30'));
    await first.putJob(2, spec('sleep 30'));
    await first.build(1, 'k0000001');
    await first.build(2, 'k0000001');
    const bdir = (job: number) => path.join(dir, `glue/jobs/kiln-job-${job}/builds/1`);
    const crashed: string[] = [];
    for (const job of [1, 2]) {
      await waitFor(first, job, 1, ['running']);
      await until(
        () =>
          (JSON.parse(readFileSync(path.join(bdir(job), 'build.json'), 'utf8')) as { process?: unknown }).process !==
          undefined,
      );
      crashed.push(readFileSync(path.join(bdir(job), 'build.json'), 'utf8'));
    }
    await first.close();
    // What the runner's SIGKILL leaves (records still "running"), and what each SDK wrote when it ended meanwhile.
    for (const job of [1, 2]) writeFileSync(path.join(bdir(job), 'build.json'), crashed[job - 1]!);
    const result = (ok: boolean, extra: object = {}) =>
      JSON.stringify({
        ok,
        sdkVersion: 't',
        startedAt: 't0',
        finishedAt: 't1',
        artifacts: [],
        bootTests: [],
        stages: [],
        ...extra,
      });
    writeFileSync(path.join(bdir(1), 'archive/result.json'), result(true));
    writeFileSync(
      path.join(bdir(2), 'archive/result.json'),
      result(false, { error: { code: 'build_failed', message: 'RUN step 2 failed: exit 100' } }),
    );

    const { b } = await make({}, dir);
    expect(await b.status(1, 1)).toMatchObject({ state: 'succeeded' });
    expect(await b.status(2, 1)).toMatchObject({ state: 'failed', reason: 'RUN step 2 failed: exit 100' });
    expect((await b.log(1, 1, 0)).text).toContain('the SDK ended while the build service was down');
  });

  it("after a restart, half-written files of a killed writer and a killed delete's trash are gone; a live writer's temp file stays", async () => {
    const { b: first, dir } = await make({ runner: false });
    await first.putJob(1, spec());
    await first.build(1, 'k0000001');
    const root = path.join(dir, 'glue');
    const dead = spawnSync('true').pid!; // exited: what a SIGKILLed writer's pid is
    const stale = [
      path.join(root, `.nextQueueId.${dead}.0123abcd.tmp`),
      path.join(root, 'jobs/kiln-job-1', `.meta.json.${dead}.89abcdef.tmp`),
      path.join(root, 'jobs/kiln-job-1/builds/1', `.build.json.${dead}.a5dd5bbc.tmp`),
    ];
    for (const f of stale) writeFileSync(f, '{"half');
    const live = path.join(root, 'jobs/kiln-job-1', `.config.json.${process.pid}.00000000.tmp`);
    writeFileSync(live, '{"in progress');
    mkdirSync(path.join(root, '.deleted-kiln-job-7-1795666000000/builds'), { recursive: true });

    const { b } = await make({}, dir); // the runner recovers at start
    for (const f of stale) expect(existsSync(f), f).toBe(false);
    expect(existsSync(live)).toBe(true);
    expect(readdirSync(root).filter((n) => n.startsWith('.deleted-'))).toEqual([]);
    await waitFor(b, 1, 1, ['succeeded']);
  });

  it('restart recovery with a real SIGKILL of the runner process: the SDK (still itself) is killed, its temp dir removed', async () => {
    const t = tempDir('kiln-glue-local-kill-');
    cleanups.push(t.cleanup);
    const sdk = writeFakeSdk(t.dir);
    const { spawn } = await import('node:child_process');
    const script = `
      import { LocalBackend } from ${JSON.stringify(path.resolve('dist/glue/backends/local/index.js'))};
      const b = new LocalBackend({ dataDir: ${JSON.stringify(t.dir)}, sdkCommand: ${JSON.stringify(sdk)}, pollMs: 50 });
      await b.start();
      await b.putJob(1, { owner: 'a', name: 'n', dockerfile: 'FROM x\\n# fake: tmp 30\\n', formats: ['raw'], schedule: 'off', enabled: true, buildArgs: {} });
      await b.build(1, 'k0000001');
      await b.putJob(2, { owner: 'a', name: 'n', dockerfile: 'FROM x\\n', formats: ['raw'], schedule: 'off', enabled: true, buildArgs: {} });
      await b.build(2, 'k0000001');
      process.stdout.write('ready\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (c: Buffer) => {
        if (String(c).includes('ready')) resolve();
      });
      child.on('exit', (c) => reject(new Error(`runner exited ${c}`)));
    });
    const buildJson = path.join(t.dir, 'glue/jobs/kiln-job-1/builds/1/build.json');
    const pid = await recordedPid(buildJson);
    expect(pid).toBeGreaterThan(0);
    const tmpRecord = path.join(t.dir, 'glue/jobs/kiln-job-1/builds/1/archive/tmpdir.txt');
    await until(() => existsSync(tmpRecord), 60_000, 50);
    const sdkTmp = readFileSync(tmpRecord, 'utf8').trim();
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // The SDK's process group outlived its runner; recovery must reap it and end the build lost.
    expect(() => process.kill(-pid!, 0)).not.toThrow();
    expect(existsSync(sdkTmp)).toBe(true);
    const { b } = await make({}, t.dir);
    const st = await b.status(1, 1);
    expect(st).toMatchObject({ state: 'lost', reason: expect.stringMatching(/^interrupted/) });
    // What the killed SDK staged lived in the build's own directory (its TMPDIR) and went with the recovery.
    expect(sdkTmp.startsWith(path.join(t.dir, 'glue/jobs/kiln-job-1/builds/1/tmp/kiln-sdk-'))).toBe(true);
    expect(existsSync(sdkTmp)).toBe(false);
    expect(existsSync(path.join(t.dir, 'glue/jobs/kiln-job-1/builds/1/tmp'))).toBe(false);
    // Gone, or a zombie waiting for init to reap it: either way no longer running.
    const state = () => {
      try {
        return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]![0];
      } catch {
        return 'gone';
      }
    };
    await until(() => ['gone', 'Z'].includes(state()!), 60_000, 50);
    await waitFor(b, 2, 1, ['succeeded']);
  });

  it("case 49 (the glue's half): a build recorded but never acknowledged (killed before meta.json) does not run after the restart", async () => {
    const { b: cli, dir } = await make({ runner: false });
    await cli.putJob(1, spec());
    // What build() leaves when the process dies after nextBuildNumber but before the key reached meta.json.
    const bdir = path.join(dir, 'glue/jobs/kiln-job-1/builds/1');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(path.join(bdir, 'ws'), { recursive: true });
    writeFileSync(
      path.join(bdir, 'build.json'),
      JSON.stringify({
        job: 1,
        build: 1,
        state: 'queued',
        queueId: 1,
        idempotencyKey: 'unacked-key',
        queuedAt: new Date().toISOString(),
        formats: ['raw'],
        buildArgs: {},
        hasContext: false,
      }),
    );
    writeFileSync(path.join(dir, 'glue/jobs/kiln-job-1/nextBuildNumber'), '2\n');
    const { b } = await make({}, dir);
    expect(await b.status(1, 1)).toMatchObject({ state: 'cancelled', reason: expect.stringMatching(/never started/) });
    // The caller's retry with its key makes the one build that runs.
    expect(await b.build(1, 'unacked-key')).toEqual({ build: 2, created: true });
    await waitFor(b, 1, 2, ['succeeded']);
    expect((await b.status(1, 1)).state).toBe('cancelled');
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
    const log = path.join(b['store'].buildDir(2, 1), 'log');
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
    const arch = path.join(b['store'].buildDir(1, 2), 'archive');
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
    expect(await b.listJobs()).toEqual([
      { job: 5, backendName: 'kiln-job-5', managed: true, enabled: false, schedule: 'daily' },
    ]);
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
    const fire = () => (b as unknown as { checkSchedules(): Promise<void> }).checkSchedules();
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

describe('local backend: build.wait (a held status)', () => {
  it('answers at once when the state is not the one the caller knows; not_found for a build or job it does not have', async () => {
    const { b } = await make();
    await b.putJob(1, spec());
    await b.build(1, 'k0000001');
    await waitFor(b, 1, 1, ['succeeded']);
    expect(await b.wait(1, 1, 'running', 60)).toEqual(await b.status(1, 1));
    await expect(b.wait(1, 9, 'running', 5)).rejects.toMatchObject({ code: 'not_found' });
    await expect(b.wait(7, 1, 'running', 5)).rejects.toMatchObject({ code: 'not_found' });
  });

  it('holds while nothing moves, and answers with the status it has at its deadline', async () => {
    const { b } = await make();
    await b.putJob(1, spec('gate held'));
    await b.build(1, 'k0000001');
    await waitFor(b, 1, 1, ['running']);
    expect(await b.wait(1, 1, 'running', 1)).toMatchObject({ state: 'running', artifacts: [] });
  });

  it('answers when the build starts, with the state it moved to (running), not the one of its deadline', async () => {
    const { b, dir } = await make();
    await b.putJob(1, spec('gate first'));
    await b.putJob(2, spec('sleep 30'));
    await b.build(1, 'k0000001');
    await waitFor(b, 1, 1, ['running']);
    await b.build(2, 'k0000001');
    const held = b.wait(2, 1, 'queued', 60);
    openGate(dir, 'first');
    // Had it answered at its deadline (60 s), the 30 s build would have ended by then.
    expect(await held).toMatchObject({ state: 'running' });
  });

  it('answers when the build ends, while a build that started with it and sleeps 30 s still runs; also a wait held by another process', async () => {
    const { b, dir } = await make({ concurrency: 2 });
    await b.putJob(1, spec('gate end'));
    await b.putJob(2, spec('sleep 30'));
    await b.build(1, 'k0000001');
    await b.build(2, 'k0000001');
    await waitFor(b, 1, 1, ['running']);
    await waitFor(b, 2, 1, ['running']);
    // What a `kiln glue` process (the OpenSSH door) is: no runner, the same data directory.
    const cli = new LocalBackend({ dataDir: dir, runner: false });
    await cli.start();
    cleanups.push(() => cli.close());
    const held = [b.wait(1, 1, 'running', 60), cli.wait(1, 1, 'running', 60)];
    openGate(dir, 'end');
    for (const h of held)
      expect(await h).toMatchObject({
        state: 'succeeded',
        artifacts: expect.arrayContaining([expect.objectContaining({ name: 'image.raw' })]),
      });
    expect((await b.status(2, 1)).state).toBe('running');
  });

  it('a wait whose caller went away (its signal aborted) answers at once with the status it has then', async () => {
    const { b } = await make({ concurrency: 2 });
    await b.putJob(1, spec('gate never'));
    await b.putJob(2, spec('sleep 30'));
    await b.build(1, 'k0000001');
    await b.build(2, 'k0000001');
    await waitFor(b, 1, 1, ['running']);
    await waitFor(b, 2, 1, ['running']);
    const gone = new AbortController();
    const held = b.wait(1, 1, 'running', 60, gone.signal);
    gone.abort();
    expect(await held).toMatchObject({ state: 'running' });
    expect((await b.status(2, 1)).state).toBe('running');
  });
});

describe('local backend: process identity, keys, exact inputs, environment, lock', () => {
  /** A process in a group of its own that is not a build: what a recorded pid may name after pid reuse. */
  async function bystander(): Promise<{ pid: number; alive: () => boolean; stop: () => void }> {
    const { spawn } = await import('node:child_process');
    const p = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
    await new Promise((r) => p.once('spawn', r));
    const pid = p.pid!;
    const alive = () => {
      try {
        return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]![0] !== 'Z';
      } catch {
        return false;
      }
    };
    return {
      pid,
      alive,
      stop: () => {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      },
    };
  }

  /** build.json once the runner has recorded its SDK's identity. */
  const recordedSdk = (buildJson: string) =>
    until(
      () => {
        const rec = JSON.parse(readFileSync(buildJson, 'utf8')) as { process?: { pid: number } };
        return rec.process && (rec as { process: { pid: number } });
      },
      10_000,
      50,
    );

  it('finding 8: after a restart, a recorded SDK pid that now names another process is not signalled', async () => {
    const { dir } = await make({ runner: false });
    const first = new LocalBackend({ dataDir: dir, sdkCommand: writeFakeSdk(dir), pollMs: 50 });
    await first.start();
    await first.putJob(1, spec('sleep 30'));
    await first.build(1, 'k0000001');
    await waitFor(first, 1, 1, ['running']);
    const buildJson = path.join(dir, 'glue/jobs/kiln-job-1/builds/1/build.json');
    const crashed = await recordedSdk(buildJson);
    await first.close();
    // The SDK is gone and its pid went to another program: the record names the pid, with the old identity.
    const other = await bystander();
    cleanups.push(other.stop);
    writeFileSync(
      buildJson,
      JSON.stringify({ ...crashed, pid: other.pid, process: { ...crashed.process, pid: other.pid } }),
    );
    // Recovery (which signals what it may) is over once start() returned.
    const { b } = await make({}, dir);
    expect(other.alive()).toBe(true);
    expect(await b.status(1, 1)).toMatchObject({ state: 'lost' });
  });

  it('finding 8: a cancel from another process checks the recorded SDK before signalling it', async () => {
    const { b, dir } = await make();
    await b.putJob(1, spec('sleep 3'));
    await b.build(1, 'k0000001');
    await waitFor(b, 1, 1, ['running']);
    const buildJson = path.join(dir, 'glue/jobs/kiln-job-1/builds/1/build.json');
    const rec = await recordedSdk(buildJson);
    const other = await bystander();
    cleanups.push(other.stop);
    writeFileSync(buildJson, JSON.stringify({ ...rec, pid: other.pid, process: { ...rec.process, pid: other.pid } }));
    const cli = new LocalBackend({ dataDir: dir, runner: false });
    await cli.start();
    cleanups.push(() => cli.close());
    // The marker still cancels it (the runner reads it when the SDK ends); the bystander is never signalled.
    expect(await cli.cancel(1, 1)).toEqual({ state: 'cancelled' });
    expect(other.alive()).toBe(true);
  });

  it('finding 10: idempotency keys named like Object.prototype members are keys like any other', async () => {
    const { b } = await make();
    await b.putJob(1, spec());
    const keys = [
      'constructor',
      'toString',
      'hasOwnProperty',
      'isPrototypeOf',
      'propertyIsEnumerable',
      'toLocaleString',
    ];
    for (const [i, k] of keys.entries()) {
      expect(await b.build(1, k), k).toEqual({ build: i + 1, created: true });
      expect(await b.build(1, k), k).toEqual({ build: i + 1, created: false });
    }
    expect(await b.withdraw(1, 'valueOfX')).toEqual({ withdrawn: false });
    await waitFor(b, 1, keys.length, ['succeeded']);
  });

  it('finding 11: put A, put B, build for A is refused (conflict); the build for B builds B, a build after put A builds A', async () => {
    const { b, dir } = await make();
    const A = 'FROM debian:bookworm\nRUN echo version-A\n';
    const B = 'FROM debian:bookworm\nRUN echo version-B\n';
    await b.putJob(1, spec(undefined, { dockerfile: A }));
    await b.putJob(1, spec(undefined, { dockerfile: B })); // a concurrent dispatch of another version lands here
    // Without a context, the digest is the Dockerfile's sha256: what the web stores for a version.
    const sha = (t: string) => createHash('sha256').update(t).digest('hex');
    await expect(b.build(1, 'build-for-A', sha(A))).rejects.toMatchObject({ code: 'conflict' });
    expect(await b.listQueue()).toEqual([]);
    expect(await b.build(1, 'build-for-B', sha(B))).toEqual({ build: 1, created: true });
    await b.putJob(1, spec(undefined, { dockerfile: A }));
    expect(await b.build(1, 'build-for-A', sha(A))).toEqual({ build: 2, created: true });
    await waitFor(b, 1, 2, ['succeeded']);
    const used = (n: number) =>
      readFileSync(path.join(dir, `glue/jobs/kiln-job-1/builds/${n}/archive/Dockerfile.used`), 'utf8');
    expect(used(1)).toBe(B);
    expect(used(2)).toBe(A);
    // The context is part of the digest: the same Dockerfile with another context is another spec.
    const ctx = Buffer.from('a tar, as far as the digest cares');
    await b.putJob(1, spec(undefined, { dockerfile: A, contextTarBase64: ctx.toString('base64') }));
    await expect(b.build(1, 'build-for-A-no-ctx', specSha256(A))).rejects.toMatchObject({ code: 'conflict' });
    expect((await b.build(1, 'build-for-A-ctx', specSha256(A, ctx))).created).toBe(true);
  });

  it("finding 12: the SDK gets an allow-listed environment, not the parent's secrets; its TMPDIR is the build's own", async () => {
    const secrets = {
      KILN_WEB_SESSION_SECRET: 'web-session-secret-0123456789abcdef',
      KILN_DB_URL: 'postgres://kiln:db-password@db/kiln',
      KILN_GLUE_JENKINS_TOKEN: 'jenkins-token-x',
      AWS_SECRET_ACCESS_KEY: 'aws-secret',
    };
    const saved = { ...process.env };
    Object.assign(process.env, secrets, { KILN_SDK_FORMATS: 'raw', LANG: 'C.UTF-8' });
    cleanups.push(() => {
      process.env = saved;
    });
    const { b, dir } = await make();
    await b.putJob(1, spec());
    await b.build(1, 'k0000001');
    await waitFor(b, 1, 1, ['succeeded']);
    const env = readFileSync(path.join(dir, 'glue/jobs/kiln-job-1/builds/1/archive/env.txt'), 'utf8');
    for (const v of Object.values(secrets)) expect(env).not.toContain(v);
    expect(env).toMatch(/^PATH=/m);
    expect(env).toMatch(/^KILN_SDK_FORMATS=raw$/m);
    expect(env).toMatch(/^KILN_JOB=1$/m);
    expect(env).toContain(`TMPDIR=${path.join(dir, 'glue/jobs/kiln-job-1/builds/1/tmp')}\n`);
    await until(() => !existsSync(path.join(dir, 'glue/jobs/kiln-job-1/builds/1/tmp'))); // removed as the build ends
  });

  it("finding 12: an SDK internal error reaches the user as a reference only; the detail goes to the glue's log", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const { pino } = await import('pino');
    const { Writable } = await import('node:stream');
    const logger = pino(
      { level: 'info' },
      new Writable({
        write(c, _e, cb) {
          lines.push(JSON.parse(String(c)) as Record<string, unknown>);
          cb();
        },
      }),
    );
    const { b, dir } = await make({ logger });
    await b.putJob(1, spec('internal'));
    await b.build(1, 'k0000001');
    const st = await waitFor(b, 1, 1, ['failed']);
    expect(st.reason).toBe('Internal error in the build service (reference 0123456789ab)');
    // The state is written first; the detail is logged and its file removed after, then 'build finished'.
    await until(() => lines.some((l) => l.msg === 'build finished'), 60_000, 20);
    expect(lines.find((l) => l.msg === 'the SDK failed with an internal error')?.detail).toContain(
      '/var/lib/kiln/secret-path',
    );
    expect(existsSync(path.join(dir, 'glue/jobs/kiln-job-1/builds/1/archive/internal-error.log'))).toBe(false);
    expect((await b.log(1, 1, 0)).text).not.toContain('secret-path');
  });
});

describe('local store lock (finding 12: two writers at once)', () => {
  it('a slow holder keeps the lock however old it is: nobody else enters meanwhile', async () => {
    const { dir } = await make({ runner: false });
    const a = new LocalBackend({ dataDir: dir, runner: false });
    const c = new LocalBackend({ dataDir: dir, runner: false });
    await a.start();
    await c.start();
    const la = (a as unknown as { store: { lock: { run<T>(fn: () => Promise<T>): Promise<T> } } }).store.lock;
    const lc = (c as unknown as { store: { lock: { run<T>(fn: () => Promise<T>): Promise<T> } } }).store.lock;
    let inside = 0;
    let most = 0;
    const section = (hold: () => Promise<void>) => async () => {
      inside++;
      most = Math.max(most, inside);
      try {
        await hold();
      } finally {
        inside--;
      }
    };
    const old = new Date(Date.now() - 10 * 60_000);
    const first = la.run(
      section(async () => {
        // Whatever marks the lock, make it look ten minutes old (the mkdir lock broke anything older than 30 s).
        const { utimes } = await import('node:fs/promises');
        await utimes(path.join(dir, 'glue/.lock'), old, old).catch(() => undefined);
        await new Promise((r) => setTimeout(r, 600));
      }),
    );
    await new Promise((r) => setTimeout(r, 50));
    const second = lc.run(
      section(async () => {
        await new Promise((r) => setTimeout(r, 10));
      }),
    );
    await Promise.all([first, second]);
    expect(most).toBe(1);
  });

  it('a lock whose holder died is free at once (liveness, not age)', async () => {
    const t = tempDir('kiln-glue-lock-');
    cleanups.push(t.cleanup);
    const { spawn } = await import('node:child_process');
    const script = `
      import { LocalBackend } from ${JSON.stringify(path.resolve('dist/glue/backends/local/index.js'))};
      const b = new LocalBackend({ dataDir: ${JSON.stringify(t.dir)}, runner: false });
      await b.start();
      b.store.lock.run(() => { process.stdout.write('holding\\n'); return new Promise(() => {}); });
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (c: Buffer) => {
        if (String(c).includes('holding')) resolve();
      });
      child.on('exit', (c) => reject(new Error(`holder exited ${c}`)));
    });
    const b = new LocalBackend({ dataDir: t.dir, runner: false });
    await b.start();
    cleanups.push(() => b.close());
    // Held by a live process: a writer waits.
    const waiting = b.putJob(1, spec()).then(() => Date.now());
    await new Promise((r) => setTimeout(r, 300));
    const killedAt = Date.now();
    child.kill('SIGKILL');
    expect(await waiting).toBeGreaterThanOrEqual(killedAt);
    expect((await b.listJobs()).map((j) => j.job)).toEqual([1]);
  });
});
