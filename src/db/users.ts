import type { Queryable } from './knex.js';
import { isPg, nowIso } from './knex.js';

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
  return { ...(r as unknown as UserRow), id: Number(r.id), disabled: Boolean(r.disabled), approved: r.approved === undefined ? true : Boolean(r.approved), session_epoch: Number(r.session_epoch) };
}

export async function findUserByName(db: Queryable, username: string): Promise<UserRow | undefined> {
  return norm(await db('users').where({ username }).first());
}

export async function findUserById(db: Queryable, id: number): Promise<UserRow | undefined> {
  return norm(await db('users').where({ id }).first());
}

export async function insertUser(db: Queryable, u: { username: string; passwordHash: string; role: Role; approved?: boolean }): Promise<UserRow> {
  const [row] = await db('users')
    .insert({ username: u.username, password_hash: u.passwordHash, role: u.role, disabled: false, approved: u.approved ?? true, session_epoch: 0, created_at: nowIso() })
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
  await db('users').where({ id }).update({ disabled, session_epoch: db.raw('session_epoch + 1') });
}

export async function setUserPassword(db: Queryable, id: number, passwordHash: string): Promise<void> {
  await db('users').where({ id }).update({ password_hash: passwordHash, session_epoch: db.raw('session_epoch + 1') });
}

export async function setUserRole(db: Queryable, id: number, role: Role): Promise<void> {
  await db('users').where({ id }).update({ role });
}

export async function setUserApproved(db: Queryable, id: number): Promise<void> {
  await db('users').where({ id }).update({ approved: true });
}

/**
 * The ids of the admins who can act (enabled), their rows locked on PostgreSQL until the transaction ends, so two
 * admins demoting or disabling each other at once cannot both pass a "not the last admin" check. SQLite runs one
 * transaction at a time here (one connection per process, the write lock across processes).
 */
export async function lockActiveAdmins(trx: Queryable): Promise<number[]> {
  const q = trx('users').where({ role: 'admin', disabled: false }).select('id').orderBy('id');
  if (isPg(trx)) q.forUpdate();
  return (await q).map((r: { id: number | string }) => Number(r.id));
}
