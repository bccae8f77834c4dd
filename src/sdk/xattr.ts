import fs, { constants as C } from 'node:fs';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { run } from '../shared/subprocess.js';

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

export const CAPABILITY_XATTR = 'security.capability';
const PAX_KEY = `SCHILY.xattr.${CAPABILITY_XATTR}`;
/** vfs_cap_data is 12 (v1), 20 (v2) or 24 (v3) bytes; anything much larger is not a capability. */
export const MAX_CAPABILITY_BYTES = 64;
export const MAX_CAPABILITIES_KEPT = 10_000;
/** Same bound tar-stream puts on a long-name or PAX entry (it fails the archive beyond it). */
const MAX_META_BYTES = 4 * 1024 * 1024;

export interface CapabilityRecord {
  /** The entry name as tar-stream reports it (after GNU long names and PAX `path`). */
  name: string;
  value: Buffer;
}

export interface ScannerOptions {
  maxKept?: number;
  maxValueBytes?: number;
  onWarning?: (msg: string) => void;
}

const pad512 = (n: number) => (512 - (n % 512)) % 512;

/** tar-stream's reading of a numeric field: base-256 when the high bit is set, else octal with optional spaces/NULs. */
function decodeNumber(buf: Buffer, offset: number, length: number): number | null {
  const v = buf.subarray(offset, offset + length);
  if (v[0]! & 0x80) {
    let positive: boolean;
    if (v[0] === 0x80) positive = true;
    else if (v[0] === 0xff) positive = false;
    else return null;
    let sum = 0;
    for (let i = 1; i < v.length; i++) sum = sum * 256 + (positive ? v[i]! : 0xff - v[i]!);
    return positive ? sum : -sum;
  }
  let o = 0;
  while (o < v.length && v[o] === 32) o++;
  let end = v.indexOf(32, o);
  if (end === -1) end = v.length;
  while (o < end && v[o] === 0) o++;
  if (end === o) return 0;
  return parseInt(v.subarray(o, end).toString(), 8);
}

function decodeString(buf: Buffer, offset: number, length: number): string {
  let end = buf.indexOf(0, offset);
  if (end === -1 || end > offset + length) end = offset + length;
  return buf.subarray(offset, end).toString('utf8');
}

/** PAX records, values kept as raw bytes (keys are ASCII in practice; decoded like tar-stream does). */
export function parsePax(buf: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  while (buf.length) {
    let i = 0;
    while (i < buf.length && buf[i] !== 32) i++;
    const len = parseInt(buf.subarray(0, i).toString(), 10);
    if (!len) return out;
    const rec = buf.subarray(i + 1, len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq === -1) return out;
    out.set(rec.subarray(0, eq).toString('utf8'), Buffer.from(rec.subarray(eq + 1)));
    buf = buf.subarray(len);
  }
  return out;
}

const USTAR = Buffer.from('ustar\0', 'latin1');
const GNU_MAGIC = Buffer.from('ustar ', 'latin1');
const GNU_VER = Buffer.from(' \0', 'latin1');

/**
 * Pass-through Transform: every chunk goes on unchanged (after being scanned, so a capability is known before
 * tar-stream emits its entry). `capabilityOf(i)` hands out the capability of the i-th entry tar-stream emits (0-based).
 */
export class CapabilityScanner extends Transform {
  private readonly found = new Map<number, CapabilityRecord>();
  private readonly header = Buffer.alloc(512);
  private headerFill = 0;
  private skip = 0;
  private meta: { type: number; size: number; chunks: Buffer[]; got: number } | undefined;
  private gnuLongPath: string | null = null;
  private pax: Map<string, Buffer> | null = null;
  private paxGlobal: Map<string, Buffer> | null = null;
  private entryIndex = 0;
  private stopped = false;
  private readonly maxKept: number;
  private readonly maxValueBytes: number;
  /** Capabilities found so far (kept or not). */
  seen = 0;

  constructor(private readonly opts: ScannerOptions = {}) {
    super();
    this.maxKept = opts.maxKept ?? MAX_CAPABILITIES_KEPT;
    this.maxValueBytes = opts.maxValueBytes ?? MAX_CAPABILITY_BYTES;
  }

  capabilityOf(index: number): CapabilityRecord | undefined {
    const r = this.found.get(index);
    if (r) this.found.delete(index);
    return r;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (!this.stopped) {
      try {
        this.scan(chunk);
      } catch (e) {
        this.stop(`scanner error: ${(e as Error).message}`);
      }
    }
    cb(null, chunk);
  }

  /** Gives up on capabilities from here on; the data still flows (tar-stream decides whether the archive is valid). */
  private stop(why: string): void {
    if (this.stopped) return;
    this.stopped = true;
    this.found.clear();
    this.opts.onWarning?.(`file capabilities after entry ${this.entryIndex} not read (${why})`);
  }

  private scan(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length && !this.stopped) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - off);
        this.skip -= n;
        off += n;
        continue;
      }
      if (this.meta) {
        const m = this.meta;
        const n = Math.min(m.size - m.got, chunk.length - off);
        m.chunks.push(Buffer.from(chunk.subarray(off, off + n)));
        m.got += n;
        off += n;
        if (m.got === m.size) this.finishMeta();
        continue;
      }
      const n = Math.min(512 - this.headerFill, chunk.length - off);
      chunk.copy(this.header, this.headerFill, off, off + n);
      this.headerFill += n;
      off += n;
      if (this.headerFill === 512) {
        this.headerFill = 0;
        this.onHeader(this.header);
      }
    }
  }

  private finishMeta(): void {
    const m = this.meta!;
    this.meta = undefined;
    const data = Buffer.concat(m.chunks, m.size);
    this.skip = pad512(m.size);
    switch (m.type) {
      case 28: case 30: this.gnuLongPath = decodeString(data, 0, data.length); break;
      case 27: break; // GNU long link name: the extractor does not need it from us
      case 55: this.paxGlobal = parsePax(data); break;
      case 72: this.pax = this.paxGlobal === null ? parsePax(data) : new Map([...this.paxGlobal, ...parsePax(data)]); break;
    }
  }

  private onHeader(h: Buffer): void {
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
    if (sum === 8 * 32) return; // an all-zero block: tar-stream skips it, no entry
    if (sum !== decodeNumber(h, 148, 8)) return this.stop('bad header checksum');
    let typeflag = h[156] === 0 ? 0 : h[156]! - 48;
    let name = decodeString(h, 0, 100);
    if (h.subarray(257, 263).equals(USTAR)) {
      if (h[345]) name = `${decodeString(h, 345, 155)}/${name}`;
    } else if (!(h.subarray(257, 263).equals(GNU_MAGIC) && h.subarray(263, 265).equals(GNU_VER))) {
      return this.stop('unknown tar format');
    }
    if (typeflag === 0 && name.endsWith('/')) typeflag = 5;
    let size = decodeNumber(h, 124, 12);

    if (typeflag === 27 || typeflag === 28 || typeflag === 30 || typeflag === 55 || typeflag === 72) {
      if (size === null || !(size >= 0) || size > MAX_META_BYTES) return this.stop('bad long-name or PAX header size');
      this.meta = { type: typeflag, size, chunks: [], got: 0 };
      if (size === 0) this.finishMeta();
      return;
    }

    // A real entry: the long name and PAX records before it apply to it, in tar-stream's order.
    if (this.gnuLongPath) name = this.gnuLongPath;
    this.gnuLongPath = null;
    let cap: Buffer | undefined;
    if (this.pax) {
      const p = this.pax;
      this.pax = null;
      const pPath = p.get('path');
      if (pPath?.length) name = pPath.toString('utf8');
      const pSize = p.get('size');
      if (pSize?.length) size = parseInt(pSize.toString('utf8'), 10);
      cap = p.get(PAX_KEY);
    }
    const index = this.entryIndex++;
    if (cap) this.keep(index, name, cap);
    if (size === null || !(size >= 0)) return this.stop('bad entry size');
    this.skip = size === 0 || typeflag === 5 ? 0 : size + pad512(size);
  }

  private keep(index: number, name: string, value: Buffer): void {
    this.seen++;
    const shown = JSON.stringify(name.slice(0, 256));
    if (value.length === 0 || value.length > this.maxValueBytes) {
      this.opts.onWarning?.(`file capability of ${shown} ignored: ${value.length} bytes is not a capability`);
      return;
    }
    if (this.seen > this.maxKept) {
      if (this.seen === this.maxKept + 1) this.opts.onWarning?.(`more than ${this.maxKept} files with capabilities: the rest are not kept`);
      return;
    }
    this.found.set(index, { name, value });
  }
}

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
export async function applyCapabilities(root: string, caps: ReadonlyMap<string, Buffer>, opts: ApplyOptions = {}): Promise<ApplyResult> {
  const res: ApplyResult = { applied: [], failed: [] };
  const fail = (name: string, reason: string) => {
    res.failed.push({ name, reason });
    if (res.failed.length <= 20) opts.onWarning?.(`file capability of ${JSON.stringify(name.slice(0, 256))} not applied: ${reason}`);
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
      const r = await setfattrFds(part.map((p) => ({ fd: p.fd, value: p.value })), opts.timeoutMs ?? 60_000);
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
    try { st = fs.lstatSync(path.join(root, cur)); } catch { return 'a parent is missing'; }
    if (!st.isDirectory()) return 'a parent is not a directory (e.g. a symlink)';
  }
  let fd: number;
  try {
    fd = fs.openSync(path.join(root, rel), C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK | C.O_NOCTTY);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ELOOP' ? 'it is a symlink' : `cannot open (${(e as NodeJS.ErrnoException).code ?? 'error'})`;
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
async function setfattrFds(items: { fd: number; value: Buffer }[], timeoutMs: number): Promise<{ errors: Map<number, string>; general?: string }> {
  const dump = items.map((it, i) => `# file: /proc/self/fd/${i + 3}\n${CAPABILITY_XATTR}=0s${it.value.toString('base64')}\n`).join('\n');
  let r;
  try {
    r = await run('setfattr', ['--restore=-'], { input: dump, timeoutMs, inheritFds: items.map((it) => it.fd), maxOutputBytes: 64 * 1024 });
  } catch (e) {
    return { errors: new Map(), general: `setfattr could not start (${(e as Error).message}; Debian package attr)` };
  }
  const errors = new Map<number, string>();
  for (const m of r.stderr.matchAll(/\/proc\/self\/fd\/(\d+): ([^\n]*)/g)) errors.set(Number(m[1]) - 3, m[2]!.trim());
  let general: string | undefined;
  if (r.timedOut) general = 'setfattr timed out';
  else if (r.code !== 0 && errors.size === 0) general = `setfattr failed (exit ${r.code}): ${r.stderr.trim().slice(-300)}`;
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
