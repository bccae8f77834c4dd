import { Store, type SessionData } from 'express-session';
import { AUTH_CHANGES_KEPT, type AuthCache } from '../core/index.js';
import {
  deleteExpiredSessions,
  deleteSession,
  pruneAuthChanges,
  touchSession,
  writeSession,
  type Db,
} from '../db/index.js';
import type { Logger } from '../shared/logger.js';

type Cb = (err?: unknown) => void;

/** A session's expiry is written at most this often by one process (rolling sessions touch on every request). */
export const TOUCH_EVERY_MS = 60_000;
/** Sessions whose last touch this process remembers; past it the memory starts over (a touch more each, no harm). */
const MAX_REMEMBERED = 50_000;
/** Expired sessions (and auth changes past the kept number) are deleted this often. */
const CLEANUP_EVERY_MS = 10 * 60_000;

/** The idle expiry a session's cookie carries (ms). */
const expiresOf = (s: SessionData): number => {
  const e = s.cookie?.expires;
  return e ? new Date(e).getTime() : Date.now() + 86_400_000;
};

/**
 * express-session's store over the `sessions` table, read through the process's AuthCache: a page view reads its
 * session from memory after one shared check of the auth change log (src/core/auth-cache.ts), so a logout, a new
 * login or a new CSRF token in another process counts here at the next request. Writes go to the database first,
 * then to the cache. Every callback is called exactly once, errors included (express-session answers them).
 *
 * Touches are thinned: express-session (rolling) touches the session on every request, an UPDATE and a commit
 * (an fsync on SQLite) per page view. Here a session's stored expiry is written when this process has not written
 * it for TOUCH_EVERY_MS, so it may lag the true one by at most that much (web.sessionIdleMinutes is 120 by
 * default); this process's own copy follows every touch. The absolute lifetime is checked from the session's own
 * loginAt, not from this.
 */
export class CachedSessionStore extends Store {
  /** sid -> when this process last wrote its expiry (set or touch). */
  private readonly written = new Map<string, number>();
  private readonly cleanup: NodeJS.Timeout;

  constructor(
    private readonly db: Db,
    private readonly cache: AuthCache,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    super();
    this.cleanup = setInterval(() => {
      void this.clean();
    }, CLEANUP_EVERY_MS);
    this.cleanup.unref();
    void this.clean();
  }

  close(): void {
    clearInterval(this.cleanup);
  }

  override get(sid: string, cb: (err: unknown, s?: SessionData | null) => void): void {
    this.cache
      .sync()
      .then(() => this.cache.session(sid, Date.now()))
      .then(
        (rec) => cb(null, rec ? (JSON.parse(rec.sess) as SessionData) : null),
        (err: unknown) => {
          this.log.warn({ err: (err as Error).message }, 'session read failed');
          cb(err);
        },
      );
  }

  override set(sid: string, s: SessionData, cb?: Cb): void {
    const version = this.cache.currentVersion();
    const rec = { sess: JSON.stringify(s), expiresMs: expiresOf(s) };
    this.remember(sid);
    writeSession(this.db, sid, rec.sess, rec.expiresMs).then(
      () => {
        this.cache.putSession(sid, rec, version);
        cb?.();
      },
      (err: unknown) => {
        this.cache.forgetSession(sid);
        this.log.warn({ err: (err as Error).message }, 'session write failed');
        cb?.(err);
      },
    );
  }

  override destroy(sid: string, cb?: Cb): void {
    this.written.delete(sid);
    this.cache.forgetSession(sid);
    deleteSession(this.db, sid).then(
      () => cb?.(),
      (err: unknown) => cb?.(err),
    );
  }

  override touch(sid: string, s: SessionData, cb?: () => void): void {
    const expiresMs = expiresOf(s);
    this.cache.touchSession(sid, expiresMs);
    const last = this.written.get(sid);
    if (last !== undefined && this.now() - last < TOUCH_EVERY_MS) {
      cb?.();
      return;
    }
    this.remember(sid);
    // A failed touch only means the stored expiry was not extended.
    touchSession(this.db, sid, expiresMs, Date.now()).then(
      () => cb?.(),
      (err: unknown) => {
        this.log.warn({ err: (err as Error).message }, 'session touch failed');
        cb?.();
      },
    );
  }

  private async clean(): Promise<void> {
    try {
      await deleteExpiredSessions(this.db, Date.now());
      await pruneAuthChanges(this.db, AUTH_CHANGES_KEPT);
    } catch (err) {
      this.log.warn({ err }, 'session cleanup failed');
    }
  }

  private remember(sid: string): void {
    if (this.written.size >= MAX_REMEMBERED) this.written.clear();
    this.written.set(sid, this.now());
  }
}
