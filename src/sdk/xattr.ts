import fs, { constants as C } from 'node:fs';
import path from 'node:path';
import { run } from '../shared/subprocess.js';
import { CAPABILITY_XATTR } from './capability-scanner.js';

/**
 * File capabilities (`security.capability`) from a `docker export`, carried binary-safe into the staging tree.
 *
 * Why a scanner of our own: moby's archive writer stores the capability as a PAX record
 * `SCHILY.xattr.security.capability` whose value is the raw vfs_cap_data (12/20/24 bytes, 0x80+ bytes and NULs
 * included), and tar-stream decodes every PAX value as UTF-8, which turns those bytes into U+FFFD. Rather than patch
 * tar-stream's internals, `CapabilityScanner` sits in front of it as a pass-through Transform and walks the same byte
 * stream with the same framing rules tar-stream uses (checksum, ustar prefix, octal or base-256 sizes, GNU `L`/`K`
 * long names, `x`/`g` PAX headers and their `path`/`size`, a directory's data not skipped), only to remember the
 * capability bytes per entry. Entries are numbered exactly as tar-stream emits them, and the extractor also compares
 * the name both saw, so a disagreement drops that capability instead of putting it on another file.
 *
 * The capability value itself is the image's own business (whoever wrote the Dockerfile could `setcap` anything in
 * it); what must hold is where it lands: `applyCapabilities` only touches regular files inside the staging tree,
 * reached through real directories, opened with O_NOFOLLOW and set through the opened fd (`/proc/self/fd/N` of a
 * `setfattr` child that inherited it), so no symlink is ever followed.
 */

export {
  CAPABILITY_XATTR,
  CapabilityScanner,
  MAX_CAPABILITIES_KEPT,
  MAX_CAPABILITY_BYTES,
  type CapabilityRecord,
  type ScannerOptions,
} from './capability-scanner.js';

export interface ApplyOptions {
  /** True when the relative dir ('' is the root) is a real directory the extraction made or verified. */
  isRealDir?: (rel: string) => boolean;
  onWarning?: (msg: string) => void;
  /** Files per setfattr run (each is an inherited fd). */
  batch?: number;
  timeoutMs?: number;
}

export interface ApplyResult {
  applied: string[];
  failed: { name: string; reason: string }[];
}

/**
 * Sets `security.capability` on regular files of the staging tree, keyed by relative path. Every parent must be a
 * real directory (never a symlink), the file is opened with O_NOFOLLOW and must be a regular file; the value is set
 * through that fd. Needs CAP_SETFCAP; a failure is reported per file and never thrown (the image still builds).
 */
export async function applyCapabilities(
  root: string,
  caps: ReadonlyMap<string, Buffer>,
  opts: ApplyOptions = {},
): Promise<ApplyResult> {
  const res: ApplyResult = { applied: [], failed: [] };
  const fail = (name: string, reason: string) => {
    res.failed.push({ name, reason });
    if (res.failed.length <= 20)
      opts.onWarning?.(`file capability of ${JSON.stringify(name.slice(0, 256))} not applied: ${reason}`);
  };
  const open: { rel: string; fd: number; value: Buffer }[] = [];
  try {
    for (const [rel, value] of [...caps].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      const fd = openInTree(root, rel, opts.isRealDir);
      if (typeof fd === 'string') fail(rel, fd);
      else open.push({ rel, fd, value });
    }
    const batch = Math.max(1, opts.batch ?? 64);
    for (let i = 0; i < open.length; i += batch) {
      const part = open.slice(i, i + batch);
      const r = await setfattrFds(
        part.map((p) => ({ fd: p.fd, value: p.value })),
        opts.timeoutMs ?? 60_000,
      );
      for (const [j, p] of part.entries()) {
        const err = r.errors.get(j) ?? r.general;
        if (err) fail(p.rel, err);
        else res.applied.push(p.rel);
      }
    }
  } finally {
    for (const p of open) fs.closeSync(p.fd);
  }
  return res;
}

/** Opens rel read-only without following any symlink, or says why not. */
function openInTree(root: string, rel: string, isRealDir?: (rel: string) => boolean): number | string {
  const parts = rel.split('/');
  if (!rel || parts.some((p) => p === '' || p === '.' || p === '..' || p.includes('\0'))) return 'bad name';
  let cur = '';
  for (const p of parts.slice(0, -1)) {
    cur = cur ? `${cur}/${p}` : p;
    if (isRealDir && !isRealDir(cur)) return 'a parent is not a directory the extraction made';
    let st: fs.Stats;
    try {
      st = fs.lstatSync(path.join(root, cur));
    } catch {
      return 'a parent is missing';
    }
    if (!st.isDirectory()) return 'a parent is not a directory (e.g. a symlink)';
  }
  let fd: number;
  try {
    fd = fs.openSync(path.join(root, rel), C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK | C.O_NOCTTY);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ELOOP'
      ? 'it is a symlink'
      : `cannot open (${(e as NodeJS.ErrnoException).code ?? 'error'})`;
  }
  if (!fs.fstatSync(fd).isFile()) {
    fs.closeSync(fd);
    return 'not a regular file';
  }
  return fd;
}

/**
 * One `setfattr --restore=-` for a batch of opened files: they are the child's fds 3, 4, ... and named
 * `/proc/self/fd/N` in the dump it reads on stdin (setxattr follows that magic link to the opened file itself, and
 * nothing else). Argv only, no shell; bounded by a timeout. setfattr carries on after a failing file and names it.
 */
async function setfattrFds(
  items: { fd: number; value: Buffer }[],
  timeoutMs: number,
): Promise<{ errors: Map<number, string>; general?: string }> {
  const dump = items
    .map((it, i) => `# file: /proc/self/fd/${i + 3}\n${CAPABILITY_XATTR}=0s${it.value.toString('base64')}\n`)
    .join('\n');
  let r;
  try {
    r = await run('setfattr', ['--restore=-'], {
      input: dump,
      timeoutMs,
      inheritFds: items.map((it) => it.fd),
      maxOutputBytes: 64 * 1024,
    });
  } catch (e) {
    return { errors: new Map(), general: `setfattr could not start (${(e as Error).message}; Debian package attr)` };
  }
  const errors = new Map<number, string>();
  for (const m of r.stderr.matchAll(/\/proc\/self\/fd\/(\d+): ([^\n]*)/g)) errors.set(Number(m[1]) - 3, m[2]!.trim());
  let general: string | undefined;
  if (r.timedOut) general = 'setfattr timed out';
  else if (r.code !== 0 && errors.size === 0)
    general = `setfattr failed (exit ${r.code}): ${r.stderr.trim().slice(-300)}`;
  return { errors, general };
}

/** Human form of a vfs_cap_data value for logs: version and the permitted/inheritable masks and effective flag. */
export function describeCapability(v: Buffer): string {
  if (v.length < 4) return `${v.length} bytes`;
  const magic = v.readUInt32LE(0);
  const version = magic >>> 24;
  const eff = (magic & 1) === 1;
  const u32 = (o: number) => (v.length >= o + 4 ? v.readUInt32LE(o) : 0);
  const permitted = (BigInt(u32(12)) << 32n) | BigInt(u32(4));
  return `v${version} permitted=0x${permitted.toString(16)}${eff ? ' effective' : ''}${version === 3 && v.length >= 24 ? ` rootid=${v.readUInt32LE(20)}` : ''}`;
}
