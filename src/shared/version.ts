import { readFileSync } from 'node:fs';

/** Kiln's version: the package version (one release train for the web, the glue and the SDK). */
export const KILN_VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
})();
