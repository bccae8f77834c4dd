/**
 * The permission policy: the one place that says who may do what. Use cases call `authorize` with the actor, the
 * action and, for an object that has an owner, its owner; nothing else in Kiln compares roles or owner ids.
 *
 * Rules:
 * - anonymous visitors may register and log in, nothing else (`unauthenticated`, 401);
 * - a user may act on what they own; another owner's object is `not_found` (404), the same answer as a missing id,
 *   so ids are no existence oracle;
 * - admins may act on every object, and alone may take the admin actions (`forbidden`, 403, for a user);
 * - the system (the task worker, `kiln user` on the machine) may take every action that needs no user identity;
 * - a user acting through an API token may take only the actions its scopes cover (`forbidden` otherwise), and is an
 *   admin only with the `admin` scope: an admin's `build` token sees and acts on the admin's own objects alone.
 */
import { BlockList, isIP } from 'node:net';
import { KilnError } from '../shared/errors.js';
import type { Actor, Scope, UserActor } from './actor.js';

/** Actions on one owner's objects. */
export const OWNED = [
  'dockerfile.read',
  'dockerfile.update',
  'dockerfile.delete',
  'job.update',
  'build.request',
  'build.read',
  'build.cancel',
  /** Promote a build to a named release (releases/), pin or unpin it (retention.ts). */
  'build.promote',
  'build.pin',
  'release.read',
] as const;
/** Actions of a logged-in user on their own account, or making something they will own: they need a user. */
const SELF = [
  'account.read',
  'account.changePassword',
  'account.sshKeys',
  'dockerfile.create',
  'token.manage',
] as const;
/** Listings, scoped by `ownerScope`: a user's own objects, everyone's for admins and the system. */
const LISTS = ['dockerfile.list', 'build.list', 'release.list'] as const;
/** What anyone may do. */
const PUBLIC = ['user.register', 'user.login'] as const;
/**
 * Admins (and the system) only: other people's accounts, the site's settings, the backend's jobs and queue, the
 * site's health, audit log and metrics.
 */
const ADMIN = [
  'user.create',
  'user.list',
  'user.approve',
  'user.disable',
  'user.setRole',
  'user.resetPassword',
  'settings.manage',
  'job.list',
  'job.manage',
  'queue.read',
  'site.health',
  'audit.read',
  'metrics.read',
  /** A token for a named user (`kiln user token`). */
  'token.issue',
] as const;

export type OwnedAction = (typeof OWNED)[number];
export type Action =
  OwnedAction | (typeof SELF)[number] | (typeof LISTS)[number] | (typeof PUBLIC)[number] | (typeof ADMIN)[number];

export type Decision = 'allow' | 'unauthenticated' | 'hidden' | 'forbidden';

const has = (list: readonly string[], a: Action) => list.includes(a);

/** The decision, without throwing. `owner` is the owner id of the object acted on, for owned actions. */
export function decide(actor: Actor, action: Action, owner?: number): Decision {
  if (has(PUBLIC, action)) return 'allow';
  if (actor.kind === 'anonymous') return 'unauthenticated';
  if (actor.kind === 'system') return has(SELF, action) ? 'forbidden' : 'allow';
  if (!tokenAllows(actor, action)) return 'forbidden';
  const admin = actsAsAdmin(actor);
  if (has(ADMIN, action)) return admin ? 'allow' : 'forbidden';
  if (has(SELF, action) || has(LISTS, action)) return 'allow';
  if (owner === undefined) throw new KilnError('internal', `policy: ${action} needs the object's owner`);
  return admin || owner === actor.id ? 'allow' : 'hidden';
}

/**
 * The scope a token needs for each action. Actions not named here are never taken with a token: a password change,
 * managing tokens (a leaked token cannot mint others), issuing tokens for other users.
 */
const SCOPE_OF: Partial<Record<Action, Scope>> = {
  'account.read': 'read',
  'dockerfile.read': 'read',
  'dockerfile.list': 'read',
  'build.read': 'read',
  'build.list': 'read',
  'dockerfile.create': 'build',
  'dockerfile.update': 'build',
  'dockerfile.delete': 'build',
  'job.update': 'build',
  'build.request': 'build',
  'build.cancel': 'build',
  'build.promote': 'build',
  'build.pin': 'build',
  'release.read': 'read',
  'release.list': 'read',
  ...Object.fromEntries(ADMIN.filter((a) => a !== 'token.issue').map((a) => [a, 'admin'])),
};

/** Whether scopes cover `needed`: `build` and `admin` include `read` (a pipeline that builds also polls). */
export const scopesCover = (scopes: readonly Scope[], needed: Scope): boolean =>
  scopes.includes(needed) || (needed === 'read' && scopes.length > 0);

/** True unless the actor is a token whose scopes do not cover the action. */
function tokenAllows(actor: UserActor, action: Action): boolean {
  if (actor.via !== 'token') return true;
  const needed = SCOPE_OF[action];
  return needed !== undefined && scopesCover(actor.scopes ?? [], needed);
}

/** An admin's powers need the role, and through a token also the `admin` scope. */
function actsAsAdmin(actor: UserActor): boolean {
  return actor.role === 'admin' && (actor.via !== 'token' || (actor.scopes ?? []).includes('admin'));
}

/**
 * A door's check before it looks at anything (the REST API's routes each name the scope they need), so a token
 * beyond its scope gets 403 whatever the object; the use cases check their actions again.
 */
export function authorizeScope(actor: Actor, scope: Scope): void {
  if (actor.kind !== 'user' || actor.via !== 'token' || scopesCover(actor.scopes ?? [], scope)) return;
  throw scopeRefusal(actor, scope);
}

const scopeRefusal = (actor: UserActor, needed: Scope | undefined): KilnError =>
  new KilnError(
    'forbidden',
    needed
      ? `This API token's scopes (${(actor.scopes ?? []).join(', ') || 'none'}) do not allow this: it needs the ${needed} scope.`
      : 'This cannot be done with an API token; use the web site.',
  );

export function can(actor: Actor, action: Action, owner?: number): boolean {
  return decide(actor, action, owner) === 'allow';
}

/** Throws the error the decision maps to: 401, 404 (not yours looks like missing) or 403. */
export function authorize(actor: Actor, action: Action, owner?: number, what = 'Not found'): void {
  switch (decide(actor, action, owner)) {
    case 'allow':
      return;
    case 'unauthenticated':
      throw new KilnError('unauthenticated', 'Please log in.');
    case 'hidden':
      throw new KilnError('not_found', what);
    case 'forbidden':
      if (actor.kind === 'user' && !tokenAllows(actor, action)) throw scopeRefusal(actor, SCOPE_OF[action]);
      throw new KilnError(
        'forbidden',
        has(ADMIN, action) ? 'Only an admin can do this.' : 'You are not allowed to do that.',
      );
  }
}

/**
 * The owner whose objects a listing or lookup may return: the actor's own id, or null for "every owner" (admins,
 * the system). Lookups by id use it too, so another owner's object is simply not found.
 */
export function ownerScope(actor: Actor): number | null {
  if (actor.kind === 'user') return actsAsAdmin(actor) ? null : actor.id;
  if (actor.kind === 'system') return null;
  throw new KilnError('unauthenticated', 'Please log in.');
}

/** The logged-in user behind an action that needs one (their account, an object they will own). */
export function requireUser(actor: Actor): UserActor {
  if (actor.kind === 'user') return actor;
  if (actor.kind === 'anonymous') throw new KilnError('unauthenticated', 'Please log in.');
  throw new KilnError('forbidden', 'This needs a user.');
}

const allowLists = new WeakMap<readonly string[], BlockList>();

/** `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or `addr/n` as a BlockList (config checks the entries: metricsAllowEntry). */
function blockListOf(entries: readonly string[]): BlockList {
  let bl = allowLists.get(entries);
  if (!bl) {
    bl = new BlockList();
    for (const e of entries) {
      const [addr, bits] = e.split('/') as [string, string | undefined];
      const family = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
      if (bits === undefined) bl.addAddress(addr, family);
      else bl.addSubnet(addr, Number(bits), family);
    }
    allowLists.set(entries, bl);
  }
  return bl;
}

/**
 * The metrics: admins, or a scraper (any actor, usually anonymous) whose address is in `allow` (web.metricsAllow).
 * `address` is the client address as the web determined it (trust proxy: the exact hop count).
 */
export function mayReadMetrics(actor: Actor, address: string | undefined, allow: readonly string[]): boolean {
  if (can(actor, 'metrics.read')) return true;
  if (!address || allow.length === 0) return false;
  const a = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
  const family = isIP(a);
  if (family === 0) return false;
  return blockListOf(allow).check(a, family === 6 ? 'ipv6' : 'ipv4');
}
