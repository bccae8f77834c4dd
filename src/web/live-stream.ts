/**
 * Long-lived streams of a build's live events (core.builds.follow): the build page's Server-Sent Events and the
 * REST API's (SSE, or the log as plain text). One user holds at most `web.liveStreamsPerUser` of them per process,
 * across both doors; a stream ends with the build, when its client leaves, or when the credential it was opened
 * with ends (a session logged out or a user disabled; a token revoked or expired), checked every 40 polls.
 */
import type { Request, Response } from 'express';
import type { LiveEvent } from '../core/index.js';
import { KilnError } from '../shared/errors.js';
import { toHttpError } from './errors.js';

/** Streams open per user id in this process. */
export type StreamCounts = Map<number, number>;

export interface LiveStreamOptions {
  counts: StreamCounts;
  limit: number;
  userId: number;
  /** How often the credential is checked again. */
  recheckMs: number;
  /** Whether the credential still holds. */
  still: () => Promise<boolean>;
  /** Opens the events (authorisation happens here: a refusal is an ordinary error answer, not a stream). */
  open: (signal: AbortSignal) => Promise<AsyncIterable<LiveEvent>>;
  contentType: string;
  /** What is written first, and every 15 s to keep proxies from closing an idle stream (none for plain text). */
  preamble?: string;
  heartbeat?: string;
  /** One event as the stream writes it ('' to skip it). */
  format: (ev: LiveEvent) => string;
  /** An error once the stream is open (the status is sent by then); undefined: the stream just ends. */
  problem?: (message: string) => string;
}

export async function liveStream(_req: Request, res: Response, o: LiveStreamOptions): Promise<void> {
  // Each stream is a connection held for as long as the build runs: a few per user (tabs, jobs), not unbounded.
  if ((o.counts.get(o.userId) ?? 0) >= o.limit) {
    throw new KilnError('rate_limited', 'Too many live build streams open; close some and try again.', {
      detail: { retryAfterSeconds: 10 },
    });
  }
  const ac = new AbortController();
  // Counted from here until the connection closes (whether or not the stream ever started).
  o.counts.set(o.userId, (o.counts.get(o.userId) ?? 0) + 1);
  res.on('close', () => {
    ac.abort();
    const n = (o.counts.get(o.userId) ?? 1) - 1;
    if (n > 0) o.counts.set(o.userId, n);
    else o.counts.delete(o.userId);
  });
  const events = await o.open(ac.signal);
  res.status(200).set({ 'Content-Type': o.contentType, 'Cache-Control': 'no-store', 'X-Accel-Buffering': 'no' });
  res.flushHeaders();
  const send = async (text: string): Promise<void> => {
    if (text && !res.write(text))
      await new Promise<void>((resolve) => {
        res.once('drain', resolve);
        res.once('close', resolve);
      });
  };
  const beat = o.heartbeat ? setInterval(() => res.write(o.heartbeat), 15_000) : undefined;
  const recheck = setInterval(() => {
    o.still().then(
      (ok) => {
        if (!ok) ac.abort();
      },
      () => undefined,
    );
  }, o.recheckMs);
  try {
    if (o.preamble) await send(o.preamble);
    for await (const ev of events) {
      if (ac.signal.aborted) break;
      await send(o.format(ev));
    }
  } catch (e) {
    // The stream is open: the error goes in it (an SSE client reconnects with Last-Event-ID and carries on).
    if (!ac.signal.aborted && o.problem) await send(o.problem(toHttpError(e).message)).catch(() => undefined);
  } finally {
    clearInterval(beat);
    clearInterval(recheck);
    res.end();
  }
}
