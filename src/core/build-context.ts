/**
 * Build contexts from uploads: one .tar, or several files put into a tar here. Every entry is checked and the
 * stored tar is always our own re-pack of the checked entries (owner root, no setuid/setgid bits, no device nodes,
 * no hard links), never the uploaded bytes. Nothing here touches the database or the disk: callers validate first
 * and store nothing when this throws. A bad entry refuses the whole upload with its name; nothing is dropped quietly.
 */
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import tarStream from 'tar-stream';
import { MAX_STDIN_BYTES } from '../protocol/index.js';
import type { ContextListingEntry, NewContext } from '../db/index.js';
import { KilnError, invalidInput } from '../shared/errors.js';
import { CONTROL_CHARS } from './validation.js';

/** Sum of the files' bytes in one context (uncompressed). */
export const MAX_CONTEXT_BYTES = 16 * 1024 * 1024;
/** Entries (files, directories, symlinks) in one context. */
export const MAX_CONTEXT_ENTRIES = 2000;
/**
 * The re-packed tar travels base64-encoded inside the job spec on the glue's stdin (MAX_STDIN_BYTES), next to the
 * Dockerfile: 1 MiB is left for the rest of the spec. Many small files can hit this before MAX_CONTEXT_BYTES
 * (each entry costs a 512-byte header plus padding).
 */
const MAX_CONTEXT_TAR_BYTES = Math.floor(((MAX_STDIN_BYTES - 1024 * 1024) * 3) / 4);
/** Largest .tar upload worth reading: the content cap plus headers and padding for every entry. */
export const MAX_CONTEXT_UPLOAD_BYTES = MAX_CONTEXT_BYTES + MAX_CONTEXT_ENTRIES * 1024 + 10 * 1024;

const gunzipAsync = promisify(gunzip);

const MiB = (n: number): string => `${Math.floor(n / (1024 * 1024))} MiB`;
/** A name quoted for a message: cut to 200 characters, controls and text-direction marks shown as \u escapes. */
const shown = (name: string): string =>
  JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name).replace(
    new RegExp(CONTROL_CHARS.source, 'g'),
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
const tooBig = (): KilnError =>
  new KilnError('too_large', `The build context is larger than ${MiB(MAX_CONTEXT_BYTES)} (uncompressed).`);
const tooMany = (): KilnError => invalidInput(`The build context has more than ${MAX_CONTEXT_ENTRIES} entries.`);

/** One entry of a context as it is packed (mode already masked to 0777; mtime as it will be stored). */
export interface ContextEntry {
  name: string;
  type: 'file' | 'directory' | 'symlink';
  mode: number;
  mtime: Date;
  data?: Buffer;
  linkname?: string;
}

/** A flat file name from a multi-file upload: a base name only, nothing that could mean a path. */
function checkFlatName(name: string): string {
  if (name.length === 0) throw invalidInput('A build context file has no name.');
  if (name.includes('/')) throw invalidInput(`Build context file ${shown(name)}: names may not contain "/".`);
  if (name === '.' || name === '..') throw invalidInput(`Build context file ${shown(name)}: not a file name.`);
  if (CONTROL_CHARS.test(name))
    throw invalidInput(
      `Build context file ${shown(name)}: names may not contain NUL, control characters or text-direction marks.`,
    );
  if (name.includes('\uFFFD')) throw invalidInput(`Build context file ${shown(name)}: the name is not valid UTF-8.`);
  if (Buffer.byteLength(name, 'utf8') > 255)
    throw invalidInput(`Build context file ${shown(name.slice(0, 40))}: the name is longer than 255 bytes.`);
  return name;
}

/** Several uploaded files -> a context with those files at its root. */
export async function contextFromFiles(files: ReadonlyArray<{ name: string; data: Buffer }>): Promise<NewContext> {
  if (files.length === 0) throw invalidInput('The build context is empty.');
  if (files.length > MAX_CONTEXT_ENTRIES) throw tooMany();
  const seen = new Set<string>();
  let total = 0;
  const entries: ContextEntry[] = [];
  for (const f of files) {
    const name = checkFlatName(f.name);
    if (seen.has(name)) throw invalidInput(`Build context file ${shown(name)} is given twice.`);
    seen.add(name);
    total += f.data.length;
    if (total > MAX_CONTEXT_BYTES) throw tooBig();
    // A fixed mtime: the same files always make the same tar (and sha256), so a re-upload is recognised.
    entries.push({ name, type: 'file', mode: 0o644, mtime: new Date(0), data: f.data });
  }
  return packEntries(entries);
}

/** Checks a path from a tar header; returns it normalised (no `.` components, no trailing `/`), '' for the root. */
function checkTarPath(raw: string): string {
  if (raw.includes('\0')) throw invalidInput(`Build context entry ${shown(raw)}: the name contains a NUL byte.`);
  if (CONTROL_CHARS.test(raw))
    throw invalidInput(
      `Build context entry ${shown(raw)}: the name contains a control character or a text-direction mark.`,
    );
  if (raw.includes('\uFFFD')) throw invalidInput(`Build context entry ${shown(raw)}: the name is not valid UTF-8.`);
  if (raw.startsWith('/')) throw invalidInput(`Build context entry ${shown(raw)}: absolute names are not allowed.`);
  const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw invalidInput(`Build context entry ${shown(raw)}: ".." is not allowed in names.`);
  if (parts.some((p) => Buffer.byteLength(p, 'utf8') > 255) || Buffer.byteLength(raw, 'utf8') > 4096) {
    throw invalidInput(`Build context entry ${shown(raw)}: the name is too long.`);
  }
  return parts.join('/');
}

const TYPE_WORDS: Record<string, string> = {
  link: 'a hard link',
  'character-device': 'a character device',
  'block-device': 'a block device',
  fifo: 'a FIFO',
};

/**
 * A .tar.gz upload's tar: inflated up to the size an uncompressed upload may have (a gzip bomb stops there with the
 * same `too_large` an uncompressed tar that big gets), never buffered past it.
 */
export async function gunzipContext(buf: Buffer): Promise<Buffer> {
  if (!(buf[0] === 0x1f && buf[1] === 0x8b)) throw invalidInput('The build context is not gzip-compressed.');
  try {
    return await gunzipAsync(buf, { maxOutputLength: MAX_CONTEXT_UPLOAD_BYTES });
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw tooBig();
    throw invalidInput('The build context is not a valid .tar.gz file (it may be truncated).');
  }
}

/**
 * One uploaded .tar (uncompressed) -> a context with the same files, directories and symlinks. `mtime`: the time every
 * entry gets instead of its own (a tree from git: the commit's time, so the same commit always makes the same tar).
 */
export async function contextFromTar(buf: Buffer, o: { mtime?: Date } = {}): Promise<NewContext> {
  if (buf.length === 0) throw invalidInput('The build context tar is empty.');
  if (buf.length > MAX_CONTEXT_UPLOAD_BYTES) throw tooBig();
  if (buf[0] === 0x1f && buf[1] === 0x8b)
    throw invalidInput('The build context is gzip-compressed; upload an uncompressed .tar.');
  const entries: ContextEntry[] = [];
  const kinds = new Map<string, ContextEntry['type']>();
  let total = 0;
  const ex = tarStream.extract();
  ex.end(buf);
  try {
    for await (const e of ex) {
      const h = e.header;
      const name = checkTarPath(h.name);
      const type = h.type === 'contiguous-file' || h.type == null ? 'file' : h.type;
      if (type !== 'file' && type !== 'directory' && type !== 'symlink') {
        throw invalidInput(
          `Build context entry ${shown(h.name)} is ${TYPE_WORDS[type] ?? `of type ${type}`}; only files, directories and symlinks are allowed.`,
        );
      }
      if (name === '') {
        // `./` itself (tar -C dir .): the root, which every context has anyway.
        if (type !== 'directory') throw invalidInput(`Build context entry ${shown(h.name)} has no name.`);
        e.resume();
        continue;
      }
      if (entries.length >= MAX_CONTEXT_ENTRIES) throw tooMany();
      if (kinds.has(name)) throw invalidInput(`Build context entry ${shown(h.name)} appears twice.`);
      // A path below a symlink or a file would be resolved through it by whoever unpacks the tar.
      const parts = name.split('/');
      for (let i = 1; i < parts.length; i++) {
        const parent = parts.slice(0, i).join('/');
        const k = kinds.get(parent);
        if (k && k !== 'directory')
          throw invalidInput(`Build context entry ${shown(h.name)} is inside ${shown(parent)}, which is a ${k}.`);
      }
      const mode = (h.mode ?? (type === 'directory' ? 0o755 : 0o644)) & 0o777;
      const mtime = o.mtime ?? (h.mtime instanceof Date && !Number.isNaN(h.mtime.getTime()) ? h.mtime : new Date(0));
      let data: Buffer | undefined;
      let linkname: string | undefined;
      if (type === 'file') {
        total += h.size ?? 0;
        if (total > MAX_CONTEXT_BYTES) throw tooBig();
        const chunks: Buffer[] = [];
        for await (const c of e) chunks.push(c as Buffer);
        data = Buffer.concat(chunks);
      } else {
        e.resume();
        if (type === 'symlink') {
          linkname = h.linkname ?? '';
          if (
            linkname === '' ||
            CONTROL_CHARS.test(linkname) ||
            linkname.includes('\uFFFD') ||
            Buffer.byteLength(linkname) > 4096
          ) {
            throw invalidInput(
              `Build context entry ${shown(h.name)}: the symlink target is empty, too long or has control characters.`,
            );
          }
        }
      }
      kinds.set(name, type);
      entries.push({ name, type, mode, mtime, data, linkname });
    }
  } catch (err) {
    ex.destroy();
    if (err instanceof KilnError) throw err;
    throw invalidInput('The build context is not a valid tar file (it may be truncated, or compressed).');
  }
  if (entries.length === 0) throw invalidInput('The build context tar has no entries.');
  return packEntries(entries);
}

/**
 * The tar Kiln stores for checked entries (owner 0:0, no user names, in the order given), with its digest and
 * listing; too big for the job spec is `too_large`. `kiln client` packs a `--context DIR` with it too, so what it
 * uploads is byte for byte what the server would store.
 */
export async function packEntries(entries: ContextEntry[]): Promise<NewContext> {
  const p = tarStream.pack();
  const chunks: Buffer[] = [];
  let size = 0;
  const done = new Promise<void>((resolve, reject) => {
    p.on('data', (c: unknown) => {
      const b = c as Buffer;
      chunks.push(b);
      size += b.length;
    });
    p.on('end', resolve);
    p.on('error', reject);
  });
  const listing: ContextListingEntry[] = [];
  for (const e of entries) {
    const h = { name: e.name, mode: e.mode, mtime: e.mtime, uid: 0, gid: 0, uname: '', gname: '' };
    if (e.type === 'file') p.entry({ ...h, type: 'file' }, e.data ?? Buffer.alloc(0));
    else if (e.type === 'directory') p.entry({ ...h, type: 'directory' });
    else p.entry({ ...h, type: 'symlink', linkname: e.linkname });
    listing.push({
      name: e.name,
      type: e.type,
      size: e.data?.length ?? 0,
      ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
    });
  }
  p.finalize();
  await done;
  if (size > MAX_CONTEXT_TAR_BYTES) {
    throw new KilnError(
      'too_large',
      `The build context makes a ${MiB(size)} tar; the limit is ${MiB(MAX_CONTEXT_TAR_BYTES)} (each entry adds at least 512 bytes).`,
    );
  }
  const tar = Buffer.concat(chunks, size);
  return { tar, sha256: createHash('sha256').update(tar).digest('hex'), listing };
}
