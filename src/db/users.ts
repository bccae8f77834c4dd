import type { Queryable } from './knex.js';
import { nowIso } from './knex.js';

export type Role = 'user' | 'admin';
export interface UserRow {
  id: number;
  username: string;
  password_hash: string;
  role: Role;
  disabled: boolean;
  session_epoch: number;
  created_at: string;
}

// SQLite returns booleans as 0/1: normalise once here so callers see one shape.
function norm(r: Record<string, unknown> | undefined): UserRow | undefined {
  if (!r) return undefined;
  return { ...(r as unknown as UserRow), id: Number(r.id), disabled: Boolean(r.disabled), session_epoch: Number(r.session_epoch) };
}

export async function findUserByName(db: Queryable, username: string): Promise<UserRow | undefined> {
  return norm(await db('users').where({ username }).first());
}

export async function findUserById(db: Queryable, id: number): Promise<UserRow | undefined> {
  return norm(await db('users').where({ id }).first());
}

export async function insertUser(db: Queryable, u: { username: string; passwordHash: string; role: Role }): Promise<UserRow> {
  const [row] = await db('users')
    .insert({ username: u.username, password_hash: u.passwordHash, role: u.role, disabled: false, session_epoch: 0, created_at: nowIso() })
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
