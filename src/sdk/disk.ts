import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { KilnError } from '../shared/errors.js';
import { run, type RunResult } from '../shared/subprocess.js';

export const MiB = 1024 * 1024;
export const SECTOR = 512;
const SECTORS_PER_MIB = MiB / SECTOR;
export const MBR_BIN = '/usr/lib/syslinux/mbr/mbr.bin';
export const GPTMBR_BIN = '/usr/lib/syslinux/mbr/gptmbr.bin';
/** systemd-boot (Debian package systemd-boot-efi): the UEFI loader on the ESP of GPT disks. */
export const SYSTEMD_BOOT_EFI = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';
export const ESP_TYPE = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
/** Discoverable Partitions Specification: root partition for x86-64. */
export const ROOT_X86_64_TYPE = '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709';

export interface LayoutInput {
  /** Bytes the root tree needs in 4 KiB blocks (from the extractor). */
  rootBytes: number;
  /** Number of inodes the tree uses (files, dirs, links). */
  entries: number;
  /** Kernel + initrd bytes that go on the boot partition. */
  bootPayloadBytes: number;
}

export interface Partition {
  number: number;
  startSector: number;
  sectors: number;
  type: string;
  bootable: boolean;
  label: string;
  fs: string;
}

export interface DiskLayout {
  /** dos: BIOS only. gpt: one disk for both firmwares (ESP with systemd-boot for UEFI, syslinux + gptmbr for BIOS). */
  label: 'dos' | 'gpt';
  sectorSize: number;
  totalBytes: number;
  boot: Partition;
  root: Partition & { inodes: number };
}

/**
 * The disk, sized from its content: 1 MiB for the MBR and alignment, a FAT boot partition that fits the kernel and
 * initrd with room for one more of each, and an ext4 root with 20 % + 256 MiB free (journal, logs, first-boot files).
 * Everything is MiB-aligned. Free space costs nothing in the sparse raw file nor in qcow2.
 */
export function planDisk(i: LayoutInput, label: 'dos' | 'gpt' = 'dos'): DiskLayout {
  const bootMiB = Math.max(32, Math.ceil((i.bootPayloadBytes * 2) / MiB) + 8);
  const inodes = Math.max(16_384, Math.ceil(i.entries * 1.5) + 4096);
  const inodeTableBytes = inodes * 256;
  const rootMiB = Math.ceil((i.rootBytes * 1.2 + inodeTableBytes) / MiB) + 256;
  const bootStart = SECTORS_PER_MIB;
  const rootStart = bootStart + bootMiB * SECTORS_PER_MIB;
  const gpt = label === 'gpt';
  return {
    label,
    sectorSize: SECTOR,
    // GPT keeps a backup header in the last 33 sectors: one more MiB at the end.
    totalBytes: (1 + bootMiB + rootMiB + (gpt ? 1 : 0)) * MiB,
    boot: {
      number: 1,
      startSector: bootStart,
      sectors: bootMiB * SECTORS_PER_MIB,
      type: gpt ? ESP_TYPE : 'c',
      bootable: true,
      label: gpt ? 'ESP' : 'BOOT',
      fs: 'vfat',
    },
    root: {
      number: 2,
      startSector: rootStart,
      sectors: rootMiB * SECTORS_PER_MIB,
      type: gpt ? ROOT_X86_64_TYPE : '83',
      bootable: false,
      label: 'root',
      fs: 'ext4',
      inodes,
    },
  };
}

/** The sfdisk script for a layout (read on stdin, so nothing reaches a shell). */
export function sfdiskScript(l: DiskLayout): string {
  if (l.label === 'gpt') {
    // LegacyBIOSBootable on the ESP is what syslinux's gptmbr.bin looks for.
    const p = (x: Partition) =>
      `start=${x.startSector}, size=${x.sectors}, type=${x.type}, name="${x.label}"${x.bootable ? ', attrs="LegacyBIOSBootable"' : ''}`;
    return `label: gpt\nunit: sectors\n${p(l.boot)}\n${p(l.root)}\n`;
  }
  const p = (x: Partition) =>
    `start=${x.startSector}, size=${x.sectors}, type=${x.type}${x.bootable ? ', bootable' : ''}`;
  return `label: dos\nunit: sectors\n${p(l.boot)}\n${p(l.root)}\n`;
}

/** systemd-boot's loader.conf and the one entry (kernel, initrd and command line on the ESP). */
export function systemdBootFiles(cmdline: string): { loader: string; entry: string } {
  return {
    loader: 'default kiln.conf\ntimeout 0\nconsole-mode keep\n',
    entry: `title Kiln image\nlinux /vmlinuz\ninitrd /initrd.img\noptions ${cmdline}\n`,
  };
}

export function syslinuxCfg(cmdline: string): string {
  return [
    'SERIAL 0 115200',
    'DEFAULT linux',
    'PROMPT 0',
    'TIMEOUT 0',
    'LABEL linux',
    '  KERNEL /vmlinuz',
    '  INITRD /initrd.img',
    `  APPEND ${cmdline}`,
    '',
  ].join('\n');
}

/**
 * no_timer_check: these images boot in VMs, where a slow or overcommitted host can miss the kernel's IO-APIC timer
 * check and panic ("IO-APIC + timer doesn't work!", seen in the UEFI boot test under TCG at load 14); Fedora's and
 * RHEL's cloud images ship it for the same reason. On hardware the check only detects long-gone broken chipsets.
 */
export const KERNEL_CMDLINE = 'root=LABEL=root rw console=tty0 console=ttyS0,115200n8 no_timer_check';

const T = 10 * 60_000;

async function tool(
  cmd: string,
  args: string[],
  opts: { input?: string; timeoutMs?: number; what?: string } = {},
): Promise<RunResult> {
  const r = await run(cmd, args, { timeoutMs: opts.timeoutMs ?? T, input: opts.input });
  if (r.timedOut || r.code !== 0) {
    throw new KilnError(
      'build_failed',
      `${opts.what ?? 'Disk assembly'} failed at ${cmd}${r.timedOut ? ' (timeout)' : ` (exit ${r.code})`}: ${(r.stderr || r.stdout).trim().slice(-500)}`,
    );
  }
  return r;
}

/**
 * Puts systemd-boot on a FAT filesystem (mtools `fat` spec: `file` or `file@@offset`) as the removable-media
 * loader, with one entry booting /vmlinuz + /initrd.img from that filesystem with `cmdline`. The disk's ESP and the
 * ISO's El Torito EFI image are both made this way; the caller copies the kernel and initrd next to it.
 */
export async function installSystemdBoot(fat: string, workDir: string, cmdline: string, what?: string): Promise<void> {
  const sb = systemdBootFiles(cmdline);
  const loaderConf = path.join(workDir, 'loader.conf');
  const entry = path.join(workDir, 'kiln.conf');
  await fsp.writeFile(loaderConf, sb.loader);
  await fsp.writeFile(entry, sb.entry);
  await tool('mmd', ['-i', fat, '::/EFI', '::/EFI/BOOT', '::/loader', '::/loader/entries'], { what });
  await tool('mcopy', ['-o', '-i', fat, SYSTEMD_BOOT_EFI, '::/EFI/BOOT/BOOTX64.EFI'], { what });
  await tool('mcopy', ['-o', '-i', fat, loaderConf, '::/loader/loader.conf'], { what });
  await tool('mcopy', ['-o', '-i', fat, entry, '::/loader/entries/kiln.conf'], { what });
}

/** Copies host files into a FAT filesystem (mtools `fat` spec), replacing what is there. */
export async function copyToFat(fat: string, files: { src: string; dest: string }[], what?: string): Promise<void> {
  for (const f of files) await tool('mcopy', ['-o', '-i', fat, f.src, `::/${f.dest}`], { what });
}

export interface AssembleInput {
  layout: DiskLayout;
  rootDir: string;
  /** Host paths (copies we own) of the kernel and initrd. */
  kernelFile: string;
  initrdFile?: string;
  workDir: string;
  out: string;
}

/**
 * Builds the bootable raw disk with no mount and no loop device (PLATFORM.md's recipe, done in place): sfdisk writes
 * the label into the sparse file, syslinux's MBR code (gptmbr.bin for GPT) goes into the first 440 bytes, mkfs.ext4
 * -d fills the root filesystem from the staging dir (symlinks copied as symlinks, never followed), mkfs.vfat +
 * syslinux --install + mcopy make the boot filesystem through mtools. Nothing writes zeros, so the file stays sparse.
 */
export async function assembleDisk(a: AssembleInput): Promise<void> {
  const { layout } = a;
  await fsp.rm(a.out, { force: true });
  // The sparse disk and its partition table first; each filesystem is then made in place at its partition's offset
  // (mke2fs -E offset, mkfs.fat --offset, syslinux --offset, mtools file@@offset): no copy of the filesystems.
  await fsp.writeFile(a.out, '');
  await fsp.truncate(a.out, layout.totalBytes);
  await tool('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', a.out], { input: sfdiskScript(layout) });
  const mbr = await fsp.readFile(layout.label === 'gpt' ? GPTMBR_BIN : MBR_BIN);
  const fh = await fsp.open(a.out, 'r+');
  try {
    await fh.write(mbr.subarray(0, 440), 0, 440, 0);
  } finally {
    await fh.close();
  }

  const rootOffset = layout.root.startSector * SECTOR;
  const rootBytes = layout.root.sectors * SECTOR;
  await tool('mkfs.ext4', [
    '-q',
    '-F',
    '-L',
    layout.root.label,
    '-N',
    String(layout.root.inodes),
    '-m',
    '1',
    '-E',
    `offset=${rootOffset},lazy_itable_init=1,lazy_journal_init=1`,
    '-d',
    a.rootDir,
    a.out,
    `${rootBytes / 1024}k`,
  ]);

  const bootOffset = layout.boot.startSector * SECTOR;
  const fat = `${a.out}@@${bootOffset}`;
  // The FAT type is explicit: with --offset, mkfs.fat would judge it from the whole file's size.
  const fatBits = layout.boot.sectors * SECTOR > 1024 * MiB ? '32' : '16';
  await tool('mkfs.vfat', [
    '-F',
    fatBits,
    `--offset=${layout.boot.startSector}`,
    '-n',
    layout.boot.label,
    a.out,
    String((layout.boot.sectors * SECTOR) / 1024),
  ]);
  await tool('syslinux', ['--offset', String(bootOffset), '--install', a.out]);
  const cfg = path.join(a.workDir, 'syslinux.cfg');
  await fsp.writeFile(cfg, syslinuxCfg(KERNEL_CMDLINE));
  await copyToFat(fat, [
    { src: a.kernelFile, dest: 'vmlinuz' },
    ...(a.initrdFile ? [{ src: a.initrdFile, dest: 'initrd.img' }] : []),
    { src: cfg, dest: 'syslinux.cfg' },
  ]);
  if (layout.label === 'gpt') await installSystemdBoot(fat, a.workDir, KERNEL_CMDLINE);
  const st = await fsp.stat(a.out);
  if (st.size !== layout.totalBytes)
    throw new KilnError('internal', `disk image has ${st.size} bytes, expected ${layout.totalBytes}`);
}
