import type { Queryable } from './knex.js';
import { isPg, nowIso } from './knex.js';
import { selectRow } from './statements.js';

export type Role = 'user' | 'admin';
export interface UserRow {
  id: number;
  username: string;
  password_hash: string;
  role: Role;
  disabled: boolean;
  /** False while a self-registered account waits for an admin's approval (migration 010). */
  approved: boolean;
  session_epoch: number;
  created_at: string;
}

// SQLite returns booleans as 0/1: normalise once here so callers see one shape.
function norm(r: Record<string, unknown> | undefined): UserRow | undefined {
  if (!r) return undefined;
  return {
    ...(r as unknown as UserRow),
    id: Number(r.id),
    disabled: Boolean(r.disabled),
    approved: r.approved === undefined ? true : Boolean(r.approved),
    session_epoch: Number(r.session_epoch),
  };
}

export async function findUserByName(db: Queryable, username: string): Promise<UserRow | undefined> {
  return norm(await db('users').where({ username }).first());
}

export async function findUserById(db: Queryable, id: number): Promise<UserRow | undefined> {
  return norm(await selectRow(db, 'SELECT * FROM users WHERE id = ?', [id]));
}

export async function insertUser(
  db: Queryable,
  u: { username: string; passwordHash: string; role: Role; approved?: boolean },
): Promise<UserRow> {
  const [row] = await db('users')
    .insert({
      username: u.username,
      password_hash: u.passwordHash,
      role: u.role,
      disabled: false,
      approved: u.approved ?? true,
      session_epoch: 0,
      created_at: nowIso(),
    })
    .returning('*');
  return norm(row)!;
}

export async function countUsers(db: Queryable): Promise<number> {
  const r = await db('users').count<{ n: number | string }[]>({ n: '*' });
  return Number(r[0]?.n ?? 0);
}

export async function listUsers(db: Queryable): Promise<UserRow[]> {
  const rows = await db('users').orderBy('id');
  return rows.map((r: Record<string, unknown>) => norm(r)!);
}

/** Disabling bumps the session epoch, so every live session of that user stops working on its next request. */
export async function setUserDisabled(db: Queryable, id: number, disabled: boolean): Promise<void> {
  await db('users')
    .where({ id })
    .update({ disabled, session_epoch: db.raw('session_epoch + 1') });
}

export async function setUserPassword(db: Queryable, id: number, passwordHash: string): Promise<void> {
  await db('users')
    .where({ id })
    .update({ password_hash: passwordHash, session_epoch: db.raw('session_epoch + 1') });
}

export async function setUserRole(db: Queryable, id: number, role: Role): Promise<void> {
  await db('users').where({ id }).update({ role });
}

export async function setUserApproved(db: Queryable, id: number): Promise<void> {
  await db('users').where({ id }).update({ approved: true });
}

/**
 * The ids of the admins who can act (enabled), locked until the transaction ends, so two admins demoting or
 * disabling each other at once (from any processes) cannot both pass a "not the last admin" check. Call it first in
 * the transaction. PostgreSQL: the rows FOR UPDATE (a waiter re-reads them after the holder commits). SQLite: a write
 * first, which takes the database's write lock (waiting through busy_timeout) before anything is read; a read first
 * would pin a snapshot that a concurrent writer makes stale, and the later write would fail with SQLITE_BUSY.
 */
export async function lockActiveAdmins(trx: Queryable): Promise<number[]> {
  if (isPg(trx)) {
    const rows = await trx('users').where({ role: 'admin', disabled: false }).select('id').orderBy('id').forUpdate();
    return rows.map((r: { id: number | string }) => Number(r.id));
  }
  await trx('users').where({ role: 'admin' }).update({ role: 'admin' });
  const rows = await trx('users').where({ role: 'admin', disabled: false }).select('id').orderBy('id');
  return rows.map((r: { id: number | string }) => Number(r.id));
}
