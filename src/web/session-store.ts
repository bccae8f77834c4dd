import type { SessionData } from 'express-session';
import { ConnectSessionKnexStore } from 'connect-session-knex';
import type { Logger } from '../shared/logger.js';

type Cb = (err?: unknown) => void;

/**
 * connect-session-knex 5 hands a database error to the callback AND rejects the promise it returns, which
 * express-session ignores: an unhandled rejection, i.e. a crashed process on a busy or unreachable database.
 * Its `touch` does not catch at all, so the callback never runs and the response hangs. This subclass keeps the
 * callback contract and swallows the duplicate rejection; a failed touch only means the expiry was not extended.
 */
export class SafeKnexStore extends ConnectSessionKnexStore {
  private readonly log: Logger;
  constructor(opts: ConstructorParameters<typeof ConnectSessionKnexStore>[0], log: Logger) {
    super(opts);
    this.log = log;
    this.ready.catch((err: unknown) => log.error({ err }, 'session store not ready'));
  }
  override get(sid: string, cb: (err: unknown, s?: SessionData | null) => void): Promise<SessionData | null> {
    return super.get(sid, cb).catch((err: unknown) => { this.log.warn({ err: (err as Error).message }, 'session read failed'); return null; });
  }
  override set(sid: string, s: SessionData, cb?: Cb): Promise<void> {
    return super.set(sid, s, cb).catch((err: unknown) => { this.log.warn({ err: (err as Error).message }, 'session write failed'); });
  }
  override destroy(sid: string, cb?: Cb): Promise<number> {
    return super.destroy(sid, cb).catch(() => 0);
  }
  override touch(sid: string, s: SessionData, cb?: () => void): Promise<void> {
    return super.touch(sid, s).then(
      () => cb?.(),
      (err: unknown) => {
        this.log.warn({ err: (err as Error).message }, 'session touch failed');
        cb?.();
      },
    );
  }
}
