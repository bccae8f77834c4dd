/**
 * Users' SSH keys (migration 013): what the account page lists and the SSH door looks a key up by.
 */
import type { Queryable } from './knex.js';
import { nowIso } from './knex.js';
import type { Role } from './users.js';

export interface SshKeyRow {
  id: number;
  user_id: number;
  name: string;
  algorithm: 'ssh-ed25519' | 'ssh-rsa';
  /** The public key blob, base64 (an authorized_keys line's second field). */
  public_key: string;
  bits: number;
  /** `SHA256:` and the unpadded base64 of the blob's SHA-256, as `ssh-keygen -l` prints it. */
  fingerprint: string;
  created_at: string;
  last_used_at: string | null;
}

/** A key with what the SSH door needs to know of its owner. */
export interface SshKeyLogin {
  key: SshKeyRow;
  user: { id: number; username: string; role: Role; disabled: boolean; approved: boolean };
}

function norm(r: Record<string, unknown>): SshKeyRow {
  return {
    ...(r as unknown as SshKeyRow),
    id: Number(r.id),
    user_id: Number(r.user_id),
    bits: Number(r.bits),
    last_used_at: r.last_used_at == null ? null : String(r.last_used_at),
  };
}

export async function insertSshKey(
  db: Queryable,
  k: Pick<SshKeyRow, 'user_id' | 'name' | 'algorithm' | 'public_key' | 'bits' | 'fingerprint'>,
): Promise<SshKeyRow> {
  const [row] = await db('user_ssh_keys')
    .insert({ ...k, created_at: nowIso(), last_used_at: null })
    .returning('*');
  return norm(row as Record<string, unknown>);
}

export async function listSshKeys(db: Queryable, userId: number): Promise<SshKeyRow[]> {
  const rows = await db('user_ssh_keys').where({ user_id: userId }).orderBy('id');
  return rows.map((r: Record<string, unknown>) => norm(r));
}

export async function countSshKeys(db: Queryable, userId: number): Promise<number> {
  const r = await db('user_ssh_keys').where({ user_id: userId }).count<{ n: number | string }[]>({ n: '*' });
  return Number(r[0]?.n ?? 0);
}

export async function findSshKeyByFingerprint(db: Queryable, fingerprint: string): Promise<SshKeyRow | undefined> {
  const r = (await db('user_ssh_keys').where({ fingerprint }).first()) as Record<string, unknown> | undefined;
  return r ? norm(r) : undefined;
}

/** Deletes one of the user's keys; false when they have no key with that id. */
export async function deleteSshKey(db: Queryable, id: number, userId: number): Promise<boolean> {
  return (await db('user_ssh_keys').where({ id, user_id: userId }).delete()) > 0;
}

/** The key with this fingerprint and its owner, in one statement (the door asks on every login and command). */
export async function findSshKeyLogin(db: Queryable, fingerprint: string): Promise<SshKeyLogin | undefined> {
  const r = (await db('user_ssh_keys as k')
    .join('users as u', 'u.id', 'k.user_id')
    .where('k.fingerprint', fingerprint)
    .first(
      'k.*',
      'u.username as u_username',
      'u.role as u_role',
      'u.disabled as u_disabled',
      'u.approved as u_approved',
    )) as Record<string, unknown> | undefined;
  if (!r) return undefined;
  const { u_username, u_role, u_disabled, u_approved, ...key } = r;
  return {
    key: norm(key),
    user: {
      id: Number(r.user_id),
      username: String(u_username),
      role: u_role as Role,
      disabled: Boolean(u_disabled),
      approved: u_approved === undefined ? true : Boolean(u_approved),
    },
  };
}

/** Records a login with the key, unless one was recorded after `unlessSince` (one write a minute, not one a login). */
export async function touchSshKey(db: Queryable, id: number, at: string, unlessSince: string): Promise<void> {
  await db('user_ssh_keys')
    .where({ id })
    .andWhere((q) => q.whereNull('last_used_at').orWhere('last_used_at', '<', unlessSince))
    .update({ last_used_at: at });
}
