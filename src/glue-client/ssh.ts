import { timingSafeEqual } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import ssh2, { type ClientChannel } from 'ssh2';
import { EXIT_CODES, REPLIES, errorReplySchema, formatCommand, type ArtifactName, type Reply } from '../protocol/index.js';
import { ERROR_CODES, KilnError, type ErrorCode } from '../shared/errors.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import { defaultKeyPaths, ensureKeyPair, fingerprint } from '../shared/ssh-keys.js';
import type { FrozenConfig } from '../config/index.js';
import type { GluePort } from '../core/ports.js';

const { Client } = ssh2;

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

/** Most reply bytes a JSON call accepts (build.log's 256 KiB chunk, JSON-escaped, fits with room). */
const MAX_REPLY_BYTES = 8 * 1024 * 1024;

/** Raised inside the client when the connection (not the glue) failed: retried once, then backend_unavailable. */
class ConnectionLost extends Error {}

/**
 * A counting semaphore, first come first served. `acquire(waitMs)` gives up after `waitMs` (resolving false);
 * without it, it waits as long as it takes.
 */
function slots(max: number) {
  let active = 0;
  const waiting: Array<() => void> = [];
  return {
    async acquire(waitMs?: number): Promise<boolean> {
      if (active < max) {
        active++;
        return true;
      }
      return new Promise<boolean>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        const grant = () => {
          clearTimeout(timer);
          active++;
          resolve(true);
        };
        waiting.push(grant);
        if (waitMs !== undefined) {
          timer = setTimeout(() => {
            const i = waiting.indexOf(grant);
            if (i >= 0) waiting.splice(i, 1);
            resolve(false);
          }, waitMs);
        }
      });
    },
    release(): void {
      active--;
      if (active < max) waiting.shift()?.();
    },
  };
}

/**
 * The web's GlueClient over SSH: two lazily opened, reused ssh2 connections (reopened after they drop), one for JSON
 * calls and one for artifact streams, each with its own slots (OpenSSH's MaxSessions, 10 by default, also counts
 * per connection); one exec per call, the command line built by protocol.formatCommand. Glue errors come back as the KilnError the glue reported
 * (stderr JSON, else the exit status); transport failures become KilnError('backend_unavailable'). Calls are
 * idempotent on the glue side, so one that lost its connection before an answer is retried once.
 */
export function createSshGlueClient(o: SshGlueClientOptions): GluePort {
  const logger = o.logger ?? silentLogger;
  const timeoutMs = o.timeoutMs ?? 30_000;
  if (typeof o.hostFingerprint !== 'string' || !/^(SHA256:)?[A-Za-z0-9+/]{43}=?$/.test(o.hostFingerprint)) {
    // Never trust on first use: without a well-formed pin there is no client at all.
    throw new KilnError('invalid_input', 'The glue host key fingerprint (KILN_SSH_HOST_FINGERPRINT, SHA256:...) is missing or malformed');
  }
  const pinned = Buffer.from(o.hostFingerprint.replace(/^SHA256:/, '').replace(/=+$/, ''));
  let closed = false;

  /**
   * One lazily opened, reused ssh2 connection (reopened after it drops). `openExec` opens one exec channel on it; a
   * connection that broke meanwhile is reopened once. `attach` runs synchronously in ssh2's callback: a fast reply
   * (data, exit status, close) can arrive in the same packet batch as the exec's success, and listeners added a
   * tick later would miss it.
   */
  function sshConnection() {
    let conn: Promise<ssh2.Client> | undefined;

    function connect(): Promise<ssh2.Client> {
      if (closed) return Promise.reject(new KilnError('backend_unavailable', 'The glue client is closed'));
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
          if (hostRefused) logger.error({ host: o.host, port: o.port }, 'ALERT: the glue presented a host key that does not match the pinned fingerprint; connection refused');
          else logger.warn({ err: e.message, level: e.level }, 'glue ssh connection failed');
          if (!ready) reject(new KilnError('backend_unavailable', 'The build service is unreachable; try again later', { cause: e }));
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
            const ok = got.length === pinned.length && timingSafeEqual(got, pinned);
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
          if (attempt >= 1) throw new KilnError('backend_unavailable', 'The build service is unreachable; try again later', { cause: e });
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

  const calls = { conn: sshConnection(), slots: slots(o.maxConcurrent ?? 8) };
  const streams = { conn: sshConnection(), slots: slots(o.maxStreams ?? 8) };

  /** Runs one request to completion: stdout, stderr and exit status. */
  function execOnce(command: string, stdin: string | Buffer | undefined): Promise<{ code: number | null; stdout: Buffer; stderr: Buffer }> {
    return new Promise((resolve, reject) => {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let outLen = 0;
      let errLen = 0;
      let code: number | null = null;
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const attach = (ch: ClientChannel) => {
        timer = setTimeout(() => {
          settled = true;
          ch.close();
          reject(new KilnError('timeout', 'The build service did not answer in time'));
        }, timeoutMs);
        ch.on('data', (c: Buffer) => {
          outLen += c.length;
          if (outLen <= MAX_REPLY_BYTES) out.push(c);
        });
        ch.stderr.on('data', (c: Buffer) => {
          errLen += c.length;
          if (errLen <= 64 * 1024) err.push(c);
        });
        ch.on('exit', (c: number | null) => { code = c; });
        ch.on('close', () => {
          clearTimeout(timer);
          if (settled) return;
          settled = true;
          if (code === null) return reject(new ConnectionLost('channel closed without an exit status'));
          if (outLen > MAX_REPLY_BYTES) return reject(new KilnError('internal', 'The build service sent an oversized reply'));
          resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err) });
        });
        ch.end(stdin ?? '');
      };
      calls.conn.openExec(command, attach).catch(reject);
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
          if (e2 instanceof ConnectionLost) throw new KilnError('backend_unavailable', 'The build service is unreachable; try again later', { cause: e2 });
          throw e2;
        }
      }
    } finally {
      calls.slots.release();
    }
  }

  return {
    async call<V extends keyof typeof REPLIES>(verb: V, args: ReadonlyArray<string | number>, stdin?: string | Buffer): Promise<Reply<V>> {
      const command = formatCommand(verb, ...args);
      const r = await withRetry(() => execOnce(command, stdin));
      if (r.code !== 0) throw glueError(r.code, r.stderr);
      let raw: unknown;
      try {
        raw = JSON.parse(r.stdout.toString('utf8'));
      } catch (e) {
        throw new KilnError('internal', 'The build service sent an unreadable reply', { cause: e });
      }
      const parsed = REPLIES[verb].safeParse(raw);
      if (!parsed.success) throw new KilnError('internal', 'The build service sent a reply outside the protocol', { detail: parsed.error.issues });
      return parsed.data as Reply<V>;
    },

    async artifact(job: number, build: number, name: ArtifactName, offset = 0): Promise<Readable> {
      const command = offset > 0 ? formatCommand('build.artifact', job, build, name, offset) : formatCommand('build.artifact', job, build, name);
      if (!(await streams.slots.acquire(timeoutMs))) throw new KilnError('backend_unavailable', 'Too many downloads at once; try again in a moment');
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
          idle = setTimeout(() => fail(new KilnError('timeout', 'The build service stopped sending the artifact')), timeoutMs);
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
          ch.stderr.on('data', (c: Buffer) => { if (err.length < 64) err.push(c); });
          ch.on('exit', (c: number | null) => { code = c; });
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
            fail(code === null ? new KilnError('backend_unavailable', 'The connection to the build service was lost') : glueError(code, Buffer.concat(err)));
          });
          // The reader went away: stop the transfer.
          out.on('close', () => { if (!done && !out.writableFinished) fail(new KilnError('internal', 'artifact reader closed')); });
          ch.end();
        };
        streams.conn.openExec(command, attach).catch(fail);
      });
    },

    async close(): Promise<void> {
      closed = true;
      await Promise.all([calls.conn.close(), streams.conn.close()]);
    },
  };
}

/**
 * The web's GlueClient from config: the client key at ssh.clientKeyFile (default <dataDir>/ssh/web_ed25519, created
 * on first start; the built-in glue server authorizes that same key by default) and the pinned host fingerprint
 * from `opts.hostFingerprint` (the embedded setup passes startGlueServer's) or ssh.hostFingerprint. Without a pin
 * it refuses to start: a host key is never trusted on first use.
 */
export async function sshGlueClientFromConfig(cfg: FrozenConfig, opts: { hostFingerprint?: string; port?: number; logger?: Logger } = {}): Promise<GluePort> {
  const hostFingerprint = opts.hostFingerprint ?? cfg.ssh.hostFingerprint;
  if (!hostFingerprint) {
    throw new KilnError('invalid_input', 'Set KILN_SSH_HOST_FINGERPRINT to the glue host key fingerprint (the glue server prints it): it is never trusted on first use');
  }
  const key = await ensureKeyPair(cfg.ssh.clientKeyFile ?? defaultKeyPaths(cfg.dataDir).client, 'kiln-web');
  return createSshGlueClient({
    host: cfg.ssh.host, port: opts.port ?? cfg.ssh.port, username: cfg.ssh.user, privateKey: key.privateKey, hostFingerprint,
    timeoutMs: cfg.ssh.timeoutMs, ...(opts.logger ? { logger: opts.logger } : {}),
  });
}

const CODE_BY_EXIT = new Map<number, ErrorCode>(
  Object.entries(EXIT_CODES).filter(([k]) => k !== 'default' && k !== 'bad_request').map(([k, v]) => [v as number, k as ErrorCode]),
);

/** The glue's error as a KilnError: its stderr JSON when readable, else what the exit status means. */
function glueError(code: number | null, stderr: Buffer): KilnError {
  try {
    const doc = errorReplySchema.parse(JSON.parse(stderr.toString('utf8')));
    const c = Object.hasOwn(ERROR_CODES, doc.error.code) ? (doc.error.code as ErrorCode) : 'internal';
    return new KilnError(c, doc.error.message);
  } catch {
    const c = (code !== null && CODE_BY_EXIT.get(code)) || 'internal';
    return new KilnError(c, c === 'internal' ? 'The build service failed' : `The build service answered ${c}`, { detail: stderr.toString('utf8').slice(0, 2000) });
  }
}
