import type { FrozenConfig } from '../config/index.js';
import { KilnError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { LocalBackend } from './backends/local/index.js';
import type { Backend } from './backends/types.js';

// Kept apart from index.ts so `kiln glue` (one process per OpenSSH request) does not load ssh2 (~0.5 s).

/**
 * Builds the configured backend (not started). `runner` is false for a one-request `kiln glue` process: it records
 * builds in the local data directory and leaves running them to the long-lived glue server on the same directory.
 */
export async function createBackend(cfg: FrozenConfig, logger: Logger, opts: { runner: boolean }): Promise<Backend> {
  if (cfg.glue.backend === 'jenkins') {
    // Hook for the Jenkins backend (src/glue/backends/jenkins/, another helper's area). Its module exports
    // `createJenkinsBackend({ config, logger }): Backend`. Loaded on demand so `kiln glue` with the local backend
    // never loads the jenkins client.
    const specifier = './backends/jenkins/index.js';
    let mod: { createJenkinsBackend?: (deps: { config: FrozenConfig; logger: Logger }) => Backend };
    try {
      mod = (await import(specifier)) as typeof mod;
    } catch (e) {
      throw new KilnError('backend_unavailable', 'The jenkins backend is not available in this build', { cause: e });
    }
    if (typeof mod.createJenkinsBackend !== 'function') throw new KilnError('backend_unavailable', 'The jenkins backend is not available in this build');
    return mod.createJenkinsBackend({ config: cfg, logger });
  }
  return new LocalBackend({
    dataDir: cfg.dataDir,
    sdkCommand: cfg.glue.sdkCommand,
    concurrency: cfg.glue.concurrency,
    // The SDK's own limits (build, boot) plus room for export and disk assembly.
    buildTimeoutMs: (cfg.sdk.buildTimeoutSeconds + cfg.sdk.bootTimeoutSeconds + 900) * 1000,
    logCapBytes: cfg.sdk.logCapBytes,
    runner: opts.runner,
    logger,
  });
}
