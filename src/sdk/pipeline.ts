import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Dockerode from 'dockerode';
import type { FrozenConfig, OutputFormat } from '../config/index.js';
import { KilnError, toKilnError } from '../shared/errors.js';
import { run } from '../shared/subprocess.js';
import { ensureBase, type BaseImage } from './base.js';
import { checkBootable } from './bootable.js';
import { bootTest, type BootTestResult } from './boot-test.js';
import { buildTag, dockerBuild } from './docker-build.js';
import { exportRootfs } from './export.js';
import { finishRootfs } from './finish.js';
import { copyOut } from './fsroot.js';
import { assembleDisk, planDisk } from './disk.js';
import { checkDockerfile } from './policy.js';
import { Reporter } from './reporter.js';
import { describeArtifact, writeResult, type Artifact, type BuildResult } from './result.js';
import { SDK_VERSION } from './version.js';

export type SdkSettings = FrozenConfig['sdk'];

export interface SdkBuildOptions {
  dockerfile: string;
  outDir: string;
  contextTar?: string;
  formats: readonly OutputFormat[];
  buildArgs: Readonly<Record<string, string>>;
}

export interface SdkDeps {
  docker: Dockerode;
  settings: SdkSettings;
  /** Where stdout-bound text goes (tests may capture it). */
  out?: (s: string) => void;
}

const MAX_DOCKERFILE_BYTES = 1 << 20;

const ARTIFACT_NAMES: Record<string, string> = { raw: 'image.raw', qcow2: 'image.qcow2' };

async function sha256Of(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file)) h.update(c as Buffer);
  return h.digest('hex');
}

function readDockerfile(buf: Buffer): string {
  if (buf.length > MAX_DOCKERFILE_BYTES) throw new KilnError('too_large', 'The Dockerfile is larger than 1 MiB');
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    throw new KilnError('invalid_input', 'The Dockerfile is not valid UTF-8');
  }
  if (text.includes('\0')) throw new KilnError('invalid_input', 'The Dockerfile contains a NUL byte');
  return text;
}

/**
 * `kiln sdk build`: policy → base → build → export → finish → disk → convert → checksum → boot. Always writes
 * DIR/result.json (ok:false plus error on failure) and DIR/build.log; removes its staging area whatever happens.
 */
export async function sdkBuild(deps: SdkDeps, o: SdkBuildOptions): Promise<BuildResult> {
  const s = deps.settings;
  const startedAt = new Date().toISOString();
  const outDir = path.resolve(o.outDir);
  await fsp.mkdir(outDir, { recursive: true });
  let limitHit = false;
  const rep = new Reporter(path.join(outDir, 'build.log'), s.logCapBytes, deps.out, () => { limitHit = true; });
  // 0700: the staging tree keeps the guest's setuid files and device-free /dev; no other host user may reach it.
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-sdk-'));
  await fsp.chmod(work, 0o700);
  const artifacts: Artifact[] = [];
  const bootTests: BootTestResult[] = [];
  let error: BuildResult['error'];

  try {
    rep.log(`[kiln] sdk ${SDK_VERSION}: building ${path.basename(o.dockerfile)} into ${o.formats.join(', ')}`);
    const formats = [...new Set(o.formats)];
    for (const f of formats) if (!ARTIFACT_NAMES[f]) throw new KilnError('invalid_input', `The output format ${f} is not supported yet (supported: ${Object.keys(ARTIFACT_NAMES).join(', ')})`);

    const { text, policy } = await rep.stage('policy', 2, 'checking the Dockerfile', async () => {
      const text = readDockerfile(await fsp.readFile(o.dockerfile));
      const policy = checkDockerfile(text, { bases: s.bases, allowRemoteAdd: s.allowRemoteAdd, buildArgs: o.buildArgs });
      return { text, policy };
    });

    const bases: BaseImage[] = await rep.stage('base', 5, `base images: ${policy.bases.join(', ') || 'none'}`, async () => {
      const out: BaseImage[] = [];
      for (const b of policy.bases) out.push(await ensureBase(deps.docker, b, { mirror: s.mirror, devuanMirror: s.devuanMirror, snapshot: s.snapshot }, work, rep));
      return out;
    });
    void bases;

    const req = { dockerfileText: text, contextTar: o.contextTar, buildArgs: { ...o.buildArgs } };
    const contextDigest = o.contextTar ? await sha256Of(o.contextTar) : '';
    const built = await rep.stage('build', 10, 'building the Dockerfile', () =>
      dockerBuild(deps.docker, req, buildTag(req, contextDigest), { network: s.buildNetwork, memoryMb: s.memoryMb, cpus: s.cpus, timeoutSeconds: s.buildTimeoutSeconds }, rep));
    rep.log(`[kiln] built image ${built.id} (${built.tag})`);

    const rootDir = path.join(work, 'rootfs');
    const stats = await rep.stage('export', 45, 'exporting the filesystem', () => exportRootfs(deps.docker, built.id, rootDir, s.maxImageMb * 2 ** 20, rep));
    rep.log(`[kiln] export: ${stats.files} files, ${stats.dirs} dirs, ${stats.symlinks} symlinks, ${(stats.dataBytes / 2 ** 20).toFixed(0)} MiB`);

    const check = await rep.stage('finish', 55, 'preparing the root filesystem', async () => {
      await finishRootfs(rootDir, rep);
      return checkBootable(rootDir);
    });
    if (!check.boot) throw new KilnError('build_failed', 'The image has no kernel in /boot: install one in the Dockerfile (Debian: `apt-get install -y --no-install-recommends linux-image-amd64`)');
    if (!check.boot.initrd) throw new KilnError('build_failed', `The kernel ${check.boot.version} has no initrd in /boot: install initramfs-tools in the Dockerfile`);
    if (!check.init) throw new KilnError('build_failed', 'The image has no init (/sbin/init): install one in the Dockerfile (Debian: `apt-get install -y systemd-sysv`)');
    rep.log(`[kiln] kernel ${check.boot.version}, init ${check.init}, ${check.osRelease.PRETTY_NAME ?? 'unknown OS'}`);

    const rawPath = formats.includes('raw') ? path.join(outDir, 'image.raw') : path.join(work, 'image.raw');
    await rep.stage('disk', 60, 'assembling the disk image', async () => {
      const kernelFile = path.join(work, 'vmlinuz');
      const initrdFile = path.join(work, 'initrd.img');
      const kbytes = await copyOut(rootDir, check.boot!.kernel, kernelFile);
      const ibytes = await copyOut(rootDir, check.boot!.initrd!, initrdFile);
      const layout = planDisk({ rootBytes: stats.blockBytes, entries: stats.files + stats.dirs + stats.symlinks, bootPayloadBytes: kbytes + ibytes });
      if (layout.totalBytes > s.maxImageMb * 2 ** 20) throw new KilnError('limit_exceeded', `The disk image would be ${Math.ceil(layout.totalBytes / 2 ** 20)} MiB, over the limit of ${s.maxImageMb} MiB`);
      rep.log(`[kiln] disk: ${Math.round(layout.totalBytes / 2 ** 20)} MiB (boot ${layout.boot.sectors / 2048} MiB, root ${layout.root.sectors / 2048} MiB)`);
      await assembleDisk({ layout, rootDir, kernelFile, initrdFile, workDir: work, out: rawPath });
      await fsp.rm(rootDir, { recursive: true, force: true });
    });

    const images: { name: string; format: 'raw' | 'qcow2'; file: string }[] = [];
    if (formats.includes('raw')) images.push({ name: 'image.raw', format: 'raw', file: rawPath });
    if (formats.includes('qcow2')) {
      const q = path.join(outDir, 'image.qcow2');
      await rep.stage('convert', 68, 'converting to qcow2', async () => {
        await fsp.rm(q, { force: true });
        const r = await run('qemu-img', ['convert', '-c', '-W', '-m', '8', '-O', 'qcow2', '-o', 'compression_type=zstd', rawPath, q], { timeoutMs: 20 * 60_000 });
        if (r.code !== 0) throw new KilnError('build_failed', `qemu-img convert failed: ${r.stderr.trim().slice(-300)}`);
      });
      images.push({ name: 'image.qcow2', format: 'qcow2', file: q });
    }

    await rep.stage('checksum', 75, 'computing checksums', async () => {
      for (const im of images) artifacts.push(await describeArtifact(outDir, im.name, im.format));
    });

    await rep.stage('boot', 80, `boot test of ${images.map((i) => i.name).join(', ')} (BIOS, ${s.accel})`, async () => {
      for (const [i, im] of images.entries()) {
        rep.progress('boot', 80 + (i * 18) / images.length, `booting ${im.name}`);
        const res = await bootTest({ image: im.file, artifact: im.name, format: im.format, accel: s.accel, timeoutSeconds: s.bootTimeoutSeconds, serialLogFile: path.join(outDir, `serial-${im.name}.log`) });
        bootTests.push(res);
        rep.log(`[kiln] boot test ${im.name}: ${res.passed ? 'passed' : 'FAILED'} in ${res.seconds} s${res.reason ? ` (${res.reason})` : ''}`);
      }
    });
    const failed = bootTests.find((b) => !b.passed);
    if (failed) throw new KilnError('build_failed', `The boot test of ${failed.artifact} failed: ${failed.reason ?? 'unknown reason'}`);
  } catch (e) {
    const ke = limitHit && !(e instanceof KilnError && e.code === 'limit_exceeded')
      ? new KilnError('limit_exceeded', 'The build log grew past the log size limit')
      : toKilnError(e);
    error = { code: ke.code, message: ke.code === 'internal' ? `Internal error: ${(e as Error).message}` : ke.message };
    rep.log(`[kiln] FAILED (${error.code}): ${error.message}`);
    if (ke.detail !== undefined) rep.log(`[kiln] detail: ${JSON.stringify(ke.detail).slice(0, 4000)}`);
  } finally {
    await fsp.rm(work, { recursive: true, force: true }).catch(() => undefined);
  }

  const result: BuildResult = {
    ok: !error,
    sdkVersion: SDK_VERSION,
    startedAt,
    finishedAt: new Date().toISOString(),
    artifacts,
    bootTests,
    stages: rep.stages,
    ...(error ? { error } : {}),
  };
  await writeResult(outDir, result);
  rep.progress('done', 100, error ? `failed: ${error.message.slice(0, 200)}` : 'image ready');
  rep.log(`[kiln] ${error ? 'build failed' : 'build succeeded'}`);
  await rep.close();
  return result;
}
