import type { SessionData } from 'express-session';
import { ConnectSessionKnexStore } from 'connect-session-knex';
import type { Logger } from '../shared/logger.js';

type Cb = (err?: unknown) => void;

/** A session's expiry is written at most this often by one process (rolling sessions touch on every request). */
export const TOUCH_EVERY_MS = 60_000;
/** Sessions whose last touch this process remembers; past it the memory starts over (a touch more each, no harm). */
const MAX_REMEMBERED = 50_000;

/**
 * connect-session-knex 5 hands a database error to the callback AND rejects the promise it returns, which
 * express-session ignores: an unhandled rejection, i.e. a crashed process on a busy or unreachable database.
 * Its `touch` does not catch at all, so the callback never runs and the response hangs. This subclass keeps the
 * callback contract and swallows the duplicate rejection; a failed touch only means the expiry was not extended.
 *
 * Touches are thinned: express-session (rolling) touches the session on every request, an UPDATE and a commit
 * (an fsync on SQLite) per page view, the largest cost of a page under load (bench/RESULTS-web.md). Here a
 * session's expiry is written when this process has not written it for TOUCH_EVERY_MS, so the stored idle expiry
 * may lag the true one by at most that much (web.sessionIdleMinutes is 120 by default); the absolute lifetime is
 * checked from the session's own loginAt, not from this.
 */
export class SafeKnexStore extends ConnectSessionKnexStore {
  private readonly log: Logger;
  /** sid -> when this process last wrote its expiry (set or touch). */
  private readonly written = new Map<string, number>();
  private readonly now: () => number;
  constructor(
    opts: ConstructorParameters<typeof ConnectSessionKnexStore>[0],
    log: Logger,
    now: () => number = Date.now,
  ) {
    super(opts);
    this.log = log;
    this.now = now;
    this.ready.catch((err: unknown) => log.error({ err }, 'session store not ready'));
  }
  override get(sid: string, cb: (err: unknown, s?: SessionData | null) => void): Promise<SessionData | null> {
    return super.get(sid, cb).catch((err: unknown) => {
      this.log.warn({ err: (err as Error).message }, 'session read failed');
      return null;
    });
  }
  override set(sid: string, s: SessionData, cb?: Cb): Promise<void> {
    this.remember(sid);
    return super.set(sid, s, cb).catch((err: unknown) => {
      this.log.warn({ err: (err as Error).message }, 'session write failed');
    });
  }
  override destroy(sid: string, cb?: Cb): Promise<number> {
    this.written.delete(sid);
    return super.destroy(sid, cb).catch(() => 0);
  }
  override touch(sid: string, s: SessionData, cb?: () => void): Promise<void> {
    const last = this.written.get(sid);
    if (last !== undefined && this.now() - last < TOUCH_EVERY_MS) {
      cb?.();
      return Promise.resolve();
    }
    this.remember(sid);
    return super.touch(sid, s).then(
      () => cb?.(),
      (err: unknown) => {
        this.log.warn({ err: (err as Error).message }, 'session touch failed');
        cb?.();
      },
    );
  }

  private remember(sid: string): void {
    if (this.written.size >= MAX_REMEMBERED) this.written.clear();
    this.written.set(sid, this.now());
  }
}
