/**
 * The audit log of admin actions: who, what, on what, when, from which address. An entry is written by the use
 * case that acts, inside the transaction of the action (`recordAudit(trx, ...)`): an action that rolls back leaves
 * no entry, and no action commits without one.
 */
import { z } from 'zod';
import { insertAudit, listAudit, type AuditRow, type Queryable } from '../db/index.js';
import type { Actor } from './actor.js';
import { parse } from './commands.js';
import { clockOf, type CoreDeps } from './deps.js';
import { authorize } from './policy.js';

export type AuditAction =
  | 'user.approve'
  | 'user.disable'
  | 'user.enable'
  | 'user.promote'
  | 'user.demote'
  | 'user.resetPassword'
  | 'job.enable'
  | 'job.disable'
  | 'job.delete'
  | 'job.settings'
  | 'build.cancel'
  | 'token.issue';

/** `user:alice`, `system:cli`: the actor as the log shows it. */
export function actorName(a: Actor): string {
  if (a.kind === 'user') return `user:${a.username}`;
  if (a.kind === 'system') return `system:${a.name}`;
  return 'anonymous';
}

export async function recordAudit(
  db: Queryable,
  d: Pick<CoreDeps, 'now'>,
  actor: Actor,
  action: AuditAction,
  target: string,
  detail?: Record<string, unknown>,
): Promise<void> {
  await insertAudit(db, {
    at: new Date(clockOf(d)).toISOString(),
    actorId: actor.kind === 'user' ? actor.id : null,
    actor: actorName(actor),
    action,
    target,
    address: actor.kind === 'user' ? actor.address : undefined,
    detail,
  });
}

const listCommand = z.object({
  before: z.coerce.number().int().positive().optional().catch(undefined),
  limit: z.coerce.number().int().min(1).max(500).optional().catch(undefined),
});

/** The newest entries (100 unless told, at most 500), `before` an id to page back. */
export async function listAuditLog(d: Pick<CoreDeps, 'db'>, actor: Actor, input: unknown = {}): Promise<AuditRow[]> {
  authorize(actor, 'audit.read');
  const cmd = parse(listCommand, input);
  return listAudit(d.db, { limit: cmd.limit ?? 100, ...(cmd.before ? { beforeId: cmd.before } : {}) });
}
