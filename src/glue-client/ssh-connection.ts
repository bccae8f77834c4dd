/**
 * One lazily opened, reused ssh2 connection to the glue (reopened after it drops), with the host key pinned: the
 * transport under the SSH GlueClient (ssh.ts), which keeps three of them (calls, artifact streams, held waits).
 */
import { timingSafeEqual } from 'node:crypto';
import ssh2, { type ClientChannel } from 'ssh2';
import { KilnError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { fingerprint } from '../shared/ssh-keys.js';

const { Client } = ssh2;

/** Raised when the connection (not the glue) failed before an answer: the client retries once, then backend_unavailable. */
export class ConnectionLost extends Error {}

export interface ConnectionOptions {
  host: string;
  port: number;
  username: string;
  privateKey: Buffer | string;
  /** The pinned SHA-256 fingerprint of the glue's host key (base64, no padding), as bytes. */
  pinned: Buffer;
  timeoutMs: number;
  logger: Logger;
  /** True once the client was closed: no new connection is opened. */
  closed: () => boolean;
}

/**
 * One lazily opened, reused ssh2 connection (reopened after it drops). `openExec` opens one exec channel on it; a
 * connection that broke meanwhile is reopened once. `attach` runs synchronously in ssh2's callback: a fast reply
 * (data, exit status, close) can arrive in the same packet batch as the exec's success, and listeners added a
 * tick later would miss it.
 */
export function sshConnection(o: ConnectionOptions) {
  const { logger, timeoutMs } = o;
  let conn: Promise<ssh2.Client> | undefined;

  function connect(): Promise<ssh2.Client> {
    if (o.closed()) return Promise.reject(new KilnError('backend_unavailable', 'The glue client is closed'));
    if (conn) return conn;
    const p = new Promise<ssh2.Client>((resolve, reject) => {
      const c = new Client();
      let ready = false;
      let hostRefused = false;
      const drop = () => {
        if (conn === p) conn = undefined;
      };
      c.on('ready', () => {
        ready = true;
        resolve(c);
      });
      // Each call is a few small packets each way: without TCP_NODELAY, Nagle + delayed ACKs add ~40 ms per step.
      c.on('connect', () => c.setNoDelay(true));
      c.on('error', (e: Error & { level?: string }) => {
        drop();
        if (hostRefused)
          logger.error(
            { host: o.host, port: o.port },
            'ALERT: the glue presented a host key that does not match the pinned fingerprint; connection refused',
          );
        else logger.warn({ err: e.message, level: e.level }, 'glue ssh connection failed');
        if (!ready)
          reject(
            new KilnError('backend_unavailable', 'The build service is unreachable; try again later', { cause: e }),
          );
      });
      c.on('close', () => {
        drop();
        if (!ready) reject(new KilnError('backend_unavailable', 'The build service is unreachable; try again later'));
      });
      c.connect({
        host: o.host,
        port: o.port,
        username: o.username,
        privateKey: o.privateKey,
        readyTimeout: timeoutMs,
        keepaliveInterval: 15_000,
        keepaliveCountMax: 3,
        // Without a hostVerifier ssh2 accepts any host key.
        hostVerifier: (key: Buffer) => {
          const got = Buffer.from(fingerprint(key));
          const ok = got.length === o.pinned.length && timingSafeEqual(got, o.pinned);
          if (!ok) hostRefused = true;
          return ok;
        },
      });
    });
    conn = p;
    p.catch(() => undefined);
    return p;
  }

  async function openExec(command: string, attach: (ch: ClientChannel) => void): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const c = await connect();
      try {
        await new Promise<void>((resolve, reject) => {
          c.exec(command, (err, ch) => {
            if (err) return reject(new ConnectionLost(err.message));
            attach(ch);
            resolve();
          });
        });
        return;
      } catch (e) {
        if (conn) {
          const cur = await conn.catch(() => undefined);
          if (cur === c) {
            c.end();
            conn = undefined;
          }
        }
        if (attempt >= 1)
          throw new KilnError('backend_unavailable', 'The build service is unreachable; try again later', { cause: e });
      }
    }
  }

  async function close(): Promise<void> {
    const c = await conn?.catch(() => undefined);
    conn = undefined;
    c?.end();
  }

  return { openExec, close };
}
