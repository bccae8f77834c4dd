/**
 * What the admin console reads and writes beyond users and builds (migration 010): the audit log, and the site-wide
 * views of builds (the queue, counts by state) that the console and the metrics show.
 */
import type { Queryable } from './knex.js';
import { ACTIVE_STATES, WEB_BUILD_STATES, type WebBuildState } from './builds.js';

export interface AuditRow {
  id: number;
  at: string;
  actor_id: number | null;
  /** `user:<name>` or `system:<name>`: who acted, readable after the account is gone. */
  actor: string;
  action: string;
  /** What was acted on: `user:5`, `job:7`, `build:12`. */
  target: string;
  address: string | null;
  detail: Record<string, unknown> | null;
}

export interface AuditEntry {
  at: string;
  actorId: number | null;
  actor: string;
  action: string;
  target: string;
  address?: string | undefined;
  detail?: Record<string, unknown> | undefined;
}

/** Appends one entry; call it with the transaction of the action it records, so both commit or neither. */
export async function insertAudit(db: Queryable, e: AuditEntry): Promise<void> {
  await db('audit_log').insert({
    at: e.at,
    actor_id: e.actorId,
    actor: e.actor.slice(0, 80),
    action: e.action,
    target: e.target.slice(0, 200),
    address: e.address ? e.address.slice(0, 64) : null,
    detail: e.detail ? JSON.stringify(e.detail) : null,
  });
}

/** Newest first; `beforeId` pages back. */
export async function listAudit(db: Queryable, o: { limit?: number; beforeId?: number } = {}): Promise<AuditRow[]> {
  const q = db('audit_log')
    .orderBy('id', 'desc')
    .limit(o.limit ?? 100);
  if (o.beforeId) q.where('id', '<', o.beforeId);
  const rows = await q;
  return rows.map((r: Record<string, unknown>) => ({
    ...(r as unknown as AuditRow),
    id: Number(r.id),
    actor_id: r.actor_id == null ? null : Number(r.actor_id),
    detail: r.detail == null ? null : (JSON.parse(String(r.detail)) as Record<string, unknown>),
  }));
}

/** Every Kiln Dockerfile among `ids`, with its owner: which backend jobs Kiln knows. */
export async function dockerfilesByIds(
  db: Queryable,
  ids: readonly number[],
): Promise<Map<number, { name: string; owner: string }>> {
  const out = new Map<number, { name: string; owner: string }>();
  if (ids.length === 0) return out;
  const rows = await db('dockerfiles as d')
    .join('users as u', 'u.id', 'd.owner_id')
    .whereIn('d.id', ids as number[])
    .select('d.id', 'd.name', 'u.username');
  for (const r of rows as Array<{ id: number | string; name: string; username: string }>)
    out.set(Number(r.id), { name: r.name, owner: r.username });
  return out;
}

/** Builds per state, every state present (0 when none): one grouped query. */
export async function countBuildsByState(db: Queryable): Promise<Record<WebBuildState, number>> {
  const out = Object.fromEntries(WEB_BUILD_STATES.map((s) => [s, 0])) as Record<WebBuildState, number>;
  const rows = await db('builds')
    .select('state')
    .count<{ state: string; n: number | string }[]>({ n: '*' })
    .groupBy('state');
  for (const r of rows)
    if ((WEB_BUILD_STATES as readonly string[]).includes(r.state)) out[r.state as WebBuildState] = Number(r.n);
  return out;
}

/**
 * The waiting builds (requested or queued: not running yet): how many, and when the oldest was requested. The
 * metrics' queue depth and wait.
 */
export async function queueStats(db: Queryable): Promise<{ depth: number; oldestRequestedAt: string | null }> {
  const r = await db('builds')
    .whereIn('state', ['requested', 'queued'])
    .count<{ n: number | string }[]>({ n: '*' })
    .min({ oldest: 'requested_at' });
  const row = r[0] as unknown as { n: number | string; oldest: string | null } | undefined;
  return { depth: Number(row?.n ?? 0), oldestRequestedAt: row?.oldest ?? null };
}

export const QUEUE_STATES: readonly WebBuildState[] = [...ACTIVE_STATES, 'verifying'];
