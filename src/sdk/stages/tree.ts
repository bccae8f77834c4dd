/**
 * The root filesystem made a machine's (host files, SSH host keys, the image's ENTRYPOINT/CMD as a boot service,
 * build trust out), and the outputs made straight from a tree: rootfs.tar.zst, and the live ISO (the same image
 * plus live-boot, in a layer of its own).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { KilnError } from '../../shared/errors.js';
import { run as runProcess } from '../../shared/subprocess.js';
import { applyImageConfig, resetSshHostKeys, type AppBootCheck, type ImageRuntimeConfig } from '../app.js';
import { checkBootable } from '../bootable.js';
import { removeBuildTrust, type BuildTrust, type TrustRemoval } from '../build-trust.js';
import { buildTag, dockerBuild } from '../docker-build.js';
import { exportRootfs } from '../export.js';
import { finishRootfs } from '../finish.js';
import { copyOut, writeFileIn } from '../fsroot.js';
import { makeIso } from '../iso.js';
import { readPackages, type DebPackage } from '../manifest.js';
import type { Reporter } from '../reporter.js';
import { aptLayer, type BuiltImage } from './image.js';
import type { BuildRun } from './run.js';

/**
 * Makes an exported tree a machine's root: host files reset, SSH host keys, the build's CA certificates out (unless
 * sdk.buildTrust.keepInImage), and the image's runtime config applied (ENTRYPOINT/CMD as a boot service, VOLUME
 * paths; `runtime` is the manifest's account of it).
 */
async function prepareTree(
  root: string,
  config: ImageRuntimeConfig,
  rep: Reporter,
  trust?: BuildTrust,
): Promise<{ notes: string[]; appBoot?: AppBootCheck; runtime: Record<string, unknown>; trustRemoval?: TrustRemoval }> {
  await finishRootfs(root, rep);
  const notes: string[] = [];
  const trustRemoval = trust && !trust.keepInImage ? await removeBuildTrust(root, trust) : undefined;
  if (trustRemoval) {
    rep.log(
      `[kiln] finish: build trust taken out: ${trustRemoval.removed.join(', ') || 'nothing of it was in the image'}`,
    );
    for (const n of trustRemoval.notes) rep.log(`[kiln] finish: build trust: ${n}`);
  }
  const sshNote = await resetSshHostKeys(root, rep);
  if (sshNote) notes.push(sshNote);
  const applied = await applyImageConfig(root, config, rep);
  notes.push(...applied.notes);
  return { notes, appBoot: applied.boot, runtime: applied.runtime, trustRemoval };
}

export interface FinishedTree {
  packages: DebPackage[];
  /** What the boot test must see of the image's own program, when it has one. */
  appBoot?: AppBootCheck;
  /** The manifest's account of the image config as the machine runs it. */
  runtime: Record<string, unknown>;
  trustRemoval?: TrustRemoval;
}

/** Prepares the root filesystem and reads its package list. */
export async function finishTree(run: BuildRun, image: BuiltImage): Promise<FinishedTree> {
  const { rep } = run;
  const finished = await rep.stage('finish', 55, 'preparing the root filesystem', async () => {
    const prepared = await prepareTree(image.rootDir, image.runtime, rep, run.trust);
    run.notes.push(...prepared.notes);
    return {
      appBoot: prepared.appBoot,
      runtime: prepared.runtime,
      trustRemoval: prepared.trustRemoval,
      packages: await readPackages(image.rootDir),
    };
  });
  const { check } = image;
  rep.log(
    `[kiln] kernel ${check.boot!.version}, init ${check.init}, ${check.osRelease.PRETTY_NAME ?? 'unknown OS'}, ${finished.packages.length} packages`,
  );
  return finished;
}

/** rootfs.tar.zst when asked for; returns its artifact name. */
export async function writeRootfsTar(run: BuildRun, rootDir: string): Promise<string | undefined> {
  if (!run.formats.includes('tar')) return undefined;
  return run.rep.stage('tar', 58, 'writing rootfs.tar.zst', async () => {
    const file = path.join(run.outDir, 'rootfs.tar.zst');
    await fsp.rm(file, { force: true });
    // GNU tar only reads the tree and stores links as links (no -h), so the hostile-tree rules still hold.
    // --xattrs: file capabilities (ping's cap_net_raw) travel as SCHILY.xattr PAX records, the only xattr kept.
    const r = await runProcess(
      'tar',
      [
        '--zstd',
        '--numeric-owner',
        '--xattrs',
        '--xattrs-include=security.capability',
        '--sort=name',
        '--one-file-system',
        '-C',
        rootDir,
        '-cf',
        file,
        '.',
      ],
      { timeoutMs: 20 * 60_000 },
    );
    if (r.code !== 0) throw new KilnError('build_failed', `tar failed: ${r.stderr.trim().slice(-300)}`);
    return 'rootfs.tar.zst';
  });
}

/** The live ISO when asked for: the image plus live-boot, root on a squashfs. Returns whether it boots with UEFI. */
export async function writeLiveIso(run: BuildRun, image: BuiltImage): Promise<{ uefi: boolean } | undefined> {
  if (!run.formats.includes('iso')) return undefined;
  const { deps, rep, work } = run;
  return rep.stage('iso', 59, 'making the live ISO (adds live-boot in a layer of its own)', async () => {
    const live = aptLayer(image.imageId, ['live-boot']);
    const liveImg = await dockerBuild(deps.docker, live, buildTag(live, 'live'), run.buildSettings, rep);
    const liveRoot = path.join(image.staged.dir, 'liveroot');
    await exportRootfs(deps.docker, liveImg.id, liveRoot, image.limits, rep);
    await prepareTree(liveRoot, image.runtime, rep, run.trust);
    // live-boot mounts the root (an overlay on the squashfs): no fstab entry for it.
    await writeFileIn(liveRoot, '/etc/fstab', '# Live system: live-boot mounts the root filesystem.\n');
    const lb = await checkBootable(liveRoot);
    if (!lb.boot?.initrd) throw new KilnError('build_failed', 'The live image has no kernel and initrd');
    const k = path.join(work, 'live-vmlinuz');
    const i = path.join(work, 'live-initrd.img');
    await copyOut(liveRoot, lb.boot.kernel, k);
    await copyOut(liveRoot, lb.boot.initrd, i);
    const iso = await makeIso({
      rootDir: liveRoot,
      workDir: work,
      kernelFile: k,
      initrdFile: i,
      out: path.join(run.outDir, 'image.iso'),
    });
    await fsp.rm(liveRoot, { recursive: true, force: true });
    run.notes.push('image.iso is a live system: the same image plus live-boot, root on a squashfs');
    return iso;
  });
}
