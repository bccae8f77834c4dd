import {
  clearFailures, countUsers, findUserById, findUserByName, getFailures, insertUser, isUniqueViolation, recordFailure, setUserPassword,
  type Db, type Role, type UserRow,
} from '../../db/index.js';
import { KilnError, conflict } from '../../shared/errors.js';
import { parsePassword, parseUsername } from '../validation.js';
import type { Actor, LoginLimits } from './context.js';
import { generatePassword, type PasswordHasher } from './passwords.js';

export const toActor = (u: UserRow): Actor => ({ id: u.id, username: u.username, role: u.role });

export async function registerUser(db: Db, hasher: PasswordHasher, input: { username: unknown; password: unknown }, role: Role = 'user'): Promise<UserRow> {
  const username = parseUsername(input.username);
  const password = parsePassword(input.password);
  if (password === username) throw new KilnError('bad_request', 'Password must not be the username.');
  if (await findUserByName(db, username)) throw conflict('That username is taken.');
  const passwordHash = await hasher.hash(password);
  try {
    return await insertUser(db, { username, passwordHash, role });
  } catch (e) {
    if (isUniqueViolation(e)) throw conflict('That username is taken.');
    throw e;
  }
}

const BAD_LOGIN = 'Wrong username or password.';

/**
 * Checks a login. Unknown user, disabled user and wrong password are indistinguishable: same error, and the same
 * argon2 work (a dummy hash) is spent. The per-account counter is checked before any hashing and keyed by the
 * submitted name, so throttling works (and looks the same) for names that do not exist.
 */
export async function authenticate(db: Db, hasher: PasswordHasher, limits: LoginLimits, username: unknown, password: unknown): Promise<UserRow> {
  if (typeof username !== 'string' || typeof password !== 'string' || username.length === 0 || password.length === 0) {
    throw new KilnError('unauthenticated', BAD_LOGIN);
  }
  const key = username.slice(0, 64);
  const now = Date.now();
  const f = await getFailures(db, key);
  if (f && now - f.windowStartMs < limits.accountWindowMs && f.failures >= limits.accountFailures) {
    const retryAfterSeconds = Math.max(1, Math.ceil((f.windowStartMs + limits.accountWindowMs - now) / 1000));
    throw new KilnError('rate_limited', 'Too many failed logins for this account; try again later.', { detail: { retryAfterSeconds } });
  }
  // Over-long passwords are never valid; spend the dummy work anyway so the answer costs the same.
  const plausible = [...password].length <= 128 && /^[a-z][a-z0-9_-]{2,31}$/.test(username);
  const user = plausible ? await findUserByName(db, username) : undefined;
  const ok = user && !user.disabled ? await hasher.verify(user.password_hash, password) : await hasher.verifyDummy(password);
  if (!ok || !user) {
    await recordFailure(db, key, Date.now(), limits.accountWindowMs);
    throw new KilnError('unauthenticated', BAD_LOGIN);
  }
  await clearFailures(db, key);
  return user;
}

/** Session payload: the user id plus the epoch it was issued in (bumped on disable / password change). */
export interface SessionUser { id: number; epoch: number }

/** Resolves a session's user; undefined when the user is gone, disabled, or the session predates an epoch bump. */
export async function userForSession(db: Db, s: SessionUser): Promise<Actor | undefined> {
  if (!s || typeof s.id !== 'number') return undefined;
  const u = await findUserById(db, s.id);
  if (!u || u.disabled || u.session_epoch !== s.epoch) return undefined;
  return toActor(u);
}

/**
 * Creates a user with a generated password (CLI `kiln user add`). The password is returned once and never stored
 * in clear.
 */
export async function createUserWithGeneratedPassword(db: Db, hasher: PasswordHasher, username: string, role: Role): Promise<{ username: string; password: string }> {
  const password = generatePassword();
  await registerUser(db, hasher, { username, password }, role);
  return { username, password };
}

/**
 * On a database with no users, creates `admin` with a generated password and returns it (print it once);
 * otherwise null. Two processes racing both see "no users"; the UNIQUE name lets only one win.
 */
export async function ensureFirstAdmin(db: Db, hasher: PasswordHasher, username = 'admin'): Promise<{ username: string; password: string } | null> {
  if ((await countUsers(db)) > 0) return null;
  try {
    return await createUserWithGeneratedPassword(db, hasher, username, 'admin');
  } catch (e) {
    if (e instanceof KilnError && e.code === 'conflict') return null;
    throw e;
  }
}

/**
 * Changes the caller's password after checking the current one (same throttle as login). Bumps the session
 * epoch, so every other session of this user ends; the caller logs the current session in again.
 */
export async function changePassword(db: Db, hasher: PasswordHasher, limits: LoginLimits, actor: Actor, current: unknown, next: unknown): Promise<UserRow> {
  const password = parsePassword(next);
  if (password === actor.username) throw new KilnError('bad_request', 'Password must not be the username.');
  try {
    await authenticate(db, hasher, limits, actor.username, current);
  } catch (e) {
    if (e instanceof KilnError && e.code === 'unauthenticated') throw new KilnError('bad_request', 'The current password is wrong.');
    throw e;
  }
  await setUserPassword(db, actor.id, await hasher.hash(password));
  return (await findUserById(db, actor.id))!;
}
