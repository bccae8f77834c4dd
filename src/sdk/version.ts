import { readFileSync } from 'node:fs';

/** The SDK version is the package version (one release train for all of Kiln). */
export const SDK_VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
})();
