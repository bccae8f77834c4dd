import { createHash } from 'node:crypto';
import { createReadStream, existsSync, promises as fsp, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/shared/exit-status.js';
import { signText } from '../../src/shared/sshsig.js';
import { kiln, kilnRun, repo, type Run } from '../helpers/kiln.js';
import { tempDir } from '../helpers/tmp.js';

async function sha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file)) h.update(c as Buffer);
  return h.digest('hex');
}

/** One real build of dockerfiles/debian-minimal shared by every assertion (build + two boots take a few minutes). */
describe('kiln sdk build dockerfiles/debian-minimal (real dockerd + QEMU)', () => {
  const t = tempDir('kiln-sdk-e2e-');
  const out = path.join(t.dir, 'out');
  let run: Run;
  let result: {
    ok: boolean;
    sdkVersion: string;
    startedAt: string;
    finishedAt: string;
    artifacts: { name: string; format: string; size: number; allocated: number; sha256: string }[];
    bootTests: {
      artifact: string;
      firmware: string;
      passed: boolean;
      seconds: number;
      reason?: string;
      serialLog?: string;
    }[];
    stages: { name: string; seconds: number }[];
    error?: { code: string; message: string };
  };

  const key = path.join(t.dir, 'signing_key');
  const otherKey = path.join(t.dir, 'other_key');

  beforeAll(async () => {
    for (const k of [key, otherKey])
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'kiln-test', '-f', k]);
    // A signing key in the builder's environment (the old KILN_SDK_SIGNING_KEY_FILE) must never be used: builders hold no key.
    run = await kilnRun(
      [
        'sdk',
        'build',
        '--dockerfile',
        path.join(repo, 'dockerfiles/debian-minimal/Dockerfile'),
        '--out',
        out,
        '--format',
        'raw,qcow2,tar',
      ],
      { KILN_SDK_BOOT_TIMEOUT_SECONDS: '1200', KILN_SDK_SIGNING_KEY_FILE: key },
    );
    result = JSON.parse(await fsp.readFile(path.join(out, 'result.json'), 'utf8'));
  }, 3_600_000);
  afterAll(() => t.cleanup());

  it('succeeds and writes the documented result.json shape', () => {
    expect(run.stderr).toBe('');
    expect(result.error).toBeUndefined();
    expect(result.ok).toBe(true);
    expect(run.code).toBe(0);
    expect(Object.keys(result).sort()).toEqual([
      'artifacts',
      'bootTests',
      'finishedAt',
      'ok',
      'sdkVersion',
      'stages',
      'startedAt',
    ]);
    expect(Date.parse(result.finishedAt)).toBeGreaterThan(Date.parse(result.startedAt));
    expect(result.stages.map((s) => s.name)).toEqual(
      expect.arrayContaining(['policy', 'base', 'build', 'export', 'finish', 'disk', 'checksum', 'boot']),
    );
  });

  it('image.raw exists, is sparse, and its sha256 and size match result.json', async () => {
    const raw = path.join(out, 'image.raw');
    const st = statSync(raw);
    const a = result.artifacts.find((x) => x.name === 'image.raw')!;
    expect(a.format).toBe('raw');
    expect(a.size).toBe(st.size);
    expect(Math.abs(a.allocated - st.blocks * 512)).toBeLessThan(2 ** 20);
    expect(st.blocks * 512).toBeLessThan(st.size * 0.9);
    expect(await sha256(raw)).toBe(a.sha256);
    // An MBR boot signature and syslinux's MBR code.
    const fh = await fsp.open(raw, 'r');
    const buf = Buffer.alloc(512);
    await fh.read(buf, 0, 512, 0);
    await fh.close();
    expect(buf.readUInt16LE(510)).toBe(0xaa55);
    // GPT with an ESP (systemd-boot) and the x86-64 root type, the ESP marked legacy-BIOS-bootable for syslinux.
    const pt = JSON.parse(execFileSync('sfdisk', ['-J', raw], { encoding: 'utf8' })).partitiontable;
    expect(pt.label).toBe('gpt');
    expect(pt.partitions.map((p: { type: string }) => p.type)).toEqual([
      'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
      '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709',
    ]);
    expect(pt.partitions[0].attrs).toMatch(/LegacyBIOSBootable/);
  });

  it('image.qcow2 is a compressed qcow2 whose sha256 matches', async () => {
    const q = path.join(out, 'image.qcow2');
    const a = result.artifacts.find((x) => x.name === 'image.qcow2')!;
    expect(a.format).toBe('qcow2');
    expect(await sha256(q)).toBe(a.sha256);
    expect(a.size).toBeLessThan(result.artifacts.find((x) => x.name === 'image.raw')!.allocated);
    const head = Buffer.alloc(4);
    const fh = await fsp.open(q, 'r');
    await fh.read(head, 0, 4, 0);
    await fh.close();
    expect(head.toString('latin1')).toBe('QFI\xfb');
  });

  it('rootfs.tar.zst holds the finished root filesystem', () => {
    const a = result.artifacts.find((x) => x.name === 'rootfs.tar.zst')!;
    expect(a.format).toBe('tar');
    const list = execFileSync('tar', ['--zstd', '-tvf', path.join(out, 'rootfs.tar.zst')], {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    });
    expect(list).toMatch(/ \.\/etc\/fstab\n/);
    expect(list).toMatch(/^-rwsr-xr-x 0\/0 .* \.\/usr\/bin\/su$/m);
  });

  it('both images booted to a login prompt', () => {
    // BIOS for each format; UEFI (OVMF + systemd-boot on the ESP) once, the bytes being the same.
    expect(result.bootTests.map((b) => `${b.artifact}/${b.firmware}`)).toEqual([
      'image.raw/bios',
      'image.qcow2/bios',
      'image.raw/uefi',
    ]);
    expect(result.bootTests[0]!.passed).toBe(true);
    for (const b of result.bootTests) {
      expect(b.passed, b.reason).toBe(true);
      expect(b.serialLog).toMatch(/login:/);
      expect(b.serialLog!.length).toBeLessThanOrEqual(16 * 1024);
    }
    expect(existsSync(path.join(out, 'serial-image.raw.log'))).toBe(true);
    expect(readFileSync(path.join(out, 'serial-image.raw-uefi.log'), 'latin1')).toMatch(/BdsDxe: starting Boot/);
  });

  it('logs to build.log and prints ##kiln progress events on stdout', async () => {
    const log = await fsp.readFile(path.join(out, 'build.log'), 'utf8');
    expect(log).toContain('[kiln] == boot');
    const events = run.stdout
      .split('\n')
      .filter((l) => l.startsWith('##kiln '))
      .map((l) => JSON.parse(l.slice(7)) as { stage: string; percent: number });
    expect(events.map((e) => e.stage)).toEqual(expect.arrayContaining(['policy', 'build', 'disk', 'boot', 'done']));
    expect(events.at(-1)).toMatchObject({ stage: 'done', percent: 100 });
  });

  it('writes manifest.json (packages from dpkg, disk layout, sizes), an SPDX SBOM, SLSA provenance and SHA256SUMS, unsigned (the web signs)', async () => {
    const m = JSON.parse(await fsp.readFile(path.join(out, 'manifest.json'), 'utf8'));
    const names = m.packages.map((p: { name: string }) => p.name);
    expect(names).toEqual(expect.arrayContaining(['linux-image-amd64', 'systemd-sysv', 'libc6']));
    expect(m.packages.find((p: { name: string }) => p.name === 'libc6')).toMatchObject({
      architecture: 'amd64',
      source: 'glibc',
    });
    expect(m.disk.partitions.map((p: { filesystem: string }) => p.filesystem)).toEqual(['vfat', 'ext4']);
    expect(m.disk.label).toBe('gpt');
    expect(m.disk.totalBytes).toBe(result.artifacts.find((a) => a.name === 'image.raw')!.size);
    expect(m.os.versionCodename).toBe('bookworm');
    expect(m.baseImages[0].id).toMatch(/^sha256:[0-9a-f]{64}$/);
    // The Dockerfile's LABELs, without the io.kiln.* labels of the base and of the build.
    expect(m.image.labels).toEqual({
      'org.opencontainers.image.title': 'kiln debian-minimal',
      'org.opencontainers.image.description': 'The smallest Debian that boots',
    });
    const sbom = JSON.parse(await fsp.readFile(path.join(out, 'sbom.spdx.json'), 'utf8'));
    expect(sbom.spdxVersion).toBe('SPDX-2.3');
    expect(sbom.packages.length).toBe(m.packages.length + 1);
    const prov = JSON.parse(await fsp.readFile(path.join(out, 'provenance.json'), 'utf8'));
    expect(prov.predicateType).toBe('https://slsa.dev/provenance/v1');
    // Each artifact subject carries the image's LABELs, as the manifest lists them.
    expect(prov.subject).toEqual(
      expect.arrayContaining(
        result.artifacts.map((a) => ({ name: a.name, digest: { sha256: a.sha256 }, annotations: m.image.labels })),
      ),
    );
    // No ENTRYPOINT/CMD: no service, and the manifest says so.
    expect(m.runtime).toMatchObject({
      service: null,
      argv: null,
      skipped: expect.stringMatching(/no ENTRYPOINT\/CMD/),
      workdir: '/',
      stopSignal: 'SIGTERM',
      exposedPorts: [],
      volumes: [],
    });
    expect(prov.predicate.buildDefinition.resolvedDependencies[0].digest.sha256).toBe(m.baseImages[0].id.slice(7));
    const sums = await fsp.readFile(path.join(out, 'SHA256SUMS'), 'utf8');
    expect(
      sums
        .split('\n')
        .filter(Boolean)
        .map((l) => l.slice(66))
        .sort(),
    ).toEqual(['image.qcow2', 'image.raw', 'manifest.json', 'provenance.json', 'rootfs.tar.zst', 'sbom.spdx.json']);
    expect(existsSync(path.join(out, 'SHA256SUMS.sig'))).toBe(false);
  });

  it('kiln verify passes, fails with another key, and fails when one byte is flipped', async () => {
    // Signed as the web signs its own SHA256SUMS (src/web/services/attest.ts), with the same shared primitive.
    await fsp.writeFile(
      path.join(out, 'SHA256SUMS.sig'),
      await signText(await fsp.readFile(path.join(out, 'SHA256SUMS'), 'utf8'), key),
    );
    const ok = await kilnRun(['verify', out, '--key', `${key}.pub`]);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    const report = JSON.parse(ok.stdout);
    expect(report.checks.map((c: { name: string }) => c.name)).toEqual(
      expect.arrayContaining(['signature', 'sbom', 'sha256 image.raw', 'sha256 image.qcow2']),
    );
    expect((await kilnRun(['verify', out, '--key', `${otherKey}.pub`])).code).toBe(EXIT.verification);
    expect((await kilnRun(['verify', out])).code).toBe(EXIT.verification);

    const flip = async (file: string, at: number) => {
      const fh = await fsp.open(file, 'r+');
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, at);
      b[0] = b[0]! ^ 0xff;
      await fh.write(b, 0, 1, at);
      await fh.close();
    };
    const raw = path.join(out, 'image.raw');
    await flip(raw, 2 * 2 ** 20 + 17);
    const bad = await kilnRun(['verify', out, '--key', `${key}.pub`]);
    await flip(raw, 2 * 2 ** 20 + 17);
    expect(bad.code).toBe(EXIT.verification);
    expect(bad.stderr).toMatch(/FAILED sha256 image.raw: mismatch/);
    const sums = path.join(out, 'SHA256SUMS');
    await flip(sums, 3);
    const badSig = await kilnRun(['verify', out, '--key', `${key}.pub`]);
    await flip(sums, 3);
    expect(badSig.code).toBe(EXIT.verification);
    expect(badSig.stderr).toMatch(/FAILED signature/);
    expect((await kilnRun(['verify', out, '--key', `${key}.pub`])).code).toBe(0);
  });
});

describe('kiln sdk build failures', () => {
  const t = tempDir('kiln-sdk-fail-');
  afterAll(() => t.cleanup());

  it('refuses a policy violation before building, with result.json ok:false and line numbers', async () => {
    const df = path.join(t.dir, 'Dockerfile');
    await fsp.writeFile(df, '# syntax=evil/frontend\nFROM alpine:3\nADD http://169.254.169.254/x /x\n');
    const out = path.join(t.dir, 'out');
    const r = await kilnRun(['sdk', 'build', '--dockerfile', df, '--out', out]);
    expect(r.code).not.toBe(0);
    const res = JSON.parse(await fsp.readFile(path.join(out, 'result.json'), 'utf8'));
    expect(res.ok).toBe(false);
    expect(res.error.code).toBe('policy_violation');
    expect(res.error.message).toMatch(/line 1: .*syntax/);
    expect(res.error.message).toMatch(
      /line 2: FROM alpine:3 is not an allowed base image; allowed: debian:bookworm \(or debian:12, debian:oldstable\), debian:trixie \(or debian:13, debian:latest, debian:stable\)/,
    );
    expect(res.error.message).toMatch(/line 3: ADD of a remote URL/);
    expect(res.stages.map((s: { name: string }) => s.name)).toEqual(['policy']);
  });

  it('a failing RUN fails the build with build_failed', async () => {
    const df = path.join(t.dir, 'Dockerfile.fail');
    await fsp.writeFile(df, 'FROM debian:bookworm\nRUN echo kiln-failing-step && exit 3\n');
    const out = path.join(t.dir, 'out2');
    const r = await kilnRun(['sdk', 'build', '--dockerfile', df, '--out', out]);
    expect(r.code).toBe(1);
    const res = JSON.parse(await fsp.readFile(path.join(out, 'result.json'), 'utf8'));
    expect(res.ok).toBe(false);
    expect(res.error.code).toBe('build_failed');
    expect(await fsp.readFile(path.join(out, 'build.log'), 'utf8')).toContain('kiln-failing-step');
  });

  it('case 42: a RUN that sleeps past sdk.buildTimeoutSeconds is killed at the timeout; the state says timeout', async () => {
    const slow = path.join(t.dir, 'Dockerfile.slow');
    await fsp.writeFile(slow, 'FROM debian:bookworm\nRUN echo kiln-slow-step-$RANDOM && sleep 100000\n');
    const r1 = await kilnRun(['sdk', 'build', '--dockerfile', slow, '--out', path.join(t.dir, 'o-timeout')], {
      KILN_SDK_BUILD_TIMEOUT_SECONDS: '5',
    });
    expect(r1.code).toBe(1);
    const res1 = JSON.parse(await fsp.readFile(path.join(t.dir, 'o-timeout/result.json'), 'utf8'));
    expect(res1.error).toMatchObject({ code: 'timeout' });
    expect(res1.error.message).toMatch(/limit of 5 s/);
  }, 300_000);

  it('case 51: a build printing far past sdk.logCapBytes is aborted at the cap; the log ends with "truncated" and why', async () => {
    const loud = path.join(t.dir, 'Dockerfile.loud');
    // ~14 MB of output against a 20 kB cap.
    await fsp.writeFile(loud, 'FROM debian:bookworm\nRUN echo $RANDOM && seq 1 2000000 && echo kiln-loud-end\n');
    const r2 = await kilnRun(['sdk', 'build', '--dockerfile', loud, '--out', path.join(t.dir, 'o-loud')], {
      KILN_SDK_LOG_CAP_BYTES: '20000',
    });
    expect(r2.code).toBe(1);
    const res2 = JSON.parse(await fsp.readFile(path.join(t.dir, 'o-loud/result.json'), 'utf8'));
    expect(res2.error.code).toBe('limit_exceeded');
    const log = await fsp.readFile(path.join(t.dir, 'o-loud/build.log'), 'utf8');
    expect(log.length).toBeLessThan(22_000);
    expect(log).not.toMatch(/^kiln-loud-end$/m); // the RUN line itself, echoed by the engine, holds the word
    const tail = log.split('\n').filter(Boolean).slice(-6).join('\n');
    expect(tail).toContain('[kiln] log truncated: it reached the cap of 20000 bytes (sdk.logCapBytes)');
    expect(tail).toMatch(/\[kiln\] FAILED \(limit_exceeded\): .*log size limit/);
    expect(tail).toMatch(/\[kiln\] build failed$/);
  }, 300_000);

  it('SIGTERM cancels and still writes result.json', async () => {
    const slow = path.join(t.dir, 'Dockerfile.slow');
    const out3 = path.join(t.dir, 'o-cancel');
    const p = spawn(kiln, ['sdk', 'build', '--dockerfile', slow, '--out', out3], { stdio: ['ignore', 'pipe', 'pipe'] });
    let seen = '';
    await new Promise<void>((resolve) =>
      p.stdout.on('data', (c: Buffer) => {
        seen += c.toString();
        if (seen.includes('kiln-slow-step')) resolve();
      }),
    );
    p.kill('SIGTERM');
    // The step sleeps for a day: an exit at all is the SIGTERM's doing.
    const code = await new Promise<number | null>((resolve) => p.on('close', resolve));
    expect(code).toBe(1);
    const res3 = JSON.parse(await fsp.readFile(path.join(out3, 'result.json'), 'utf8'));
    expect(res3.error.message).toMatch(/cancelled/);
  }, 300_000);

  it('usage errors exit 2', async () => {
    const r = await kilnRun(['sdk', 'build', '--out', t.dir]);
    expect(r.code).toBe(2);
  });
});
