import type { Db } from '../../db/index.js';
import type { FrozenConfig } from '../../config/index.js';
import type { Logger } from '../../shared/logger.js';
import type { GlueClient } from '../glue-client/types.js';
import type { PasswordHasher } from './passwords.js';

/** Login throttling knobs; defaults stay under ASVS's 100 failures per hour per account. */
export interface LoginLimits {
  /** Failures per account within `accountWindowMs` before further attempts get 429. */
  accountFailures: number;
  accountWindowMs: number;
  /** Login + registration attempts per client IP within `ipWindowMs`. */
  ipAttempts: number;
  ipWindowMs: number;
}
export const DEFAULT_LOGIN_LIMITS: LoginLimits = {
  accountFailures: 10,
  accountWindowMs: 15 * 60_000,
  ipAttempts: 100,
  ipWindowMs: 15 * 60_000,
};

/** What every service gets: built once by the app factory, never global. */
export interface Services {
  config: FrozenConfig;
  db: Db;
  glue: GlueClient;
  logger: Logger;
  hasher: PasswordHasher;
  limits: LoginLimits;
}

/** The authenticated caller as services see it. */
export interface Actor { id: number; username: string; role: 'user' | 'admin' }
