import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pino } from 'pino';
import type { GluePort } from '../../src/core/ports.js';
import { LocalBackend } from '../../src/glue/backends/local/index.js';
import type { Backend } from '../../src/glue/backends/types.js';
import { createGlue, errorDocument, exitCodeFor, readCapped } from '../../src/glue/dispatch.js';
import { createGlueClient, glueError, type Exchange, type GlueTransport } from '../../src/glue-client/codec.js';
import { KilnError, toKilnError } from '../../src/shared/errors.js';
import type { Logger } from '../../src/shared/logger.js';
import { openGate, writeFakeSdk } from './glue.js';

/**
 * The real glue (src/glue: parser, dispatcher, the local backend running the fake SDK of test/helpers/glue.ts) in
 * this process, reached through the real client codec (src/glue-client/codec.ts) over an in-process transport that
 * does what the SSH front doors do with a request: the command line and stdin go to `glue.handle`, the reply comes
 * back as stdout JSON and exit 0, a failure as the error document on stderr and the protocol's exit status. Only SSH
 * itself is left out (tests of it: test/glue/ssh.test.ts, test/web/real-glue.test.ts).
 *
 * Faults a test may inject, at the transport (what a network or a misbehaving glue does; the glue's logic stays
 * the real one): `down` (every request fails as an unreachable host does), `refuse(verb, error)` (the next request of
 * that verb is answered with that error), `cutStream(name, bytes)` (the next download of that artifact breaks off
 * after that many bytes).
 */
export interface InProcessGlue<B extends Backend = LocalBackend> {
  client: GluePort;
  /** The local backend, or the one the test gave (`backend`, e.g. a Jenkins backend against the double). */
  backend: B;
  /** The local backend's data directory (<dir>/glue/jobs/kiln-job-N/builds/M/...). */
  dataDir: string;
  /** While true, every request fails with backend_unavailable, as when the glue's host is unreachable. */
  down: boolean;
  /** Every command line that reached the glue, in order. */
  commands: string[];
  /** Verbs of the commands from index `from` on. */
  verbsSince(from: number): string[];
  refuse(verb: string, error: KilnError): void;
  cutStream(artifact: string, afterBytes: number): void;
  /** The directory a backend build's artifacts are archived in. */
  archive(job: number, build: number): string;
  /** Opens the gate a `# fake: gate NAME` build waits at. */
  openGate(name: string): void;
  close(): Promise<void>;
}

export async function startInProcessGlue<B extends Backend = LocalBackend>(o: {
  dataDir: string;
  sdkCommand?: string[];
  concurrency?: number;
  logger?: Logger;
  now?: () => Date;
  backend?: B;
}): Promise<InProcessGlue<B>> {
  mkdirSync(o.dataDir, { recursive: true });
  const logger = o.logger ?? pino({ level: 'silent' });
  // Without a backend of the test's, B is LocalBackend (its default).
  const backend =
    o.backend ??
    (new LocalBackend({
      dataDir: o.dataDir,
      sdkCommand: o.sdkCommand ?? writeFakeSdk(o.dataDir),
      concurrency: o.concurrency ?? 2,
      pollMs: 50,
      buildTimeoutMs: 600_000,
      logger,
      ...(o.now ? { now: o.now } : {}),
    }) as unknown as B);
  await backend.start();
  const glue = createGlue({ backend, logger });
  const refusals = new Map<string, KilnError>();
  const cuts = new Map<string, number>();
  const empty = Buffer.alloc(0);

  const handle = async (command: string, stdin?: string | Buffer, signal?: AbortSignal) => {
    self.commands.push(command);
    if (self.down) throw new KilnError('backend_unavailable', 'The build service is unreachable; try again later');
    const verb = command.split(' ')[0]!;
    const refused = refusals.get(verb);
    if (refused) {
      refusals.delete(verb);
      throw refused;
    }
    const body = Readable.from(stdin === undefined ? [] : [Buffer.from(stdin)]);
    return glue.handle(command, (max) => readCapped(body, max), { door: 'in-process', ...(signal ? { signal } : {}) });
  };
  // What a front door sends back for a failed request: the error document and the exit status.
  const wire = (e: unknown): Exchange => {
    const err = toKilnError(e);
    return { code: exitCodeFor(err), stdout: empty, stderr: Buffer.from(errorDocument(err)) };
  };

  const exchange = async (command: string, stdin?: string | Buffer, signal?: AbortSignal): Promise<Exchange> => {
    let res;
    try {
      res = await handle(command, stdin, signal);
    } catch (e) {
      if (self.down) throw e;
      return wire(e);
    }
    if (res.kind !== 'json') {
      res.stream.destroy();
      return wire(new KilnError('internal', 'a streamed reply to a JSON request'));
    }
    return { code: 0, stdout: Buffer.from(JSON.stringify(res.reply) + '\n'), stderr: empty };
  };

  const transport: GlueTransport = {
    exec: (command, stdin) => exchange(command, stdin),
    // As the SSH transport does: the caller that abandons a held request gets the signal's reason, and the glue
    // hears the channel close (its wait ends).
    async hold(command, _holdMs, signal) {
      const r = await exchange(command, undefined, signal);
      if (signal?.aborted) throw signal.reason;
      return r;
    },
    async stream(command) {
      let res;
      try {
        res = await handle(command);
      } catch (e) {
        if (self.down) throw e;
        const w = wire(e);
        throw glueError(w.code, w.stderr);
      }
      if (res.kind !== 'stream') throw new KilnError('internal', 'a JSON reply to a stream request');
      const out = new PassThrough();
      const name = command.split(' ')[3]!;
      const cut = cuts.get(name);
      if (cut !== undefined) cuts.delete(name);
      let sent = 0;
      res.stream.on('data', (c: Buffer) => {
        if (cut !== undefined && sent + c.length >= cut) {
          out.write(c.subarray(0, cut - sent));
          res.stream.destroy();
          out.destroy(new KilnError('backend_unavailable', 'The connection to the build service was lost'));
          return;
        }
        sent += c.length;
        if (!out.write(c)) {
          res.stream.pause();
          out.once('drain', () => res.stream.resume());
        }
      });
      // A failure after the first byte reaches the reader as the SSH door reports it: the error document, exit 1.
      res.stream.on('error', (e) => out.destroy(glueError(1, Buffer.from(errorDocument(toKilnError(e))))));
      res.stream.on('end', () => out.end());
      out.on('close', () => res.stream.destroy());
      return out;
    },
    close: async () => undefined,
  };

  const self: InProcessGlue<B> = {
    client: createGlueClient(transport),
    backend,
    dataDir: o.dataDir,
    down: false,
    commands: [],
    verbsSince: (from) => self.commands.slice(from).map((c) => c.split(' ')[0]!),
    refuse: (verb, error) => {
      refusals.set(verb, error);
    },
    cutStream: (artifact, afterBytes) => {
      cuts.set(artifact, afterBytes);
    },
    archive: (job, build) =>
      path.join(o.dataDir, 'glue', 'jobs', `kiln-job-${job}`, 'builds', String(build), 'archive'),
    openGate: (name) => openGate(o.dataDir, name),
    close: () => backend.close(),
  };
  return self;
}
