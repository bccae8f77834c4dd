/**
 * Long-lived streams of a build's live events (core.builds.follow): the build page's Server-Sent Events and the
 * REST API's (SSE, or the log as plain text). One user holds at most `web.liveStreamsPerUser` of them per process,
 * across both doors; a stream ends with the build, when its client leaves, or when the credential it was opened
 * with ends (a session logged out or a user disabled; a token revoked or expired), checked every 40 polls.
 */
import type { Request, Response } from 'express';
import type { LiveEvent } from '../core/index.js';
import type { BuildRow } from '../db/index.js';
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
  /**
   * `sse`: Server-Sent Events, each event's data made by `data` (`log` events carry the byte offset after their
   * lines as their id, for Last-Event-ID), a comment every 15 s, an error as a `problem` event. `text`: the log
   * lines alone, and the stream simply ends on an error.
   */
  as: { sse: { log: (lines: string[]) => unknown; build: (b: BuildRow) => unknown } } | 'text';
}

/** One event as Server-Sent Events. */
function sseOf(ev: LiveEvent, data: { log: (lines: string[]) => unknown; build: (b: BuildRow) => unknown }): string {
  switch (ev.type) {
    case 'log':
      return `id: ${ev.id}\nevent: log\ndata: ${JSON.stringify(data.log(ev.lines))}\n\n`;
    case 'progress':
      return `event: progress\ndata: ${JSON.stringify(ev.progress)}\n\n`;
    case 'build':
      return `event: build\ndata: ${JSON.stringify(data.build(ev.build))}\n\n`;
    case 'end':
      return 'event: end\ndata: {}\n\n';
  }
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
  const sse = o.as === 'text' ? undefined : o.as.sse;
  const format = (ev: LiveEvent): string =>
    sse ? sseOf(ev, sse) : ev.type === 'log' ? ev.lines.map((l) => `${l}\n`).join('') : '';
  const contentType = sse ? 'text/event-stream; charset=utf-8' : 'text/plain; charset=utf-8';
  res.status(200).set({ 'Content-Type': contentType, 'Cache-Control': 'no-store', 'X-Accel-Buffering': 'no' });
  res.flushHeaders();
  const send = async (text: string): Promise<void> => {
    if (text && !res.write(text))
      await new Promise<void>((resolve) => {
        res.once('drain', resolve);
        res.once('close', resolve);
      });
  };
  // Keeps proxies from closing an idle stream (plain text has no comments: none there).
  const beat = sse ? setInterval(() => res.write(': still here\n\n'), 15_000) : undefined;
  const recheck = setInterval(() => {
    o.still().then(
      (ok) => {
        if (!ok) ac.abort();
      },
      () => undefined,
    );
  }, o.recheckMs);
  try {
    if (sse) await send('retry: 2000\n\n');
    for await (const ev of events) {
      if (ac.signal.aborted) break;
      await send(format(ev));
    }
  } catch (e) {
    // The stream is open: the error goes in it (an SSE client reconnects with Last-Event-ID and carries on).
    if (!ac.signal.aborted && sse)
      await send(`event: problem\ndata: ${JSON.stringify({ message: toHttpError(e).message })}\n\n`).catch(
        () => undefined,
      );
  } finally {
    clearInterval(beat);
    clearInterval(recheck);
    res.end();
  }
}
