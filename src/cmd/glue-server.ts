/**
 * Composition root for `kiln glue-server`: the configured backend (local runner by default; `KILN_GLUE_BACKEND=
 * jenkins` loads the Jenkins backend through createBackend's hook) behind the built-in ssh2 server. Prints the
 * host key fingerprint the web must pin, and stops cleanly on SIGINT/SIGTERM (running local builds end `lost`,
 * "interrupted", and the web requeues them once). A Jenkins that fails the glue's checks (too old, or the token has
 * Overall/Administer) stops the start with a message saying which.
 */
import { loadConfig } from '../config/index.js';
import { startGlueServer } from '../glue/index.js';
import { isKilnError } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';

export async function main(argv: string[]): Promise<number> {
  if (argv.includes('--help')) {
    process.stdout.write(
      'usage: kiln glue-server   (settings from KILN_* variables: KILN_SSH_PORT, KILN_DATA_DIR, KILN_GLUE_BACKEND, ...)\n',
    );
    return 0;
  }
  const cfg = loadConfig();
  const logger = createLogger({ level: cfg.log.level, name: 'glue-server' });
  let glue;
  try {
    glue = await startGlueServer(cfg, logger);
  } catch (e) {
    // A refusal (a Jenkins too old, a token with Overall/Administer) says what to fix; no stack for those.
    if (!isKilnError(e)) throw e;
    process.stderr.write(`kiln glue-server: ${e.message}\n`);
    return 5;
  }
  process.stdout.write(
    `kiln glue listening on ${cfg.ssh.host}:${glue.port}, host key SHA256:${glue.hostFingerprint}\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  logger.info('glue server stopping');
  await glue.close();
  return 0;
}
