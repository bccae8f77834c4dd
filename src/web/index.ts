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
import type { GluePort } from '../core/index.js';
import { signingKey } from '../core/index.js';
import { createApp, type AppOptions } from './app.js';

export { createApp } from './app.js';
export type { AppOptions, KilnApp } from './app.js';

/** The session-signing secret: configured, or generated once and kept in the database (shared by all instances). */
export async function sessionSecret(db: Db, config: FrozenConfig): Promise<string> {
  return config.web.sessionSecret ?? getOrCreateSetting(db, 'session_secret', () => randomBytes(32).toString('hex'));
}

export interface StartWebOptions {
  config: FrozenConfig;
  db: Db;
  glue: GluePort;
  logger: Logger;
  /** Overrides config.web.host/port (tests pass port 0). */
  host?: string;
  port?: number;
  limits?: AppOptions['limits'];
  clock?: AppOptions['clock'];
  hasher?: AppOptions['hasher'];
  /** Wakes this process's task worker when a request enqueued a task. */
  onEnqueue?: AppOptions['onEnqueue'];
  lookup?: AppOptions['lookup'];
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
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  app.setListenPort(addr.port);
  const url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  opts.logger.info({ url }, 'web listening');
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => void app.closeApp().then(resolve));
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), 2000).unref();
      }),
  };
}
