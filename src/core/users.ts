/**
 * Accounts: register, log in, the session's user, password changes, and the admin side (create with a generated
 * password, list, disable, role, reset) that `kiln user` uses today and the admin pages will.
 */
import { z } from 'zod';
import {
  countUsers,
  findUserById,
  findUserByName,
  insertUser,
  isUniqueViolation,
  listUsers as listUserRows,
  lockActiveAdmins,
  revokeUserApiTokens,
  setUserApproved,
  setUserDisabled,
  setUserPassword,
  setUserRole,
  type Queryable,
  type Role,
  type UserRow,
} from '../db/index.js';
import { KilnError, conflict, notFound } from '../shared/errors.js';
import { CLI, actorLabel, userActor, type Actor, type UserActor } from './actor.js';
import { recordAudit } from './audit.js';
import type { AuthCache } from './auth-cache.js';
import { Id, Password, Secret, Username, parse } from './commands.js';
import { clockOf, type CoreDeps } from './deps.js';
import {
  deviceIdFor,
  newDeviceId,
  reserveLoginAttempt,
  settleLoginSuccess,
  type LoginClient,
} from './login-throttle.js';
import { generatePassword } from './passwords.js';
import { authorize, requireUser } from './policy.js';

export type AuthDeps = Pick<CoreDeps, 'db' | 'hasher' | 'limits' | 'now' | 'deviceSecret'>;

const registerCommand = z.object({ username: Username, password: Password });

/**
 * A new account. Open to anonymous visitors while `web.registrationOpen` (else forbidden); admins and the system
 * may create one with a role (`createUser`). Any other field of the input, a `role` or `is_admin` included, is
 * ignored. With `web.registrationApproval` the account cannot log in until an admin approves it.
 */
export async function registerUser(
  d: Pick<CoreDeps, 'db' | 'hasher' | 'config'>,
  actor: Actor,
  input: unknown,
): Promise<UserRow> {
  authorize(actor, 'user.register');
  if (!d.config.web.registrationOpen)
    throw new KilnError('forbidden', 'Registration is closed; ask an admin for an account.');
  return insertNewUser(d, parse(registerCommand, input), 'user', !d.config.web.registrationApproval);
}

/** What an account waiting for approval is told once its password was right (and only then: no oracle). */
export const AWAITING_APPROVAL = 'Your account is waiting for an admin to approve it; you can log in once they have.';

async function insertNewUser(
  d: Pick<CoreDeps, 'db' | 'hasher'>,
  cmd: { username: string; password: string },
  role: Role,
  approved = true,
): Promise<UserRow> {
  if (cmd.password === cmd.username) throw new KilnError('bad_request', 'Password must not be the username.');
  if (await findUserByName(d.db, cmd.username)) throw conflict('That username is taken.');
  const passwordHash = await d.hasher.hash(cmd.password);
  try {
    return await insertUser(d.db, { username: cmd.username, passwordHash, role, approved });
  } catch (e) {
    if (isUniqueViolation(e)) throw conflict('That username is taken.');
    throw e;
  }
}

const BAD_LOGIN = 'Wrong username or password.';

/** One login attempt as a front door sees it: what was typed, the client's address and its device cookie (if any). */
export interface LoginAttempt {
  username: unknown;
  password: unknown;
  ip: string;
  deviceCookie?: unknown;
}

/**
 * Checks a login. Unknown user, disabled user and wrong password are indistinguishable: same error, and the same
 * argon2 work (a dummy hash) is spent. The attempt is reserved in the throttle (login-throttle.ts) before any
 * hashing, keyed by the submitted name, so throttling works (and looks the same) for names that do not exist.
 * Returns the user and the device id for the browser's device cookie (the one it sent, if genuine, or a new one).
 */
export async function authenticate(d: AuthDeps, a: LoginAttempt): Promise<{ user: UserRow; deviceId: string }> {
  const { username, password } = a;
  if (typeof username !== 'string' || typeof password !== 'string' || username.length === 0 || password.length === 0) {
    throw new KilnError('unauthenticated', BAD_LOGIN);
  }
  const name = username.slice(0, 64);
  // Over-long passwords are never valid; spend the dummy work anyway so the answer costs the same.
  const plausible = [...password].length <= 128 && /^[a-z][a-z0-9_-]{2,31}$/.test(username);
  const user = plausible ? await findUserByName(d.db, username) : undefined;
  const device = user && d.deviceSecret ? deviceIdFor(d.deviceSecret, a.deviceCookie, user.id) : undefined;
  const client: LoginClient = device ? { kind: 'device', id: device } : { kind: 'ip', ip: a.ip };
  const reservation = await reserveLoginAttempt(d.db, d.limits, (d.now ?? Date.now)(), name, client);
  const ok =
    user && !user.disabled ? await d.hasher.verify(user.password_hash, password) : await d.hasher.verifyDummy(password);
  if (!ok || !user) throw new KilnError('unauthenticated', BAD_LOGIN);
  await settleLoginSuccess(d.db, reservation);
  if (!user.approved) throw new KilnError('forbidden', AWAITING_APPROVAL);
  return { user, deviceId: device ?? newDeviceId() };
}

/** Session payload: the user id plus the epoch it was issued in (bumped on disable / password change). */
export interface SessionUser {
  id: number;
  epoch: number;
}

/**
 * The actor behind a session; undefined when the user is gone, disabled, unapproved, or the session predates an
 * epoch bump. The user comes from the process's AuthCache after a check of the auth change log issued after
 * `ticket` (default: now), so a change committed anywhere before that counts.
 */
export async function sessionActor(
  d: { auth: AuthCache },
  s: SessionUser,
  ticket?: number,
): Promise<(UserActor & { epoch: number }) | undefined> {
  if (!s || typeof s.id !== 'number') return undefined;
  await d.auth.sync(ticket);
  const u = await d.auth.user(s.id);
  if (!u || u.disabled || !u.approved || u.session_epoch !== s.epoch) return undefined;
  return { ...userActor(u), epoch: u.session_epoch };
}

const changePasswordCommand = z.object({ current: Secret, password: Password });

/**
 * Changes the actor's own password after checking the current one (same throttle as login). Bumps the session
 * epoch, so every other session of this user ends; the front door logs the current session in again.
 */
export async function changePassword(
  d: AuthDeps,
  actor: Actor,
  input: { current: unknown; password: unknown; ip: string; deviceCookie?: unknown },
): Promise<UserRow> {
  authorize(actor, 'account.changePassword');
  const me = requireUser(actor);
  const cmd = parse(changePasswordCommand, input);
  if (cmd.password === me.username) throw new KilnError('bad_request', 'Password must not be the username.');
  try {
    await authenticate(d, {
      username: me.username,
      password: cmd.current,
      ip: input.ip,
      deviceCookie: input.deviceCookie,
    });
  } catch (e) {
    if (e instanceof KilnError && e.code === 'unauthenticated')
      throw new KilnError('bad_request', 'The current password is wrong.');
    throw e;
  }
  await setUserPassword(d.db, me.id, await d.hasher.hash(cmd.password));
  return (await findUserById(d.db, me.id))!;
}

const createCommand = z.object({ username: Username, role: z.enum(['user', 'admin']) });

/** An account with a generated password, returned once and never stored in clear (admins, `kiln user add`). */
export async function createUser(
  d: Pick<CoreDeps, 'db' | 'hasher'>,
  actor: Actor,
  input: { username: unknown; role: unknown },
): Promise<{ username: string; password: string; user: UserRow }> {
  authorize(actor, 'user.create');
  const cmd = parse(createCommand, input);
  const password = generatePassword();
  const user = await insertNewUser(d, { username: cmd.username, password }, cmd.role);
  return { username: cmd.username, password, user };
}

/**
 * On a database with no users, creates `admin` with a generated password and returns it (print it once);
 * otherwise null. Two processes racing both see "no users"; the UNIQUE name lets only one win.
 */
export async function ensureFirstAdmin(
  d: Pick<CoreDeps, 'db' | 'hasher'>,
  username = 'admin',
): Promise<{ username: string; password: string } | null> {
  if ((await countUsers(d.db)) > 0) return null;
  try {
    const { password } = await createUser(d, CLI, { username, role: 'admin' });
    return { username, password };
  } catch (e) {
    if (e instanceof KilnError && e.code === 'conflict') return null;
    throw e;
  }
}

export async function listUsers(d: Pick<CoreDeps, 'db'>, actor: Actor): Promise<UserRow[]> {
  authorize(actor, 'user.list');
  return listUserRows(d.db);
}

/** The account an admin acts on: `{id}` (the console) or `{username}` (`kiln user`). */
async function targetUser(d: Pick<CoreDeps, 'db'>, input: { id?: unknown; username?: unknown }): Promise<UserRow> {
  if (input.id !== undefined) {
    const u = await findUserById(d.db, parse(Id, input.id));
    if (!u) throw notFound('No such user.');
    return u;
  }
  const name = parse(Username, input.username);
  const u = await findUserByName(d.db, name);
  if (!u) throw notFound(`No user "${name}".`);
  return u;
}

type UserRef = { id?: unknown; username?: unknown };
type AdminDeps = Pick<CoreDeps, 'db' | 'logger' | 'now'>;

/**
 * Refuses a change that would leave the site without an enabled admin (demoting or disabling the last one): nobody
 * could then reach the console. Runs first in the changing transaction, under the admins' lock, so it decides on
 * what is committed now, not on the row read before.
 */
async function keepAnAdmin(trx: Queryable, u: UserRow, what: string): Promise<void> {
  const admins = await lockActiveAdmins(trx);
  if (admins.length <= 1 && admins.includes(u.id))
    throw conflict(`${u.username} is the last admin: make another admin before you ${what} them.`);
}

/**
 * Disables or enables an account. Disabling moves the session epoch: each of the user's sessions ends at its next
 * request (every request resolves its session through sessionActor), and revokes every API token of the user in the
 * same transaction (enabling the account again does not bring them back). Never the last enabled admin.
 */
export async function setDisabled(
  d: AdminDeps,
  actor: Actor,
  input: UserRef & { disabled: boolean },
): Promise<UserRow> {
  authorize(actor, 'user.disable');
  const disabled = parse(z.boolean(), input.disabled);
  const u = await targetUser(d, input);
  await d.db.transaction(async (trx) => {
    if (disabled) await keepAnAdmin(trx, u, 'disable');
    await setUserDisabled(trx, u.id, disabled);
    const tokensRevoked = disabled
      ? await revokeUserApiTokens(trx, u.id, new Date(clockOf(d)).toISOString(), 'disabled')
      : 0;
    await recordAudit(trx, d, actor, disabled ? 'user.disable' : 'user.enable', `user:${u.id}`, {
      username: u.username,
      ...(tokensRevoked ? { tokensRevoked } : {}),
    });
  });
  d.logger.info({ ...actorLabel(actor), target: u.id, disabled }, 'user disabled state changed');
  return (await findUserById(d.db, u.id))!;
}

/** Promotes to admin or demotes to user; never the last enabled admin. Takes effect at the user's next request. */
export async function setRole(d: AdminDeps, actor: Actor, input: UserRef & { role: unknown }): Promise<UserRow> {
  authorize(actor, 'user.setRole');
  const role = parse(z.enum(['user', 'admin']), input.role);
  const u = await targetUser(d, input);
  await d.db.transaction(async (trx) => {
    if (role === 'user') await keepAnAdmin(trx, u, 'demote');
    await setUserRole(trx, u.id, role);
    await recordAudit(trx, d, actor, role === 'admin' ? 'user.promote' : 'user.demote', `user:${u.id}`, {
      username: u.username,
    });
  });
  d.logger.info({ ...actorLabel(actor), target: u.id, role }, 'user role changed');
  return (await findUserById(d.db, u.id))!;
}

/** Lets an account that registered while web.registrationApproval was on log in. Approving twice changes nothing. */
export async function approveUser(d: AdminDeps, actor: Actor, input: UserRef): Promise<UserRow> {
  authorize(actor, 'user.approve');
  const u = await targetUser(d, input);
  if (!u.approved) {
    await d.db.transaction(async (trx) => {
      await setUserApproved(trx, u.id);
      await recordAudit(trx, d, actor, 'user.approve', `user:${u.id}`, { username: u.username });
    });
    d.logger.info({ ...actorLabel(actor), target: u.id }, 'user approved');
  }
  return (await findUserById(d.db, u.id))!;
}

/** A new generated password (returned once); ends the user's sessions. */
export async function resetPassword(
  d: Pick<CoreDeps, 'db' | 'hasher' | 'logger' | 'now'>,
  actor: Actor,
  input: UserRef,
): Promise<{ username: string; password: string }> {
  authorize(actor, 'user.resetPassword');
  const u = await targetUser(d, input);
  const password = generatePassword();
  const hash = await d.hasher.hash(password);
  await d.db.transaction(async (trx) => {
    await setUserPassword(trx, u.id, hash);
    await recordAudit(trx, d, actor, 'user.resetPassword', `user:${u.id}`, { username: u.username });
  });
  d.logger.info({ ...actorLabel(actor), target: u.id }, 'user password reset');
  return { username: u.username, password };
}
