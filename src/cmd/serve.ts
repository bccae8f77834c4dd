/**
 * Composition root for `kiln serve`: the embedded one-machine setup. Starts, in one process:
 *   the local backend (build runner) + the built-in ssh2 glue server on loopback,
 *   the web site, which reaches that glue only over SSH with a pinned host key, as it would a remote one,
 *   the task worker (dispatch, refresh, verification, reconciliation of builds; off with KILN_WORKER_ENABLED=0
 *   when `kiln worker` processes do it instead).
 * Keys, the SQLite database and build data live in config.dataDir (created on first start).
 */
import { mkdirSync } from 'node:fs';
import { loadConfig } from '../config/index.js';
import { createDbFromConfig, migrateLatest } from '../db/index.js';
import { startGlueServer } from '../glue/index.js';
import { createLogger } from '../shared/logger.js';
import { sshGlueClientFromConfig } from '../glue-client/ssh.js';
import { startSite, untilStopped } from './site.js';

export async function main(argv: string[]): Promise<number> {
  if (argv.includes('--help')) {
    process.stdout.write(
      'usage: kiln serve\n\nSettings come from KILN_* environment variables (see src/config/README.md).\n',
    );
    return 0;
  }
  const config = loadConfig();
  const logger = createLogger({ level: config.log.level, name: 'kiln' });
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });

  const db = createDbFromConfig(config);
  await migrateLatest(db);

  const glue = await startGlueServer(config, logger.child({ part: 'glue' }));
  const glueClient = await sshGlueClientFromConfig(config, {
    port: glue.port,
    hostFingerprint: glue.hostFingerprint,
    logger: logger.child({ part: 'glue-client' }),
  });
  let site;
  try {
    site = await startSite(config, db, glueClient, logger);
  } catch (e) {
    // Nothing may keep the process alive after a failed start (an unreadable signing key, a port in use).
    await glueClient.close();
    await glue.close();
    await db.destroy();
    throw e;
  }
  const admin = site.firstAdmin;
  if (admin) {
    process.stdout.write(
      `\nKiln is ready at ${site.url}\nFirst admin: user "${admin.username}", one-time password "${admin.password}"\n` +
        'This password is shown only now; change it after logging in, or add admins with `kiln user add --admin NAME`.\n\n',
    );
  } else {
    process.stdout.write(`\nKiln is ready at ${site.url}\n\n`);
  }
  if (site.sshDoor)
    process.stdout.write(`SSH door: port ${site.sshDoor.port}, host key SHA256:${site.sshDoor.hostFingerprint}\n\n`);

  await untilStopped(logger);
  await site.close();
  await glueClient.close();
  await glue.close();
  await db.destroy();
  return 0;
}
