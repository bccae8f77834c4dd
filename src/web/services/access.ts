/**
 * The one place that turns an id from a URL into an object the caller may see. Owners see their own objects,
 * admins see all; anything else is "not found", the same answer as a missing id (no existence oracle).
 */
import { findBuild, findDockerfile, type BuildRow, type DockerfileRow, type Queryable } from '../../db/index.js';
import { KilnError, notFound } from '../../shared/errors.js';
import { parseId } from '../validation.js';
import type { Actor } from './context.js';

export const ownerScope = (actor: Actor): number | null => (actor.role === 'admin' ? null : actor.id);

export async function dockerfileFor(db: Queryable, actor: Actor, rawId: unknown): Promise<DockerfileRow> {
  const df = await findDockerfile(db, parseId(rawId), ownerScope(actor));
  if (!df) throw notFound('No such Dockerfile');
  return df;
}

export async function buildFor(db: Queryable, actor: Actor, rawId: unknown): Promise<BuildRow> {
  const b = await findBuild(db, parseId(rawId), ownerScope(actor));
  if (!b) throw notFound('No such build');
  return b;
}

/** Admin-only actions (site settings such as base names): anyone else is refused, whatever the request says. */
export function assertAdmin(actor: Actor): void {
  if (actor.role !== 'admin') throw new KilnError('forbidden', 'Only an admin can do this.');
}
