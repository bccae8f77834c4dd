/**
 * Composition root for `kiln worker`: the task worker alone, no web site. Claims tasks from the database the webs
 * write (src/core/tasks: dispatch, refresh, withdraw, verification, reconciliation) and reaches the glue over SSH
 * like `kiln web` does (KILN_SSH_HOST, KILN_SSH_PORT, pinned KILN_SSH_HOST_FINGERPRINT). Run as many as you like
 * beside or instead of the webs' own workers (KILN_WORKER_ENABLED=0 on the webs): a task is claimed by one worker at
 * a time, under a lease another takes over if this process dies. The signing key (KILN_WEB_SIGNING_KEY_FILE) must be
 * the webs' one: verification signs with it.
 *
 *   kiln worker          run until SIGINT/SIGTERM
 *   kiln worker --once   run the tasks due now (and those they make due), then exit
 */
import { mkdirSync } from 'node:fs';
import { loadConfig } from '../config/index.js';
import { createWorker } from '../core/index.js';
import { createDbFromConfig, migrateLatest } from '../db/index.js';
import { sshGlueClientFromConfig } from '../glue-client/ssh.js';
import { createLogger } from '../shared/logger.js';
import { untilStopped } from './site.js';

export async function main(argv: string[]): Promise<number> {
  if (argv.includes('--help')) {
    process.stdout.write(
      'usage: kiln worker [--once]\n\nRuns background tasks (dispatch, refresh, verification, reconciliation) from the database,\n' +
        'reaching the glue over SSH at KILN_SSH_HOST:KILN_SSH_PORT, pinning KILN_SSH_HOST_FINGERPRINT.\n',
    );
    return 0;
  }
  const config = loadConfig();
  const logger = createLogger({ level: config.log.level, name: 'kiln-worker' });
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  let glue;
  try {
    glue = await sshGlueClientFromConfig(config, { logger: logger.child({ part: 'glue-client' }) });
  } catch (e) {
    process.stderr.write(`kiln worker: ${(e as Error).message}\n`);
    return 2;
  }
  const db = createDbFromConfig(config);
  try {
    await migrateLatest(db);
    const worker = createWorker({ config, db, glue, logger });
    if (argv.includes('--once')) {
      const ran = await worker.drain();
      process.stdout.write(`kiln worker: ran ${ran} tasks\n`);
      return 0;
    }
    worker.start();
    process.stdout.write(`Kiln worker ${worker.id} is running\n`);
    await untilStopped(logger);
    await worker.stop();
    return 0;
  } finally {
    await glue.close();
    await db.destroy();
  }
}
