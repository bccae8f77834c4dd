import {
  countDockerfiles, getVersion, insertDockerfile, isPg, isUniqueViolation, listBuildsOfDockerfile, listDockerfiles, updateDockerfileContent,
  type BuildListItem, type Db, type DockerfileListItem, type DockerfileRow, type DockerfileVersionRow,
} from '../../db/index.js';
import { KilnError, conflict } from '../../shared/errors.js';
import { checkDockerfileText, parseDockerfileName } from '../validation.js';
import { dockerfileFor, ownerScope } from './access.js';
import type { Actor, Services } from './context.js';

/**
 * Stores a new Dockerfile. `content` has already been decoded (see validation.decodeDockerfile); it is checked
 * again here so no caller can store text that skipped the rules. Quota check and insert share one transaction,
 * with the owner's row locked on PostgreSQL (SQLite serialises writers already), so parallel uploads cannot
 * overshoot the quota.
 */
export async function createDockerfile(s: Services, actor: Actor, input: { name: unknown; content: string }): Promise<DockerfileRow> {
  const name = parseDockerfileName(input.name);
  const content = checkDockerfileText(input.content, s.config.web.maxDockerfileBytes);
  try {
    return await s.db.transaction(async (trx) => {
      if (isPg(s.db)) await trx('users').where({ id: actor.id }).forUpdate().first();
      const n = await countDockerfiles(trx, actor.id);
      if (n >= s.config.web.quotaDockerfiles) {
        throw conflict(`You have reached your limit of ${s.config.web.quotaDockerfiles} Dockerfiles; delete one first.`);
      }
      const existing = await trx('dockerfiles').where({ owner_id: actor.id, name }).first();
      if (existing) throw conflict(`You already have a Dockerfile named "${name}".`);
      const { dockerfile } = await insertDockerfile(trx, { ownerId: actor.id, name, content });
      return dockerfile;
    });
  } catch (e) {
    if (isUniqueViolation(e)) throw conflict(`You already have a Dockerfile named "${name}".`);
    throw e;
  }
}

export function listDockerfilesFor(db: Db, actor: Actor): Promise<DockerfileListItem[]> {
  return listDockerfiles(db, ownerScope(actor));
}

export interface DockerfileView { dockerfile: DockerfileRow; version: DockerfileVersionRow; builds: BuildListItem[] }

export async function getDockerfileView(db: Db, actor: Actor, rawId: unknown): Promise<DockerfileView> {
  const dockerfile = await dockerfileFor(db, actor, rawId);
  const version = dockerfile.current_version_id == null ? undefined : await getVersion(db, dockerfile.current_version_id);
  if (!version) throw new KilnError('internal', 'Dockerfile has no content', { detail: { dockerfile: dockerfile.id } });
  const builds = await listBuildsOfDockerfile(db, dockerfile.id);
  return { dockerfile, version, builds };
}

/** Saves new content as a new version (unchanged content keeps the current one). Earlier builds keep theirs. */
export async function updateDockerfile(s: Services, actor: Actor, rawId: unknown, rawContent: string): Promise<DockerfileVersionRow> {
  const df = await dockerfileFor(s.db, actor, rawId);
  const content = checkDockerfileText(rawContent, s.config.web.maxDockerfileBytes);
  return s.db.transaction((trx) => updateDockerfileContent(trx, df.id, content));
}
