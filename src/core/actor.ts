/**
 * Who is asking. Every use case takes an Actor as its first argument and hands it, with the action and the object,
 * to the one permission policy (policy.ts). The front doors make actors: a web session, an API token or an SSH key
 * at the SSH door makes a `user`, the worker and `kiln user` act as `system`, a visitor who has not logged in is
 * `anonymous`.
 */
import type { Role } from '../db/index.js';

/** What an API token may be used for (tokens.ts); the policy maps every action to the scope it needs. */
export const SCOPES = ['read', 'build', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

export interface UserActor {
  kind: 'user';
  id: number;
  username: string;
  role: Role;
  /** How the user proved who they are: a login session, an API token, or an SSH key at the SSH door. */
  via: 'session' | 'token' | 'ssh';
  /** For `via: 'token'`: the token's scopes (the policy refuses any action beyond them) and its id. */
  scopes?: readonly Scope[];
  tokenId?: number;
  /** The client's address as the front door saw it (the audit log's "from where"), when it has one. */
  address?: string;
}
export interface SystemActor {
  kind: 'system';
  /** The part of Kiln acting on its own: the task worker, or the machine's operator through `kiln user`. */
  name: 'worker' | 'cli';
}
export interface AnonymousActor {
  kind: 'anonymous';
}

export type Actor = UserActor | SystemActor | AnonymousActor;

export const userActor = (
  u: { id: number; username: string; role: Role },
  via: UserActor['via'] = 'session',
  address?: string,
): UserActor => ({ kind: 'user', id: u.id, username: u.username, role: u.role, via, ...(address ? { address } : {}) });

export const WORKER: SystemActor = Object.freeze({ kind: 'system', name: 'worker' });
export const CLI: SystemActor = Object.freeze({ kind: 'system', name: 'cli' });
export const ANONYMOUS: AnonymousActor = Object.freeze({ kind: 'anonymous' });

/** An id and name for logs: never a secret. */
export function actorLabel(a: Actor): Record<string, unknown> {
  if (a.kind === 'user') return a.tokenId === undefined ? { user: a.id } : { user: a.id, token: a.tokenId };
  if (a.kind === 'system') return { system: a.name };
  return { anonymous: true };
}
