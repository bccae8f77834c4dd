/**
 * Composition root for `kiln web`: the web site alone, reaching a glue that runs elsewhere (another process or
 * host: `kiln glue-server`, or OpenSSH with `kiln glue` as forced command). Requires the glue's host key
 * fingerprint (KILN_SSH_HOST_FINGERPRINT): the client pins it and never accepts another key. Runs the task worker
 * too unless KILN_WORKER_ENABLED=0 (then `kiln worker` processes on the same database do the background work).
 */
import { mkdirSync } from 'node:fs';
import { loadConfig } from '../config/index.js';
import { createDbFromConfig, migrateLatest } from '../db/index.js';
import { createLogger } from '../shared/logger.js';
import { defaultKeyPaths, ensureKeyPair } from '../shared/ssh-keys.js';
import { sshGlueClientFromConfig } from '../glue-client/ssh.js';
import { startSite, untilStopped } from './site.js';

export async function main(argv: string[]): Promise<number> {
  if (argv.includes('--help')) {
    process.stdout.write(
      'usage: kiln web\n\nServes the site on KILN_WEB_HOST:KILN_WEB_PORT and reaches the glue over SSH at\n' +
        'KILN_SSH_HOST:KILN_SSH_PORT, pinning KILN_SSH_HOST_FINGERPRINT. Other settings: KILN_* variables.\n',
    );
    return 0;
  }
  const config = loadConfig();
  const logger = createLogger({ level: config.log.level, name: 'kiln-web' });
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  let glue;
  try {
    glue = await sshGlueClientFromConfig(config, { logger: logger.child({ part: 'glue-client' }) });
  } catch (e) {
    // Without a pinned glue host key there is nothing safe to connect to: say so and stop before anything starts.
    process.stderr.write(`kiln web: ${(e as Error).message}\n`);
    return 2;
  }
  const db = createDbFromConfig(config);
  await migrateLatest(db);
  const clientKey = await ensureKeyPair(config.ssh.clientKeyFile ?? defaultKeyPaths(config.dataDir).client, 'kiln-web');
  let site;
  try {
    site = await startSite(config, db, glue, logger);
  } catch (e) {
    // Nothing may keep the process alive after a failed start (an unreadable signing key, a port in use).
    await glue.close();
    await db.destroy();
    throw e;
  }
  const admin = site.firstAdmin;
  process.stdout.write(`Kiln web is ready at ${site.url}\n`);
  if (site.sshDoor)
    process.stdout.write(`SSH door: port ${site.sshDoor.port}, host key SHA256:${site.sshDoor.hostFingerprint}\n`);
  if (admin)
    process.stdout.write(
      `First admin: user "${admin.username}", one-time password "${admin.password}" (shown only now)\n`,
    );
  process.stdout.write(`The glue must authorize this public key:\n${clientKey.publicKey}\n`);

  await untilStopped(logger);
  await site.close();
  await glue.close();
  await db.destroy();
  return 0;
}
