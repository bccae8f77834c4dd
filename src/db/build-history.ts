/**
 * Reading builds as lists: a page of a user's (or everyone's) builds with filters (each with its trigger), the builds waiting for the
 * backend (the queue, in the order it serves them), past durations (for estimates), and the previous successful
 * build of a Dockerfile (package diffs). Reads only.
 */
import { toBuildRow, type BuildRow, type WebBuildState } from './builds.js';
import type { Queryable } from './knex.js';

export interface BuildHistoryItem extends BuildRow {
  dockerfile_name: string;
  owner: string;
}

export interface BuildFilter {
  /** Owner scope: one owner's builds, or everyone's (null, an admin). */
  ownerId: number | null;
  dockerfileId?: number;
  states?: readonly WebBuildState[];
}

function filtered(db: Queryable, f: BuildFilter) {
  const q = db('builds as b');
  if (f.ownerId !== null) void q.where('b.owner_id', f.ownerId);
  if (f.dockerfileId !== undefined) void q.where('b.dockerfile_id', f.dockerfileId);
  if (f.states?.length) void q.whereIn('b.state', f.states as WebBuildState[]);
  return q;
}

/** Newest first, with the Dockerfile's name and the owner's. */
async function historyRows(q: ReturnType<typeof filtered>, limit: number, offset = 0): Promise<BuildHistoryItem[]> {
  const rows = await q
    .join('dockerfiles as d', 'd.id', 'b.dockerfile_id')
    .join('users as u', 'u.id', 'b.owner_id')
    .select('b.*', 'd.name as dockerfile_name', 'u.username as owner')
    .orderBy('b.id', 'desc')
    .limit(limit)
    .offset(offset);
  return rows.map((r: Record<string, unknown>) => ({
    ...toBuildRow(r),
    dockerfile_name: String(r.dockerfile_name),
    owner: String(r.owner),
  }));
}

/** One numbered page of the filtered builds, and how many there are (the pages' lists). */
export async function listBuildHistory(
  db: Queryable,
  f: BuildFilter & { page: number; perPage: number },
): Promise<{ items: BuildHistoryItem[]; total: number }> {
  const [count] = await filtered(db, f).count<{ n: number | string }[]>({ n: '*' });
  const items = await historyRows(filtered(db, f), f.perPage, (f.page - 1) * f.perPage);
  return { total: Number(count?.n ?? 0), items };
}

/**
 * The filtered builds older than `beforeId` (all, without it), newest first: a keyset page (the REST API's cursor),
 * which neither skips nor repeats a build when new ones arrive between pages.
 */
export function listBuildsBefore(
  db: Queryable,
  f: BuildFilter & { beforeId?: number; limit: number },
): Promise<BuildHistoryItem[]> {
  const q = filtered(db, f);
  if (f.beforeId !== undefined) void q.where('b.id', '<', f.beforeId);
  return historyRows(q, f.limit);
}

/** Builds not started yet (requested: in Kiln; queued: at the backend), oldest first, with the owner's id. */
export async function listWaitingBuilds(
  db: Queryable,
  limit = 1000,
): Promise<Pick<BuildRow, 'id' | 'owner_id' | 'state' | 'requested_at' | 'queued_at'>[]> {
  const rows = await db('builds')
    .whereIn('state', ['requested', 'queued'])
    .orderBy('id')
    .limit(limit)
    .select('id', 'owner_id', 'state', 'requested_at', 'queued_at');
  return rows.map((r: Record<string, unknown>) => ({
    id: Number(r.id),
    owner_id: Number(r.owner_id),
    state: r.state as WebBuildState,
    requested_at: String(r.requested_at),
    queued_at: r.queued_at == null ? null : String(r.queued_at),
  }));
}

/** Builds running now (at the backend, started), by owner. */
export async function countRunningByOwner(db: Queryable): Promise<Map<number, number>> {
  const rows = await db('builds')
    .where({ state: 'running' })
    .groupBy('owner_id')
    .select('owner_id')
    .count<{ owner_id: number; n: number | string }[]>({ n: '*' });
  return new Map(rows.map((r) => [Number(r.owner_id), Number(r.n)]));
}

/** Start and end of the latest builds that ran to an end (succeeded or failed), newest first; of one Dockerfile or all. */
export async function recentRunTimes(
  db: Queryable,
  o: { dockerfileId?: number; limit?: number } = {},
): Promise<{ started_at: string; finished_at: string }[]> {
  const q = db('builds')
    .whereIn('state', ['succeeded', 'failed'])
    .whereNotNull('started_at')
    .whereNotNull('finished_at')
    .orderBy('id', 'desc')
    .limit(o.limit ?? 20)
    .select('started_at', 'finished_at');
  if (o.dockerfileId !== undefined) void q.where({ dockerfile_id: o.dockerfileId });
  return (await q).map((r: Record<string, unknown>) => ({
    started_at: String(r.started_at),
    finished_at: String(r.finished_at),
  }));
}

/** The latest succeeded build of the same Dockerfile before this one. */
export async function findPreviousSucceeded(
  db: Queryable,
  b: Pick<BuildRow, 'id' | 'dockerfile_id'>,
): Promise<BuildRow | undefined> {
  const r = await db('builds')
    .where({ dockerfile_id: b.dockerfile_id, state: 'succeeded' })
    .where('id', '<', b.id)
    .orderBy('id', 'desc')
    .first();
  return r ? toBuildRow(r) : undefined;
}
