/**
 * The web site, the users' SSH door (when `sshDoor.enabled`) and the task worker over one database and glue: what
 * `kiln serve` and `kiln web` both run (their composition roots differ only in where the glue is). The worker starts
 * once the site and the door are up, so a process that fails to start has claimed no task; then the first admin is
 * made when there is none.
 */
import type { FrozenConfig } from '../config/index.js';
import {
  DEFAULT_LOGIN_LIMITS,
  PasswordHasher,
  createCore,
  createUsers,
  createWorker,
  type GluePort,
} from '../core/index.js';
import type { Db } from '../db/index.js';
import type { Logger } from '../shared/logger.js';
import { doorHostKey, startSshDoorFromConfig, type SshDoor } from '../ssh-door/index.js';
import { startWeb } from '../web/index.js';

export interface Site {
  url: string;
  /** The first admin's one-time password, when this start made the first admin (shown once, by the caller). */
  firstAdmin: { username: string; password: string } | null;
  /** The users' SSH door, when switched on: its port and host key fingerprint (for users' known_hosts). */
  sshDoor: Pick<SshDoor, 'port' | 'hostFingerprint'> | undefined;
  close(): Promise<void>;
}

/** Throws when the site cannot start (nothing of it is left running; the caller closes the glue and database). */
export async function startSite(config: FrozenConfig, db: Db, glue: GluePort, logger: Logger): Promise<Site> {
  // The door's host key is checked (and made on first start) before anything starts: a bad one stops the start here.
  const doorKey = config.sshDoor.enabled ? await doorHostKey(config) : undefined;
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
  let door: SshDoor | undefined;
  if (doorKey) {
    // Its own core over the same parts: a front door like the web, calling the same use cases.
    const core = createCore({
      config,
      db,
      glue,
      logger: logger.child({ part: 'ssh-door' }),
      hasher: new PasswordHasher(1),
      limits: DEFAULT_LOGIN_LIMITS,
      ...(worker ? { onEnqueue: () => worker.wake() } : {}),
    });
    door = await startSshDoorFromConfig(
      config,
      { core, logger: logger.child({ part: 'ssh-door' }) },
      { hostKey: doorKey },
    ).catch(async (e: unknown) => {
      await web.close();
      throw e;
    });
  }
  worker?.start();
  const firstAdmin = await createUsers({ db, hasher: new PasswordHasher(1), logger }).ensureFirstAdmin();
  return {
    url: web.url,
    firstAdmin,
    sshDoor: door && { port: door.port, hostFingerprint: door.hostFingerprint },
    close: async () => {
      await door?.close();
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
