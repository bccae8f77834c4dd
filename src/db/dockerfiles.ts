import { createHash } from 'node:crypto';
import type { Queryable } from './knex.js';
import { nowIso } from './knex.js';

export interface DockerfileRow {
  id: number;
  owner_id: number;
  name: string;
  current_version_id: number | null;
  created_at: string;
  updated_at: string;
}
export interface DockerfileVersionRow {
  id: number;
  dockerfile_id: number;
  content: string;
  sha256: string;
  size: number;
  created_at: string;
}
export interface DockerfileListItem extends DockerfileRow { owner: string; size: number | null; builds: number }

const normDf = (r: Record<string, unknown>): DockerfileRow => ({
  ...(r as unknown as DockerfileRow),
  id: Number(r.id), owner_id: Number(r.owner_id), current_version_id: r.current_version_id == null ? null : Number(r.current_version_id),
});
const normVer = (r: Record<string, unknown>): DockerfileVersionRow => ({
  ...(r as unknown as DockerfileVersionRow), id: Number(r.id), dockerfile_id: Number(r.dockerfile_id), size: Number(r.size),
});

export const sha256Hex = (text: string): string => createHash('sha256').update(text, 'utf8').digest('hex');

/**
 * Reads a Dockerfile visible to the caller: by id and owner, or by id alone for an admin (`ownerId` null).
 * Not-yours and missing look the same to the caller.
 */
export async function findDockerfile(db: Queryable, id: number, ownerId: number | null): Promise<DockerfileRow | undefined> {
  const q = db('dockerfiles').where({ id });
  if (ownerId !== null) q.andWhere({ owner_id: ownerId });
  const r = await q.first();
  return r ? normDf(r) : undefined;
}

export async function listDockerfiles(db: Queryable, ownerId: number | null): Promise<DockerfileListItem[]> {
  const q = db('dockerfiles as d')
    .join('users as u', 'u.id', 'd.owner_id')
    .leftJoin('dockerfile_versions as v', 'v.id', 'd.current_version_id')
    .select('d.*', 'u.username as owner', 'v.size as size')
    .select(db.raw('(select count(*) from builds b where b.dockerfile_id = d.id) as builds'))
    .orderBy('d.name').orderBy('d.id');
  if (ownerId !== null) q.where('d.owner_id', ownerId);
  const rows = await q;
  return rows.map((r: Record<string, unknown>) => ({ ...normDf(r), owner: String(r.owner), size: r.size == null ? null : Number(r.size), builds: Number(r.builds) }));
}

export async function countDockerfiles(db: Queryable, ownerId: number): Promise<number> {
  const r = await db('dockerfiles').where({ owner_id: ownerId }).count<{ n: number | string }[]>({ n: '*' });
  return Number(r[0]?.n ?? 0);
}

/** Inserts a Dockerfile and its first version. Call inside a transaction. */
export async function insertDockerfile(db: Queryable, d: { ownerId: number; name: string; content: string }): Promise<{ dockerfile: DockerfileRow; version: DockerfileVersionRow }> {
  const now = nowIso();
  const [df] = await db('dockerfiles').insert({ owner_id: d.ownerId, name: d.name, current_version_id: null, created_at: now, updated_at: now }).returning('*');
  const dockerfile = normDf(df);
  const version = await insertVersion(db, dockerfile.id, d.content);
  await db('dockerfiles').where({ id: dockerfile.id }).update({ current_version_id: version.id });
  return { dockerfile: { ...dockerfile, current_version_id: version.id }, version };
}

/** Adds a version (or reuses the current one when the content is unchanged) and makes it current. */
export async function updateDockerfileContent(db: Queryable, dockerfileId: number, content: string): Promise<DockerfileVersionRow> {
  const df = await db('dockerfiles').where({ id: dockerfileId }).first();
  if (df?.current_version_id != null) {
    const cur = await getVersion(db, Number(df.current_version_id));
    if (cur && cur.sha256 === sha256Hex(content)) return cur;
  }
  const version = await insertVersion(db, dockerfileId, content);
  await db('dockerfiles').where({ id: dockerfileId }).update({ current_version_id: version.id, updated_at: nowIso() });
  return version;
}

async function insertVersion(db: Queryable, dockerfileId: number, content: string): Promise<DockerfileVersionRow> {
  const [v] = await db('dockerfile_versions')
    .insert({ dockerfile_id: dockerfileId, content, sha256: sha256Hex(content), size: Buffer.byteLength(content, 'utf8'), created_at: nowIso() })
    .returning('*');
  return normVer(v);
}

export async function getVersion(db: Queryable, id: number): Promise<DockerfileVersionRow | undefined> {
  const r = await db('dockerfile_versions').where({ id }).first();
  return r ? normVer(r) : undefined;
}

export async function deleteDockerfile(db: Queryable, id: number): Promise<void> {
  await db('dockerfiles').where({ id }).delete();
}

/**
 * Dockerfiles the glue has been given (at least one build was dispatched): the ones whose jobs must exist in the
 * backend. The reconciler recreates any that the backend lost, from the current version.
 */
export async function listDispatchedDockerfiles(db: Queryable): Promise<DockerfileRow[]> {
  const rows = await db('dockerfiles as d')
    .whereExists(db('builds as b').whereRaw('b.dockerfile_id = d.id').whereNotNull('b.backend_build'))
    .whereNotNull('d.current_version_id')
    .select('d.*')
    .orderBy('d.id');
  return rows.map((r: Record<string, unknown>) => normDf(r));
}
