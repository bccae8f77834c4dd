/**
 * Limits for request bodies: a cap by Content-Length before any body is read or buffered, a bound on how many big
 * ones are processed at once, and a cap counted as the bytes stream in for bodies whose size is not declared.
 * Every parser of the app that may hold more than BIG_UPLOAD_BYTES goes through here.
 */
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { KilnError } from '../shared/errors.js';

/** Uploads above this size count as "big" (they carry a build context of some size). */
export const BIG_UPLOAD_BYTES = 1024 * 1024;

/** How many big uploads one app processes at once; more get 429 + Retry-After. Shared by pages and API. */
export interface BigUploadGate {
  running: number;
  max: number;
}
export const newBigUploadGate = (max = 4): BigUploadGate => ({ running: 0, max });

const contentLength = (req: Request): number | undefined => {
  const raw = req.get('content-length');
  return raw !== undefined && /^[0-9]{1,15}$/.test(raw) ? Number(raw) : undefined;
};

/**
 * How many bytes a parser will hold for this body, when the client said so: its Content-Length, unless a content
 * coding makes the decoded body (what parsers buffer) larger than what was declared. Node's HTTP parser ends a body
 * at its Content-Length, so a declared length cannot be exceeded.
 */
export function declaredLength(req: Request): number | undefined {
  const coding = (req.get('content-encoding') ?? 'identity').trim().toLowerCase();
  return coding === 'identity' ? contentLength(req) : undefined;
}

/**
 * Refuses a body larger than `limit` by its Content-Length, before parsing, and bounds how many big ones run at
 * once. A refused body is drained first (up to a bound) so the client reads the answer, not a reset connection.
 * Multipart must declare its length (browsers do). A body of undeclared size (chunked, or content-coded) passes
 * here and must be read by a parser that counts it as it streams, with at most BIG_UPLOAD_BYTES (see jsonBody).
 */
export function bodyCap(limit: number, gate: BigUploadGate, opts: { requireLength: boolean }) {
  return (req: Request, res: Response, next: (err?: unknown) => void): void => {
    const len = contentLength(req);
    if (len === undefined) {
      return opts.requireLength
        ? next(new KilnError('bad_request', 'Uploads need a Content-Length.', { detail: { status: 411 } }))
        : next();
    }
    let err: KilnError | undefined;
    if (len > limit)
      err = new KilnError('too_large', `The upload is larger than ${Math.floor(limit / (1024 * 1024))} MiB.`);
    else if (declaredLength(req) === undefined) {
      if (opts.requireLength)
        err = new KilnError('bad_request', 'Uploads may not be content-encoded.', { detail: { status: 415 } });
    } else if (len > BIG_UPLOAD_BYTES) {
      // Each big upload is held in memory a few times over (body, entries, re-pack): bound how many run at once.
      if (gate.running >= gate.max)
        err = new KilnError('rate_limited', 'Too many large uploads at once; try again in a moment.', {
          detail: { retryAfterSeconds: 5 },
        });
      else {
        gate.running++;
        res.once('close', () => {
          gate.running--;
        });
      }
    }
    if (!err) return next();
    if (len > limit * 4) {
      res.set('Connection', 'close');
      return next(err);
    }
    let sent = false;
    const once = (): void => {
      if (!sent) {
        sent = true;
        next(err);
      }
    };
    req.on('end', once);
    req.on('error', once);
    req.on('close', once);
    req.resume();
  };
}

const isTooLarge = (e: unknown): boolean => (e as { type?: string } | undefined)?.type === 'entity.too.large';

/**
 * A JSON body parser of at most `limit` bytes where every big body goes through `gate`. A declared length is capped
 * and gated by bodyCap before a byte is read; a body of undeclared size (chunked, or compressed) is counted as it
 * streams and refused past BIG_UPLOAD_BYTES, so it can never be a big body that skipped the gate.
 */
export function jsonBody(limit: number, gate: BigUploadGate): RequestHandler {
  const cap = bodyCap(limit, gate, { requireLength: false });
  const declared = express.json({ limit, inflate: false });
  const streamedLimit = Math.min(limit, BIG_UPLOAD_BYTES);
  const streamed = express.json({ limit: streamedLimit });
  return (req: Request, res: Response, next: NextFunction): void => {
    // Other bodies (forms, multipart) are for their own parsers and caps.
    if (!req.is('application/json')) return next();
    cap(req, res, (err?: unknown) => {
      if (err) return next(err);
      if (declaredLength(req) !== undefined) return declared(req, res, next);
      streamed(req, res, (e?: unknown) =>
        next(
          isTooLarge(e)
            ? new KilnError(
                'too_large',
                `A request body without a Content-Length (or compressed) may hold at most ${Math.floor(streamedLimit / 1024)} KiB; send larger ones uncompressed with their length.`,
              )
            : e,
        ),
      );
    });
  };
}
