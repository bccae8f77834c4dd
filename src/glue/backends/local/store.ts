import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { KilnError } from '../../../shared/errors.js';

/** Writes a file so readers see the old or the new content, never a torn one (temp file + fsync + rename). */
export async function writeAtomic(file: string, data: string | Buffer, mode = 0o644): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await fsp.open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fsp.rename(tmp, file);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
}

export const writeJson = (file: string, value: unknown) => writeAtomic(file, JSON.stringify(value, null, 2) + '\n');

/** Reads a JSON file, or undefined when it does not exist. */
export async function readJson<T>(file: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  return JSON.parse(text) as T;
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * One lock for the whole data directory, held only for short read-modify-write steps. In-process callers queue on
 * a promise chain; other processes (the OpenSSH door runs `kiln glue` per request against the same directory) meet
 * at an atomic mkdir. A lock left by a dead process is broken after `staleMs`.
 */
export class DirLock {
  private chain: Promise<unknown> = Promise.resolve();
  constructor(private readonly lockDir: string, private readonly opts: { waitMs?: number; staleMs?: number } = {}) {}

  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(() => this.withFsLock(fn));
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async withFsLock<T>(fn: () => Promise<T>): Promise<T> {
    const waitMs = this.opts.waitMs ?? 15_000;
    const staleMs = this.opts.staleMs ?? 30_000;
    const deadline = Date.now() + waitMs;
    for (let delay = 2; ; delay = Math.min(delay * 2, 50)) {
      try {
        await fsp.mkdir(this.lockDir);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const st = await fsp.stat(this.lockDir).catch(() => undefined);
        if (st && Date.now() - st.mtimeMs > staleMs) {
          await fsp.rmdir(this.lockDir).catch(() => undefined);
          continue;
        }
        if (Date.now() > deadline) throw new KilnError('backend_unavailable', 'The build data directory is busy; try again');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    try {
      return await fn();
    } finally {
      await fsp.rmdir(this.lockDir).catch(() => undefined);
    }
  }
}
