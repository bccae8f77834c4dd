import {
  findBuild,
  findBuildWithDockerfile,
  type BuildRow,
  type DockerfileRow,
  type Queryable,
} from '../../db/index.js';
import { notFound } from '../../shared/errors.js';
import type { Actor } from '../actor.js';
import { Id, parse } from '../commands.js';
import type { CoreDeps } from '../deps.js';
import { mayActOn } from '../dockerfiles.js';
import { authorize, ownerScope, type OwnedAction } from '../policy.js';

/**
 * The build `rawId` names, if the actor may take `action` on it; not-yours is not_found, like a missing id. The one
 * way use cases turn an id into a build.
 */
export async function buildFor(
  db: Queryable,
  actor: Actor,
  rawId: unknown,
  action: OwnedAction = 'build.read',
): Promise<BuildRow> {
  const b = await findBuild(db, parse(Id, rawId), ownerScope(actor));
  if (!b) throw notFound('No such build');
  authorize(actor, action, b.owner_id, 'No such build');
  return b;
}

/** The build with its Dockerfile and the digest of the version it builds (the build page): one read. */
export async function buildVersion(
  d: Pick<CoreDeps, 'db'>,
  actor: Actor,
  rawId: unknown,
): Promise<{ build: BuildRow; dockerfile: DockerfileRow; versionSha: string }> {
  const found = await findBuildWithDockerfile(d.db, parse(Id, rawId), ownerScope(actor));
  if (!found) throw notFound('No such build');
  authorize(actor, 'build.read', found.build.owner_id, 'No such build');
  return { ...found, dockerfile: mayActOn(actor, found.dockerfile) };
}
