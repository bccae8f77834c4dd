import { createHash } from 'node:crypto';
import type { Queryable } from './knex.js';
import { nowIso } from './knex.js';
import { findContextBySha, insertContext, type ContextChange, type NewContext } from './contexts.js';
import { selectRow, selectRows } from './statements.js';

export interface DockerfileRow {
  id: number;
  owner_id: number;
  name: string;
  current_version_id: number | null;
  created_at: string;
  updated_at: string;
  /** Set once its deletion was confirmed: the job is being deleted through the glue, then the rows go. */
  deleting_at: string | null;
}
export interface DockerfileVersionRow {
  id: number;
  dockerfile_id: number;
  content: string;
  sha256: string;
  size: number;
  /** The build context this version is built with (dockerfile_contexts.id), or null for the Dockerfile alone. */
  context_id: number | null;
  /** Where it came from when Kiln fetched it from git (migration 012); null for pasted or uploaded versions. */
  source: VersionSource | null;
  created_at: string;
}

/** A version's git origin (the protocol's GitSource, stored as JSON): repository, ref, commit, paths. */
export interface VersionSource {
  type: 'git';
  url: string;
  ref: string;
  commit: string;
  path: string;
  context: string;
}
export interface DockerfileListItem extends DockerfileRow {
  owner: string;
  size: number | null;
  builds: number;
}

export const normDf = (r: Record<string, unknown>): DockerfileRow => ({
  ...(r as unknown as DockerfileRow),
  id: Number(r.id),
  owner_id: Number(r.owner_id),
  current_version_id: r.current_version_id == null ? null : Number(r.current_version_id),
  deleting_at: r.deleting_at == null ? null : String(r.deleting_at),
});
function parseSource(v: unknown): VersionSource | null {
  if (v == null) return null;
  try {
    return JSON.parse(String(v)) as VersionSource;
  } catch {
    return null;
  }
}
/** The stored text of a source: keys in one order, so equal sources are equal text (and one version). */
const sourceText = (s: VersionSource): string =>
  JSON.stringify({ type: s.type, url: s.url, ref: s.ref, commit: s.commit, path: s.path, context: s.context });

const normVer = (r: Record<string, unknown>): DockerfileVersionRow => ({
  ...(r as unknown as DockerfileVersionRow),
  id: Number(r.id),
  dockerfile_id: Number(r.dockerfile_id),
  size: Number(r.size),
  context_id: r.context_id == null ? null : Number(r.context_id),
  source: parseSource(r.source),
});

export const sha256Hex = (text: string): string => createHash('sha256').update(text, 'utf8').digest('hex');

/**
 * Reads a Dockerfile visible to the caller: by id and owner, or by id alone for an admin (`ownerId` null).
 * Not-yours and missing look the same to the caller.
 */
export async function findDockerfile(
  db: Queryable,
  id: number,
  ownerId: number | null,
): Promise<DockerfileRow | undefined> {
  const r =
    ownerId === null
      ? await selectRow(db, 'SELECT * FROM dockerfiles WHERE id = ?', [id])
      : await selectRow(db, 'SELECT * FROM dockerfiles WHERE id = ? AND owner_id = ?', [id, ownerId]);
  return r ? normDf(r) : undefined;
}

/** One owner's Dockerfile by name (names are unique per owner). */
export async function findDockerfileByName(
  db: Queryable,
  ownerId: number,
  name: string,
): Promise<DockerfileRow | undefined> {
  const r = await db('dockerfiles').where({ owner_id: ownerId, name }).first();
  return r ? normDf(r) : undefined;
}

/**
 * Dockerfiles by name (then id: names repeat across owners). `page` makes it a keyset page: those after `after`
 * in that order, at most `limit` (the REST API's cursor).
 */
export async function listDockerfiles(
  db: Queryable,
  ownerId: number | null,
  page?: { after?: { name: string; id: number }; limit: number },
): Promise<DockerfileListItem[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (ownerId !== null) {
    where.push('d.owner_id = ?');
    params.push(ownerId);
  }
  const after = page?.after;
  if (after) {
    where.push('(d.name > ? OR (d.name = ? AND d.id > ?))');
    params.push(after.name, after.name, after.id);
  }
  if (page) params.push(page.limit);
  const rows = await selectRows(
    db,
    `SELECT d.*, u.username AS owner, v.size AS size,
       (SELECT count(*) FROM builds b WHERE b.dockerfile_id = d.id) AS builds
     FROM dockerfiles d JOIN users u ON u.id = d.owner_id LEFT JOIN dockerfile_versions v ON v.id = d.current_version_id
     ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY d.name, d.id${page ? ' LIMIT ?' : ''}`,
    params,
  );
  return rows.map((r) => ({
    ...normDf(r),
    owner: String(r.owner),
    size: r.size == null ? null : Number(r.size),
    builds: Number(r.builds),
  }));
}

/** The owner's Dockerfiles for the count quota: one being deleted no longer counts (its deletion is under way). */
export async function countDockerfiles(db: Queryable, ownerId: number): Promise<number> {
  const r = await db('dockerfiles')
    .where({ owner_id: ownerId })
    .whereNull('deleting_at')
    .count<{ n: number | string }[]>({ n: '*' });
  return Number(r[0]?.n ?? 0);
}

/**
 * Inserts a Dockerfile without content yet: one from git, whose first version the worker's fetch makes. Call inside a
 * transaction (the caller adds its source).
 */
export async function insertDockerfileRow(db: Queryable, d: { ownerId: number; name: string }): Promise<DockerfileRow> {
  const now = nowIso();
  const [df] = await db('dockerfiles')
    .insert({ owner_id: d.ownerId, name: d.name, current_version_id: null, created_at: now, updated_at: now })
    .returning('*');
  return normDf(df);
}

/** Inserts a Dockerfile and its first version (with its build context, if any). Call inside a transaction. */
export async function insertDockerfile(
  db: Queryable,
  d: { ownerId: number; name: string; content: string; context?: NewContext },
): Promise<{ dockerfile: DockerfileRow; version: DockerfileVersionRow }> {
  const dockerfile = await insertDockerfileRow(db, d);
  const contextId = d.context ? await insertContext(db, dockerfile.id, d.context) : null;
  const version = await insertVersion(db, dockerfile.id, d.content, contextId);
  await db('dockerfiles').where({ id: dockerfile.id }).update({ current_version_id: version.id });
  return { dockerfile: { ...dockerfile, current_version_id: version.id }, version };
}

/**
 * Adds a version (or reuses the current one when neither the content nor the context changes) and makes it current.
 * The context is kept unless `change` says otherwise; a re-upload of the same bytes reuses the stored context.
 * Call inside a transaction (a new context and its version are written together).
 */
export async function updateDockerfileContent(
  db: Queryable,
  dockerfileId: number,
  content: string,
  change: ContextChange = { kind: 'keep' },
): Promise<DockerfileVersionRow> {
  const df = await db('dockerfiles').where({ id: dockerfileId }).first();
  const cur = df?.current_version_id != null ? await getVersion(db, Number(df.current_version_id)) : undefined;
  const curContext = cur?.context_id ?? null;
  let contextId: number | null = curContext;
  if (change.kind === 'remove') contextId = null;
  if (change.kind === 'set') {
    // The same bytes uploaded again (or an earlier context restored) reuse the stored row.
    const same = await findContextBySha(db, dockerfileId, change.context.sha256);
    contextId = same ?? (await insertContext(db, dockerfileId, change.context));
  }
  // A version fetched from git is not the same version as pasted text that happens to match it.
  if (cur && cur.sha256 === sha256Hex(content) && cur.context_id === contextId && !cur.source) return cur;
  const version = await insertVersion(db, dockerfileId, content, contextId);
  await db('dockerfiles').where({ id: dockerfileId }).update({ current_version_id: version.id, updated_at: nowIso() });
  return version;
}

/**
 * Stores what a fetch from git made (the Dockerfile, its context, where both came from) as the Dockerfile's current
 * version, reusing an identical earlier version (same text, context and source) and context. Call inside a
 * transaction. Returns the version and whether it was new.
 */
export async function putFetchedVersion(
  db: Queryable,
  dockerfileId: number,
  v: { content: string; context?: NewContext; source: VersionSource },
): Promise<{ version: DockerfileVersionRow; created: boolean }> {
  let contextId: number | null = null;
  if (v.context)
    contextId =
      (await findContextBySha(db, dockerfileId, v.context.sha256)) ??
      (await insertContext(db, dockerfileId, v.context));
  const same = await db('dockerfile_versions')
    .where({ dockerfile_id: dockerfileId, sha256: sha256Hex(v.content), source: sourceText(v.source) })
    .where((q) => (contextId === null ? q.whereNull('context_id') : q.where({ context_id: contextId })))
    .orderBy('id', 'desc')
    .first();
  const version = same ? normVer(same) : await insertVersion(db, dockerfileId, v.content, contextId, v.source);
  await db('dockerfiles')
    .where({ id: dockerfileId })
    .whereNot({ current_version_id: version.id })
    .orWhere((q) => q.where({ id: dockerfileId }).whereNull('current_version_id'))
    .update({ current_version_id: version.id, updated_at: nowIso() });
  return { version, created: !same };
}

async function insertVersion(
  db: Queryable,
  dockerfileId: number,
  content: string,
  contextId: number | null,
  source: VersionSource | null = null,
): Promise<DockerfileVersionRow> {
  const [v] = await db('dockerfile_versions')
    .insert({
      dockerfile_id: dockerfileId,
      content,
      sha256: sha256Hex(content),
      size: Buffer.byteLength(content, 'utf8'),
      context_id: contextId,
      source: source ? sourceText(source) : null,
      created_at: nowIso(),
    })
    .returning('*');
  return normVer(v);
}

export async function getVersion(db: Queryable, id: number): Promise<DockerfileVersionRow | undefined> {
  const r = await db('dockerfile_versions').where({ id }).first();
  return r ? normVer(r) : undefined;
}

/**
 * Dockerfiles the glue has been given (at least one build was dispatched, or job settings were saved) and that are
 * not being deleted: the ones whose jobs must exist in the backend. The reconciler recreates any that the backend
 * lost, from the current version.
 */
export async function listDispatchedDockerfiles(db: Queryable): Promise<DockerfileRow[]> {
  const rows = await db('dockerfiles as d')
    .where((q) =>
      q
        .whereExists(db('builds as b').whereRaw('b.dockerfile_id = d.id').whereNotNull('b.backend_build'))
        .orWhereExists(db('job_settings as j').whereRaw('j.dockerfile_id = d.id').where('j.synced_revision', '>', 0)),
    )
    .whereNotNull('d.current_version_id')
    .whereNull('d.deleting_at')
    .select('d.*')
    .orderBy('d.id');
  return rows.map((r: Record<string, unknown>) => normDf(r));
}
