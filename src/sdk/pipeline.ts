import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Dockerode from 'dockerode';
import type { FrozenConfig, OutputFormat } from '../config/index.js';
import { KilnError, toKilnError } from '../shared/errors.js';
import { run } from '../shared/subprocess.js';
import { installAppService, resetSshHostKeys, type AppBootCheck, type ImageRuntimeConfig } from './app.js';
import { ensureBase, type BaseImage } from './base.js';
import { baseRecords, logBaseUse } from './base-use.js';
import { baseNameList } from '../dockerfile/base-names.js';
import { checkBootable, type BootCheck } from './bootable.js';
import { bootTest, type BootTestResult } from './boot-test.js';
import { buildNetworkUrls, buildProxy, describeProxy } from './build-proxy.js';
import { describeTrust, loadBuildTrust, removeBuildTrust, trustLayers, trustRecord, type BuildTrust, type TrustRemoval } from './build-trust.js';
import { sweepBuildCgroups } from './cgroup.js';
import { buildTag, contextDigest, dockerBuild, type BuildSettings } from './docker-build.js';
import { imageInfo } from './docker-util.js';
import { enterEngine, KILN_CACHE, type EngineLock } from './engine-cache.js';
import { verifyEngineGuard } from './engine-guard.js';
import { exportRootfs } from './export.js';
import type { ExtractStats } from './extract.js';
import { finishRootfs } from './finish.js';
import { copyOut, lstatIn, writeFileIn } from './fsroot.js';
import { assembleDisk, KERNEL_CMDLINE, planDisk, SYSTEMD_BOOT_EFI, type DiskLayout } from './disk.js';
import { makeIso } from './iso.js';
import { buildManifest, imageLabels, buildSpdx, readPackages, writeSha256Sums, type DebPackage } from './manifest.js';
import { checkDockerfile } from '../dockerfile/policy.js';
import { pinBaseImages } from '../dockerfile/pin.js';
import { policyBaseConfigs } from './policy-bases.js';
import { buildProvenance } from './provenance.js';
import { Reporter } from './reporter.js';
import { recordInternalError } from './internal-error.js';
import { describeArtifact, sha256File, writeResult, type Artifact, type BuildResult } from './result.js';
import { treeStaging, type TreeStaging } from './staging.js';
import { SDK_VERSION } from './version.js';

export type SdkSettings = FrozenConfig['sdk'];

export interface SdkBuildOptions {
  dockerfile: string;
  outDir: string;
  contextTar?: string;
  formats: readonly OutputFormat[];
  buildArgs: Readonly<Record<string, string>>;
  /** The site admin's names for allowed bases (`--base-name NAME=BASE`); checked again against sdk.bases. */
  baseNames?: readonly { name: string; base: string }[];
  /** Aborts the build (SIGTERM from Jenkins or the local backend): children are stopped, result.json says so. */
  signal?: AbortSignal;
  /** Firmwares to boot-test with; default both (UEFI only when the disk is GPT and OVMF is installed). */
  bootFirmware?: readonly ('bios' | 'uefi')[];
}

export interface SdkDeps {
  docker: Dockerode;
  settings: SdkSettings;
  /** Where stdout-bound text goes (tests may capture it). */
  out?: (s: string) => void;
}

const MAX_DOCKERFILE_BYTES = 1 << 20;
export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

const exists = (p: string) => fsp.access(p).then(() => true, () => false);
const SUPPORTED: Record<string, { name: string }> = {
  raw: { name: 'image.raw' },
  qcow2: { name: 'image.qcow2' },
  tar: { name: 'rootfs.tar.zst' },
  iso: { name: 'image.iso' },
};

export function readDockerfile(buf: Buffer): string {
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
 * What the SDK adds when an image lacks a kernel or an init, per distribution family. Only what is missing: an
 * image that has sysvinit-core and no kernel must not get systemd-sysv, which apt would install by removing it.
 */
export function bootPackages(os: Record<string, string>, need: { kernel: boolean; init: boolean } = { kernel: true, init: true }): string[] | undefined {
  const ids = [os.ID ?? '', ...(os.ID_LIKE ?? '').split(/\s+/)].map((s) => s.toLowerCase());
  const pick = (init: string) => [...(need.kernel ? ['linux-image-amd64'] : []), ...(need.init ? [init] : [])];
  if (ids.includes('devuan')) return pick('sysvinit-core');
  if (ids.includes('debian') || ids.includes('ubuntu')) return pick('systemd-sysv');
  return undefined;
}

/**
 * The layer that installs Debian packages on top of a built image (the bootable layer, live-boot for the ISO). `from`
 * is the image's id, not a tag: the layer builds on exactly the image that was checked (no ONBUILD triggers).
 */
function aptLayer(from: string, pkgs: string[]): { dockerfileText: string; buildArgs: Record<string, string> } {
  return {
    dockerfileText: `FROM ${from}\nUSER root\nRUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${pkgs.join(' ')} && apt-get clean && rm -rf /var/lib/apt/lists/*\n`,
    buildArgs: {},
  };
}

/**
 * Makes an exported tree a machine's root: host files reset, SSH host keys, ENTRYPOINT/CMD as a boot service, and
 * the build's CA certificates out (unless sdk.buildTrust.keepInImage).
 */
async function prepareTree(root: string, runtime: ImageRuntimeConfig, rep: Reporter, trust?: BuildTrust): Promise<{ notes: string[]; appBoot?: AppBootCheck; trustRemoval?: TrustRemoval }> {
  await finishRootfs(root, rep);
  const notes: string[] = [];
  const trustRemoval = trust && !trust.keepInImage ? await removeBuildTrust(root, trust) : undefined;
  if (trustRemoval) {
    rep.log(`[kiln] finish: build trust taken out: ${trustRemoval.removed.join(', ') || 'nothing of it was in the image'}`);
    for (const n of trustRemoval.notes) rep.log(`[kiln] finish: build trust: ${n}`);
  }
  const sshNote = await resetSshHostKeys(root, rep);
  if (sshNote) notes.push(sshNote);
  const app = await installAppService(root, runtime, rep);
  if (app) notes.push(app.note);
  return { notes, appBoot: app?.boot, trustRemoval };
}

/**
 * The engine runs a base image's ONBUILD triggers in whatever builds on it: Kiln's own layers (bootable, live ISO)
 * would run the built image's triggers, which no policy saw where they fire. Such an image is refused.
 */
export function refuseOnBuild(config: { OnBuild?: string[] | null } | undefined): void {
  const triggers = config?.OnBuild ?? [];
  if (!triggers.length) return;
  throw new KilnError('policy_violation', `The built image declares ONBUILD triggers (${triggers.map((t) => JSON.stringify(t.slice(0, 80))).join(', ')}); ` +
    'Kiln builds its own layers on the image (the bootable layer, the live ISO), where they would run: remove ONBUILD from the final stage');
}

/**
 * Before anything reaches the engine: leftovers of dead builds go, the engine must be guarded (sdk.engineGuard), the
 * layer cache is pruned, and the engine's lock is taken for this build (engine-cache.ts). Returns the lock.
 */
async function enterEngineStage(deps: SdkDeps, rep: Reporter): Promise<EngineLock> {
  const s = deps.settings;
  const swept = await sweepBuildCgroups().catch(() => [] as string[]);
  if (swept.length) rep.log(`[kiln] removed ${swept.length} empty build cgroup(s) left by builds whose SDK is gone`);
  rep.log(`[kiln] ${s.engineGuard === 'verify' ? await verifyEngineGuard(deps.docker) : 'engine guard not verified (sdk.engineGuard=off)'}`);
  const entered = await enterEngine(deps.docker, { budgetBytes: s.imageCacheMb * 2 ** 20, maxAgeMs: s.imageCacheHours * 3_600_000, selector: KILN_CACHE });
  rep.log(`[kiln] ${entered.note}`);
  return entered.lock;
}

function missingParts(c: BootCheck): string[] {
  const m: string[] = [];
  if (!c.boot) m.push('a kernel');
  else if (!c.boot.initrd) m.push('an initrd');
  if (!c.init) m.push('an init');
  return m;
}

/**
 * `kiln sdk build`: policy → base → build → export → finish (+ bootable layer when needed) → disk → convert →
 * checksum/manifest/SBOM/provenance/SHA256SUMS → boot.
 * SHA256SUMS is the builder's claim, never signed here: a builder holds no key (the web re-hashes and signs).
 * Always writes DIR/result.json (ok:false plus error on failure) and DIR/build.log; removes its staging area
 * whatever happens.
 */
export async function sdkBuild(deps: SdkDeps, o: SdkBuildOptions): Promise<BuildResult> {
  const s = deps.settings;
  const startedAt = new Date().toISOString();
  const outDir = path.resolve(o.outDir);
  await fsp.mkdir(outDir, { recursive: true });
  let limitHit = false;
  const rep = new Reporter(path.join(outDir, 'build.log'), s.logCapBytes, deps.out, () => { limitHit = true; }, o.signal);
  // 0700: the staging tree keeps the guest's setuid files; no other host user may reach it.
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'kiln-sdk-'));
  await fsp.chmod(work, 0o700);
  const artifacts: Artifact[] = [];
  const bootTests: BootTestResult[] = [];
  const notes: string[] = [];
  let error: BuildResult['error'];
  let rootfsRemoval: Promise<void> | undefined;
  let trees: TreeStaging | undefined;
  let engineLock: EngineLock | undefined;
  const proxy = buildProxy(s.buildProxy);
  for (const secret of proxy?.secrets ?? []) rep.mask(secret);
  let trust: BuildTrust | undefined;
  let trustRemoval: TrustRemoval | undefined;
  const egress = { subnet: s.buildSubnet, allow: s.egressAllow, rules: s.egressRules, mirrors: buildNetworkUrls(s) };
  const buildSettings: BuildSettings = { network: s.buildNetwork, egress, memoryMb: s.memoryMb, cpus: s.cpus, pidsMax: s.pidsLimit, maxDiskBytes: s.maxBuildDiskMb * 2 ** 20, timeoutSeconds: s.buildTimeoutSeconds, proxyArgs: proxy?.args, signal: o.signal };

  try {
    const formats = [...new Set(o.formats)];
    if (!formats.length) throw new KilnError('invalid_input', 'No output format was asked for');
    for (const f of formats) if (!SUPPORTED[f]) throw new KilnError('invalid_input', `The output format ${f} is not supported yet (supported: ${Object.keys(SUPPORTED).join(', ')})`);
    rep.log(`[kiln] sdk ${SDK_VERSION}: building ${path.basename(o.dockerfile)} into ${formats.join(', ')}`);

    const { text, policy } = await rep.stage('policy', 2, 'checking the Dockerfile', async () => {
      const text = readDockerfile(await fsp.readFile(o.dockerfile));
      const baseConfigs = await policyBaseConfigs(deps.docker, s.bases);
      const baseNames = baseNameList(o.baseNames ?? [], s.baseNames);
      const policy = checkDockerfile(text, { bases: s.bases, baseNames, allowRemoteAdd: s.allowRemoteAdd, buildArgs: o.buildArgs, baseConfigs });
      return { text, policy };
    });
    const dockerfileSha256 = await sha256File(o.dockerfile);
    const contextSha256 = o.contextTar ? await contextDigest(o.contextTar).catch(() => { throw new KilnError('invalid_input', 'The build context does not exist or cannot be read'); }) : undefined;
    trust = await loadBuildTrust(s.buildTrust);
    if (trust) rep.log(`[kiln] ${describeTrust(trust)}`);
    for (const line of proxy ? describeProxy(proxy, text, o.buildArgs, s.buildNetwork) : []) rep.log(`[kiln] ${line}`);

    engineLock = await rep.stage('engine', 4, 'engine guard, layer cache', () => enterEngineStage(deps, rep));

    const bases: BaseImage[] = await rep.stage('base', 5, `base images: ${policy.bases.join(', ') || 'none'}`, async () => {
      const out: BaseImage[] = [];
      for (const b of policy.bases) out.push(await ensureBase(deps.docker, b, { mirror: s.mirror, devuanMirror: s.devuanMirror, devuanKeyring: s.devuanKeyring, snapshot: s.snapshot }, work, rep));
      logBaseUse(rep, policy.froms, out);
      return out;
    });

    // The engine gets each base by the id just checked, whatever name the Dockerfile used for it (dockerfile/pin.ts);
    // with build trust, by the id of Kiln's layer of CA certificates on it (build-trust.ts), so the tag follows too.
    const baseIds = Object.fromEntries(bases.map((b) => [b.name, b.id]));
    const buildIds = trust ? await rep.stage('trust', 8, 'build CA certificates on each base', () => trustLayers(deps.docker, bases, trust!, buildSettings, work, rep)) : baseIds;
    const pinned = pinBaseImages(text, policy.froms, buildIds);
    const req = { dockerfileText: pinned, contextTar: o.contextTar, buildArgs: { ...o.buildArgs } };
    const built = await rep.stage('build', 10, 'building the Dockerfile', () => dockerBuild(deps.docker, req, buildTag(req, contextSha256 ?? ''), buildSettings, rep));
    rep.log(`[kiln] built image ${built.id} (${built.tag})`);
    const builtInfo = await imageInfo(deps.docker, built.id);
    refuseOnBuild(builtInfo?.Config);
    const runtime = (builtInfo?.Config ?? {}) as ImageRuntimeConfig;

    const staged = await treeStaging(work, builtInfo?.Size ?? 0, s.maxImageEntries);
    trees = staged;
    rep.log(`[kiln] ${staged.note}`);
    const rootDir = path.join(staged.dir, 'rootfs');
    const maxBytes = s.maxImageMb * 2 ** 20;
    const limits = { maxBytes, maxEntries: s.maxImageEntries };
    let imageId = built.id;
    let stats: ExtractStats = await rep.stage('export', 45, 'exporting the filesystem', () => exportRootfs(deps.docker, imageId, rootDir, limits, rep));
    let check = await checkBootable(rootDir);

    const missing = missingParts(check);
    if (missing.length) {
      const pkgs = bootPackages(check.osRelease, { kernel: !check.boot?.initrd, init: !check.init });
      const hasApt = (await lstatIn(rootDir, '/usr/bin/apt-get'))?.isFile();
      if (!pkgs || !hasApt) {
        throw new KilnError('build_failed', `The image lacks ${missing.join(' and ')}, and Kiln cannot add them to ` +
          `${check.osRelease.PRETTY_NAME ?? 'an unknown distribution'}${hasApt ? '' : ' (no apt-get)'}: install a kernel with its initrd ` +
          '(Debian: linux-image-amd64) and an init (Debian: systemd-sysv) in the Dockerfile');
      }
      await rep.stage('bootable', 50, `adding ${pkgs.join(' and ')}`, async () => {
        const note = `the image had no ${missing.map((m) => m.replace(/^an? /, '')).join('/')}: Kiln added ${pkgs.join(', ')} in an extra layer`;
        rep.log(`[kiln] bootable: ${note}`);
        notes.push(note);
        const layer = aptLayer(built.id, pkgs);
        const extra = await dockerBuild(deps.docker, layer, buildTag(layer, 'bootable'), buildSettings, rep);
        imageId = extra.id;
        await fsp.rm(rootDir, { recursive: true, force: true });
        stats = await exportRootfs(deps.docker, imageId, rootDir, limits, rep);
        check = await checkBootable(rootDir);
        const still = missingParts(check);
        if (still.length) throw new KilnError('build_failed', `Even after adding ${pkgs.join(', ')} the image lacks ${still.join(' and ')}`);
      });
    }
    rep.log(`[kiln] export: ${stats.files} files, ${stats.dirs} dirs, ${stats.symlinks} symlinks, ${(stats.dataBytes / 2 ** 20).toFixed(0)} MiB`);

    let packages: DebPackage[] = [];
    let appBoot: AppBootCheck | undefined;
    await rep.stage('finish', 55, 'preparing the root filesystem', async () => {
      const prepared = await prepareTree(rootDir, runtime, rep, trust);
      notes.push(...prepared.notes);
      trustRemoval = prepared.trustRemoval;
      appBoot = prepared.appBoot;
      packages = await readPackages(rootDir);
    });
    const boot = check.boot!;
    rep.log(`[kiln] kernel ${boot.version}, init ${check.init}, ${check.osRelease.PRETTY_NAME ?? 'unknown OS'}, ${packages.length} packages`);

    let tarArtifact: string | undefined;
    if (formats.includes('tar')) {
      await rep.stage('tar', 58, 'writing rootfs.tar.zst', async () => {
        const file = path.join(outDir, 'rootfs.tar.zst');
        await fsp.rm(file, { force: true });
        // GNU tar only reads the tree and stores links as links (no -h), so the hostile-tree rules still hold.
        // --xattrs: file capabilities (ping's cap_net_raw) travel as SCHILY.xattr PAX records, the only xattr kept.
        const r = await run('tar', ['--zstd', '--numeric-owner', '--xattrs', '--xattrs-include=security.capability', '--sort=name', '--one-file-system', '-C', rootDir, '-cf', file, '.'], { timeoutMs: 20 * 60_000 });
        if (r.code !== 0) throw new KilnError('build_failed', `tar failed: ${r.stderr.trim().slice(-300)}`);
        tarArtifact = 'rootfs.tar.zst';
      });
    }

    let iso: { uefi: boolean } | undefined;
    if (formats.includes('iso')) {
      await rep.stage('iso', 59, 'making the live ISO (adds live-boot in a layer of its own)', async () => {
        const live = aptLayer(imageId, ['live-boot']);
        const liveImg = await dockerBuild(deps.docker, live, buildTag(live, 'live'), buildSettings, rep);
        const liveRoot = path.join(staged.dir, 'liveroot');
        await exportRootfs(deps.docker, liveImg.id, liveRoot, limits, rep);
        await prepareTree(liveRoot, runtime, rep, trust);
        // live-boot mounts the root (an overlay on the squashfs): no fstab entry for it.
        await writeFileIn(liveRoot, '/etc/fstab', '# Live system: live-boot mounts the root filesystem.\n');
        const lb = await checkBootable(liveRoot);
        if (!lb.boot?.initrd) throw new KilnError('build_failed', 'The live image has no kernel and initrd');
        const k = path.join(work, 'live-vmlinuz');
        const i = path.join(work, 'live-initrd.img');
        await copyOut(liveRoot, lb.boot.kernel, k);
        await copyOut(liveRoot, lb.boot.initrd, i);
        iso = await makeIso({ rootDir: liveRoot, workDir: work, kernelFile: k, initrdFile: i, out: path.join(outDir, 'image.iso') });
        await fsp.rm(liveRoot, { recursive: true, force: true });
        notes.push('image.iso is a live system: the same image plus live-boot, root on a squashfs');
      });
    }

    // The engine's part is over: a prune may run again (engine-cache.ts).
    await engineLock.release();
    engineLock = undefined;

    const rawPath = formats.includes('raw') ? path.join(outDir, 'image.raw') : path.join(work, 'image.raw');
    const layout: DiskLayout = await rep.stage('disk', 60, 'assembling the disk image', async () => {
      const kernelFile = path.join(work, 'vmlinuz');
      const initrdFile = path.join(work, 'initrd.img');
      const kbytes = await copyOut(rootDir, boot.kernel, kernelFile);
      const ibytes = await copyOut(rootDir, boot.initrd!, initrdFile);
      // GPT + ESP (BIOS and UEFI from one disk) when the host has systemd-boot; otherwise a BIOS-only dos disk.
      const label = (await exists(SYSTEMD_BOOT_EFI)) ? 'gpt' : 'dos';
      if (label === 'dos') rep.log(`[kiln] disk: ${SYSTEMD_BOOT_EFI} missing (package systemd-boot-efi): BIOS-only disk`);
      const layout = planDisk({ rootBytes: stats.blockBytes, entries: stats.files + stats.dirs + stats.symlinks, bootPayloadBytes: kbytes + ibytes }, label);
      if (layout.totalBytes > maxBytes) throw new KilnError('limit_exceeded', `The disk image would be ${Math.ceil(layout.totalBytes / 2 ** 20)} MiB, over the limit of ${s.maxImageMb} MiB`);
      rep.log(`[kiln] disk: ${layout.label}, ${Math.round(layout.totalBytes / 2 ** 20)} MiB (boot ${layout.boot.sectors / 2048} MiB, root ${layout.root.sectors / 2048} MiB)`);
      await assembleDisk({ layout, rootDir, kernelFile, initrdFile, workDir: work, out: rawPath });
      return layout;
    });
    // The staging tree is not needed any more; removing it off the critical path (the finally below waits for it).
    rootfsRemoval = fsp.rm(rootDir, { recursive: true, force: true }).catch(() => undefined);

    const images: { name: string; format: 'raw' | 'qcow2' | 'iso'; file: string }[] = [];
    if (formats.includes('raw')) images.push({ name: 'image.raw', format: 'raw', file: rawPath });
    if (iso) images.push({ name: 'image.iso', format: 'iso', file: path.join(outDir, 'image.iso') });
    // Hashing is CPU-bound and single-threaded per file, as is most of qemu-img's zstd work: the files that exist
    // already are hashed while the qcow2 is written, on the builder's other core.
    const early = [
      ...images.map((im) => ({ name: im.name, format: im.format as string })),
      ...(tarArtifact ? [{ name: tarArtifact, format: 'tar' }] : []),
    ];
    const earlyDescribed = Promise.all(early.map((a) => describeArtifact(outDir, a.name, a.format)));
    earlyDescribed.catch(() => undefined); // awaited below; this only keeps a failure from being "unhandled" meanwhile
    if (formats.includes('qcow2')) {
      const q = path.join(outDir, 'image.qcow2');
      await rep.stage('convert', 68, 'converting to qcow2 (hashing the other artifacts meanwhile)', async () => {
        await fsp.rm(q, { force: true });
        // zstd: several times faster than zlib here and smaller; QEMU >= 5.1 reads it.
        const r = await run('qemu-img', ['convert', '-c', '-W', '-m', '8', '-O', 'qcow2', '-o', 'compression_type=zstd', rawPath, q], { timeoutMs: 20 * 60_000 });
        if (r.code !== 0) throw new KilnError('build_failed', `qemu-img convert failed: ${r.stderr.trim().slice(-300)}`);
      });
      images.splice(formats.includes('raw') ? 1 : 0, 0, { name: 'image.qcow2', format: 'qcow2', file: q });
    }

    await rep.stage('checksum', 75, 'checksums, manifest, SBOM, provenance', async () => {
      const qcow = images.find((im) => im.format === 'qcow2');
      const [earlyOnes, qcowOne] = await Promise.all([earlyDescribed, qcow ? describeArtifact(outDir, qcow.name, 'qcow2') : undefined]);
      // Same order as before: raw, qcow2, iso, tar.
      const described = [...earlyOnes.filter((a) => a.format === 'raw'), ...(qcowOne ? [qcowOne] : []), ...earlyOnes.filter((a) => a.format !== 'raw')];
      artifacts.push(...described);
      const createdAt = new Date().toISOString();
      const baseInfo = baseRecords(policy.froms, bases);
      const manifest = buildManifest({
        sdkVersion: SDK_VERSION, createdAt, dockerfileSha256, contextSha256, buildArgs: { ...o.buildArgs }, bases: baseInfo,
        image: { id: imageId, tag: built.tag, labels: imageLabels(runtime.Labels) }, os: check.osRelease, kernel: { version: boot.version, cmdline: KERNEL_CMDLINE },
        init: check.init!, packages, layout, rootfs: stats, artifacts, notes,
        buildTrust: trust && trustRecord(trust, trustRemoval), buildProxy: proxy && { ...proxy.summary, inImage: false },
      });
      await fsp.writeFile(path.join(outDir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
      const sbom = buildSpdx({ name: `kiln-image-${dockerfileSha256.slice(0, 12)}`, createdAt, sdkVersion: SDK_VERSION, os: check.osRelease, packages, artifacts });
      await fsp.writeFile(path.join(outDir, 'sbom.spdx.json'), JSON.stringify(sbom, null, 2) + '\n');
      const provenance = buildProvenance({
        artifacts,
        extraSubjects: [
          { name: 'manifest.json', sha256: await sha256File(path.join(outDir, 'manifest.json')) },
          { name: 'sbom.spdx.json', sha256: await sha256File(path.join(outDir, 'sbom.spdx.json')) },
        ],
        dockerfileSha256, contextSha256, formats, buildArgNames: Object.keys(o.buildArgs).sort(), bases: baseInfo,
        sdkVersion: SDK_VERSION,
        settings: { buildNetwork: s.buildNetwork, memoryMb: s.memoryMb, cpus: s.cpus, buildTimeoutSeconds: s.buildTimeoutSeconds, maxImageMb: s.maxImageMb, pidsLimit: s.pidsLimit },
        buildTrust: trust && { caSha256: trust.certs.map((c) => c.sha256), inImage: trust.keepInImage ? 'kept' : 'removed' },
        buildProxy: proxy?.summary,
        startedOn: startedAt, finishedOn: new Date().toISOString(),
      });
      await fsp.writeFile(path.join(outDir, 'provenance.json'), JSON.stringify(provenance, null, 2) + '\n');
      await writeSha256Sums(outDir, [...artifacts.map((a) => a.name), 'manifest.json', 'sbom.spdx.json', 'provenance.json'], new Map(artifacts.map((a) => [a.name, a.sha256])));
    });

    // BIOS for every format; UEFI once for the disk formats (same bytes in raw and qcow2) when the disk has an ESP,
    // and once for the ISO when it has its EFI image; all only when OVMF is here.
    const wantFw = o.bootFirmware ?? ['bios', 'uefi'];
    const ovmf = wantFw.includes('uefi') && (await exists(OVMF_CODE)) && (await exists(OVMF_VARS));
    const disks = images.filter((im) => im.format !== 'iso');
    const isoImage = images.find((im) => im.format === 'iso');
    const runs = [
      ...(wantFw.includes('bios') ? images.map((im) => ({ im, firmware: 'bios' as const })) : []),
      ...(ovmf && layout.label === 'gpt' && disks[0] ? [{ im: disks[0], firmware: 'uefi' as const }] : []),
      ...(ovmf && iso?.uefi && isoImage ? [{ im: isoImage, firmware: 'uefi' as const }] : []),
    ];
    await rep.stage('boot', 80, `boot tests: ${runs.map((r) => `${r.im.name} (${r.firmware})`).join(', ')}, ${s.accel}`, async () => {
      for (const [i, { im, firmware }] of runs.entries()) {
        rep.progress('boot', 80 + (i * 18) / runs.length, `booting ${im.name} (${firmware})`);
        let vars: string | undefined;
        if (firmware === 'uefi') {
          vars = path.join(work, 'OVMF_VARS.fd');
          await fsp.copyFile(OVMF_VARS, vars);
        }
        const res = await bootTest({
          image: im.file, artifact: im.name, format: im.format === 'iso' ? 'raw' : im.format, media: im.format === 'iso' ? 'cdrom' : 'disk',
          accel: s.accel, timeoutSeconds: s.bootTimeoutSeconds,
          firmware, ovmfCode: OVMF_CODE, ovmfVars: vars,
          serialLogFile: path.join(outDir, `serial-${im.name}${firmware === 'uefi' ? '-uefi' : ''}.log`),
          expect: appBoot?.expect ?? [],
          failOn: appBoot?.failOn ?? [],
          lingerMs: appBoot ? 3000 : 0,
          signal: o.signal,
        });
        bootTests.push(res);
        rep.log(`[kiln] boot test ${im.name} (${firmware}): ${res.passed ? 'passed' : 'FAILED'} in ${res.seconds} s${res.reason ? ` (${res.reason})` : ''}`);
      }
    });
    const failed = bootTests.find((b) => !b.passed);
    if (failed) throw new KilnError('build_failed', `The ${failed.firmware.toUpperCase()} boot test of ${failed.artifact} failed: ${failed.reason ?? 'unknown reason'}`);
  } catch (e) {
    const ke = o.signal?.aborted
      ? new KilnError('build_failed', 'The build was cancelled')
      : limitHit && !(e instanceof KilnError && e.code === 'limit_exceeded')
      ? new KilnError('limit_exceeded', 'The build log grew past the log size limit')
      : toKilnError(e);
    // An internal error's message and detail are the operator's (internal-error.ts); the user sees a reference.
    error = { code: ke.code, message: ke.code === 'internal' ? await recordInternalError(outDir, e, ke.detail) : ke.message };
    rep.log(`[kiln] FAILED (${error.code}): ${error.message}`);
    if (ke.detail !== undefined && ke.code !== 'internal') rep.log(`[kiln] detail: ${JSON.stringify(ke.detail).slice(0, 4000)}`);
  } finally {
    await engineLock?.release();
    await rootfsRemoval;
    await trees?.remove();
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
