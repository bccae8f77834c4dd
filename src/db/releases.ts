/**
 * Releases (migration 014) and what retention reads and writes of builds. A release row is `pending` until the
 * worker made its files (src/core/releases), then `ready` (immutable) or `failed`; every move is a guarded update
 * from the state it leaves. Retention's marks are guarded too: a pinned build, one not finished, one a pending
 * release still copies from, is never marked.
 */
import { FINAL_STATES, toBuildRow, type BuildRow, type WebBuildState } from './builds.js';
import type { Queryable } from './knex.js';
import { nowIso } from './knex.js';

export const RELEASE_STATES = ['pending', 'ready', 'failed'] as const;
export type ReleaseState = (typeof RELEASE_STATES)[number];

/** One file of a release as its SHA256SUMS lists it (release.json included). */
export interface ReleaseFile {
  name: string;
  size: number;
  sha256: string;
}

export interface ReleaseRow {
  id: number;
  dockerfile_id: number;
  build_id: number;
  owner_id: number;
  name: string;
  state: ReleaseState;
  reason: string | null;
  /** Set when ready: the files in the release store, SHA256SUMS and its signature included. */
  files: ReleaseFile[];
  bytes: number;
  sums: string | null;
  signature: string | null;
  public_key: string | null;
  created_by: number | null;
  created_at: string;
  made_at: string | null;
}
export interface ReleaseListItem extends ReleaseRow {
  dockerfile_name: string;
  owner: string;
}

function norm(r: Record<string, unknown>): ReleaseRow {
  let files: ReleaseFile[];
  try {
    files = r.files == null ? [] : (JSON.parse(String(r.files)) as ReleaseFile[]);
  } catch {
    files = [];
  }
  return {
    ...(r as unknown as ReleaseRow),
    id: Number(r.id),
    dockerfile_id: Number(r.dockerfile_id),
    build_id: Number(r.build_id),
    owner_id: Number(r.owner_id),
    bytes: Number(r.bytes ?? 0),
    created_by: r.created_by == null ? null : Number(r.created_by),
    files,
  };
}

const listed = (r: Record<string, unknown>): ReleaseListItem => ({
  ...norm(r),
  dockerfile_name: String(r.dockerfile_name),
  owner: String(r.owner),
});

function withNames(db: Queryable) {
  return db('releases as r')
    .join('dockerfiles as d', 'd.id', 'r.dockerfile_id')
    .join('users as u', 'u.id', 'r.owner_id')
    .select('r.*', 'd.name as dockerfile_name', 'u.username as owner');
}

/** By id and owner, or by id alone (`ownerId` null: an admin, the system). */
export async function findRelease(
  db: Queryable,
  id: number,
  ownerId: number | null,
): Promise<ReleaseListItem | undefined> {
  const q = withNames(db).where('r.id', id);
  if (ownerId !== null) q.andWhere('r.owner_id', ownerId);
  const r = (await q.first()) as Record<string, unknown> | undefined;
  return r ? listed(r) : undefined;
}

export async function findReleaseByName(
  db: Queryable,
  dockerfileId: number,
  name: string,
): Promise<ReleaseRow | undefined> {
  const r = (await db('releases').where({ dockerfile_id: dockerfileId, name }).first()) as
    Record<string, unknown> | undefined;
  return r ? norm(r) : undefined;
}

/** Releases the owner scope may see, newest first, optionally of one Dockerfile, one build or one name. */
export async function listReleases(
  db: Queryable,
  o: { ownerId: number | null; dockerfileId?: number; buildId?: number; name?: string; limit?: number },
): Promise<ReleaseListItem[]> {
  const q = withNames(db)
    .orderBy('r.id', 'desc')
    .limit(o.limit ?? 200);
  if (o.ownerId !== null) q.where('r.owner_id', o.ownerId);
  if (o.dockerfileId !== undefined) q.where('r.dockerfile_id', o.dockerfileId);
  if (o.buildId !== undefined) q.where('r.build_id', o.buildId);
  if (o.name !== undefined) q.where('r.name', o.name);
  return ((await q) as Array<Record<string, unknown>>).map(listed);
}

export async function insertRelease(
  db: Queryable,
  r: { dockerfileId: number; buildId: number; ownerId: number; name: string; bytes: number; createdBy: number | null },
): Promise<ReleaseRow> {
  const [row] = await db('releases')
    .insert({
      dockerfile_id: r.dockerfileId,
      build_id: r.buildId,
      owner_id: r.ownerId,
      name: r.name,
      state: 'pending',
      bytes: r.bytes,
      created_by: r.createdBy,
      created_at: nowIso(),
    })
    .returning('*');
  return norm(row as Record<string, unknown>);
}

/** A failed release made again, from `buildId` (a name never made is not yet immutable). Guarded: only from failed. */
export async function retryRelease(
  db: Queryable,
  id: number,
  r: { buildId: number; bytes: number; createdBy: number | null },
): Promise<boolean> {
  const n = await db('releases').where({ id, state: 'failed' }).update({
    build_id: r.buildId,
    bytes: r.bytes,
    created_by: r.createdBy,
    state: 'pending',
    reason: null,
    created_at: nowIso(),
  });
  return Number(n) > 0;
}

/** pending -> ready with what was made, in one update; false when it was not pending (made by another worker). */
export async function completeRelease(
  db: Queryable,
  id: number,
  r: { files: ReleaseFile[]; sums: string; signature: string; publicKey: string },
): Promise<boolean> {
  const n = await db('releases')
    .where({ id, state: 'pending' })
    .update({
      state: 'ready',
      files: JSON.stringify(r.files),
      bytes: r.files.reduce((s, f) => s + f.size, 0),
      sums: r.sums,
      signature: r.signature,
      public_key: r.publicKey,
      made_at: nowIso(),
    });
  return Number(n) > 0;
}

/** pending -> failed with the reason (nothing of it is stored: it holds no bytes). */
export async function failRelease(db: Queryable, id: number, reason: string): Promise<boolean> {
  const n = await db('releases').where({ id, state: 'pending' }).update({ state: 'failed', reason, bytes: 0 });
  return Number(n) > 0;
}

/** Releases the worker still has to make. */
export async function listPendingReleases(db: Queryable, limit = 100): Promise<number[]> {
  const rows = (await db('releases').where({ state: 'pending' }).orderBy('id').limit(limit).select('id')) as Array<{
    id: number | string;
  }>;
  return rows.map((r) => Number(r.id));
}

/** The ids of a Dockerfile's releases, and whether one is still being made (its deletion waits for that). */
export async function releasesOfDockerfile(
  db: Queryable,
  dockerfileId: number,
): Promise<{ ids: number[]; pending: boolean }> {
  const rows = (await db('releases').where({ dockerfile_id: dockerfileId }).select('id', 'state')) as Array<{
    id: number | string;
    state: string;
  }>;
  return { ids: rows.map((r) => Number(r.id)), pending: rows.some((r) => r.state === 'pending') };
}

// ------------------------------------------------------------------------------------------------ retention

/** Pins (or unpins) a build; pinning only a succeeded build whose artifacts are still there. Returns whether it changed. */
export async function setPinned(db: Queryable, id: number, pinned: boolean): Promise<boolean> {
  const q = db('builds').where({ id, pinned: !pinned });
  if (pinned) q.where({ state: 'succeeded' }).whereNull('artifacts_expired_at');
  const n = await q.update({ pinned, pinned_at: pinned ? nowIso() : null, updated_at: nowIso() });
  return Number(n) > 0;
}

export async function countPins(db: Queryable, ownerId: number): Promise<number> {
  const r = await db('builds').where({ owner_id: ownerId, pinned: true }).count<{ n: number | string }[]>({ n: '*' });
  return Number(r[0]?.n ?? 0);
}

/** What retention weighs of a build. `started`: when it started at the backend (else was queued, requested). */
export interface RetentionBuild {
  id: number;
  state: WebBuildState;
  backend_build: number;
  pinned: boolean;
  started: string;
  /** A release is being copied from it. */
  releasing: boolean;
}

/**
 * The Dockerfiles that may have builds to discard: more than `keepBuilds` builds at the backend whose artifacts
 * are still kept, or one of them started before `before` (either rule off: 0 / undefined).
 */
export async function dockerfilesToTrim(db: Queryable, o: { keepBuilds: number; before?: string }): Promise<number[]> {
  const rules: string[] = [];
  const bindings: Array<string | number> = [];
  if (o.keepBuilds > 0) {
    rules.push('count(*) > ?');
    bindings.push(o.keepBuilds);
  }
  if (o.before) {
    rules.push('min(coalesce(started_at, queued_at, requested_at)) < ?');
    bindings.push(o.before);
  }
  if (!rules.length) return [];
  const rows = (await db('builds')
    .whereNotNull('backend_build')
    .whereNull('artifacts_expired_at')
    .groupBy('dockerfile_id')
    .havingRaw(rules.join(' or '), bindings)
    .select('dockerfile_id')) as Array<{ dockerfile_id: number | string }>;
  return rows.map((r) => Number(r.dockerfile_id));
}

/** One Dockerfile's builds at the backend whose artifacts are still kept, newest first (by backend number). */
export async function retentionBuilds(db: Queryable, dockerfileId: number): Promise<RetentionBuild[]> {
  const rows = (await db('builds as b')
    .where('b.dockerfile_id', dockerfileId)
    .whereNotNull('b.backend_build')
    .whereNull('b.artifacts_expired_at')
    .select(
      'b.id',
      'b.state',
      'b.backend_build',
      'b.pinned',
      db.raw('coalesce(b.started_at, b.queued_at, b.requested_at) as started'),
      db.raw("exists (select 1 from releases r where r.build_id = b.id and r.state = 'pending') as releasing"),
    )
    .orderBy('b.backend_build', 'desc')
    .orderBy('b.id', 'desc')) as Array<Record<string, unknown>>;
  const bool = (v: unknown) => v === true || Number(v) === 1;
  return rows.map((r) => ({
    id: Number(r.id),
    state: r.state as WebBuildState,
    backend_build: Number(r.backend_build),
    pinned: bool(r.pinned),
    started: String(r.started),
    releasing: bool(r.releasing),
  }));
}

/**
 * Marks a build's artifacts expired (they stop being served and counted) unless, by now, it is pinned, not final,
 * or copied by a pending release: one guarded update. The caller enqueues build.discard in the same transaction.
 */
export async function expireArtifacts(db: Queryable, id: number): Promise<BuildRow | undefined> {
  const n = await db('builds')
    .where({ id, pinned: false })
    .whereNull('artifacts_expired_at')
    .whereIn('state', FINAL_STATES as WebBuildState[])
    .whereNotExists(
      db('releases').where('releases.build_id', id).where('releases.state', 'pending').select(db.raw('1')),
    )
    .update({ artifacts_expired_at: nowIso(), artifact_bytes: 0, updated_at: nowIso() });
  if (Number(n) === 0) return undefined;
  const r = (await db('builds').where({ id }).first()) as Record<string, unknown>;
  return toBuildRow(r);
}
