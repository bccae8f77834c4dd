/**
 * The disk images: the raw disk assembled from the tree without mounting anything (disk.ts), then qcow2 converted
 * from it while the other artifacts are hashed on the builder's other core.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { KilnError } from '../../shared/errors.js';
import { run as runProcess } from '../../shared/subprocess.js';
import { assembleDisk, planDisk, SYSTEMD_BOOT_EFI, type DiskLayout } from '../disk.js';
import { copyOut } from '../fsroot.js';
import { describeArtifact, type Artifact } from '../result.js';
import type { BuiltImage } from './image.js';
import { exists, type BuildRun } from './run.js';

export interface DiskImage {
  name: string;
  format: 'raw' | 'qcow2' | 'iso';
  file: string;
}

/** Assembles the raw disk (in DIR when raw was asked for, else in the scratch directory for qcow2 and the boot test). */
export async function assembleRawDisk(
  run: BuildRun,
  image: BuiltImage,
): Promise<{ layout: DiskLayout; rawPath: string }> {
  const { s, rep, work } = run;
  const rawPath = run.formats.includes('raw') ? path.join(run.outDir, 'image.raw') : path.join(work, 'image.raw');
  const { rootDir, stats } = image;
  const boot = image.check.boot!;
  const layout = await rep.stage('disk', 60, 'assembling the disk image', async () => {
    const kernelFile = path.join(work, 'vmlinuz');
    const initrdFile = path.join(work, 'initrd.img');
    const kbytes = await copyOut(rootDir, boot.kernel, kernelFile);
    const ibytes = await copyOut(rootDir, boot.initrd!, initrdFile);
    // GPT + ESP (BIOS and UEFI from one disk) when the host has systemd-boot; otherwise a BIOS-only dos disk.
    const label = (await exists(SYSTEMD_BOOT_EFI)) ? 'gpt' : 'dos';
    if (label === 'dos') rep.log(`[kiln] disk: ${SYSTEMD_BOOT_EFI} missing (package systemd-boot-efi): BIOS-only disk`);
    const layout = planDisk(
      {
        rootBytes: stats.blockBytes,
        entries: stats.files + stats.dirs + stats.symlinks,
        bootPayloadBytes: kbytes + ibytes,
      },
      label,
    );
    if (layout.totalBytes > image.limits.maxBytes)
      throw new KilnError(
        'limit_exceeded',
        `The disk image would be ${Math.ceil(layout.totalBytes / 2 ** 20)} MiB, over the limit of ${s.maxImageMb} MiB`,
      );
    rep.log(
      `[kiln] disk: ${layout.label}, ${Math.round(layout.totalBytes / 2 ** 20)} MiB (boot ${layout.boot.sectors / 2048} MiB, root ${layout.root.sectors / 2048} MiB)`,
    );
    await assembleDisk({ layout, rootDir, kernelFile, initrdFile, workDir: work, out: rawPath });
    return layout;
  });
  // The staging tree is not needed any more; removing it off the critical path (the run's end waits for it).
  run.rootfsRemoval = fsp.rm(rootDir, { recursive: true, force: true }).catch(() => undefined);
  return { layout, rawPath };
}

/**
 * Every image file in DIR, in boot-test order (raw, qcow2, iso); qcow2 converted from the raw disk while the files
 * that exist already are hashed. `describe()` gives every deliverable (size, allocated, sha256) in result.json's
 * order (raw, qcow2, iso, tar), waiting for the hashing.
 */
export async function convertImages(
  run: BuildRun,
  rawPath: string,
  iso: { uefi: boolean } | undefined,
  tarArtifact: string | undefined,
): Promise<{ images: DiskImage[]; describe: () => Promise<Artifact[]> }> {
  const { rep, formats, outDir } = run;
  const images: DiskImage[] = [];
  if (formats.includes('raw')) images.push({ name: 'image.raw', format: 'raw', file: rawPath });
  if (iso) images.push({ name: 'image.iso', format: 'iso', file: path.join(outDir, 'image.iso') });
  // Hashing is CPU-bound and single-threaded per file, as is most of qemu-img's zstd work: the files that exist
  // already are hashed while the qcow2 is written, on the builder's other core.
  const early = [
    ...images.map((im) => ({ name: im.name, format: im.format as string })),
    ...(tarArtifact ? [{ name: tarArtifact, format: 'tar' }] : []),
  ];
  const earlyDescribed = Promise.all(early.map((a) => describeArtifact(outDir, a.name, a.format)));
  earlyDescribed.catch(() => undefined); // awaited by describe(); this only keeps a failure from being "unhandled" meanwhile
  if (formats.includes('qcow2')) {
    const q = path.join(outDir, 'image.qcow2');
    await rep.stage('convert', 68, 'converting to qcow2 (hashing the other artifacts meanwhile)', async () => {
      await fsp.rm(q, { force: true });
      // zstd: several times faster than zlib here and smaller; QEMU >= 5.1 reads it.
      const r = await runProcess(
        'qemu-img',
        ['convert', '-c', '-W', '-m', '8', '-O', 'qcow2', '-o', 'compression_type=zstd', rawPath, q],
        { timeoutMs: 20 * 60_000 },
      );
      if (r.code !== 0) throw new KilnError('build_failed', `qemu-img convert failed: ${r.stderr.trim().slice(-300)}`);
    });
    images.splice(formats.includes('raw') ? 1 : 0, 0, { name: 'image.qcow2', format: 'qcow2', file: q });
  }
  const describe = async (): Promise<Artifact[]> => {
    const qcow = images.find((im) => im.format === 'qcow2');
    const [earlyOnes, qcowOne] = await Promise.all([
      earlyDescribed,
      qcow ? describeArtifact(outDir, qcow.name, 'qcow2') : undefined,
    ]);
    return [
      ...earlyOnes.filter((a) => a.format === 'raw'),
      ...(qcowOne ? [qcowOne] : []),
      ...earlyOnes.filter((a) => a.format !== 'raw'),
    ];
  };
  return { images, describe };
}
