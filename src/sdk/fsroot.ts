import { constants as C, promises as fsp, type Stats } from 'node:fs';
import path from 'node:path';
import { safeComponents } from './extract.js';
import { KilnError } from '../shared/errors.js';

/**
 * Host-side access to files of an untrusted root filesystem tree. Paths are guest paths (`/etc/fstab`); every
 * parent must be a real directory (lstat, no symlink), and the final component is never followed. A symlink where
 * we expect a directory makes the lookup return undefined instead of leaving the tree.
 */
export async function hostPath(root: string, guestPath: string): Promise<string | undefined> {
  const parts = safeComponents(guestPath);
  if (typeof parts === 'string') throw new KilnError('internal', `bad guest path ${guestPath}`);
  let cur = root;
  for (const p of parts.slice(0, -1)) {
    cur = path.join(cur, p);
    const st = await fsp.lstat(cur).catch(() => undefined);
    if (!st?.isDirectory()) return undefined;
  }
  return parts.length ? path.join(cur, parts.at(-1)!) : root;
}

export async function lstatIn(root: string, guestPath: string): Promise<Stats | undefined> {
  const p = await hostPath(root, guestPath);
  return p ? fsp.lstat(p).catch(() => undefined) : undefined;
}

/** Reads a regular file (not through a symlink); undefined when missing or not a regular file. */
export async function readFileIn(root: string, guestPath: string, maxBytes = 16 << 20): Promise<Buffer | undefined> {
  const p = await hostPath(root, guestPath);
  if (!p) return undefined;
  let fh;
  try {
    fh = await fsp.open(p, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size > maxBytes) return undefined;
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

/**
 * Writes a regular file, replacing whatever non-directory was there (a symlink is replaced, not followed).
 * Parents are created as root-owned 0755 directories when missing. Returns false if a parent is not a directory.
 */
export async function writeFileIn(
  root: string,
  guestPath: string,
  data: string | Buffer,
  mode = 0o644,
): Promise<boolean> {
  const parts = safeComponents(guestPath);
  if (typeof parts === 'string' || parts.length === 0) throw new KilnError('internal', `bad guest path ${guestPath}`);
  let cur = root;
  for (const p of parts.slice(0, -1)) {
    cur = path.join(cur, p);
    const st = await fsp.lstat(cur).catch(() => undefined);
    if (!st) await fsp.mkdir(cur, { mode: 0o755 });
    else if (!st.isDirectory()) return false;
  }
  const abs = path.join(cur, parts.at(-1)!);
  const st = await fsp.lstat(abs).catch(() => undefined);
  if (st?.isDirectory()) return false;
  if (st) await fsp.unlink(abs);
  const fh = await fsp.open(abs, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode);
  } finally {
    await fh.close();
  }
  return true;
}

/** Removes a non-directory entry (a symlink itself, never its target). */
export async function removeIn(root: string, guestPath: string): Promise<boolean> {
  const p = await hostPath(root, guestPath);
  if (!p) return false;
  const st = await fsp.lstat(p).catch(() => undefined);
  if (!st || st.isDirectory()) return false;
  await fsp.unlink(p);
  return true;
}

/** Names in a guest directory that is a real directory (not reached through, nor itself, a symlink); [] otherwise. */
export async function readdirIn(root: string, guestDir: string): Promise<string[]> {
  const p = await hostPath(root, guestDir);
  const st = p ? await fsp.lstat(p).catch(() => undefined) : undefined;
  return p && st?.isDirectory() ? fsp.readdir(p) : [];
}

/** Creates a symlink (replacing a non-directory). */
export async function symlinkIn(root: string, guestPath: string, target: string): Promise<boolean> {
  const p = await hostPath(root, guestPath);
  if (!p) return false;
  const st = await fsp.lstat(p).catch(() => undefined);
  if (st?.isDirectory()) return false;
  if (st) await fsp.unlink(p);
  await fsp.symlink(target, p);
  return true;
}

/** Copies a regular file out of the tree to a host path we own, without following links. */
export async function copyOut(root: string, guestPath: string, dest: string): Promise<number> {
  const p = await hostPath(root, guestPath);
  if (!p)
    throw new KilnError('build_failed', `${guestPath} is not reachable inside the image without following a link`);
  const src = await fsp.open(p, C.O_RDONLY | C.O_NOFOLLOW);
  try {
    const st = await src.stat();
    if (!st.isFile()) throw new KilnError('build_failed', `${guestPath} is not a regular file`);
    const out = await fsp.open(dest, C.O_WRONLY | C.O_CREAT | C.O_TRUNC | C.O_NOFOLLOW, 0o644);
    try {
      const buf = Buffer.allocUnsafe(1 << 20);
      let pos = 0;
      for (;;) {
        const { bytesRead } = await src.read(buf, 0, buf.length, pos);
        if (!bytesRead) break;
        await out.write(buf, 0, bytesRead);
        pos += bytesRead;
      }
      return pos;
    } finally {
      await out.close();
    }
  } finally {
    await src.close();
  }
}

/** Creates a directory and its missing parents (root-owned, 0755); false when a component is not a directory. */
export async function mkdirIn(root: string, guestPath: string): Promise<boolean> {
  const parts = safeComponents(guestPath);
  if (typeof parts === 'string') throw new KilnError('internal', `bad guest path ${guestPath}`);
  let cur = root;
  for (const p of parts) {
    cur = path.join(cur, p);
    const st = await fsp.lstat(cur).catch(() => undefined);
    if (!st) {
      await fsp.mkdir(cur);
      // 0755 whatever our umask: the guest sees these modes (e.g. a VOLUME path, made as Docker makes it).
      await fsp.chmod(cur, 0o755);
    } else if (!st.isDirectory()) return false;
  }
  return true;
}
