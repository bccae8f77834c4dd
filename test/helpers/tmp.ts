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
