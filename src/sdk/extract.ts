import fs, { constants as C } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import tarStream from 'tar-stream';
import { KilnError } from '../shared/errors.js';
import { applyCapabilities, CapabilityScanner, describeCapability } from './xattr.js';

/**
 * Safe extraction of an untrusted root filesystem tar (a `docker export`) into a staging directory.
 *
 * Invariants (what makes a hostile image harmless to the host):
 * - Every entry name is normalised to components; any `..`, NUL or empty result is refused. Leading `/` is dropped.
 * - Every parent directory of an entry is checked with lstat to be a real directory (never a symlink) that this
 *   extraction created or verified; an entry "through" a symlink is refused. Nothing else writes to the staging dir
 *   while we run, so the checks cannot race.
 * - Files are opened with O_CREAT|O_EXCL|O_NOFOLLOW after unlinking whatever was there (unlink removes a symlink
 *   itself, never its target), so a write never leaves the staging dir.
 * - Symlinks are created verbatim (absolute or `../..` targets are the guest's business) and never followed.
 * - Hard links must point at a regular file already extracted inside the staging dir.
 * - Device nodes and FIFOs are skipped (the guest gets devtmpfs); setuid/setgid bits are kept for the guest, so the
 *   caller must keep the staging dir inside a 0700 directory no other host user can traverse.
 * - Ownership is applied with fchown/lchown and modes with fchmod after chown (chown clears setuid).
 * - File capabilities (`security.capability`, read binary-safe by `xattr.ts`'s scanner in front of tar-stream) are
 *   set last, only on regular files this extraction made, through real directories and an O_NOFOLLOW fd (chown and
 *   writes clear them, so after both).
 *
 * Speed: the syscalls are synchronous on purpose. A docker export has ~12k small files; each async fs call is a
 * thread-pool round trip and a promise, which made this stage 3-4x slower than the syscalls themselves. Creation is
 * optimistic (O_EXCL / symlink / mkdir first, and only on EEXIST look at what is there), so a normal entry costs
 * open, write, fchmod, futimes, close, plus fchown only when the owner differs from ours.
 */
export interface ExtractStats {
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  /** Bytes the tree needs on a 4 KiB-block filesystem (file data rounded up, plus a block per directory). */
  blockBytes: number;
  dataBytes: number;
  skipped: { name: string; reason: string }[];
  skippedCount: number;
  /** Files whose `security.capability` was set (first 200; the capability in words and the value in hex), and how many failed. */
  capabilities: { name: string; capability: string; value: string }[];
  capabilityCount: number;
  capabilityFailures: number;
}

export interface ExtractOptions {
  /** Abort with limit_exceeded when the tree grows past this many bytes. */
  maxBytes?: number;
  /**
   * Abort with limit_exceeded past this many entries: every tar entry, and every directory made for one. Bytes alone
   * do not bound the tree: an empty file, a short symlink or a hard link costs no block but an inode, and a tmpfs
   * (the staging area) runs out of inodes, and memory, long before bytes.
   */
  maxEntries?: number;
  onWarning?: (msg: string) => void;
}

const BLOCK = 4096;
const MAX_SKIPPED_KEPT = 200;

/** Splits an entry name into safe components, or returns a reason to refuse it. */
export function safeComponents(name: string): string[] | string {
  if (name.includes('\0')) return 'NUL in name';
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.some((p) => p === '..')) return '`..` in name';
  return parts;
}

export async function extractRootfs(input: Readable, root: string, opts: ExtractOptions = {}): Promise<ExtractStats> {
  try {
    fs.mkdirSync(root, { mode: 0o755 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  if (!fs.lstatSync(root).isDirectory()) throw new KilnError('internal', 'staging root is not a directory');
  fs.chmodSync(root, 0o755);

  const stats: ExtractStats = {
    entries: 0,
    files: 0,
    dirs: 1,
    symlinks: 0,
    hardlinks: 0,
    blockBytes: BLOCK,
    dataBytes: 0,
    skipped: [],
    skippedCount: 0,
    capabilities: [],
    capabilityCount: 0,
    capabilityFailures: 0,
  };
  // Relative paths (joined with '/') known to be real directories made or verified by us; '' is the root.
  const dirs = new Set<string>(['']);
  const dirMeta: { rel: string; mode: number; uid: number; gid: number; mtime?: Date }[] = [];
  // New files are owned by whoever runs us; chown only when the entry says otherwise.
  const myUid = process.getuid?.() ?? -1;
  const myGid = process.getgid?.() ?? -1;

  const skip = (name: string, reason: string) => {
    stats.skippedCount++;
    if (stats.skipped.length < MAX_SKIPPED_KEPT) stats.skipped.push({ name: name.slice(0, 256), reason });
    if (stats.skippedCount <= 20 && !/^dev\//.test(name.replace(/^\.?\//, '')))
      opts.onWarning?.(`skipped ${JSON.stringify(name.slice(0, 256))}: ${reason}`);
  };
  const account = (bytes: number) => {
    stats.blockBytes += bytes;
    if (opts.maxBytes !== undefined && stats.blockBytes > opts.maxBytes) {
      throw new KilnError(
        'limit_exceeded',
        `The image's filesystem is larger than the limit of ${Math.round(opts.maxBytes / 2 ** 20)} MiB`,
      );
    }
  };
  let made = 0;
  const count = () => {
    if (opts.maxEntries !== undefined && ++made > opts.maxEntries) {
      throw new KilnError(
        'limit_exceeded',
        `The image's filesystem has more than ${opts.maxEntries} entries (files, directories, links; sdk.maxImageEntries)`,
      );
    }
  };
  const code = (e: unknown) => (e as NodeJS.ErrnoException).code;

  /** Makes sure every parent of `parts` is a real directory inside root; returns false when one is not. */
  const ensureParents = (parts: string[]): boolean => {
    let rel = '';
    for (let i = 0; i < parts.length - 1; i++) {
      rel = rel ? `${rel}/${parts[i]}` : parts[i]!;
      if (dirs.has(rel)) continue;
      const abs = path.join(root, rel);
      try {
        count();
        fs.mkdirSync(abs, { mode: 0o755 });
        stats.dirs++;
        account(BLOCK);
      } catch (e) {
        if (code(e) !== 'EEXIST') throw e;
        // Something is there already: only a real directory will do (never a symlink to one).
        if (!fs.lstatSync(abs).isDirectory()) return false;
      }
      dirs.add(rel);
    }
    return true;
  };

  /** Removes a non-directory at abs (a symlink is removed itself); refuses to replace a directory. */
  const clearSlot = (abs: string): 'empty' | 'dir' => {
    try {
      if (fs.lstatSync(abs).isDirectory()) return 'dir';
      fs.unlinkSync(abs);
    } catch (e) {
      if (code(e) !== 'ENOENT') throw e;
    }
    return 'empty';
  };

  /** Runs `create`; when the name is taken, clears the slot (never a directory) and tries once more. */
  const createAt = <T>(abs: string, create: () => T): T | 'dir' => {
    try {
      return create();
    } catch (e) {
      if (code(e) !== 'EEXIST') throw e;
    }
    if (clearSlot(abs) === 'dir') return 'dir';
    return create();
  };

  // Capabilities to set once everything is written, by final relative path. Whatever an entry puts at a name decides
  // (a later file/link brings its own or none, a symlink or directory none); a refused entry changes nothing.
  const pendingCaps = new Map<string, Buffer>();
  const settleCap = (rel: string, cap?: Buffer) => {
    if (cap) pendingCaps.set(rel, cap);
    else pendingCaps.delete(rel);
  };
  const scanner = new CapabilityScanner({ onWarning: opts.onWarning });
  const extract = tarStream.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('finish', resolve);
    extract.on('error', reject);
    scanner.on('error', reject);
    input.on('error', reject);
  });
  input.pipe(scanner).pipe(extract);

  for await (const entry of extract) {
    const h = entry.header;
    const capRecord = scanner.capabilityOf(stats.entries);
    stats.entries++;
    count();
    const name = h.name;
    let cap = capRecord?.value;
    if (capRecord && capRecord.name !== name) {
      cap = undefined;
      opts.onWarning?.(
        `file capability for ${JSON.stringify(capRecord.name.slice(0, 256))} not applied: the tar reader saw ${JSON.stringify(name.slice(0, 256))} there`,
      );
    }
    const parts = safeComponents(name);
    const drain = async () => {
      for await (const _ of entry) {
        /* discard */
      }
    };
    if (typeof parts === 'string') {
      skip(name, parts);
      await drain();
      continue;
    }
    const rel = parts.join('/');
    const abs = parts.length ? path.join(root, ...parts) : root;
    const mode = (h.mode ?? 0o644) & 0o7777;
    const uid = h.uid ?? 0;
    const gid = h.gid ?? 0;

    if (parts.length === 0) {
      if (h.type === 'directory') dirMeta.push({ rel: '', mode, uid, gid, mtime: h.mtime });
      else skip(name, 'root entry is not a directory');
      await drain();
      continue;
    }
    if (!ensureParents(parts)) {
      skip(name, 'a parent is not a directory (e.g. a symlink)');
      await drain();
      continue;
    }

    switch (h.type) {
      case 'directory': {
        if (!dirs.has(rel)) {
          // An existing directory is kept; anything else of that name is replaced.
          if (createAt(abs, () => fs.mkdirSync(abs, { mode: 0o755 })) !== 'dir') {
            settleCap(rel);
            stats.dirs++;
            account(BLOCK);
          }
          dirs.add(rel);
        }
        dirMeta.push({ rel, mode, uid, gid, mtime: h.mtime });
        await drain();
        break;
      }
      case 'file':
      case 'contiguous-file':
      case undefined:
      case null: {
        const size = h.size ?? 0;
        account(Math.ceil(size / BLOCK) * BLOCK);
        const fd = createAt(abs, () => fs.openSync(abs, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600));
        if (fd === 'dir') {
          skip(name, 'would replace a directory');
          await drain();
          break;
        }
        try {
          for await (const chunk of entry) {
            const b = chunk as Buffer;
            for (let off = 0; off < b.length;) off += fs.writeSync(fd, b, off, b.length - off);
          }
          if (uid !== myUid || gid !== myGid) fs.fchownSync(fd, uid, gid);
          fs.fchmodSync(fd, mode);
          if (h.mtime) fs.futimesSync(fd, h.mtime, h.mtime);
        } finally {
          fs.closeSync(fd);
        }
        stats.files++;
        stats.dataBytes += size;
        settleCap(rel, cap);
        break;
      }
      case 'symlink': {
        await drain();
        const target = h.linkname ?? '';
        if (!target || target.includes('\0')) {
          skip(name, 'empty symlink target');
          break;
        }
        if (createAt(abs, () => fs.symlinkSync(target, abs)) === 'dir') {
          skip(name, 'would replace a directory');
          break;
        }
        if (uid !== myUid || gid !== myGid) fs.lchownSync(abs, uid, gid);
        if (h.mtime)
          try {
            fs.lutimesSync(abs, h.mtime, h.mtime);
          } catch {
            /* best effort */
          }
        settleCap(rel);
        stats.symlinks++;
        account(target.length > 59 ? BLOCK : 0);
        break;
      }
      case 'link': {
        await drain();
        const tparts = safeComponents(h.linkname ?? '');
        if (typeof tparts === 'string' || tparts.length === 0) {
          skip(name, `hard link target refused (${typeof tparts === 'string' ? tparts : 'empty'})`);
          break;
        }
        if (!ensureParents(tparts)) {
          skip(name, 'hard link target is not inside a real directory');
          break;
        }
        const tabs = path.join(root, ...tparts);
        let tst: fs.Stats | undefined;
        try {
          tst = fs.lstatSync(tabs);
        } catch {
          tst = undefined;
        }
        if (!tst?.isFile()) {
          skip(name, 'hard link target is not an extracted regular file');
          break;
        }
        if (createAt(abs, () => fs.linkSync(tabs, abs)) === 'dir') {
          skip(name, 'would replace a directory');
          break;
        }
        stats.hardlinks++;
        settleCap(rel, cap);
        break;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo':
        skip(name, `${h.type} not copied (the guest's /dev is devtmpfs)`);
        await drain();
        break;
      default:
        skip(name, `entry type ${String(h.type)} not supported`);
        await drain();
    }
  }
  await done;

  if (pendingCaps.size) {
    const r = await applyCapabilities(root, pendingCaps, { isRealDir: (d) => dirs.has(d), onWarning: opts.onWarning });
    stats.capabilityCount = r.applied.length;
    stats.capabilityFailures = r.failed.length;
    stats.capabilities = r.applied.slice(0, MAX_SKIPPED_KEPT).map((n) => ({
      name: n,
      capability: describeCapability(pendingCaps.get(n)!),
      value: pendingCaps.get(n)!.toString('hex'),
    }));
  }

  // Directory metadata last, deepest first, so restrictive modes do not get in the way of filling them.
  dirMeta.sort((a, b) => b.rel.split('/').length - a.rel.split('/').length);
  for (const d of dirMeta) {
    const abs = d.rel ? path.join(root, d.rel) : root;
    if (!fs.lstatSync(abs).isDirectory()) continue;
    if (d.uid !== myUid || d.gid !== myGid) fs.lchownSync(abs, d.uid, d.gid);
    fs.chmodSync(abs, d.mode);
    if (d.mtime) fs.utimesSync(abs, d.mtime, d.mtime);
  }
  if (!dirMeta.some((d) => d.rel === '')) fs.chmodSync(root, 0o755);
  return stats;
}
