/**
 * The core's GluePort over SSH (what `kiln serve`, `kiln web` and `kiln worker` build): codec.ts's protocol on three
 * pinned ssh2 connections (ssh-connection.ts), one for JSON calls, one for artifact streams and one for held waits
 * (build.wait), each with its own slots.
 */
import { PassThrough, type Readable } from 'node:stream';
import type { ClientChannel } from 'ssh2';
import type { FrozenConfig } from '../config/index.js';
import type { GluePort } from '../core/ports.js';
import { MAX_HELD_WAITS } from '../protocol/index.js';
import { KilnError } from '../shared/errors.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import { defaultKeyPaths, ensureKeyPair } from '../shared/ssh-keys.js';
import { MAX_REPLY_BYTES, createGlueClient, glueError } from './codec.js';
import { ConnectionLost, sshConnection, type ConnectionOptions } from './ssh-connection.js';
import { slots } from './slots.js';

export interface SshGlueClientOptions {
  host: string;
  port: number;
  username: string;
  /** The web's private key (OpenSSH format, ed25519). */
  privateKey: Buffer | string;
  /**
   * Pinned SHA-256 fingerprint of the glue's host key, base64 without padding (an optional `SHA256:` prefix is
   * ignored). Any other host key aborts the connection before authentication: nothing is ever auto-accepted.
   */
  hostFingerprint: string;
  /** Per-call limit (connect + request + reply); for artifacts, the longest silence between two chunks. */
  timeoutMs?: number;
  /** Concurrent JSON calls on the calls connection (the server caps sessions per connection too). */
  maxConcurrent?: number;
  /**
   * Concurrent artifact streams, on a connection of their own: a download lasts as long as its reader, so streams
   * never take a call's slot (eight slow downloads must not stall every status and log call). A stream that waits
   * longer than `timeoutMs` for a slot is refused with backend_unavailable (503).
   */
  maxStreams?: number;
  logger?: Logger;
}

/**
 * The core's GluePort over SSH: three lazily opened, reused ssh2 connections (reopened after they drop), one for
 * JSON calls, one for artifact streams and one for held waits (build.wait), each with its own slots (OpenSSH's
 * MaxSessions, 10 by default, also counts per connection); one exec per call, the command line built by
 * protocol.formatCommand. Glue errors come back as the KilnError the glue reported (stderr JSON, else the exit
 * status); transport failures become KilnError('backend_unavailable'). Calls are idempotent on the glue side, so one
 * that lost its connection before an answer is retried once (a held wait is not: its holder asks again).
 */
export function createSshGlueClient(o: SshGlueClientOptions): GluePort {
  const logger = o.logger ?? silentLogger;
  const timeoutMs = o.timeoutMs ?? 30_000;
  if (typeof o.hostFingerprint !== 'string' || !/^(SHA256:)?[A-Za-z0-9+/]{43}=?$/.test(o.hostFingerprint)) {
    // Never trust on first use: without a well-formed pin there is no client at all.
    throw new KilnError(
      'invalid_input',
      'The glue host key fingerprint (KILN_SSH_HOST_FINGERPRINT, SHA256:...) is missing or malformed',
    );
  }
  const pinned = Buffer.from(o.hostFingerprint.replace(/^SHA256:/, '').replace(/=+$/, ''));
  let closed = false;

  const connOpts: ConnectionOptions = {
    host: o.host,
    port: o.port,
    username: o.username,
    privateKey: o.privateKey,
    pinned,
    timeoutMs,
    logger,
    closed: () => closed,
  };
  const calls = { conn: sshConnection(connOpts), slots: slots(o.maxConcurrent ?? 8) };
  const streams = { conn: sshConnection(connOpts), slots: slots(o.maxStreams ?? 8) };
  // Held requests (build.wait) last up to a minute each: a connection of their own, so they never take a call's slot.
  const holds = { conn: sshConnection(connOpts), slots: slots(MAX_HELD_WAITS) };

  /**
   * Runs one request to completion on `conn`: stdout, stderr and exit status. `stdin`: its body. `held`: a request
   * the glue holds (protocol.HELD_VERBS): no body, and the input kept open while it is held, since its end is how the
   * glue hears the caller go. `limitMs`: how long it may take; `signal` closes the channel (rejecting with its reason).
   */
  function execOnce(
    conn: ReturnType<typeof sshConnection>,
    command: string,
    o: { stdin?: string | Buffer; held?: boolean; limitMs?: number; signal?: AbortSignal } = {},
  ): Promise<{ code: number | null; stdout: Buffer; stderr: Buffer }> {
    const { stdin, signal, limitMs = timeoutMs } = o;
    return new Promise((resolve, reject) => {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let outLen = 0;
      let errLen = 0;
      let code: number | null = null;
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const attach = (ch: ClientChannel) => {
        const abandon = (why: unknown) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          ch.close();
          reject(why);
        };
        const onAbort = () => abandon(signal!.reason);
        timer = setTimeout(
          () => abandon(new KilnError('timeout', 'The build service did not answer in time')),
          limitMs,
        );
        if (signal?.aborted) return onAbort();
        signal?.addEventListener('abort', onAbort, { once: true });
        ch.on('data', (c: Buffer) => {
          outLen += c.length;
          if (outLen <= MAX_REPLY_BYTES) out.push(c);
        });
        ch.stderr.on('data', (c: Buffer) => {
          errLen += c.length;
          if (errLen <= 64 * 1024) err.push(c);
        });
        ch.on('exit', (c: number | null) => {
          code = c;
        });
        ch.on('close', () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          if (settled) return;
          settled = true;
          if (code === null) return reject(new ConnectionLost('channel closed without an exit status'));
          if (outLen > MAX_REPLY_BYTES)
            return reject(new KilnError('internal', 'The build service sent an oversized reply'));
          resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err) });
        });
        if (!o.held) ch.end(stdin ?? '');
      };
      conn.openExec(command, attach).catch(reject);
    });
  }

  async function withRetry<T>(fn: () => Promise<T>): Promise<T> {
    await calls.slots.acquire();
    try {
      try {
        return await fn();
      } catch (e) {
        if (!(e instanceof ConnectionLost)) throw e;
        logger.warn({ err: e.message }, 'glue connection lost during a call; retrying once');
        try {
          return await fn();
        } catch (e2) {
          if (e2 instanceof ConnectionLost)
            throw new KilnError('backend_unavailable', 'The build service is unreachable; try again later', {
              cause: e2,
            });
          throw e2;
        }
      }
    } finally {
      calls.slots.release();
    }
  }

  return createGlueClient({
    exec: async (command, stdin) => {
      const r = await withRetry(() => execOnce(calls.conn, command, stdin === undefined ? {} : { stdin }));
      return { ...r, code: r.code ?? 1 };
    },

    async hold(command: string, holdMs: number, signal?: AbortSignal) {
      if (!(await holds.slots.acquire(timeoutMs)))
        throw new KilnError('backend_unavailable', 'Too many held requests at once; try again in a moment');
      try {
        const r = await execOnce(holds.conn, command, {
          held: true,
          limitMs: timeoutMs + holdMs,
          ...(signal ? { signal } : {}),
        });
        return { ...r, code: r.code ?? 1 };
      } catch (e) {
        if (e instanceof ConnectionLost)
          throw new KilnError('backend_unavailable', 'The build service is unreachable; try again later', { cause: e });
        throw e;
      } finally {
        holds.slots.release();
      }
    },

    async stream(command: string): Promise<Readable> {
      if (!(await streams.slots.acquire(timeoutMs)))
        throw new KilnError('backend_unavailable', 'Too many downloads at once; try again in a moment');
      const release = () => streams.slots.release();
      return new Promise<Readable>((resolve, reject) => {
        const out = new PassThrough();
        const err: Buffer[] = [];
        let code: number | null = null;
        let started = false;
        let done = false;
        let idle: NodeJS.Timeout | undefined;
        let chan: ClientChannel | undefined;
        const fail = (e: Error) => {
          if (done) return;
          done = true;
          clearTimeout(idle);
          release();
          chan?.close();
          if (started) out.destroy(e);
          else reject(e);
        };
        const arm = () => {
          clearTimeout(idle);
          idle = setTimeout(
            () => fail(new KilnError('timeout', 'The build service stopped sending the artifact')),
            timeoutMs,
          );
        };
        const attach = (ch: ClientChannel) => {
          chan = ch;
          arm();
          ch.on('data', (c: Buffer) => {
            arm();
            if (!started) {
              started = true;
              resolve(out);
            }
            if (!out.write(c)) {
              ch.pause();
              out.once('drain', () => ch.resume());
            }
          });
          ch.stderr.on('data', (c: Buffer) => {
            if (err.length < 64) err.push(c);
          });
          ch.on('exit', (c: number | null) => {
            code = c;
          });
          ch.on('close', () => {
            if (done) return;
            if (code === 0) {
              done = true;
              clearTimeout(idle);
              release();
              out.end();
              if (!started) resolve(out);
              return;
            }
            fail(
              code === null
                ? new KilnError('backend_unavailable', 'The connection to the build service was lost')
                : glueError(code, Buffer.concat(err)),
            );
          });
          // The reader went away: stop the transfer.
          out.on('close', () => {
            if (!done && !out.writableFinished) fail(new KilnError('internal', 'artifact reader closed'));
          });
          ch.end();
        };
        streams.conn.openExec(command, attach).catch(fail);
      });
    },

    async close(): Promise<void> {
      closed = true;
      await Promise.all([calls.conn.close(), streams.conn.close(), holds.conn.close()]);
    },
  });
}

/**
 * The core's GluePort over SSH, from config: the client key at ssh.clientKeyFile (default <dataDir>/ssh/web_ed25519, created
 * on first start; the built-in glue server authorizes that same key by default) and the pinned host fingerprint
 * from `opts.hostFingerprint` (the embedded setup passes startGlueServer's) or ssh.hostFingerprint. Without a pin
 * it refuses to start: a host key is never trusted on first use.
 */
export async function sshGlueClientFromConfig(
  cfg: FrozenConfig,
  opts: { hostFingerprint?: string; port?: number; logger?: Logger } = {},
): Promise<GluePort> {
  const hostFingerprint = opts.hostFingerprint ?? cfg.ssh.hostFingerprint;
  if (!hostFingerprint) {
    throw new KilnError(
      'invalid_input',
      'Set KILN_SSH_HOST_FINGERPRINT to the glue host key fingerprint (the glue server prints it): it is never trusted on first use',
    );
  }
  const key = await ensureKeyPair(cfg.ssh.clientKeyFile ?? defaultKeyPaths(cfg.dataDir).client, 'kiln-web');
  return createSshGlueClient({
    host: cfg.ssh.host,
    port: opts.port ?? cfg.ssh.port,
    username: cfg.ssh.user,
    privateKey: key.privateKey,
    hostFingerprint,
    timeoutMs: cfg.ssh.timeoutMs,
    ...(opts.logger ? { logger: opts.logger } : {}),
  });
}
