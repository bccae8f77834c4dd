/**
 * Session rows (table `sessions`: sid, sess JSON, expired) and the auth change log (migration 014: `auth_seq`,
 * `auth_changes`, written by triggers). Expiry times are ISO strings on SQLite (as connect-session-knex wrote them,
 * so rows from before stay readable) and timestamptz on PostgreSQL.
 */
import { isPg, type Queryable } from './knex.js';
import { selectRow, selectRows } from './statements.js';

export interface SessionRecord {
  /** The session's JSON text. */
  sess: string;
  /** Its idle expiry, ms since the epoch. */
  expiresMs: number;
}

export interface AuthChange {
  seq: number;
  /** 'all': forget every session and user (a TRUNCATE, or a REPLACE on SQLite that may have deleted any user). */
  kind: 'session' | 'user' | 'all';
  subject: string;
}

const iso = (ms: number): string => new Date(ms).toISOString();

/** The session `sid` while it has not expired at `nowMs`. */
export async function readSession(db: Queryable, sid: string, nowMs: number): Promise<SessionRecord | undefined> {
  const r = await selectRow(db, 'SELECT sess, expired FROM sessions WHERE sid = ?', [sid]);
  if (!r) return undefined;
  const expiresMs = new Date(r.expired as string | Date).getTime();
  if (!(expiresMs > nowMs)) return undefined;
  return { sess: typeof r.sess === 'string' ? r.sess : JSON.stringify(r.sess), expiresMs };
}

/** Creates or replaces a session. */
export async function writeSession(db: Queryable, sid: string, sess: string, expiresMs: number): Promise<void> {
  const values = isPg(db) ? '(?, ?::timestamptz, ?::json)' : '(?, ?, ?)';
  await db.raw(
    `INSERT INTO sessions (sid, expired, sess) VALUES ${values}
     ON CONFLICT (sid) DO UPDATE SET expired = excluded.expired, sess = excluded.sess`,
    [sid, iso(expiresMs), sess],
  );
}

/** Moves a live session's idle expiry (no auth change: the data stays). */
export async function touchSession(db: Queryable, sid: string, expiresMs: number, nowMs: number): Promise<void> {
  const cast = isPg(db) ? '?::timestamptz' : '?';
  await db.raw(`UPDATE sessions SET expired = ${cast} WHERE sid = ? AND expired > ${cast}`, [
    iso(expiresMs),
    sid,
    iso(nowMs),
  ]);
}

export async function deleteSession(db: Queryable, sid: string): Promise<void> {
  await db.raw('DELETE FROM sessions WHERE sid = ?', [sid]);
}

export async function deleteExpiredSessions(db: Queryable, nowMs: number): Promise<void> {
  await db.raw(`DELETE FROM sessions WHERE expired <= ${isPg(db) ? '?::timestamptz' : '?'}`, [iso(nowMs)]);
}

/** The number of the latest auth change (0 before any). */
export async function readAuthSeq(db: Queryable): Promise<number> {
  const r = await selectRow(db, 'SELECT seq FROM auth_seq WHERE id = 1');
  return Number(r?.seq ?? 0);
}

/** The changes after `after` up to `upTo`, in order (fewer than asked when older ones were pruned). */
export async function authChangesSince(db: Queryable, after: number, upTo: number): Promise<AuthChange[]> {
  const rows = await selectRows(
    db,
    'SELECT seq, kind, subject FROM auth_changes WHERE seq > ? AND seq <= ? ORDER BY seq',
    [after, upTo],
  );
  return rows.map((r) => ({ seq: Number(r.seq), kind: r.kind as AuthChange['kind'], subject: String(r.subject) }));
}

/** Drops all but the latest `keep` changes (a process further behind than that forgets everything it holds). */
export async function pruneAuthChanges(db: Queryable, keep: number): Promise<void> {
  await db.raw('DELETE FROM auth_changes WHERE seq <= (SELECT seq FROM auth_seq WHERE id = 1) - ?', [keep]);
}
