import type { Queryable } from './knex.js';
import { nowIso } from './knex.js';
import { normDf, type DockerfileRow } from './dockerfiles.js';
import { selectRow, selectRows } from './statements.js';

export const BUILD_TRIGGERS = ['manual', 'schedule', 'api', 'ssh', 'push'] as const;
export type BuildTrigger = (typeof BUILD_TRIGGERS)[number];

/**
 * `verifying`: the backend says the build succeeded and the web is hashing what it received (src/web/services/
 * attest.ts); only then, and only if the builder's SHA256SUMS agrees, is the build `succeeded`.
 */
export const WEB_BUILD_STATES = [
  'requested',
  'queued',
  'running',
  'verifying',
  'succeeded',
  'failed',
  'cancelled',
  'skipped',
] as const;
export type WebBuildState = (typeof WEB_BUILD_STATES)[number];
/** States that count against the queued-builds quota and that the reconciler keeps polling. */
export const ACTIVE_STATES: readonly WebBuildState[] = ['requested', 'queued', 'running'];
/** `skipped`: a scheduled build of a git Dockerfile whose commit had not changed since its last success (`reason` says). */
export const FINAL_STATES: readonly WebBuildState[] = ['succeeded', 'failed', 'cancelled', 'skipped'];
export const isFinal = (s: WebBuildState): boolean => FINAL_STATES.includes(s);

/** An artifact as the backend listed it; `sha256` (and then `size`) is the web's own count once it has verified it. */
export interface BuildArtifact {
  name: string;
  size: number;
  sha256?: string;
}
export interface BuildProgress {
  stage: string;
  percent: number;
  message?: string;
}

export interface BuildRow {
  id: number;
  dockerfile_id: number;
  version_id: number;
  owner_id: number;
  idempotency_key: string;
  state: WebBuildState;
  backend_build: number | null;
  reason: string | null;
  progress: BuildProgress | null;
  artifacts: BuildArtifact[];
  image_sha256: string | null;
  dispatch_attempts: number;
  /** Times the build was requeued after an interruption (0 or 1), and what interrupted it. */
  requeues: number;
  requeue_reason: string | null;
  /**
   * What started it: the Build button (`manual`), the JSON API (`api`), the SSH door (`ssh`), a timer (`schedule`:
   * the backend's, or Kiln's own for a git Dockerfile), or a new commit on the branch a git Dockerfile follows (`push`: webhook or poll).
   */
  trigger: BuildTrigger;
  /** The commit a build of a git Dockerfile builds (pinned before dispatch); null for other Dockerfiles. */
  git_commit: string | null;
  /** Kept from retention by its user (migration 014). */
  pinned: boolean;
  pinned_at: string | null;
  /** When retention dropped its artifacts: they are no longer served (the list stays, for the record). */
  artifacts_expired_at: string | null;
  requested_at: string;
  queued_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  updated_at: string;
}
export interface BuildListItem extends BuildRow {
  dockerfile_name: string;
  owner: string;
  version_sha256: string;
}

function parseJson<T>(v: unknown, fallback: T): T {
  if (v == null) return fallback;
  try {
    return JSON.parse(String(v)) as T;
  } catch {
    return fallback;
  }
}

function norm(r: Record<string, unknown>): BuildRow {
  return {
    ...(r as unknown as BuildRow),
    id: Number(r.id),
    dockerfile_id: Number(r.dockerfile_id),
    version_id: Number(r.version_id),
    owner_id: Number(r.owner_id),
    backend_build: r.backend_build == null ? null : Number(r.backend_build),
    dispatch_attempts: Number(r.dispatch_attempts ?? 0),
    requeues: Number(r.requeues ?? 0),
    requeue_reason: r.requeue_reason == null ? null : String(r.requeue_reason),
    git_commit: r.git_commit == null ? null : String(r.git_commit),
    pinned: r.pinned === true || Number(r.pinned) === 1,
    pinned_at: r.pinned_at == null ? null : String(r.pinned_at),
    artifacts_expired_at: r.artifacts_expired_at == null ? null : String(r.artifacts_expired_at),
    progress: parseJson<BuildProgress | null>(r.progress, null),
    artifacts: parseJson<BuildArtifact[]>(r.artifacts, []),
  };
}

/** A raw `builds` row as a BuildRow (for the other build queries: build-history.ts). */
export const toBuildRow = (r: Record<string, unknown>): BuildRow => norm(r);

/** By id and owner, or by id alone for an admin (`ownerId` null). */
export async function findBuild(db: Queryable, id: number, ownerId: number | null): Promise<BuildRow | undefined> {
  const r =
    ownerId === null
      ? await selectRow(db, 'SELECT * FROM builds WHERE id = ?', [id])
      : await selectRow(db, 'SELECT * FROM builds WHERE id = ? AND owner_id = ?', [id, ownerId]);
  return r ? norm(r) : undefined;
}

/** The rows of these builds (missing ids are simply absent), in one statement per 500 ids. */
export async function findBuildsByIds(db: Queryable, ids: readonly number[]): Promise<Map<number, BuildRow>> {
  const out = new Map<number, BuildRow>();
  for (let i = 0; i < ids.length; i += 500) {
    for (const r of await db('builds').whereIn('id', ids.slice(i, i + 500))) {
      const b = norm(r as Record<string, unknown>);
      out.set(b.id, b);
    }
  }
  return out;
}

/**
 * A build (by id and owner, or by id alone for an admin) with its Dockerfile and the digest of the version it
 * builds, in one statement (the build page).
 */
export async function findBuildWithDockerfile(
  db: Queryable,
  id: number,
  ownerId: number | null,
): Promise<{ build: BuildRow; dockerfile: DockerfileRow; versionSha: string } | undefined> {
  const sql = `SELECT b.*, d.owner_id AS df_owner_id, d.name AS df_name, d.current_version_id AS df_current_version_id,
      d.created_at AS df_created_at, d.updated_at AS df_updated_at, d.deleting_at AS df_deleting_at,
      v.sha256 AS version_sha256
    FROM builds b JOIN dockerfiles d ON d.id = b.dockerfile_id LEFT JOIN dockerfile_versions v ON v.id = b.version_id
    WHERE b.id = ?${ownerId === null ? '' : ' AND b.owner_id = ?'}`;
  const r = await selectRow(db, sql, ownerId === null ? [id] : [id, ownerId]);
  if (!r) return undefined;
  const {
    df_owner_id: owner_id,
    df_name: name,
    df_current_version_id: current_version_id,
    df_created_at: created_at,
    df_updated_at: updated_at,
    df_deleting_at: deleting_at,
    version_sha256,
    ...b
  } = r;
  return {
    build: norm(b),
    dockerfile: normDf({
      id: b.dockerfile_id,
      owner_id,
      name,
      current_version_id,
      created_at,
      updated_at,
      deleting_at,
    }),
    versionSha: version_sha256 == null ? '' : String(version_sha256),
  };
}

export async function findBuildByKey(db: Queryable, key: string): Promise<BuildRow | undefined> {
  const r = await db('builds').where({ idempotency_key: key }).first();
  return r ? norm(r) : undefined;
}

export async function listBuildsOfDockerfile(
  db: Queryable,
  dockerfileId: number,
  limit = 50,
): Promise<BuildListItem[]> {
  return listWhere(db, 'b.dockerfile_id = ?', [dockerfileId], 'DESC', limit);
}

/** What a list of recent builds shows of each (the dashboard, the SSH door's `list`). */
export type BuildSummary = Pick<
  BuildListItem,
  | 'id'
  | 'dockerfile_id'
  | 'dockerfile_name'
  | 'owner_id'
  | 'owner'
  | 'state'
  | 'reason'
  | 'trigger'
  | 'requested_at'
  | 'started_at'
  | 'finished_at'
>;

/**
 * An owner's latest builds (everyone's for `ownerId` null), newest first: only the columns a list shows. A whole
 * row carries its progress and artifacts as JSON, which the list would copy out of SQLite and parse for nothing.
 */
export async function listBuildSummaries(
  db: Queryable,
  ownerId: number | null,
  limit: number,
): Promise<BuildSummary[]> {
  const rows = await selectRows(
    db,
    `SELECT b.id, b.dockerfile_id, d.name AS dockerfile_name, b.owner_id, u.username AS owner, b.state, b.reason,
       b."trigger", b.requested_at, b.started_at, b.finished_at
     FROM builds b JOIN dockerfiles d ON d.id = b.dockerfile_id JOIN users u ON u.id = b.owner_id
     ${ownerId === null ? '' : 'WHERE b.owner_id = ?'} ORDER BY b.id DESC LIMIT ?`,
    ownerId === null ? [limit] : [ownerId, limit],
  );
  const text = (v: unknown) => (v == null ? null : String(v));
  return rows.map((r) => ({
    id: Number(r.id),
    dockerfile_id: Number(r.dockerfile_id),
    dockerfile_name: String(r.dockerfile_name),
    owner_id: Number(r.owner_id),
    owner: String(r.owner),
    state: r.state as WebBuildState,
    reason: text(r.reason),
    trigger: r.trigger as BuildTrigger,
    requested_at: String(r.requested_at),
    started_at: text(r.started_at),
    finished_at: text(r.finished_at),
  }));
}

/** Every owner's builds in `states` (the admin's queue), oldest request first. */
export async function listBuildsInStates(
  db: Queryable,
  states: readonly WebBuildState[],
  limit = 500,
): Promise<BuildListItem[]> {
  return listWhere(db, `b.state IN (${states.map(() => '?').join(', ')})`, states, 'ASC', limit);
}

/** Builds with their Dockerfile's name, owner's name and version digest; `where` is SQL of this module's own. */
async function listWhere(
  db: Queryable,
  where: string,
  params: readonly unknown[],
  order: 'ASC' | 'DESC',
  limit: number,
): Promise<BuildListItem[]> {
  const rows = await selectRows(
    db,
    `SELECT b.*, d.name AS dockerfile_name, u.username AS owner, v.sha256 AS version_sha256
     FROM builds b JOIN dockerfiles d ON d.id = b.dockerfile_id JOIN users u ON u.id = b.owner_id
       JOIN dockerfile_versions v ON v.id = b.version_id
     WHERE ${where} ORDER BY b.id ${order} LIMIT ?`,
    [...params, limit],
  );
  return rows.map((r) => ({
    ...norm(r),
    dockerfile_name: String(r.dockerfile_name),
    owner: String(r.owner),
    version_sha256: String(r.version_sha256),
  }));
}

export async function countActiveBuilds(db: Queryable, ownerId: number): Promise<number> {
  const r = await db('builds')
    .where({ owner_id: ownerId })
    .whereIn('state', ACTIVE_STATES as WebBuildState[])
    .count<{ n: number | string }[]>({ n: '*' });
  return Number(r[0]?.n ?? 0);
}

export async function insertBuild(
  db: Queryable,
  b: {
    dockerfileId: number;
    versionId: number;
    ownerId: number;
    key: string;
    trigger?: BuildTrigger;
    /** A build of a git Dockerfile asked for one commit (a push): the fetch takes exactly that one. */
    gitCommit?: string;
  },
): Promise<BuildRow> {
  const now = nowIso();
  const [row] = await db('builds')
    .insert({
      dockerfile_id: b.dockerfileId,
      version_id: b.versionId,
      owner_id: b.ownerId,
      idempotency_key: b.key,
      trigger: b.trigger ?? 'manual',
      git_commit: b.gitCommit ?? null,
      state: 'requested',
      dispatch_attempts: 0,
      requested_at: now,
      updated_at: now,
    })
    .returning('*');
  return norm(row);
}

export interface BuildUpdate {
  state?: WebBuildState;
  backend_build?: number;
  reason?: string | null;
  progress?: BuildProgress | null;
  artifacts?: BuildArtifact[];
  image_sha256?: string | null;
  queued_at?: string | null;
  started_at?: string | null;
  finished_at?: string | null;
  /** Set once, by the fetch of a git Dockerfile's build (with the version it made). */
  version_id?: number;
  git_commit?: string;
}

/**
 * Updates a build only while it is in one of `fromStates`: a final state is never overwritten, and two
 * concurrent refreshers cannot move a build backwards. Returns whether a row changed.
 */
export async function updateBuild(
  db: Queryable,
  id: number,
  fromStates: readonly WebBuildState[],
  u: BuildUpdate,
): Promise<boolean> {
  const patch: Record<string, unknown> = { updated_at: nowIso() };
  for (const [k, v] of Object.entries(u)) {
    if (v === undefined) continue;
    patch[k] = k === 'progress' || k === 'artifacts' ? (v === null ? null : JSON.stringify(v)) : v;
  }
  // Kept beside the JSON so storage quotas are one SUM (src/db/quotas.ts).
  if (u.artifacts) patch.artifact_bytes = u.artifacts.reduce((n, a) => n + (a.size > 0 ? a.size : 0), 0);
  const n = await db('builds')
    .where({ id })
    .whereIn('state', fromStates as WebBuildState[])
    .update(patch);
  return Number(n) > 0;
}

/**
 * Puts a build that the backend lost back to `requested`, once: only while it is still active on that backend
 * build and was never requeued, so concurrent refreshers (several web instances) requeue it at most once. Returns
 * whether this call did it.
 */
export async function requeueBuild(
  db: Queryable,
  id: number,
  fromBackendBuild: number,
  reason: string,
): Promise<boolean> {
  const n = await db('builds')
    .where({ id, backend_build: fromBackendBuild, requeues: 0 })
    .whereIn('state', ['queued', 'running'])
    .update({
      state: 'requested',
      backend_build: null,
      progress: null,
      artifacts: null,
      queued_at: null,
      started_at: null,
      reason: null,
      dispatch_attempts: 0,
      requeues: 1,
      requeue_reason: reason,
      updated_at: nowIso(),
    });
  return Number(n) > 0;
}

/**
 * Whether a `requested` build may go to the backend under a cap of `cap` builds per user there: fewer of its owner's
 * other builds are queued or running at the backend or being handed over (requested, a dispatch attempt made), and
 * none of the owner's older requested builds still waits for its first attempt.
 */
export async function isDispatchTurn(
  db: Queryable,
  b: Pick<BuildRow, 'id' | 'owner_id'>,
  cap: number,
): Promise<boolean> {
  const r = await db('builds')
    .where({ owner_id: b.owner_id })
    .whereNot({ id: b.id })
    .where((q) => {
      void q.whereIn('state', ['queued', 'running']).orWhere((q2) => {
        void q2.where({ state: 'requested' }).where('dispatch_attempts', '>', 0);
      });
    })
    .count<{ n: number | string }[]>({ n: '*' });
  if (Number(r[0]?.n ?? 0) >= cap) return false;
  const older = await db('builds')
    .where({ owner_id: b.owner_id, state: 'requested', dispatch_attempts: 0 })
    .where('id', '<', b.id)
    .first('id');
  return !older;
}

export async function bumpDispatchAttempts(db: Queryable, id: number): Promise<void> {
  await db('builds')
    .where({ id })
    .update({ dispatch_attempts: db.raw('dispatch_attempts + 1'), updated_at: nowIso() });
}

/** Ended builds whose dispatch may have reached the backend (no backend number known): to withdraw. */
export async function listBuildsToWithdraw(db: Queryable, limit = 100): Promise<BuildRow[]> {
  const rows = await db('builds')
    .whereIn('state', ['cancelled', 'failed'])
    .whereNull('backend_build')
    .where('dispatch_attempts', '>', 0)
    .orderBy('id')
    .limit(limit);
  return rows.map((r: Record<string, unknown>) => norm(r));
}

/** Nothing of this build is outstanding at the backend any more. */
export async function clearDispatchAttempts(db: Queryable, id: number): Promise<void> {
  await db('builds').where({ id }).update({ dispatch_attempts: 0, updated_at: nowIso() });
}

/**
 * Builds the worker still has to move (not final: requested, queued, running, verifying), in id order from
 * `afterId`, one page at a time.
 */
export async function listBuildsToReconcile(
  db: Queryable,
  o: { afterId?: number; limit?: number } = {},
): Promise<BuildRow[]> {
  const rows = await db('builds')
    .whereIn('state', [...ACTIVE_STATES, 'verifying'])
    .where('id', '>', o.afterId ?? 0)
    .orderBy('id')
    .limit(o.limit ?? 100);
  return rows.map((r: Record<string, unknown>) => norm(r));
}

/** Builds whose artifacts the web has to verify and sign (see src/core/builds/attest.ts). */
export async function listBuildsToAttest(db: Queryable, limit = 20): Promise<BuildRow[]> {
  const rows = await db('builds').where({ state: 'verifying' }).orderBy('id').limit(limit);
  return rows.map((r: Record<string, unknown>) => norm(r));
}
