import type { Readable } from 'node:stream';
import {
  EXIT_CODES,
  MAX_STDIN_BYTES,
  PROTOCOL_VERSION,
  REPLIES,
  STDIN_VERBS,
  jobSpecSchema,
  parseCommand,
  type JobSpec,
  type Request,
} from '../protocol/index.js';
import { KilnError, toKilnError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { Backend } from './backends/types.js';

/** A dispatched request's answer: one JSON document, or (build.artifact only) a byte stream. */
export type DispatchResult = { kind: 'json'; reply: unknown } | { kind: 'stream'; stream: Readable };

/** Reads a request body, at most `max` bytes; rejects with too_large beyond that. Called only for STDIN_VERBS. */
export type StdinReader = (max: number) => Promise<Buffer>;

/**
 * Runs one parsed request against a backend. Pure glue: no parsing of the command line (the caller did it), no
 * I/O of its own except through the backend. job.put's body is validated here; every reply is checked against
 * the protocol's reply schema so a backend bug cannot put an off-contract answer on the wire.
 */
export async function dispatch(
  req: Request,
  stdin: Buffer | undefined,
  backend: Backend,
  signal?: AbortSignal,
): Promise<DispatchResult> {
  const json = (reply: unknown): DispatchResult => {
    const schema = REPLIES[req.verb as keyof typeof REPLIES];
    const checked = schema.safeParse(reply);
    if (!checked.success) {
      throw new KilnError('internal', 'The backend gave an answer outside the protocol', {
        detail: checked.error.issues,
      });
    }
    return { kind: 'json', reply: checked.data };
  };
  switch (req.verb) {
    case 'ping':
      return json({ protocol: PROTOCOL_VERSION, backend: backend.kind, ...(await backend.describe()) });
    case 'job.put': {
      const [job] = req.args;
      const spec = parseJobSpec(stdin);
      const { created } = await backend.putJob(job, spec);
      return json({ job, created });
    }
    case 'job.enable':
      await backend.setEnabled(req.args[0], true);
      return json({ job: req.args[0], enabled: true });
    case 'job.disable':
      await backend.setEnabled(req.args[0], false);
      return json({ job: req.args[0], enabled: false });
    case 'job.delete': {
      const { deleted } = await backend.deleteJob(req.args[0]);
      return json({ job: req.args[0], deleted });
    }
    case 'job.build': {
      const [job, key, sha256] = req.args;
      const { build, created } = await backend.build(job, key, sha256);
      return json({ job, build, created });
    }
    case 'build.status':
      return json(await backend.status(req.args[0], req.args[1]));
    case 'build.wait': {
      const [job, build, known, seconds] = req.args;
      return json(await backend.wait(job, build, known, seconds, signal));
    }
    case 'build.log':
      return json(await backend.log(req.args[0], req.args[1], req.args[2]));
    case 'build.artifact': {
      const [job, build, name, offset] = req.args;
      return { kind: 'stream', stream: await backend.artifact(job, build, name, offset ?? 0) };
    }
    case 'build.cancel': {
      const [job, build] = req.args;
      const { state } = await backend.cancel(job, build);
      return json({ job, build, state });
    }
    case 'build.withdraw': {
      const [job, key] = req.args;
      return json({ job, ...(await backend.withdraw(job, key)) });
    }
    case 'build.keep': {
      const [job, build, on] = req.args;
      return json({ job, build, ...(await backend.keep(job, build, on === 'on')) });
    }
    case 'build.discard': {
      const [job, build] = req.args;
      return json({ job, build, ...(await backend.discard(job, build)) });
    }
    case 'job.get':
      return json(await backend.getJob(req.args[0]));
    case 'job.builds':
      return json({ job: req.args[0], builds: await backend.jobBuilds(req.args[0]) });
    case 'jobs.list':
      return json({ jobs: await backend.listJobs() });
    case 'queue.list':
      return json({ items: await backend.listQueue() });
  }
}

/** Validates job.put's body: present, at most MAX_STDIN_BYTES, UTF-8, JSON, and a JobSpec. Never echoes content. */
export function parseJobSpec(stdin: Buffer | undefined): JobSpec {
  if (!stdin || stdin.length === 0) throw new KilnError('invalid_input', 'job.put needs a job spec (JSON) on stdin');
  if (stdin.length > MAX_STDIN_BYTES) throw new KilnError('too_large', `job spec larger than ${MAX_STDIN_BYTES} bytes`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(stdin);
  } catch {
    throw new KilnError('invalid_input', 'job spec is not valid UTF-8');
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new KilnError('invalid_input', 'job spec is not valid JSON');
  }
  const parsed = jobSpecSchema.safeParse(raw);
  if (!parsed.success) {
    // Paths and messages only: the values are user text and stay out of errors and logs.
    const why = parsed.error.issues
      .map((i) => `${i.path.join('.') || '(spec)'}: ${i.message}`)
      .slice(0, 5)
      .join('; ');
    throw new KilnError('invalid_input', `invalid job spec: ${why}`);
  }
  return parsed.data;
}

export interface Glue {
  /**
   * Parses, validates and dispatches one request, writing exactly one audit log line. Rejects with a KilnError;
   * a request that fails to parse never reaches the backend and its body is never read. `signal`: the caller went
   * away (its channel closed); a held request (build.wait) ends early.
   */
  handle(
    command: string | Buffer,
    readStdin: StdinReader,
    meta?: { door?: string; signal?: AbortSignal },
  ): Promise<DispatchResult>;
}

/** The one entry both SSH front doors (OpenSSH forced command, built-in ssh2 server) call. */
export function createGlue(deps: { backend: Backend; logger: Logger }): Glue {
  const { backend, logger } = deps;
  return {
    async handle(command, readStdin, meta = {}) {
      const started = process.hrtime.bigint();
      let req: Request | undefined;
      const audit = (outcome: string, extra: Record<string, unknown> = {}) => {
        const durationMs = Number(process.hrtime.bigint() - started) / 1e6;
        const fields = req
          ? { verb: req.verb, args: req.args }
          : // A rejected line is logged JSON-escaped and already capped at MAX_COMMAND_BYTES by the parser's rule.
            { rejected: (Buffer.isBuffer(command) ? command.toString('utf8') : command).slice(0, 300) };
        logger.info(
          {
            audit: true,
            door: meta.door,
            ...fields,
            outcome,
            durationMs: Math.round(durationMs * 100) / 100,
            backend: backend.kind,
            ...extra,
          },
          'glue request',
        );
      };
      try {
        req = parseCommand(command);
        const body = STDIN_VERBS.has(req.verb) ? await readStdin(MAX_STDIN_BYTES) : undefined;
        const result = await dispatch(req, body, backend, meta.signal);
        // A held request that ended because its caller went away, not because it had its answer (nobody reads it).
        audit('ok', {
          ...(body ? { stdinBytes: body.length } : {}),
          ...(meta.signal?.aborted ? { callerGone: true } : {}),
        });
        return result;
      } catch (e) {
        const err = toKilnError(e);
        audit(err.code, err.code === 'internal' ? { err: e } : {});
        throw err;
      }
    },
  };
}

/** Longest wait for a request body (job.put) to end, in both SSH doors and the resident glue. */
export const BODY_TIMEOUT_MS = 120_000;

/** Exit status for an error, as protocol.EXIT_CODES defines it. */
export function exitCodeFor(err: KilnError): number {
  return EXIT_CODES[err.code] ?? EXIT_CODES.default;
}

/** The stderr document of a failed request. `message` is user-safe by KilnError's contract. */
export function errorDocument(err: KilnError): string {
  return JSON.stringify({ error: { code: err.code, message: err.message } }) + '\n';
}

export { readCapped } from '../shared/read-capped.js';
