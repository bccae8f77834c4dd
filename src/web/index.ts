/**
 * The web's public entry: `startWeb` for composition roots (`kiln web`, `kiln serve`), plus the pieces they call
 * around it (first admin, reconciliation).
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import http from 'node:http';
import { getOrCreateSetting, type Db } from '../db/index.js';
import type { FrozenConfig } from '../config/index.js';
import type { Logger } from '../shared/logger.js';
import type { GlueClient } from './glue-client/types.js';
import { createApp, type AppOptions } from './app.js';
import { PasswordHasher } from './services/passwords.js';
import { signingKey } from './services/signing.js';
import { ensureFirstAdmin as ensureFirstAdminWith, createUserWithGeneratedPassword } from './services/users.js';

export { createApp } from './app.js';
export type { AppOptions, KilnApp } from './app.js';
export { reconcileOnce, startReconciler } from './services/reconcile.js';
export { PasswordHasher } from './services/passwords.js';

/** The session-signing secret: configured, or generated once and kept in the database (shared by all instances). */
export async function sessionSecret(db: Db, config: FrozenConfig): Promise<string> {
  return config.web.sessionSecret ?? getOrCreateSetting(db, 'session_secret', () => randomBytes(32).toString('hex'));
}

/**
 * With no users yet, creates `admin` with a one-time password and returns it (print it once); otherwise null.
 */
export async function ensureFirstAdmin(db: Db): Promise<{ username: string; password: string } | null> {
  return ensureFirstAdminWith(db, new PasswordHasher(1));
}

/** Adds a user with a generated password (the CLI prints it once). */
export async function addUser(db: Db, username: string, role: 'user' | 'admin'): Promise<{ username: string; password: string }> {
  return createUserWithGeneratedPassword(db, new PasswordHasher(1), username, role);
}

export interface StartWebOptions {
  config: FrozenConfig;
  db: Db;
  glue: GlueClient;
  logger: Logger;
  /** Overrides config.web.host/port (tests pass port 0). */
  host?: string;
  port?: number;
  limits?: AppOptions['limits'];
  clock?: AppOptions['clock'];
  hasher?: AppOptions['hasher'];
}

/**
 * Starts the HTTP server (migrations must already have run). Resolves once listening. `close()` stops accepting,
 * ends idle keep-alive connections and resolves when the server is closed; it does not close `db` or `glue`
 * (the caller built them and owns them).
 */
export async function startWeb(opts: StartWebOptions): Promise<{ url: string; close(): Promise<void> }> {
  // On first start this creates the signing key; a configured key that cannot be read stops the start here.
  await signingKey(opts.config);
  const app = createApp({ ...opts, sessionSecret: await sessionSecret(opts.db, opts.config) });
  const server = http.createServer(app);
  server.headersTimeout = 30_000;
  server.requestTimeout = 120_000;
  const host = opts.host ?? opts.config.web.host;
  const port = opts.port ?? opts.config.web.port;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => { server.off('error', reject); resolve(); });
  });
  const addr = server.address() as AddressInfo;
  app.setListenPort(addr.port);
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  opts.logger.info({ url }, 'web listening');
  return {
    url,
    close: () => new Promise<void>((resolve) => {
      app.closeApp();
      server.close(() => resolve());
      server.closeIdleConnections();
      setTimeout(() => server.closeAllConnections(), 2000).unref();
    }),
  };
}
