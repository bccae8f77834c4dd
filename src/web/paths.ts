import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The package root: the nearest ancestor holding Kiln's package.json. Views and public/ are read from there, so
 * the same code works from src/ (tsx, vitest) and from the compiled dist/ (which holds no templates).
 */
export function packageRoot(from = path.dirname(fileURLToPath(import.meta.url))): string {
  let dir = from;
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        if ((JSON.parse(readFileSync(pj, 'utf8')) as { name?: string }).name === 'kiln') return dir;
      } catch {
        /* keep looking */
      }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error('kiln package root not found');
    dir = up;
  }
}

export const viewsDir = (): string => path.join(packageRoot(), 'src', 'web', 'views');
export const publicDir = (): string => path.join(packageRoot(), 'public');
