/**
 * Personal API tokens: the credential of the REST API (/api/v1) for pipelines and scripts.
 *
 * A token is `kiln_<public id>_<secret>`: 16 hex digits naming the row, then 256 random bits. Only the SHA-256 of the
 * whole token is stored: the secret is high-entropy, so a fast hash is as good as a slow one here and costs a
 * request nothing (passwords, which people choose, get argon2). A request's token is found by its public id (one
 * indexed lookup), its digest compared in constant time, and its owner's row read with it: the request acts as that
 * user with the token's scopes (the policy refuses the rest), only while the token is unrevoked and unexpired and
 * the account may log in. Disabling an account revokes its tokens for good; changing a password does not (tokens
 * are separate credentials, listed and revoked on the account page).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import {
  countLiveApiTokens,
  findApiToken,
  findUserByName,
  insertApiToken,
  listApiTokens,
  lockUserRow,
  revokeApiToken,
  touchApiToken,
  type ApiTokenRow,
} from '../db/index.js';
import { KilnError, conflict, invalidInput, notFound } from '../shared/errors.js';
import { SCOPES, actorLabel, type Actor, type Scope, type UserActor } from './actor.js';
import { recordAudit } from './audit.js';
import { Id, Username, parse, rule } from './commands.js';
import { clockOf, type CoreDeps } from './deps.js';
import { authorize, requireUser } from './policy.js';

export const TOKEN_PREFIX = 'kiln_';
const TOKEN_RE = /^kiln_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
/** A use is recorded at most this often per token: a write per request would cost more than the request. */
const TOUCH_EVERY_MS = 60_000;
const MAX_EXPIRY_DAYS = 3650;

const digest = (token: string): string => createHash('sha256').update(token).digest('hex');

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
const TokenName = rule((v): string => {
  const name = typeof v === 'string' ? v.trim() : '';
  if (!name || [...name].length > 64 || CONTROL.test(name))
    throw invalidInput('Give the token a name of 1 to 64 characters (what it is for, e.g. "gitlab-ci").');
  return name;
});
const Scopes = rule((v): Scope[] => {
  const list = (Array.isArray(v) ? v : typeof v === 'string' ? v.split(',') : []).map((s) => String(s).trim());
  const out = [...new Set(list.filter(Boolean))];
  const bad = out.find((s) => !(SCOPES as readonly string[]).includes(s));
  if (bad !== undefined || out.length === 0)
    throw invalidInput(
      `Choose the token's scopes from ${SCOPES.join(', ')}${bad ? ` ("${bad.slice(0, 20)}" is none)` : ''}.`,
    );
  return SCOPES.filter((s) => out.includes(s));
});
/** `30d` (days), or nothing / `never` for a token that does not expire. */
const Expiry = rule((v): number | null => {
  if (v === undefined || v === null || v === '' || v === 'never') return null;
  const m = typeof v === 'string' ? /^([1-9][0-9]{0,3})d$/.exec(v.trim()) : null;
  const days = m ? Number(m[1]) : typeof v === 'number' && Number.isInteger(v) ? v : NaN;
  if (!(days >= 1 && days <= MAX_EXPIRY_DAYS))
    throw invalidInput(`The expiry is a number of days such as 30d (1 to ${MAX_EXPIRY_DAYS}), or never.`);
  return days;
});

const createCommand = z.object({ name: TokenName, scopes: Scopes, expires: Expiry.optional() });

export interface NewToken {
  /** The token itself: shown once, never stored. */
  token: string;
  row: ApiTokenRow;
}

type TokenDeps = Pick<CoreDeps, 'db' | 'config' | 'logger' | 'now'>;

/**
 * A new token for the actor (the account page), or with `username` for that user (`kiln user token`, the system
 * or an admin). The `admin` scope only for an admin's token. At most `api.tokensPerUser` live tokens per user.
 */
export async function createToken(
  d: TokenDeps,
  actor: Actor,
  input: { username?: unknown; name: unknown; scopes: unknown; expires?: unknown },
): Promise<NewToken> {
  let owner: { id: number; username: string; role: string };
  if (input.username !== undefined) {
    authorize(actor, 'token.issue');
    const name = parse(Username, input.username);
    const u = await findUserByName(d.db, name);
    if (!u) throw notFound(`No user "${name}".`);
    if (u.disabled) throw conflict(`${name} is disabled: enable the account first.`);
    owner = u;
  } else {
    authorize(actor, 'token.manage');
    owner = requireUser(actor);
  }
  const cmd = parse(createCommand, input);
  if (cmd.scopes.includes('admin') && owner.role !== 'admin')
    throw invalidInput('Only an admin can have a token with the admin scope.');
  const now = clockOf(d);
  const publicId = randomBytes(8).toString('hex');
  const token = `${TOKEN_PREFIX}${publicId}_${randomBytes(32).toString('base64url')}`;
  const createdAt = new Date(now).toISOString();
  const row = await d.db.transaction(async (trx) => {
    await lockUserRow(trx, owner.id);
    const live = await countLiveApiTokens(trx, owner.id, createdAt);
    if (live >= d.config.api.tokensPerUser)
      throw conflict(`You have ${live} API tokens; revoke one you no longer use first.`);
    const r = await insertApiToken(trx, {
      publicId,
      userId: owner.id,
      name: cmd.name,
      scopes: cmd.scopes,
      secretSha256: digest(token),
      createdAt,
      expiresAt: cmd.expires == null ? null : new Date(now + cmd.expires * 86_400_000).toISOString(),
    });
    if (input.username !== undefined)
      await recordAudit(trx, d, actor, 'token.issue', `user:${owner.id}`, {
        username: owner.username,
        token: r.id,
        scopes: cmd.scopes,
      });
    return r;
  });
  d.logger.info({ ...actorLabel(actor), owner: owner.id, token: row.id, scopes: row.scopes }, 'API token created');
  return { token, row };
}

/** The actor's own tokens, newest first, with what became of them. */
export async function listTokens(d: Pick<CoreDeps, 'db'>, actor: Actor): Promise<ApiTokenRow[]> {
  authorize(actor, 'token.manage');
  return listApiTokens(d.db, requireUser(actor).id);
}

/** Revokes one of the actor's tokens; it stops working at once. Revoking it again changes nothing. */
export async function revokeToken(d: TokenDeps, actor: Actor, rawId: unknown): Promise<{ revoked: boolean }> {
  authorize(actor, 'token.manage');
  const me = requireUser(actor);
  const id = parse(Id, rawId);
  const revoked = await revokeApiToken(d.db, {
    id,
    userId: me.id,
    at: new Date(clockOf(d)).toISOString(),
    reason: 'owner',
  });
  if (!revoked && !(await listApiTokens(d.db, me.id)).some((t) => t.id === id)) throw notFound('No such token.');
  d.logger.info({ ...actorLabel(actor), token: id }, 'API token revoked');
  return { revoked };
}

/** What a token's state is at `now`, for the account page. */
export function tokenState(t: ApiTokenRow, now: number): 'active' | 'expired' | 'revoked' {
  if (t.revoked_at) return 'revoked';
  if (t.expires_at && Date.parse(t.expires_at) <= now) return 'expired';
  return 'active';
}

const INVALID = 'The API token is missing, malformed or unknown: send "Authorization: Bearer kiln_...".';

/**
 * The actor an `Authorization` header's bearer token stands for, or `unauthenticated` (401) saying why: missing,
 * malformed or unknown (one answer for all three), revoked, expired, or its account disabled.
 */
export async function tokenActor(
  d: Pick<CoreDeps, 'db' | 'now'>,
  authorization: string | undefined,
  address?: string,
): Promise<UserActor> {
  const m = /^Bearer +(\S+) *$/i.exec(authorization ?? '');
  const parts = m ? TOKEN_RE.exec(m[1]!) : null;
  if (!m || !parts) throw new KilnError('unauthenticated', INVALID);
  const row = await findApiToken(d.db, parts[1]!);
  const want = Buffer.from(digest(m[1]!), 'hex');
  // Compared in constant time; a missing row still costs a comparison, so both take the same path.
  const have = Buffer.from(row?.secret_sha256 ?? '0'.repeat(64), 'hex');
  if (!timingSafeEqual(want, have) || !row) throw new KilnError('unauthenticated', INVALID);
  const now = clockOf(d);
  if (row.revoked_at)
    throw new KilnError(
      'unauthenticated',
      row.revoked_reason === 'disabled'
        ? 'This API token was revoked when its account was disabled.'
        : 'This API token was revoked.',
    );
  if (row.expires_at && Date.parse(row.expires_at) <= now)
    throw new KilnError('unauthenticated', `This API token expired at ${row.expires_at}.`);
  if (row.disabled || !row.approved)
    throw new KilnError('unauthenticated', 'The account of this API token cannot log in.');
  if (!row.last_used_at || Date.parse(row.last_used_at) < now - TOUCH_EVERY_MS)
    await touchApiToken(d.db, row.id, new Date(now).toISOString(), new Date(now - TOUCH_EVERY_MS).toISOString());
  return {
    kind: 'user',
    id: row.user_id,
    username: row.username,
    role: row.role,
    via: 'token',
    scopes: SCOPES.filter((s) => row.scopes.includes(s)),
    tokenId: row.id,
    ...(address ? { address } : {}),
  };
}
