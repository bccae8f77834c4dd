import type { Db } from '../db/index.js';
import type { FrozenConfig } from '../config/index.js';
import type { Logger } from '../shared/logger.js';
import type { GluePort } from './ports.js';
import type { PasswordHasher } from './passwords.js';

/** Login throttling knobs (services/login-throttle.ts); the defaults keep ASVS's <= 100 failures per hour per account. */
export interface LoginLimits {
  /** Failures one client (device cookie, else address) may make on one account before each attempt must wait. */
  clientFreeFailures: number;
  /** The first wait after those; it doubles with each further failure, up to clientMaxDelayMs. */
  clientBaseDelayMs: number;
  clientMaxDelayMs: number;
  /** A client's failures on an account are forgotten this long after its last one. */
  clientForgetMs: number;
  /** Failures per account within `accountWindowMs` from clients without a device cookie for it; then 429. */
  accountFailures: number;
  accountWindowMs: number;
  /** Login + registration attempts per client IP within `ipWindowMs`. */
  ipAttempts: number;
  ipWindowMs: number;
}
export const DEFAULT_LOGIN_LIMITS: LoginLimits = {
  clientFreeFailures: 5,
  clientBaseDelayMs: 2_000,
  clientMaxDelayMs: 15 * 60_000,
  clientForgetMs: 60 * 60_000,
  accountFailures: 100,
  accountWindowMs: 60 * 60_000,
  ipAttempts: 100,
  ipWindowMs: 15 * 60_000,
};

/**
 * What every use case and task handler gets: built once by a composition root (src/cmd, or the web's app factory
 * for what only the web has), never global.
 */
export interface CoreDeps {
  config: FrozenConfig;
  db: Db;
  /**
   * Reads outside transactions that may run beside the writer (pages, the auth cache): `createReader(db)`, SQLite's
   * read-only connections. Defaults to `db`. Nothing bound to it writes.
   */
  reader?: Db;
  glue: GluePort;
  logger: Logger;
  hasher: PasswordHasher;
  limits: LoginLimits;
  /** The clock of time-based rules (login throttle, task schedules and leases); tests inject one. Date.now by default. */
  now?: () => number;
  /** Signs device cookies (the session secret); without it every login counts as a new browser. */
  deviceSecret?: string;
  /** Told when a use case enqueued a task, so a worker in this process starts on it without waiting for its poll. */
  onEnqueue?: () => void;
  /** How the git fetcher resolves host names (every address); dns.lookup by default, tests give their own. */
  lookup?: (host: string) => Promise<string[]>;
}

export const clockOf = (d: Pick<CoreDeps, 'now'>): number => (d.now ?? Date.now)();
