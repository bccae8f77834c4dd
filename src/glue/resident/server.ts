import { chmodSync, lstatSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import { toKilnError, type KilnError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { BODY_TIMEOUT_MS, errorDocument, exitCodeFor, readCapped, type Glue } from '../dispatch.js';
import { pidFileOf, takeResidentLock } from './place.js';
import { HELD_VERBS, STDIN_VERBS } from '../../protocol/index.js';

/**
 * The wire between bin/kiln-glue-forward and the resident, over the Unix socket.
 *
 * Forwarder → resident: `KGF1`, u32 length + the command line's bytes (SSH_ORIGINAL_COMMAND, or the argv joined),
 * u32 length + the settings text (place.ts residentSettings); then the request body, raw, until it half-closes.
 * Resident → forwarder: frames of one type byte + u32 length + payload. First `A` (taken: from here the request is
 * the resident's) or `S` (not taken, payload says why: the forwarder runs it in-process, the body still unread);
 * after `A`, `O` stdout bytes and `E` stderr bytes in order, and last `X` with the exit status (one byte).
 * Lengths are big-endian.
 */
export const HELLO = Buffer.from('KGF1');
export const FRAME = { taken: 0x41, notTaken: 0x53, stdout: 0x4f, stderr: 0x45, exit: 0x58 } as const;
/** A command line (the parser refuses more than 256 bytes; a longer one still gets the same refusal) + settings. */
const MAX_HEADER_BYTES = 1024 * 1024;
/** A connection that has not sent its whole header by then is dropped (the forwarder sends it at once). */
const HEADER_TIMEOUT_MS = 10_000;
/** How long a stopping resident lets requests in flight finish. */
const STOP_GRACE_MS = 60_000;

export function frame(type: number, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const head = Buffer.alloc(5);
  head[0] = type;
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

export interface ResidentOptions {
  glue: Glue;
  logger: Logger;
  socketPath: string;
  /** This process's settings text; a request carrying other settings is not taken. */
  settings: Buffer;
  /** Started by a forwarder: stop after this long without a request, and stop when settings differ. */
  idleMs?: number;
  /** The lock from takeResidentLock, when the caller already holds it (kiln glue serve takes it first). */
  lock?: net.Server;
}

export interface Resident {
  /** Stops taking requests, lets those in flight finish (up to a minute), and releases socket, pid file and lock. */
  stop(reason: string): Promise<void>;
  /** Settles once the resident has stopped, whoever stopped it. */
  stopped: Promise<void>;
}

/**
 * The resident glue: the same dispatcher as both SSH doors, kept alive behind a Unix socket so the OpenSSH forced
 * command does not start node for every request. It listens only while it holds the directory's lock, with the
 * socket 0600 in a 0700 directory (place.ts ensureSocketDir, checked by the caller), and stops when its socket is
 * removed or replaced, when it is signalled, and (on demand) when idle or outdated.
 */
export async function startResident(o: ResidentOptions): Promise<Resident> {
  const { glue, logger, socketPath } = o;
  const dir = socketPath.slice(0, socketPath.lastIndexOf('/')) || '/';
  const held = o.lock ?? (await takeResidentLock(dir));
  if (!held) throw new Error(`another resident glue serves ${socketPath}`);
  const lock = held;
  // The lock is ours, so a socket file left there is a dead resident's. Anything else at the path is not ours to remove.
  try {
    if (!lstatSync(socketPath).isSocket()) throw new Error(`${socketPath} exists and is not a socket`);
    unlinkSync(socketPath);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }

  const conns = new Set<net.Socket>();
  let idleTimer: NodeJS.Timeout | undefined;
  let stopping: Promise<void> | undefined;
  let markStopped!: () => void;
  const stopped = new Promise<void>((r) => (markStopped = r));

  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    conns.add(sock);
    // A forwarder that went away (its caller did) must not take the resident down with an unhandled EPIPE.
    sock.on('error', (e) => logger.debug({ err: e.message }, 'resident glue: connection error'));
    clearTimeout(idleTimer);
    sock.once('close', () => {
      conns.delete(sock);
      armIdle();
    });
    serveConnection(sock).catch((e: unknown) => {
      logger.error({ err: e }, 'resident glue: connection failed');
      sock.destroy();
    });
  });
  const oldUmask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path: socketPath, backlog: 128 }, () => resolve());
    });
  } finally {
    process.umask(oldUmask);
  }
  chmodSync(socketPath, 0o600);
  const ino = lstatSync(socketPath).ino;
  const pidFile = pidFileOf(socketPath);
  writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o600 });

  // Gone or replaced (a test's directory removed, an operator's rm): nobody can reach this resident any more.
  const watch = setInterval(() => {
    if (!ownsSocket()) void stop('its socket was removed or replaced');
  }, 2000);
  armIdle();
  logger.info({ socket: socketPath, idleMs: o.idleMs }, 'resident glue listening');

  function ownsSocket(): boolean {
    try {
      return lstatSync(socketPath).ino === ino;
    } catch {
      return false;
    }
  }

  function armIdle() {
    clearTimeout(idleTimer);
    if (o.idleMs === undefined || conns.size > 0 || stopping) return;
    idleTimer = setTimeout(() => void stop('idle'), o.idleMs);
  }

  async function serveConnection(sock: net.Socket): Promise<void> {
    const header = await readHeader(sock);
    if (!header) return void sock.destroy();
    if (!header.settings.equals(o.settings)) {
      // An edited wrapper, a rotated secret, an upgrade: this process would answer with what it was started with.
      sock.end(frame(FRAME.notTaken, 'the resident glue runs with other settings'));
      logger.warn({ socket: socketPath }, 'resident glue: a request came with other settings; it runs in-process');
      if (o.idleMs !== undefined) void stop('its settings are outdated');
      return;
    }
    sock.write(frame(FRAME.taken));
    const body = new PassThrough();
    if (header.rest.length) body.write(header.rest);
    sock.pipe(body);
    const gone = () => body.destroy(new Error('the forwarder went away'));
    sock.once('close', gone);
    // Decoded as Node decodes SSH_ORIGINAL_COMMAND for the in-process door, so odd bytes get the same refusal.
    const command = header.command.toString('utf8');
    const verb = command.split(' ', 1)[0]!;
    // A held request (build.wait) ends when its caller goes away, as at the other doors: the forwarder half-closes
    // when its stdin ends (sshd closed it, or the caller ended its input) and the connection closes when it dies.
    const callerGone = new AbortController();
    const abortWait = () => callerGone.abort();
    if ((HELD_VERBS as ReadonlySet<string>).has(verb)) {
      body.once('end', abortWait);
      body.once('close', abortWait);
    }
    // A request without a body is drained at once, so its end is heard.
    if (!(STDIN_VERBS as ReadonlySet<string>).has(verb)) body.resume();
    const send = (type: number, payload: Buffer | string) => {
      if (!sock.destroyed) sock.write(frame(type, payload));
    };
    const finish = (code: number) => {
      body.resume(); // a body nobody asked for (any verb but job.put) is drained and ignored, as the doors do
      if (!sock.destroyed) sock.end(frame(FRAME.exit, Buffer.from([code])));
    };
    const fail = (err: KilnError) => {
      send(FRAME.stderr, errorDocument(err));
      finish(exitCodeFor(err));
    };
    try {
      const res = await glue.handle(command, (max) => readCapped(body, max, BODY_TIMEOUT_MS), {
        door: 'openssh',
        signal: callerGone.signal,
      });
      if (res.kind === 'json') {
        send(FRAME.stdout, JSON.stringify(res.reply) + '\n');
        return finish(0);
      }
      const src = res.stream;
      sock.once('close', () => src.destroy());
      await new Promise<void>((resolve) => {
        src.on('data', (c: Buffer) => {
          if (sock.destroyed) return;
          if (!sock.write(frame(FRAME.stdout, c))) {
            src.pause();
            sock.once('drain', () => src.resume());
          }
        });
        src.once('end', () => {
          finish(0);
          resolve();
        });
        src.once('error', (e) => {
          logger.error({ err: e }, 'resident glue: artifact stream failed');
          fail(toKilnError(e));
          resolve();
        });
        src.once('close', () => resolve());
      });
    } catch (e) {
      fail(toKilnError(e));
    } finally {
      sock.off('close', gone);
      body.off('end', abortWait);
      body.off('close', abortWait);
    }
  }

  function stop(reason: string): Promise<void> {
    stopping ??= (async () => {
      clearInterval(watch);
      clearTimeout(idleTimer);
      logger.info({ socket: socketPath, reason, inFlight: conns.size }, 'resident glue stopping');
      const closed = new Promise<void>((r) => server.close(() => r()));
      // The path and the lock go first, so the next forwarder can start a successor while these requests finish.
      if (ownsSocket()) rmSync(socketPath, { force: true });
      try {
        if (readFileSync(pidFile, 'utf8').trim() === String(process.pid)) rmSync(pidFile, { force: true });
      } catch {
        // already gone with its directory
      }
      await new Promise<void>((r) => lock.close(() => r()));
      const grace = setTimeout(() => {
        for (const c of conns) c.destroy();
      }, STOP_GRACE_MS);
      await closed;
      clearTimeout(grace);
      markStopped();
    })();
    return stopping;
  }

  return { stop, stopped };
}

interface Header {
  command: Buffer;
  settings: Buffer;
  /** Body bytes that came with the header. */
  rest: Buffer;
}

/** Reads `KGF1` + command + settings; undefined when the peer sends something else, too much, or too slowly. */
function readHeader(sock: net.Socket): Promise<Header | undefined> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const done = (h: Header | undefined) => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('error', onEnd);
      if (h) sock.pause();
      resolve(h);
    };
    const timer = setTimeout(() => done(undefined), HEADER_TIMEOUT_MS);
    const onEnd = () => done(undefined);
    const onData = (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length >= HELLO.length && !buf.subarray(0, HELLO.length).equals(HELLO)) return done(undefined);
      const fields: Buffer[] = [];
      let at = HELLO.length;
      for (let i = 0; i < 2; i++) {
        if (buf.length < at + 4) break;
        const len = buf.readUInt32BE(at);
        if (len > MAX_HEADER_BYTES) return done(undefined);
        if (buf.length < at + 4 + len) break;
        fields.push(buf.subarray(at + 4, at + 4 + len));
        at += 4 + len;
      }
      if (fields.length === 2) return done({ command: fields[0]!, settings: fields[1]!, rest: buf.subarray(at) });
      if (buf.length > 2 * MAX_HEADER_BYTES + 16) done(undefined);
    };
    sock.on('data', onData);
    sock.once('end', onEnd);
    sock.once('error', onEnd);
  });
}
