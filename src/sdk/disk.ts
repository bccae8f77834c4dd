import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { KilnError } from '../shared/errors.js';
import { run, type RunResult } from '../shared/subprocess.js';

export const MiB = 1024 * 1024;
export const SECTOR = 512;
const SECTORS_PER_MIB = MiB / SECTOR;
export const MBR_BIN = '/usr/lib/syslinux/mbr/mbr.bin';

export interface LayoutInput {
  /** Bytes the root tree needs in 4 KiB blocks (from the extractor). */
  rootBytes: number;
  /** Number of inodes the tree uses (files, dirs, links). */
  entries: number;
  /** Kernel + initrd bytes that go on the boot partition. */
  bootPayloadBytes: number;
}

export interface Partition { number: number; startSector: number; sectors: number; type: string; bootable: boolean; label: string; fs: string }

export interface DiskLayout {
  label: 'dos';
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
export function planDisk(i: LayoutInput): DiskLayout {
  const bootMiB = Math.max(32, Math.ceil((i.bootPayloadBytes * 2) / MiB) + 8);
  const inodes = Math.max(16_384, Math.ceil(i.entries * 1.5) + 4096);
  const inodeTableBytes = inodes * 256;
  const rootMiB = Math.ceil((i.rootBytes * 1.2 + inodeTableBytes) / MiB) + 256;
  const bootStart = SECTORS_PER_MIB;
  const rootStart = bootStart + bootMiB * SECTORS_PER_MIB;
  return {
    label: 'dos',
    sectorSize: SECTOR,
    totalBytes: (1 + bootMiB + rootMiB) * MiB,
    boot: { number: 1, startSector: bootStart, sectors: bootMiB * SECTORS_PER_MIB, type: 'c', bootable: true, label: 'BOOT', fs: 'vfat' },
    root: { number: 2, startSector: rootStart, sectors: rootMiB * SECTORS_PER_MIB, type: '83', bootable: false, label: 'root', fs: 'ext4', inodes },
  };
}

/** The sfdisk script for a layout (read on stdin, so nothing reaches a shell). */
export function sfdiskScript(l: DiskLayout): string {
  const p = (x: Partition) => `start=${x.startSector}, size=${x.sectors}, type=${x.type}${x.bootable ? ', bootable' : ''}`;
  return `label: dos\nunit: sectors\n${p(l.boot)}\n${p(l.root)}\n`;
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

export const KERNEL_CMDLINE = 'root=LABEL=root rw console=tty0 console=ttyS0,115200n8';

const T = 10 * 60_000;

async function tool(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const r = await run(cmd, args, { timeoutMs: opts.timeoutMs ?? T, input: opts.input });
  if (r.timedOut || r.code !== 0) {
    throw new KilnError('build_failed', `Disk assembly failed at ${cmd}${r.timedOut ? ' (timeout)' : ` (exit ${r.code})`}: ${(r.stderr || r.stdout).trim().slice(-500)}`);
  }
  return r;
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
 * Builds the BIOS-bootable raw disk with no mount and no loop device (PLATFORM.md): mkfs.ext4 -d fills the root
 * filesystem from the staging dir (it copies symlinks as symlinks, never following them), mkfs.vfat + syslinux
 * --install + mcopy make the boot filesystem through mtools, sfdisk writes the dos label into the file, mbr.bin goes
 * into the first 440 bytes, and dd conv=sparse places the filesystems so the result stays sparse.
 */
export async function assembleDisk(a: AssembleInput): Promise<void> {
  const { layout } = a;
  const rootImg = path.join(a.workDir, 'root.img');
  const bootImg = path.join(a.workDir, 'boot.img');
  await fsp.rm(rootImg, { force: true });
  await fsp.rm(bootImg, { force: true });
  await fsp.rm(a.out, { force: true });

  const rootBytes = layout.root.sectors * SECTOR;
  await tool('mkfs.ext4', ['-q', '-F', '-L', layout.root.label, '-N', String(layout.root.inodes), '-m', '1',
    '-E', 'lazy_itable_init=1,lazy_journal_init=1', '-d', a.rootDir, rootImg, `${rootBytes / 1024}k`]);

  await fsp.writeFile(bootImg, '');
  await fsp.truncate(bootImg, layout.boot.sectors * SECTOR);
  await tool('mkfs.vfat', ['-n', layout.boot.label, bootImg]);
  await tool('syslinux', ['--install', bootImg]);
  const cfg = path.join(a.workDir, 'syslinux.cfg');
  await fsp.writeFile(cfg, syslinuxCfg(KERNEL_CMDLINE));
  await tool('mcopy', ['-o', '-i', bootImg, a.kernelFile, '::/vmlinuz']);
  if (a.initrdFile) await tool('mcopy', ['-o', '-i', bootImg, a.initrdFile, '::/initrd.img']);
  await tool('mcopy', ['-o', '-i', bootImg, cfg, '::/syslinux.cfg']);

  await fsp.writeFile(a.out, '');
  await fsp.truncate(a.out, layout.totalBytes);
  await tool('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', a.out], { input: sfdiskScript(layout) });
  const mbr = await fsp.readFile(MBR_BIN);
  const fh = await fsp.open(a.out, 'r+');
  try {
    await fh.write(mbr.subarray(0, 440), 0, 440, 0);
  } finally {
    await fh.close();
  }
  for (const [img, start] of [[bootImg, layout.boot.startSector], [rootImg, layout.root.startSector]] as const) {
    await tool('dd', [`if=${img}`, `of=${a.out}`, 'bs=1M', `seek=${(start * SECTOR) / MiB}`, 'conv=notrunc,sparse', 'status=none']);
    await fsp.rm(img, { force: true });
  }
  const st = await fsp.stat(a.out);
  if (st.size !== layout.totalBytes) throw new KilnError('internal', `disk image has ${st.size} bytes, expected ${layout.totalBytes}`);
}
