import { loadConfig, type FrozenConfig } from '../../src/config/index.js';
import { DEFAULT_LOGIN_LIMITS, PasswordHasher, type CoreDeps } from '../../src/core/index.js';
import type { GluePort } from '../../src/core/ports.js';
import type { Db } from '../../src/db/index.js';
import { silentLogger } from '../../src/shared/logger.js';

/** A glue every call of which fails saying `who` reached it: for use cases that must never call it. */
export function noGlue(who: string): GluePort {
  const refuse = () => Promise.reject(new Error(`${who} reached the glue`));
  return { call: refuse, wait: refuse, artifact: refuse, close: async () => undefined };
}

/** The core's dependencies over a database alone: default config unless given, no glue, a silent log. */
export function dbOnlyDeps(db: Db, o: { who?: string; config?: FrozenConfig; now?: () => number } = {}): CoreDeps {
  return {
    config: o.config ?? loadConfig({}, {}),
    db,
    glue: noGlue(o.who ?? 'a use case'),
    logger: silentLogger,
    hasher: new PasswordHasher(1),
    limits: DEFAULT_LOGIN_LIMITS,
    ...(o.now ? { now: o.now } : {}),
  };
}
