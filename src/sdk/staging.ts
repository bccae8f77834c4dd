import { promises as fsp, statfsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { identify } from '../shared/process-identity.js';

/**
 * Where the image's file trees (the root filesystem, the live ISO's) are written between export and disk.
 *
 * The export writes ~12k files that mkfs.ext4 -d then reads back, all within seconds and deleted afterwards: on
 * the build VM's disk that costs twice what it costs in memory (measured on a 643 MiB tree: export 7.5-11.7 s into
 * /tmp against 4.1-5.5 s into /dev/shm, mkfs.ext4 -d 1.8-2.1 s against 1.3-1.5 s). So the trees go to a tmpfs
 * when there is room for twice the image (the tree, plus the bootable or live layer's tree beside it) and the
 * machine keeps headroom; otherwise, or for a large image, next to the other staging files on disk.
 *
 * Room means inodes too: a tree of empty files, short symlinks or hard links takes no blocks, but each entry takes an
 * inode of the tmpfs and about a KiB of memory. How many entries an image has is only known while extracting, so the
 * tmpfs must hold twice the most the extraction allows (sdk.maxImageEntries), in inodes and in memory.
 */

const TMPFS_MAGIC = 0x01021994;
const SHM = '/dev/shm';
const MEM_HEADROOM = 2 ** 30;
/** Kernel memory one tmpfs entry costs (inode and dentry), rounded up. */
const ENTRY_BYTES = 1024;

export interface TmpfsRoom {
  /** Bytes free on the tmpfs, or undefined when there is no usable tmpfs. */
  tmpfsFree?: number;
  /** Inodes free on the tmpfs. */
  tmpfsFreeInodes?: number;
  /** Memory the kernel says is available (os.freemem: MemAvailable). */
  memAvailable: number;
}

/**
 * True when `imageBytes` (the engine's size of the image), in trees of at most `maxEntries` entries each, may go to
 * the tmpfs. Pure, for the tests.
 */
export function fitsInMemory(imageBytes: number, maxEntries: number, room: TmpfsRoom): boolean {
  if (room.tmpfsFree === undefined || !(imageBytes > 0)) return false;
  const entries = 2 * maxEntries;
  return (
    room.tmpfsFree >= 2 * imageBytes + 256 * 2 ** 20 &&
    (room.tmpfsFreeInodes ?? 0) >= entries &&
    room.memAvailable >= 2 * imageBytes + entries * ENTRY_BYTES + MEM_HEADROOM
  );
}

function shmRoom(): TmpfsRoom {
  try {
    const st = statfsSync(SHM);
    if (st.type === TMPFS_MAGIC)
      return { tmpfsFree: st.bavail * st.bsize, tmpfsFreeInodes: st.ffree, memAvailable: os.freemem() };
  } catch {
    /* no /dev/shm: disk it is */
  }
  return { memAvailable: os.freemem() };
}

export interface TreeStaging {
  /** A 0700 directory for the trees (the guest's setuid files live there; no other host user may reach them). */
  dir: string;
  /** What was chosen, for the build log. */
  note: string;
  remove(): Promise<void>;
}

const TREE_PREFIX = 'kiln-sdk-tree-';

/**
 * Removes trees on the tmpfs whose SDK is gone: a SIGKILLed SDK cannot remove its own, and a tmpfs tree holds
 * memory until someone does. A tree's name carries its SDK's pid and start time (`kiln-sdk-tree-<pid>-<start>-*`),
 * so a live SDK's tree, or one of a process that merely reuses the pid, is never taken for stale.
 */
export async function sweepStaleTrees(shm = SHM): Promise<string[]> {
  let names: string[];
  try {
    names = await fsp.readdir(shm);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const n of names) {
    const m = /^kiln-sdk-tree-(\d+)-(\d+)-/.exec(n);
    if (!m || (await identify(Number(m[1])))?.startTime === m[2]) continue;
    await fsp.rm(path.join(shm, n), { recursive: true, force: true }).catch(() => undefined);
    removed.push(n);
  }
  return removed;
}

/**
 * A directory for the image's trees: on the tmpfs when the image fits (see above), else `work` itself. Stale trees
 * of dead SDKs are removed first, so their memory counts as free.
 */
export async function treeStaging(
  work: string,
  imageBytes: number,
  maxEntries: number,
  room?: TmpfsRoom,
  shm = SHM,
): Promise<TreeStaging> {
  const mib = (n: number) => `${Math.round(n / 2 ** 20)} MiB`;
  const swept = await sweepStaleTrees(shm);
  room ??= shmRoom();
  if (fitsInMemory(imageBytes, maxEntries, room)) {
    try {
      const self = await identify(process.pid);
      const dir = await fsp.mkdtemp(path.join(shm, `${TREE_PREFIX}${process.pid}-${self?.startTime ?? 0}-`));
      await fsp.chmod(dir, 0o700);
      return {
        dir,
        note: `staging the file tree in memory (${shm}: image ${mib(imageBytes)}, ${mib(room.tmpfsFree!)} and ${room.tmpfsFreeInodes} inodes free)${swept.length ? `; removed ${swept.length} tree(s) of SDKs that were killed` : ''}`,
        remove: () => fsp.rm(dir, { recursive: true, force: true }).catch(() => undefined),
      };
    } catch {
      /* fall back to disk */
    }
  }
  return { dir: work, note: `staging the file tree on disk (${work})`, remove: async () => undefined };
}
