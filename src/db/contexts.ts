import type { Queryable } from './knex.js';
import { nowIso } from './knex.js';

/** One entry of a stored context as the Dockerfile page lists it. */
export interface ContextListingEntry {
  name: string;
  type: 'file' | 'directory' | 'symlink';
  size: number;
  linkname?: string;
}

/** A validated, re-packed context ready to store. */
export interface NewContext {
  tar: Buffer;
  sha256: string;
  listing: ContextListingEntry[];
}

/** A stored context without its bytes (what pages and the API show). */
export interface ContextMeta {
  id: number;
  dockerfile_id: number;
  sha256: string;
  size: number;
  entries: number;
  listing: ContextListingEntry[];
  created_at: string;
}

/** What an edit does to the context: keep the current one, drop it, or use a new one. */
export type ContextChange = { kind: 'keep' } | { kind: 'remove' } | { kind: 'set'; context: NewContext };

const META_COLUMNS = ['id', 'dockerfile_id', 'sha256', 'size', 'entries', 'listing', 'created_at'];

const normMeta = (r: Record<string, unknown>): ContextMeta => ({
  id: Number(r.id),
  dockerfile_id: Number(r.dockerfile_id),
  sha256: String(r.sha256),
  size: Number(r.size),
  entries: Number(r.entries),
  listing: JSON.parse(String(r.listing)) as ContextListingEntry[],
  created_at: String(r.created_at),
});

export async function insertContext(db: Queryable, dockerfileId: number, c: NewContext): Promise<number> {
  const [row] = await db('dockerfile_contexts')
    .insert({
      dockerfile_id: dockerfileId,
      sha256: c.sha256,
      size: c.tar.length,
      entries: c.listing.length,
      listing: JSON.stringify(c.listing),
      tar: c.tar,
      created_at: nowIso(),
    })
    .returning('id');
  return Number(typeof row === 'object' && row !== null ? (row as { id: unknown }).id : row);
}

export async function getContextMeta(db: Queryable, id: number): Promise<ContextMeta | undefined> {
  const r = await db('dockerfile_contexts').where({ id }).first(META_COLUMNS);
  return r ? normMeta(r) : undefined;
}

/** The stored tar bytes (only the job spec needs them). */
export async function getContextTar(db: Queryable, id: number): Promise<Buffer | undefined> {
  const r = await db('dockerfile_contexts').where({ id }).first('tar');
  if (!r) return undefined;
  return Buffer.isBuffer(r.tar) ? r.tar : Buffer.from(r.tar as Uint8Array);
}

export async function findContextBySha(
  db: Queryable,
  dockerfileId: number,
  sha256: string,
): Promise<number | undefined> {
  const r = await db('dockerfile_contexts').where({ dockerfile_id: dockerfileId, sha256 }).orderBy('id').first('id');
  return r ? Number(r.id) : undefined;
}
