import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { KilnError } from '../../../shared/errors.js';

/** Writes a file so readers see the old or the new content, never a torn one (temp file + fsync + rename). */
export async function writeAtomic(file: string, data: string | Buffer, mode = 0o644): Promise<void> {
  const tmp = path.join(
    path.dirname(file),
    `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
  );
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

/** The temp file name writeAtomic uses: a dot, the file's name, the writer's pid, 8 hex digits. */
const TEMP_NAME = /^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$/;

/**
 * Removes writeAtomic's temp files in `dir` whose writer died before its rename (a SIGKILL between open and rename):
 * the pid in the name is no longer alive. A live writer's file is left alone, so this is safe beside other
 * processes writing in the same directory; a reused pid only postpones the removal.
 */
export async function removeStaleTemps(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const n of names) {
    const m = TEMP_NAME.exec(n);
    if (!m || pidAlive(Number(m[1]))) continue;
    await fsp.rm(path.join(dir, n), { force: true });
    removed++;
  }
  return removed;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
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
 * at a Unix socket bound in Linux's abstract namespace, named after the directory's device and inode: binding is
 * atomic, and the kernel releases the name when its holder closes it or dies. So a lock is never "stale" and never
 * broken by guessing (the mkdir lock this replaces broke any lock older than 30 s, and the slow holder's release
 * then removed its successor's lock: two writers at once). The name is per network namespace: every process that
 * shares a data directory must run in the same one (they do: the runner and the forced command on one host).
 */
export class DirLock {
  private chain: Promise<unknown> = Promise.resolve();
  private name: string | undefined;
  constructor(
    private readonly dir: string,
    private readonly opts: { waitMs?: number } = {},
  ) {}

  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(() => this.withLock(fn));
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async socketName(): Promise<string> {
    if (!this.name) {
      const st = await fsp.stat(this.dir);
      this.name = `\0kiln-glue-lock-${createHash('sha256').update(`${st.dev}:${st.ino}`).digest('hex').slice(0, 32)}`;
    }
    return this.name;
  }

  private async withLock<T>(fn: () => Promise<T>): Promise<T> {
    const name = await this.socketName();
    const deadline = Date.now() + (this.opts.waitMs ?? 15_000);
    let held: net.Server | undefined;
    for (let delay = 2; !held; delay = Math.min(delay * 2, 50)) {
      held = await bind(name);
      if (held) break;
      if (Date.now() > deadline)
        throw new KilnError('backend_unavailable', 'The build data directory is busy; try again');
      await new Promise((r) => setTimeout(r, delay));
    }
    try {
      return await fn();
    } finally {
      await new Promise<void>((r) => held.close(() => r()));
    }
  }
}

/** Binds the abstract socket `name`: the server when this process now holds it, undefined when another does. */
function bind(name: string): Promise<net.Server | undefined> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref(); // a held lock keeps nothing alive by itself
    srv.once('error', (e: NodeJS.ErrnoException) => (e.code === 'EADDRINUSE' ? resolve(undefined) : reject(e)));
    srv.listen({ path: name }, () => resolve(srv));
  });
}
