import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { KilnError } from '../shared/errors.js';
import { run } from '../shared/subprocess.js';

export const ISOLINUX_BIN = '/usr/lib/ISOLINUX/isolinux.bin';
export const ISOHDPFX_BIN = '/usr/lib/ISOLINUX/isohdpfx.bin';
export const LDLINUX_C32 = '/usr/lib/syslinux/modules/bios/ldlinux.c32';
export const LIVE_CMDLINE = 'boot=live components hostname=kiln console=tty0 console=ttyS0,115200n8';

export function isolinuxCfg(cmdline: string): string {
  return ['SERIAL 0 115200', 'DEFAULT live', 'PROMPT 0', 'TIMEOUT 0', 'LABEL live', '  KERNEL /live/vmlinuz', '  INITRD /live/initrd.img', `  APPEND ${cmdline}`, ''].join('\n');
}

async function tool(cmd: string, args: string[]): Promise<void> {
  const r = await run(cmd, args, { timeoutMs: 20 * 60_000 });
  if (r.timedOut || r.code !== 0) throw new KilnError('build_failed', `ISO assembly failed at ${cmd}: ${(r.stderr || r.stdout).trim().slice(-400)}`);
}

/**
 * A hybrid live ISO (BIOS: isolinux, bootable from CD or as a disk through isohdpfx): the root tree as a zstd
 * squashfs under /live, booted by Debian's live-boot (the SDK adds it to the image in a layer of its own). mksquashfs
 * and xorriso only read the staging tree and store symlinks as symlinks.
 */
export async function makeIso(o: { rootDir: string; workDir: string; kernelFile: string; initrdFile: string; out: string }): Promise<void> {
  const dir = path.join(o.workDir, 'iso');
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(path.join(dir, 'live'), { recursive: true });
  await fsp.mkdir(path.join(dir, 'isolinux'));
  await tool('mksquashfs', [o.rootDir, path.join(dir, 'live/filesystem.squashfs'), '-comp', 'zstd', '-Xcompression-level', '6', '-noappend', '-no-progress', '-quiet', '-e', 'boot']);
  await fsp.copyFile(o.kernelFile, path.join(dir, 'live/vmlinuz'));
  await fsp.copyFile(o.initrdFile, path.join(dir, 'live/initrd.img'));
  await fsp.copyFile(ISOLINUX_BIN, path.join(dir, 'isolinux/isolinux.bin'));
  await fsp.copyFile(LDLINUX_C32, path.join(dir, 'isolinux/ldlinux.c32'));
  await fsp.writeFile(path.join(dir, 'isolinux/isolinux.cfg'), isolinuxCfg(LIVE_CMDLINE));
  await fsp.rm(o.out, { force: true });
  await tool('xorriso', ['-as', 'mkisofs', '-quiet', '-r', '-J', '-V', 'KILN_LIVE', '-o', o.out,
    '-isohybrid-mbr', ISOHDPFX_BIN, '-c', 'isolinux/boot.cat', '-b', 'isolinux/isolinux.bin',
    '-no-emul-boot', '-boot-load-size', '4', '-boot-info-table', dir]);
  await fsp.rm(dir, { recursive: true, force: true });
}
