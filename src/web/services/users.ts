import {
  countUsers, findUserById, findUserByName, insertUser, isUniqueViolation, setUserPassword, type Db, type Role, type UserRow,
} from '../../db/index.js';
import { KilnError, conflict } from '../../shared/errors.js';
import { parsePassword, parseUsername } from '../validation.js';
import type { Actor, Services } from './context.js';
import { deviceIdFor, newDeviceId, reserveLoginAttempt, settleLoginSuccess, type LoginClient } from './login-throttle.js';
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

/** One login attempt as the route sees it: what was typed, the client's address and its device cookie (if any). */
export interface LoginAttempt { username: unknown; password: unknown; ip: string; deviceCookie?: unknown }

export type AuthDeps = Pick<Services, 'db' | 'hasher' | 'limits' | 'now' | 'deviceSecret'>;

/**
 * Checks a login. Unknown user, disabled user and wrong password are indistinguishable: same error, and the same
 * argon2 work (a dummy hash) is spent. The attempt is reserved in the throttle (services/login-throttle.ts) before
 * any hashing, keyed by the submitted name, so throttling works (and looks the same) for names that do not exist.
 * Returns the user and the device id for the browser's device cookie (the one it sent, if genuine, or a new one).
 */
export async function authenticate(s: AuthDeps, a: LoginAttempt): Promise<{ user: UserRow; deviceId: string }> {
  const { username, password } = a;
  if (typeof username !== 'string' || typeof password !== 'string' || username.length === 0 || password.length === 0) {
    throw new KilnError('unauthenticated', BAD_LOGIN);
  }
  const name = username.slice(0, 64);
  // Over-long passwords are never valid; spend the dummy work anyway so the answer costs the same.
  const plausible = [...password].length <= 128 && /^[a-z][a-z0-9_-]{2,31}$/.test(username);
  const user = plausible ? await findUserByName(s.db, username) : undefined;
  const device = user && s.deviceSecret ? deviceIdFor(s.deviceSecret, a.deviceCookie, user.id) : undefined;
  const client: LoginClient = device ? { kind: 'device', id: device } : { kind: 'ip', ip: a.ip };
  const reservation = await reserveLoginAttempt(s.db, s.limits, (s.now ?? Date.now)(), name, client);
  const ok = user && !user.disabled ? await s.hasher.verify(user.password_hash, password) : await s.hasher.verifyDummy(password);
  if (!ok || !user) throw new KilnError('unauthenticated', BAD_LOGIN);
  await settleLoginSuccess(s.db, reservation);
  return { user, deviceId: device ?? newDeviceId() };
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
export async function changePassword(s: AuthDeps, actor: Actor, current: Omit<LoginAttempt, 'username'>, next: unknown): Promise<UserRow> {
  const password = parsePassword(next);
  if (password === actor.username) throw new KilnError('bad_request', 'Password must not be the username.');
  try {
    await authenticate(s, { ...current, username: actor.username });
  } catch (e) {
    if (e instanceof KilnError && e.code === 'unauthenticated') throw new KilnError('bad_request', 'The current password is wrong.');
    throw e;
  }
  await setUserPassword(s.db, actor.id, await s.hasher.hash(password));
  return (await findUserById(s.db, actor.id))!;
}
