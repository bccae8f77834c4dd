import type { FrozenConfig } from '../config/index.js';
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
    // Loaded on demand: `kiln glue` with the local backend never loads the jenkins client.
    const { createJenkinsBackend } = await import('./backends/jenkins/index.js');
    return createJenkinsBackend({ config: cfg, logger });
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
