/**
 * The capability scanner of a `docker export` stream (see xattr.ts for why Kiln reads the tar's framing itself):
 * a pass-through Transform that remembers each entry's `security.capability` PAX value, byte for byte.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { decodeNumber, decodeString, pad512, parsePax } from './tar-fields.js';

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
      case 28:
      case 30:
        this.gnuLongPath = decodeString(data, 0, data.length);
        break;
      case 27:
        break; // GNU long link name: the extractor does not need it from us
      case 55:
        this.paxGlobal = parsePax(data);
        break;
      case 72:
        this.pax = this.paxGlobal === null ? parsePax(data) : new Map([...this.paxGlobal, ...parsePax(data)]);
        break;
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
      if (this.seen === this.maxKept + 1)
        this.opts.onWarning?.(`more than ${this.maxKept} files with capabilities: the rest are not kept`);
      return;
    }
    this.found.set(index, { name, value });
  }
}
