/**
 * Sessions and their users, served from this process's memory and still exact: a change made anywhere (another web
 * process on the same database, `kiln user`, plain SQL) counts at this process's next request.
 *
 * How: every auth change (a session's data or sid changed, its expiry moved earlier, or it was deleted; a user's
 * id, role, disabled, approved, epoch, name or password changed, or the user deleted; a TRUNCATE: 'all') appends to
 * the database's auth change log in its own transaction (triggers, migration 014; `migrateLatest` refuses a
 * database without them). Before a request uses anything held here, `sync(ticket)` reads the log's latest number,
 * one small statement, and when it moved, forgets the sessions and users named since. The statement is issued after
 * the request arrived (its ticket), so whatever was committed before the request is seen; requests that arrive
 * while one is waiting to be issued share it (one statement per round trip under load, not one per request). A
 * value read from the database is kept only if no change was applied while it was being read.
 */
import {
  authChangesSince,
  findUserById,
  readAuthSeq,
  readSession,
  type Db,
  type SessionRecord,
  type UserRow,
} from '../db/index.js';

/** A process further behind than this many changes forgets everything (the log keeps this many). */
export const AUTH_CHANGES_KEPT = 10_000;
/** Entries held at most (sessions, users each); past it the oldest go first. */
const MAX_ENTRIES = 50_000;

type Deferred = { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void };
const deferred = (): Deferred => {
  let resolve!: () => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
};

export class AuthCache {
  /** The latest change applied here; -1 before the first check. */
  private seen = -1;
  /** Moves whenever changes are applied (or everything is forgotten): a read that overlapped it is not kept. */
  private version = 0;
  /** Checks issued so far; the number of the latest. */
  private issued = 0;
  /** The number of the latest check that completed. */
  private completed = 0;
  private inflight: { no: number; promise: Promise<void> } | undefined;
  /** The check that will be issued when the one in flight completes (joined by requests arriving meanwhile). */
  private queued: Deferred | undefined;
  private readonly sessions = new Map<string, SessionRecord>();
  private readonly users = new Map<number, UserRow>();

  constructor(private readonly db: Db) {}

  /** Taken when a request arrives: a check issued after it sees everything committed before. */
  ticket(): number {
    return this.issued;
  }

  /** Resolves once a check issued after `ticket` was taken has been applied (rejects if it failed). */
  sync(ticket: number = this.issued): Promise<void> {
    if (this.completed > ticket) return Promise.resolve();
    if (this.inflight && this.inflight.no > ticket) return this.inflight.promise;
    if (this.queued) return this.queued.promise;
    if (!this.inflight) return this.issue();
    const q = deferred();
    this.queued = q;
    return q.promise;
  }

  /** The session while it lives (by its own expiry); read and kept on a miss. Call sync() first. */
  async session(sid: string, nowMs: number): Promise<SessionRecord | undefined> {
    const hit = this.sessions.get(sid);
    if (hit && hit.expiresMs > nowMs) return hit;
    // Expired here, but another process may have moved it on: the database decides.
    if (hit) this.sessions.delete(sid);
    const v = this.version;
    const rec = await readSession(this.db, sid, nowMs);
    if (rec && v === this.version) this.keep(this.sessions, sid, rec);
    return rec;
  }

  /** What this process just wrote (`version` taken before the write was issued). */
  putSession(sid: string, rec: SessionRecord, version: number): void {
    if (version === this.version) this.keep(this.sessions, sid, rec);
    else this.sessions.delete(sid);
  }

  /** A new idle expiry for a session held here (a touch changes nothing else). */
  touchSession(sid: string, expiresMs: number): void {
    const hit = this.sessions.get(sid);
    if (hit) hit.expiresMs = expiresMs;
  }

  forgetSession(sid: string): void {
    this.sessions.delete(sid);
  }

  /** The user row; read and kept on a miss. Call sync() first. */
  async user(id: number): Promise<UserRow | undefined> {
    const hit = this.users.get(id);
    if (hit) return hit;
    const v = this.version;
    const u = await findUserById(this.db, id);
    if (u && v === this.version) this.keep(this.users, id, u);
    return u;
  }

  /** For a write's caller: pass to putSession once the write is done. */
  currentVersion(): number {
    return this.version;
  }

  private keep<K, V>(m: Map<K, V>, k: K, v: V): void {
    if (m.size >= MAX_ENTRIES && !m.has(k)) m.delete(m.keys().next().value as K);
    m.set(k, v);
  }

  private issue(): Promise<void> {
    const no = ++this.issued;
    const promise = this.check().then(
      () => {
        this.completed = Math.max(this.completed, no);
        this.next();
      },
      (e: unknown) => {
        // Not applied: the requests waiting on it fail, and the next sync checks again.
        this.next();
        throw e;
      },
    );
    this.inflight = { no, promise };
    return promise;
  }

  private next(): void {
    this.inflight = undefined;
    const q = this.queued;
    this.queued = undefined;
    if (q) this.issue().then(q.resolve, q.reject);
  }

  private async check(): Promise<void> {
    const seq = await readAuthSeq(this.db);
    if (seq === this.seen) return;
    if (this.seen < 0 || seq < this.seen || seq - this.seen > AUTH_CHANGES_KEPT) return this.forgetAll(seq);
    const changes = await authChangesSince(this.db, this.seen, seq);
    // Each number is one change, committed with the counter: a gap means pruned changes this process never saw.
    if (changes.length !== seq - this.seen) return this.forgetAll(seq);
    if (changes.some((c) => c.kind === 'all')) return this.forgetAll(seq);
    for (const c of changes) {
      if (c.kind === 'session') this.sessions.delete(c.subject);
      else this.users.delete(Number(c.subject));
    }
    this.seen = seq;
    this.version++;
  }

  private forgetAll(seq: number): void {
    this.sessions.clear();
    this.users.clear();
    this.seen = seq;
    this.version++;
  }
}
