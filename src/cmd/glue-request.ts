/**
 * One glue request in this process (`kiln glue`), the OpenSSH front door's in-process path: what runs when no resident
 * glue takes the request (bin/kiln-glue-forward falls back here), or when none is configured. Installed as a forced
 * command (`command="/path/to/kiln glue",restrict ssh-ed25519 ...` in authorized_keys): the request comes from
 * SSH_ORIGINAL_COMMAND when set, else from argv joined by single spaces (for local use and tests). It is parsed
 * before anything else is built, and a rejected request reaches no backend and starts nothing.
 *
 * Reply: JSON on stdout (raw bytes for build.artifact), exit 0. Failure: {"error":{"code","message"}} on stderr,
 * exit status protocol.EXIT_CODES[code]. The audit log goes to <dataDir>/glue/audit.log, never to stdout/stderr,
 * which belong to the protocol.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pino } from 'pino';
import { loadConfig, type FrozenConfig } from '../config/index.js';
// Not ../glue/index.js: that pulls in the ssh2 server, which this one-request process never needs.
import { createBackend } from '../glue/backend.js';
import { createGlue, errorDocument, exitCodeFor, readCapped } from '../glue/dispatch.js';
import { FALLBACK_VAR } from '../glue/resident/place.js';
import { HELD_VERBS, parseCommand, type Request } from '../protocol/index.js';
import { KilnError, toKilnError } from '../shared/errors.js';
import { createLogger, silentLogger, type Logger } from '../shared/logger.js';
import type { Backend } from '../glue/backends/types.js';

export async function runRequest(argv: string[]): Promise<number> {
  const command = process.env.SSH_ORIGINAL_COMMAND ?? argv.join(' ');
  let cfg: FrozenConfig;
  try {
    cfg = loadConfig();
  } catch (e) {
    return fail(toKilnError(e));
  }
  // The forwarder says why the request did not go to the resident glue: that request's audit line carries it.
  const fallback = process.env[FALLBACK_VAR];
  const logger = fallback ? auditLogger(cfg).child({ forwardFallback: fallback.slice(0, 200) }) : auditLogger(cfg);
  let backend: Backend | undefined;
  const gone = new AbortController();
  const callerGone = () => gone.abort();
  let held = false;
  try {
    // Parse first: a request the glue refuses is audited and answered without building or starting a backend.
    let req: Request | undefined;
    try {
      req = parseCommand(command);
    } catch {
      // Refused (and audited) by the glue below, with no backend behind it.
    }
    held = req !== undefined && HELD_VERBS.has(req.verb);
    if (held) {
      // All this process hears of a caller that went away is the end of its input (sshd closes our stdin when the
      // channel closes; the caller keeps it open while it waits): the held request ends then, not at its deadline.
      for (const ev of ['end', 'close', 'error']) process.stdin.once(ev, callerGone);
      process.stdin.resume();
      // Its answer still goes out (a caller that only ended its input reads it, as from the built-in door), but one
      // that closed the channel took our output with it: that write fails, and is nobody's error.
      process.stdout.on('error', () => undefined);
    }
    const real = req ? await createBackend(cfg, logger, { runner: false }) : undefined;
    if (real) {
      await real.start();
      backend = real;
    }
    const glue = createGlue({ backend: real ?? refusingBackend(cfg), logger });
    const res = await glue.handle(command, (max) => readCapped(process.stdin, max), {
      door: 'openssh',
      signal: gone.signal,
    });
    if (res.kind === 'json') {
      await write(process.stdout, JSON.stringify(res.reply) + '\n');
    } else {
      await pipeline(res.stream, process.stdout, { end: false });
    }
    return 0;
  } catch (e) {
    const err = toKilnError(e);
    // The answer of a held request whose caller went away could not be written: nobody is there to tell.
    return gone.signal.aborted ? exitCodeFor(err) : fail(err);
  } finally {
    if (held) {
      for (const ev of ['end', 'close', 'error']) process.stdin.off(ev, callerGone);
      // Its input, still open when it was answered, would keep this process alive.
      process.stdin.destroy();
    }
    await backend?.close().catch(() => undefined);
    logger.flush?.();
  }
}

function fail(err: KilnError): number {
  process.stderr.write(errorDocument(err));
  return exitCodeFor(err);
}

function write(stream: NodeJS.WritableStream, text: string): Promise<void> {
  return new Promise((resolve, reject) => stream.write(text, (e) => (e ? reject(e) : resolve())));
}

export function auditLogger(cfg: FrozenConfig): Logger {
  try {
    const dir = path.join(cfg.dataDir, 'glue');
    mkdirSync(dir, { recursive: true });
    // The project's logger (its redaction list included), written synchronously: the process exits right after.
    return createLogger({
      level: cfg.log.level,
      name: 'glue',
      destination: pino.destination({ dest: path.join(dir, 'audit.log'), sync: true, append: true }),
    }).child({ pid: process.pid });
  } catch {
    return silentLogger;
  }
}

/**
 * Stands in for the backend when the request was refused at parsing: the dispatcher only reads `kind` for the
 * audit line and calls nothing on it.
 */
const refusingBackend = (cfg: FrozenConfig): Backend => ({ kind: cfg.glue.backend }) as Backend;
