/**
 * Personal API tokens (migration 011): rows only; what a token may do and how it is checked is src/core/tokens.ts.
 * Timestamps are ISO strings like every other, so `expires_at > now` compares them as text on both engines.
 */
import type { Queryable } from './knex.js';
import type { Role } from './users.js';

export interface ApiTokenRow {
  id: number;
  public_id: string;
  user_id: number;
  name: string;
  scopes: string[];
  secret_sha256: string;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  revoked_at: string | null;
  /** `owner` (revoked on the account page) or `disabled` (the account was disabled). */
  revoked_reason: string | null;
}

/** A token with what its owner's row says now: a request acts as that user only while the account may log in. */
export interface ApiTokenWithUser extends ApiTokenRow {
  username: string;
  role: Role;
  disabled: boolean;
  approved: boolean;
}

const str = (v: unknown): string | null => (v == null ? null : String(v));

function norm(r: Record<string, unknown>): ApiTokenRow {
  return {
    id: Number(r.id),
    public_id: String(r.public_id),
    user_id: Number(r.user_id),
    name: String(r.name),
    scopes: String(r.scopes).split(',').filter(Boolean),
    secret_sha256: String(r.secret_sha256),
    created_at: String(r.created_at),
    expires_at: str(r.expires_at),
    last_used_at: str(r.last_used_at),
    revoked_at: str(r.revoked_at),
    revoked_reason: str(r.revoked_reason),
  };
}

export async function insertApiToken(
  db: Queryable,
  t: {
    publicId: string;
    userId: number;
    name: string;
    scopes: readonly string[];
    secretSha256: string;
    createdAt: string;
    expiresAt: string | null;
  },
): Promise<ApiTokenRow> {
  const [row] = await db('api_tokens')
    .insert({
      public_id: t.publicId,
      user_id: t.userId,
      name: t.name,
      scopes: t.scopes.join(','),
      secret_sha256: t.secretSha256,
      created_at: t.createdAt,
      expires_at: t.expiresAt,
    })
    .returning('*');
  return norm(row as Record<string, unknown>);
}

/** The token with this public id and its owner's current row (one indexed lookup), or undefined. */
export async function findApiToken(db: Queryable, publicId: string): Promise<ApiTokenWithUser | undefined> {
  const r = (await db('api_tokens as t')
    .join('users as u', 'u.id', 't.user_id')
    .where('t.public_id', publicId)
    .select('t.*', 'u.username', 'u.role', 'u.disabled', 'u.approved')
    .first()) as Record<string, unknown> | undefined;
  if (!r) return undefined;
  return {
    ...norm(r),
    username: String(r.username),
    role: r.role as Role,
    disabled: Boolean(r.disabled),
    approved: r.approved === undefined ? true : Boolean(r.approved),
  };
}

/** A user's tokens, newest first (revoked and expired ones included: the account page shows what became of them). */
export async function listApiTokens(db: Queryable, userId: number, limit = 200): Promise<ApiTokenRow[]> {
  const rows = await db('api_tokens').where({ user_id: userId }).orderBy('id', 'desc').limit(limit);
  return rows.map((r: Record<string, unknown>) => norm(r));
}

/** Tokens of the user that still work at `nowIso` (not revoked, not expired). */
export async function countLiveApiTokens(db: Queryable, userId: number, nowIso: string): Promise<number> {
  const r = await db('api_tokens')
    .where({ user_id: userId })
    .whereNull('revoked_at')
    .where((q) => {
      void q.whereNull('expires_at').orWhere('expires_at', '>', nowIso);
    })
    .count<{ n: number | string }[]>({ n: '*' });
  return Number(r[0]?.n ?? 0);
}

/** Revokes one of the user's tokens; false when it is not theirs or was revoked already. */
export async function revokeApiToken(
  db: Queryable,
  t: { id: number; userId: number; at: string; reason: string },
): Promise<boolean> {
  const n = await db('api_tokens')
    .where({ id: t.id, user_id: t.userId })
    .whereNull('revoked_at')
    .update({ revoked_at: t.at, revoked_reason: t.reason });
  return Number(n) > 0;
}

/** Revokes every token of the user still unrevoked; returns how many. */
export async function revokeUserApiTokens(db: Queryable, userId: number, at: string, reason: string): Promise<number> {
  const n = await db('api_tokens')
    .where({ user_id: userId })
    .whereNull('revoked_at')
    .update({ revoked_at: at, revoked_reason: reason });
  return Number(n);
}

/** Records a use, unless one at or after `staleBefore` is recorded already (at most one write per token a minute). */
export async function touchApiToken(db: Queryable, id: number, at: string, staleBefore: string): Promise<void> {
  await db('api_tokens')
    .where({ id })
    .where((q) => {
      void q.whereNull('last_used_at').orWhere('last_used_at', '<', staleBefore);
    })
    .update({ last_used_at: at });
}
