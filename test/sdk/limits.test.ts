import { existsSync, promises as fsp, readdirSync, statfsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runSdkBuild } from '../helpers/sdk.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * Config limits the build timeout and log cap tests (e2e.test.ts) do not cover: build memory, processes, disk, build
 * network and the image size. Each must fail the build with that reason in result.json, leave no image behind and no staging dir.
 * Every failing step carries a unique word, so the engine's layer cache can never turn it into a success.
 */
const repo = path.resolve(import.meta.dirname, '../..');
const t = tempDir('kiln-sdk-limits-');
afterAll(() => t.cleanup());

interface Outcome {
  code: number | null;
  result: { ok: boolean; error: { code: string; message: string } };
  log: string;
  outFiles: string[];
  newStaging: string[];
}

// The SDK's staging dirs: in the temp dir, and its file trees on /dev/shm when they fit in memory (staging.ts).
const staging = () =>
  new Set([
    ...readdirSync(os.tmpdir()).filter((n) => n.startsWith('kiln-sdk-') && !n.startsWith('kiln-sdk-limits-')),
    ...(existsSync('/dev/shm')
      ? readdirSync('/dev/shm')
          .filter((n) => n.startsWith('kiln-sdk-tree-'))
          .map((n) => `/dev/shm/${n}`)
      : []),
  ]);

async function build(name: string, dockerfile: string, env: Record<string, string>): Promise<Outcome> {
  const df = path.join(t.dir, `${name}.Dockerfile`);
  await fsp.writeFile(df, dockerfile);
  const out = path.join(t.dir, name);
  const before = staging();
  const { code, result, log } = await runSdkBuild(df, out, { format: 'raw,qcow2', env });
  return {
    code,
    result: result as Outcome['result'],
    log,
    outFiles: readdirSync(out).sort(),
    newStaging: [...staging()].filter((n) => !before.has(n)),
  };
}

function expectCleanFailure(o: Outcome, code: string): void {
  expect(o.code).toBe(1);
  expect(o.result.ok).toBe(false);
  expect(o.result.error.code).toBe(code);
  expect(o.outFiles).toEqual(['build.log', 'result.json']);
  expect(o.newStaging).toEqual([]);
}

describe('SDK limits from config', () => {
  it('memory: a RUN step that needs more than sdk.memoryMb is killed and the build says so', async () => {
    const o = await build(
      'memory',
      `FROM debian:bookworm\nRUN echo kiln-mem-step ${Date.now()} && perl -e '$x = "a" x (400 * 1024 * 1024); print length($x)'\n`,
      { KILN_SDK_MEMORY_MB: '64' },
    );
    expectCleanFailure(o, 'limit_exceeded');
    expect(o.result.error.message).toMatch(/memory limit of 64 MiB/);
    expect(o.log).toContain('kiln-mem-step');
  }, 300_000);

  it('case 40: processes: a RUN step cannot start more than sdk.pidsLimit processes, and the per-build cgroup is removed', async () => {
    // Only this build's cgroup counts: one left by an earlier test's cancelled build is not this build's.
    const buildGroups = () =>
      existsSync('/sys/fs/cgroup/pids/kiln')
        ? readdirSync('/sys/fs/cgroup/pids/kiln').filter((n) => n.startsWith('build-'))
        : [];
    const before = new Set(buildGroups());
    const o = await build(
      'pids',
      `FROM debian:bookworm\nRUN echo kiln-pids-probe ${Date.now()}; for i in $(seq 1 300); do sleep 30 & done; echo all-forked\n`,
      { KILN_SDK_PIDS_LIMIT: '100' },
    );
    expectCleanFailure(o, 'limit_exceeded');
    expect(o.result.error.message).toMatch(/limit is 100 \(sdk\.pidsLimit\)/);
    expect(o.log).toContain('Cannot fork');
    expect(o.log).not.toMatch(/^all-forked$/m);
    expect(buildGroups().filter((n) => !before.has(n))).toEqual([]);
  }, 300_000);

  it('case 40: a fork bomb stays inside its build: the host process count stays bounded and the build fails', async () => {
    const count = () => readdirSync('/proc').filter((n) => /^\d+$/.test(n)).length;
    const baseline = count();
    let peak = baseline;
    const timer = setInterval(() => {
      peak = Math.max(peak, count());
    }, 100);
    try {
      const o = await build(
        'bomb',
        `FROM debian:bookworm\nRUN echo kiln-bomb ${Date.now()}; bomb() { bomb | bomb; }; bomb\n`,
        { KILN_SDK_PIDS_LIMIT: '100', KILN_SDK_BUILD_TIMEOUT_SECONDS: '45' },
      );
      expect(o.result.ok).toBe(false);
      expect(['limit_exceeded', 'timeout']).toContain(o.result.error.code);
      expect(o.outFiles).toEqual(['build.log', 'result.json']);
    } finally {
      clearInterval(timer);
    }
    // 100 in the build's cgroup, plus the usual churn of the test machine.
    expect(peak - baseline).toBeLessThan(100 + 60);
  }, 300_000);

  it('case 41: disk: a RUN step that writes more than sdk.maxBuildDiskMb is stopped, and the space comes back', async () => {
    const free = () => {
      const st = statfsSync('/var/lib/docker');
      return st.bavail * st.bsize;
    };
    const before = free();
    const o = await build(
      'disk',
      `FROM debian:bookworm\nRUN echo kiln-disk ${Date.now()}; dd if=/dev/zero of=/big bs=1M count=6000 status=none; echo kiln-wrote-all\n`,
      { KILN_SDK_MAX_BUILD_DISK_MB: '300' },
    );
    expectCleanFailure(o, 'limit_exceeded');
    expect(o.result.error.message).toMatch(/disk limit of 300 MiB \(sdk\.maxBuildDiskMb\)/);
    expect(o.log).not.toMatch(/^kiln-wrote-all$/m);
    // The step's container goes with the build (the engine removes it just after the stream ends): the space comes
    // back, give or take some metadata.
    const deadline = Date.now() + 60_000;
    while (before - free() >= 150 * 2 ** 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
    expect(before - free()).toBeLessThan(150 * 2 ** 20);
  }, 300_000);

  it('network none: RUN steps see only loopback, and the failure names the setting', async () => {
    const o = await build(
      'offline',
      'FROM debian:bookworm\nRUN ls /sys/class/net && [ "$(ls /sys/class/net)" != lo ] || { echo kiln-test-offline; exit 7; }\n',
      { KILN_SDK_BUILD_NETWORK: 'none' },
    );
    expectCleanFailure(o, 'build_failed');
    expect(o.log).toContain('kiln-test-offline');
    expect(o.result.error.message).toMatch(/non-zero code: 7/);
    expect(o.result.error.message).toContain('sdk.buildNetwork is none');
  }, 300_000);

  it('entries: a filesystem of more entries than sdk.maxImageEntries (empty files cost no bytes) stops the export, nothing left behind', async () => {
    const o = await build(
      'entries',
      `FROM debian:bookworm\nRUN echo kiln-entries ${Date.now()} && mkdir /many && cd /many && seq 1 30000 | xargs touch\n`,
      { KILN_SDK_MAX_IMAGE_ENTRIES: '20000' },
    );
    expectCleanFailure(o, 'limit_exceeded');
    expect(o.result.error.message).toBe(
      "The image's filesystem has more than 20000 entries (files, directories, links; sdk.maxImageEntries)",
    );
  }, 300_000);

  it('image size: a filesystem over sdk.maxImageMb stops the export', async () => {
    const df = await fsp.readFile(path.join(repo, 'dockerfiles/debian-minimal/Dockerfile'), 'utf8');
    const o = await build('size', df, { KILN_SDK_MAX_IMAGE_MB: '64' });
    expectCleanFailure(o, 'limit_exceeded');
    expect(o.result.error.message).toMatch(/larger than the limit of 64 MiB/);
  }, 900_000);
});
