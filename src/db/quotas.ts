import { isPg, type Queryable } from './knex.js';

/** What one user's stored bytes are made of (checklist 1.8: quotas on Dockerfiles, contexts and artifacts). */
export interface StorageUse {
  dockerfiles: number;
  contexts: number;
  artifacts: number;
  /** The release store's copies of the user's releases (migration 014). */
  releases: number;
  total: number;
}

/**
 * Bytes stored for `ownerId`: every Dockerfile version's text, every stored build context tar, the artifacts of
 * every build (as the build reported them; nothing once retention dropped them) and every release's copy. Inside a transaction it includes that transaction's own inserts, which
 * is how a quota is checked after writing and before committing.
 */
export async function storageUsedBy(db: Queryable, ownerId: number): Promise<StorageUse> {
  const r = await db.raw(
    `select
       (select coalesce(sum(v.size), 0) from dockerfile_versions v join dockerfiles d on d.id = v.dockerfile_id where d.owner_id = ?) as dockerfiles,
       (select coalesce(sum(c.size), 0) from dockerfile_contexts c join dockerfiles d on d.id = c.dockerfile_id where d.owner_id = ?) as contexts,
       (select coalesce(sum(b.artifact_bytes), 0) from builds b where b.owner_id = ?) as artifacts,
       (select coalesce(sum(r.bytes), 0) from releases r where r.owner_id = ?) as releases`,
    [ownerId, ownerId, ownerId, ownerId],
  );
  // SQLite returns the rows, PostgreSQL a result with .rows
  const row = (Array.isArray(r) ? r[0] : (r as { rows: unknown[] }).rows[0]) as Record<string, unknown>;
  const use = {
    dockerfiles: Number(row.dockerfiles),
    contexts: Number(row.contexts),
    artifacts: Number(row.artifacts),
    releases: Number(row.releases),
  };
  return { ...use, total: use.dockerfiles + use.contexts + use.artifacts + use.releases };
}

/**
 * Locks the user's row until the transaction ends; call it first in the transaction. PostgreSQL: the row FOR UPDATE.
 * SQLite: a write, which takes the database's write lock (waiting through busy_timeout) before anything is read.
 * One process's pool already serialises its transactions, but another process (`kiln user token` beside `kiln
 * serve`, a `kiln worker` on the same file) may commit between this transaction's first read and its first write,
 * and that write then fails at once with SQLITE_BUSY, whatever busy_timeout says.
 */
export async function lockUserRow(trx: Queryable, userId: number): Promise<void> {
  if (isPg(trx)) await trx('users').where({ id: userId }).forUpdate().first();
  else await trx('users').where({ id: userId }).update({ id: userId });
}
