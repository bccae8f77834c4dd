import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** A fresh temporary directory, removed by the returned cleanup. Tests write nowhere else. */
export function tempDir(prefix = 'kiln-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  // Retries: a server or runner a test has just stopped may still finish a write in there (ENOTEMPTY).
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 }) };
}

/** Every path under dir, relative to it and sorted, without following symlinks (what a test compares before/after). */
export function listTree(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    out.push(e.name);
    if (e.isDirectory()) out.push(...listTree(path.join(dir, e.name)).map((s) => `${e.name}/${s}`));
  }
  return out.sort();
}

/**
 * Points os.tmpdir() (which reads TMPDIR on each call) at a fresh directory of its own while uploads run, so nothing
 * else on the machine can put a file there and a stray upload file cannot hide among theirs. `restore` puts TMPDIR
 * back and removes the directory.
 */
export function isolatedTmpdir(prefix = 'kiln-test-uploads-tmp-'): {
  dir: string;
  use: () => void;
  restore: () => void;
} {
  const t = tempDir(prefix);
  const before = process.env.TMPDIR;
  return {
    dir: t.dir,
    use: () => {
      process.env.TMPDIR = t.dir;
    },
    restore: () => {
      if (before === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = before;
      t.cleanup();
    },
  };
}
