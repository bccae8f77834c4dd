/**
 * The glue's public entry: what src/cmd/* (the composition roots) call. See README.md in this folder.
 */
import type { FrozenConfig } from '../config/index.js';
import type { Logger } from '../shared/logger.js';
import { createBackend } from './backend.js';
import type { Backend } from './backends/types.js';
import { createGlue } from './dispatch.js';
import { sshServerOptionsFromConfig, startSshServer } from './ssh-server.js';

export interface RunningGlue {
  /** The port the built-in SSH server listens on (useful with ssh.port = 0). */
  port: number;
  /** SHA-256 fingerprint of the host key, base64 without padding (what the web pins). */
  hostFingerprint: string;
  /** The backend, started (the composition root may share it, e.g. for reconciliation). */
  backend: Backend;
  close(): Promise<void>;
}

/**
 * Starts the embedded glue: the configured backend (as the build runner) and the built-in ssh2 server in front of
 * the same dispatcher the OpenSSH door uses. `kiln serve` and `kiln glue-server` call this. Host key and, when no
 * authorized keys file is configured, the web's client key are created on first start (see ssh-server.ts).
 */
export async function startGlueServer(
  cfg: FrozenConfig,
  logger: Logger,
  opts: { backend?: Backend } = {},
): Promise<RunningGlue> {
  const backend = opts.backend ?? (await createBackend(cfg, logger.child({ part: 'backend' }), { runner: true }));
  await backend.start();
  try {
    const glue = createGlue({ backend, logger: logger.child({ part: 'glue' }) });
    const server = await startSshServer({
      ...(await sshServerOptionsFromConfig(cfg)),
      glue,
      logger: logger.child({ part: 'ssh' }),
    });
    return {
      port: server.port,
      hostFingerprint: server.hostFingerprint,
      backend,
      async close() {
        await server.close();
        await backend.close();
      },
    };
  } catch (e) {
    await backend.close();
    throw e;
  }
}
