/**
 * `--context DIR` as the .tar.gz Kiln takes: DIR's files, directories and symlinks minus what its .dockerignore
 * leaves out (the SDK's own matcher and rule, src/sdk/dockerignore.ts), in a fixed order (names sorted, depth
 * first) with fixed metadata (mtime 0, owner 0:0, no user names), so the same tree always makes the same bytes and
 * a pipeline that PUTs on every run keeps its Dockerfile's version while nothing changed.
 *
 * Nothing outside DIR is read: symlinks are sent as symlinks, never followed (what they point at is resolved by the
 * builder inside the context, as the Docker CLI leaves it), and each file is opened with O_NOFOLLOW, so a file
 * swapped for a link while the walk runs is refused rather than read through.
 */
import { constants as C, promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { MAX_CONTEXT_BYTES, MAX_CONTEXT_ENTRIES, packEntries, type ContextEntry } from '../../core/build-context.js';
import { hasExceptions, leftOut, parseDockerignore } from '../../sdk/dockerignore.js';
import { KilnError } from '../../shared/errors.js';
import { EXIT } from '../../shared/exit-status.js';
import { ClientError } from './api.js';

export interface PackedContext {
  /** The .tar.gz. */
  data: Buffer;
  entries: number;
  /** Entries .dockerignore left out (of a directory skipped whole, without a `!pattern` to look for, only itself). */
  ignored: number;
}

const fail = (message: string) => new ClientError(EXIT.usage, message);

/** A regular file's bytes, read without following a link (it may have become one since the lstat). */
async function readRegular(abs: string, rel: string): Promise<Buffer> {
  const fh = await fsp.open(abs, C.O_RDONLY | C.O_NOFOLLOW).catch((e: NodeJS.ErrnoException) => {
    throw fail(`Cannot read ${rel} in the build context: ${e.code ?? e.message}`);
  });
  try {
    if (!(await fh.stat()).isFile()) throw fail(`${rel} in the build context changed while it was read`);
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

/**
 * Packs `dir`. `leaveOut`: paths never sent (the build's own --download directory, when it lies inside the
 * context: a job retried after a download would otherwise upload the last image with its Dockerfile).
 */
export async function packContext(dir: string, leaveOut: readonly string[] = []): Promise<PackedContext> {
  const root = path.resolve(dir);
  const skip = new Set(leaveOut.map((p) => path.resolve(p)));
  // DIR itself may be a link the user named; inside it nothing is followed.
  const st = await fsp.stat(root).catch(() => undefined);
  if (!st?.isDirectory()) throw fail(`--context ${dir} is not a directory`);
  const ignoreFile = await fsp.lstat(path.join(root, '.dockerignore')).catch(() => undefined);
  const rules = ignoreFile?.isFile()
    ? parseDockerignore((await readRegular(path.join(root, '.dockerignore'), '.dockerignore')).toString('utf8'))
    : [];
  const entries: ContextEntry[] = [];
  let ignored = 0;
  let bytes = 0;
  const add = (e: Omit<ContextEntry, 'mtime'>) => {
    entries.push({ ...e, mtime: new Date(0) });
    if (entries.length > MAX_CONTEXT_ENTRIES)
      throw fail(`The build context has more than ${MAX_CONTEXT_ENTRIES} entries; leave some out with .dockerignore`);
  };

  const walk = async (rel: string): Promise<void> => {
    const names = (await fsp.readdir(path.join(root, rel))).sort();
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      const abs = path.join(root, r);
      if (skip.has(abs)) continue;
      const l = await fsp.lstat(abs);
      const mode = l.mode & 0o777;
      if (leftOut(rules, r)) {
        ignored++;
        // An ignored directory may still hold a path a `!pattern` brings back; without exceptions, skip it whole.
        if (l.isDirectory() && hasExceptions(rules)) await walk(r);
        continue;
      }
      if (l.isDirectory()) {
        add({ name: r, type: 'directory', mode });
        await walk(r);
      } else if (l.isSymbolicLink()) add({ name: r, type: 'symlink', mode, linkname: await fsp.readlink(abs) });
      else if (l.isFile()) {
        bytes += l.size;
        if (bytes > MAX_CONTEXT_BYTES)
          throw fail(
            `The build context holds more than ${MAX_CONTEXT_BYTES >> 20} MiB of files; leave some out with .dockerignore`,
          );
        add({ name: r, type: 'file', mode, data: await readRegular(abs, r) });
      } else
        throw fail(
          `${r} in the build context is not a file, directory or symlink (a socket, FIFO or device); leave it out with .dockerignore`,
        );
    }
  };
  await walk('').catch((e: NodeJS.ErrnoException) => {
    if (e instanceof ClientError || !e.code) throw e;
    throw fail(`Cannot read the build context: ${e.message}`);
  });
  if (!entries.length) throw fail(`The build context ${dir} is empty${ignored ? ' after .dockerignore' : ''}`);

  try {
    const { tar } = await packEntries(entries);
    // gzip writes no name and mtime 0 by default: the same tar gives the same bytes.
    return { data: await promisify(gzip)(tar), entries: entries.length, ignored };
  } catch (e) {
    if (e instanceof KilnError) throw fail(e.message);
    throw e;
  }
}
