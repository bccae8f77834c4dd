import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { KilnError } from '../shared/errors.js';
import { run } from '../shared/subprocess.js';
import { copyToFat, installSystemdBoot, SYSTEMD_BOOT_EFI } from './disk.js';

export const ISOLINUX_BIN = '/usr/lib/ISOLINUX/isolinux.bin';
export const ISOHDPFX_BIN = '/usr/lib/ISOLINUX/isohdpfx.bin';
export const LDLINUX_C32 = '/usr/lib/syslinux/modules/bios/ldlinux.c32';
/** no_timer_check: as KERNEL_CMDLINE (disk.ts). */
export const LIVE_CMDLINE = 'boot=live components hostname=kiln console=tty0 console=ttyS0,115200n8 no_timer_check';

export function isolinuxCfg(cmdline: string): string {
  return [
    'SERIAL 0 115200',
    'DEFAULT live',
    'PROMPT 0',
    'TIMEOUT 0',
    'LABEL live',
    '  KERNEL /live/vmlinuz',
    '  INITRD /live/initrd.img',
    `  APPEND ${cmdline}`,
    '',
  ].join('\n');
}

async function tool(cmd: string, args: string[]): Promise<void> {
  const r = await run(cmd, args, { timeoutMs: 20 * 60_000 });
  if (r.timedOut || r.code !== 0)
    throw new KilnError('build_failed', `ISO assembly failed at ${cmd}: ${(r.stderr || r.stdout).trim().slice(-400)}`);
}

/**
 * The El Torito EFI image: a FAT filesystem with systemd-boot as the removable-media loader and its own copy of the
 * kernel and initrd (systemd-boot only loads from the filesystem it sits on, and cannot read ISO 9660).
 */
async function makeEfiImage(o: {
  workDir: string;
  kernelFile: string;
  initrdFile: string;
  out: string;
}): Promise<void> {
  const payload =
    (await fsp.stat(o.kernelFile)).size + (await fsp.stat(o.initrdFile)).size + (await fsp.stat(SYSTEMD_BOOT_EFI)).size;
  const kib = Math.ceil((payload * 1.1) / 1024) + 4096;
  await fsp.rm(o.out, { force: true });
  await tool('mkfs.vfat', ['-C', '-n', 'KILN_EFI', o.out, String(kib)]);
  await installSystemdBoot(o.out, o.workDir, LIVE_CMDLINE, 'ISO assembly');
  await copyToFat(
    o.out,
    [
      { src: o.kernelFile, dest: 'vmlinuz' },
      { src: o.initrdFile, dest: 'initrd.img' },
    ],
    'ISO assembly',
  );
}

/**
 * A hybrid live ISO: the root tree as a zstd squashfs under /live, booted by Debian's live-boot (the SDK adds it to
 * the image in a layer of its own). BIOS boots it through isolinux (from CD, or as a disk through isohdpfx); UEFI
 * through an El Torito EFI image with systemd-boot, also reachable as a GPT partition when written to a USB stick
 * (-isohybrid-gpt-basdat). mksquashfs and xorriso only read the staging tree and store symlinks as symlinks.
 * Returns whether the UEFI part is there (it needs the host's systemd-boot-efi package).
 */
export async function makeIso(o: {
  rootDir: string;
  workDir: string;
  kernelFile: string;
  initrdFile: string;
  out: string;
}): Promise<{ uefi: boolean }> {
  const dir = path.join(o.workDir, 'iso');
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(path.join(dir, 'live'), { recursive: true });
  await fsp.mkdir(path.join(dir, 'isolinux'));
  await tool('mksquashfs', [
    o.rootDir,
    path.join(dir, 'live/filesystem.squashfs'),
    '-comp',
    'zstd',
    '-Xcompression-level',
    '6',
    '-noappend',
    '-no-progress',
    '-quiet',
    '-e',
    'boot',
  ]);
  await fsp.copyFile(o.kernelFile, path.join(dir, 'live/vmlinuz'));
  await fsp.copyFile(o.initrdFile, path.join(dir, 'live/initrd.img'));
  await fsp.copyFile(ISOLINUX_BIN, path.join(dir, 'isolinux/isolinux.bin'));
  await fsp.copyFile(LDLINUX_C32, path.join(dir, 'isolinux/ldlinux.c32'));
  await fsp.writeFile(path.join(dir, 'isolinux/isolinux.cfg'), isolinuxCfg(LIVE_CMDLINE));
  const uefi = await fsp.access(SYSTEMD_BOOT_EFI).then(
    () => true,
    () => false,
  );
  if (uefi)
    await makeEfiImage({
      workDir: o.workDir,
      kernelFile: o.kernelFile,
      initrdFile: o.initrdFile,
      out: path.join(dir, 'isolinux/efiboot.img'),
    });
  await fsp.rm(o.out, { force: true });
  await tool('xorriso', [
    '-as',
    'mkisofs',
    '-quiet',
    '-r',
    '-J',
    '-V',
    'KILN_LIVE',
    '-o',
    o.out,
    '-isohybrid-mbr',
    ISOHDPFX_BIN,
    '-c',
    'isolinux/boot.cat',
    '-b',
    'isolinux/isolinux.bin',
    '-no-emul-boot',
    '-boot-load-size',
    '4',
    '-boot-info-table',
    ...(uefi ? ['-eltorito-alt-boot', '-e', 'isolinux/efiboot.img', '-no-emul-boot', '-isohybrid-gpt-basdat'] : []),
    dir,
  ]);
  await fsp.rm(dir, { recursive: true, force: true });
  return { uefi };
}
