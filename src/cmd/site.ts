/**
 * The web site and its task worker over one database and glue: what `kiln serve` and `kiln web` both run (their
 * composition roots differ only in where the glue is). The worker starts once the site is up, so a process that
 * fails to start has claimed no task; then the first admin is made when there is none.
 */
import type { FrozenConfig } from '../config/index.js';
import { PasswordHasher, createUsers, createWorker, type GluePort } from '../core/index.js';
import type { Db } from '../db/index.js';
import type { Logger } from '../shared/logger.js';
import { startWeb } from '../web/index.js';

export interface Site {
  url: string;
  /** The first admin's one-time password, when this start made the first admin (shown once, by the caller). */
  firstAdmin: { username: string; password: string } | null;
  close(): Promise<void>;
}

/** Throws when the site cannot start (nothing of it is left running; the caller closes the glue and database). */
export async function startSite(config: FrozenConfig, db: Db, glue: GluePort, logger: Logger): Promise<Site> {
  // The worker carries builds through their lives (dispatch, refresh, verification); requests only enqueue and wake it.
  const worker = config.worker.enabled
    ? createWorker({ config, db, glue, logger: logger.child({ part: 'worker' }) })
    : undefined;
  const web = await startWeb({
    config,
    db,
    glue,
    logger: logger.child({ part: 'web' }),
    ...(worker ? { onEnqueue: () => worker.wake() } : {}),
  });
  worker?.start();
  const firstAdmin = await createUsers({ db, hasher: new PasswordHasher(1), logger }).ensureFirstAdmin();
  return {
    url: web.url,
    firstAdmin,
    close: async () => {
      await web.close();
      await worker?.stop();
    },
  };
}

/** Resolves on the first SIGINT or SIGTERM. */
export function untilStopped(logger: Logger): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      logger.info({ sig }, 'shutting down');
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
}
