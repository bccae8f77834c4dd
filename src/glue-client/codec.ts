/**
 * The glue protocol as the core's GluePort speaks it, over any transport: the command line built by
 * protocol.formatCommand, the reply parsed as JSON and checked against the protocol's reply schema, a failure
 * mapped back to the KilnError the glue reported (its stderr document, else what its exit status means). The SSH
 * transport (ssh.ts) carries it to a real glue; tests carry it to the real glue in-process.
 */
import type { Readable } from 'node:stream';
import type { GluePort } from '../core/ports.js';
import {
  EXIT_CODES,
  REPLIES,
  errorReplySchema,
  formatCommand,
  type ArtifactName,
  type BuildState,
  type Reply,
} from '../protocol/index.js';
import { ERROR_CODES, KilnError, isKilnError, type ErrorCode } from '../shared/errors.js';
import { glueCallSeconds } from '../shared/metrics.js';

/** What the glue answered to one request: its exit status, stdout and stderr, as a forced command would give them. */
export interface Exchange {
  code: number;
  stdout: Buffer;
  stderr: Buffer;
}

/**
 * How requests reach a glue. `exec` runs one request to its end; `hold` runs one the glue may hold for up to
 * `holdMs` before it answers (build.wait), beside the calls (never in a call's place), its time limit stretched by
 * that much, and closes it when `signal` aborts (rejecting with the signal's reason); `stream` runs build.artifact
 * and resolves with its bytes once they flow (a request that fails before that rejects with `glueError`, one that
 * breaks off later destroys the stream with it). Transport failures (unreachable, no answer in time) reject with
 * KilnError('backend_unavailable' | 'timeout'): the request may be retried.
 */
export interface GlueTransport {
  exec(command: string, stdin?: string | Buffer): Promise<Exchange>;
  hold(command: string, holdMs: number, signal?: AbortSignal): Promise<Exchange>;
  stream(command: string): Promise<Readable>;
  close(): Promise<void>;
}

/** Most reply bytes a JSON call accepts (build.log's 256 KiB chunk, JSON-escaped, fits with room). */
export const MAX_REPLY_BYTES = 8 * 1024 * 1024;

export function createGlueClient(t: GlueTransport): GluePort {
  return {
    async call<V extends keyof typeof REPLIES>(
      verb: V,
      args: ReadonlyArray<string | number>,
      stdin?: string | Buffer,
    ): Promise<Reply<V>> {
      const started = performance.now();
      try {
        const reply = replyOf(verb, await t.exec(formatCommand(verb, ...args), stdin));
        glueCallSeconds.observe({ verb, outcome: 'ok' }, (performance.now() - started) / 1000);
        return reply;
      } catch (e) {
        glueCallSeconds.observe(
          { verb, outcome: isKilnError(e) ? e.code : 'error' },
          (performance.now() - started) / 1000,
        );
        throw e;
      }
    },
    async wait(job: number, build: number, known: BuildState, seconds: number, signal?: AbortSignal) {
      const r = await t.hold(formatCommand('build.wait', job, build, known, seconds), seconds * 1000, signal);
      return replyOf('build.wait', r);
    },
    artifact(job: number, build: number, name: ArtifactName, offset = 0): Promise<Readable> {
      return t.stream(
        offset > 0
          ? formatCommand('build.artifact', job, build, name, offset)
          : formatCommand('build.artifact', job, build, name),
      );
    },
    close: () => t.close(),
  };
}

/** The reply to one request: the glue's error as a KilnError, else its JSON checked against the verb's schema. */
function replyOf<V extends keyof typeof REPLIES>(verb: V, r: Exchange): Reply<V> {
  if (r.code !== 0) throw glueError(r.code, r.stderr);
  let raw: unknown;
  try {
    raw = JSON.parse(r.stdout.toString('utf8'));
  } catch (e) {
    throw new KilnError('internal', 'The build service sent an unreadable reply', { cause: e });
  }
  const parsed = REPLIES[verb].safeParse(raw);
  if (!parsed.success)
    throw new KilnError('internal', 'The build service sent a reply outside the protocol', {
      detail: parsed.error.issues,
    });
  return parsed.data as Reply<V>;
}

const CODE_BY_EXIT = new Map<number, ErrorCode>(
  Object.entries(EXIT_CODES)
    .filter(([k]) => k !== 'default' && k !== 'bad_request')
    .map(([k, v]) => [v as number, k as ErrorCode]),
);

/** The glue's error as a KilnError: its stderr JSON when readable, else what the exit status means. */
export function glueError(code: number | null, stderr: Buffer): KilnError {
  try {
    const doc = errorReplySchema.parse(JSON.parse(stderr.toString('utf8')));
    const c = Object.hasOwn(ERROR_CODES, doc.error.code) ? (doc.error.code as ErrorCode) : 'internal';
    return new KilnError(c, doc.error.message);
  } catch {
    const c = (code !== null && CODE_BY_EXIT.get(code)) || 'internal';
    return new KilnError(c, c === 'internal' ? 'The build service failed' : `The build service answered ${c}`, {
      detail: stderr.toString('utf8').slice(0, 2000),
    });
  }
}
