/**
 * Limits for the requests that may carry a build context (multipart form, JSON API), checked from Content-Length
 * before any body is read or buffered.
 */
import type { Request, Response } from 'express';
import { KilnError } from '../shared/errors.js';

/** Uploads above this size count as "big" (they carry a build context of some size). */
const BIG_UPLOAD_BYTES = 1024 * 1024;

/** How many big uploads one app processes at once; more get 429 + Retry-After. Shared by pages and API. */
export interface BigUploadGate { running: number; max: number }
export const newBigUploadGate = (max = 4): BigUploadGate => ({ running: 0, max });

/**
 * Refuses a body larger than `limit` by its Content-Length, before parsing, and bounds how many big ones run at
 * once. A refused body is drained first (up to a bound) so the client reads the answer, not a reset connection.
 * Multipart must declare its length (browsers do); a JSON body without one is left to the JSON parser's own limit.
 */
export function bodyCap(limit: number, gate: BigUploadGate, opts: { requireLength: boolean }) {
  return (req: Request, res: Response, next: (err?: unknown) => void): void => {
    const raw = req.get('content-length');
    const len = raw !== undefined && /^[0-9]{1,15}$/.test(raw) ? Number(raw) : NaN;
    if (Number.isNaN(len)) {
      return opts.requireLength ? next(new KilnError('bad_request', 'Uploads need a Content-Length.', { detail: { status: 411 } })) : next();
    }
    let err: KilnError | undefined;
    if (len > limit) err = new KilnError('too_large', `The upload is larger than ${Math.floor(limit / (1024 * 1024))} MiB.`);
    else if (len > BIG_UPLOAD_BYTES) {
      // Each big upload is held in memory a few times over (body, entries, re-pack): bound how many run at once.
      if (gate.running >= gate.max) err = new KilnError('rate_limited', 'Too many large uploads at once; try again in a moment.', { detail: { retryAfterSeconds: 5 } });
      else {
        gate.running++;
        res.once('close', () => { gate.running--; });
      }
    }
    if (!err) return next();
    if (len > limit * 4) {
      res.set('Connection', 'close');
      return next(err);
    }
    let sent = false;
    const once = (): void => { if (!sent) { sent = true; next(err); } };
    req.on('end', once);
    req.on('error', once);
    req.on('close', once);
    req.resume();
  };
}
