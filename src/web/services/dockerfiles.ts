import {
  countDockerfiles, getContextMeta, getVersion, insertDockerfile, isUniqueViolation, listBuildsOfDockerfile, listDockerfiles, updateDockerfileContent,
  type BuildListItem, type ContextChange, type ContextMeta, type Db, type DockerfileListItem, type DockerfileRow, type DockerfileVersionRow,
} from '../../db/index.js';
import { contextFromFiles, contextFromTar } from '../build-context.js';
import { checkDockerfile, kilnBaseConfigs } from '../../dockerfile/policy.js';
import { KilnError, conflict } from '../../shared/errors.js';
import { checkDockerfileText, parseDockerfileName } from '../validation.js';
import { dockerfileFor, ownerScope } from './access.js';
import type { Actor, Services } from './context.js';
import { policyBaseNames } from './base-names.js';
import { storeWithinQuota } from './storage.js';

/**
 * The text rules, then the SDK's Dockerfile policy with this site's settings (sdk.bases, sdk.baseNames and the
 * site's own base names, sdk.allowRemoteAdd), the bases taken as Kiln makes them: a Dockerfile the build would
 * refuse is refused here, before anything is stored, with the findings and their lines (`policy_violation`,
 * detail = findings).
 */
async function acceptableDockerfile(s: Services, raw: string): Promise<string> {
  const content = checkDockerfileText(raw, s.config.web.maxDockerfileBytes);
  const { bases, allowRemoteAdd } = s.config.sdk;
  checkDockerfile(content, { bases, baseNames: await policyBaseNames(s), allowRemoteAdd, baseConfigs: kilnBaseConfigs(bases) });
  return content;
}

/**
 * Stores a new Dockerfile. `content` has already been decoded (see validation.decodeDockerfile); it is checked
 * again here so no caller can store text that skipped the rules. Quota checks (count and bytes) and insert share
 * one transaction, with the owner's row locked on PostgreSQL (SQLite serialises writers already), so parallel
 * uploads cannot overshoot a quota (services/storage.ts).
 */
export async function createDockerfile(s: Services, actor: Actor, input: { name: unknown; content: string; context?: ContextUpload }): Promise<DockerfileRow> {
  const name = parseDockerfileName(input.name);
  const content = await acceptableDockerfile(s, input.content);
  const change = await contextChange(input.context);
  if (change.kind === 'remove') throw new KilnError('invalid_input', 'A new Dockerfile has no build context to remove.');
  const context = change.kind === 'set' ? change.context : undefined;
  try {
    return await storeWithinQuota(s, actor.id, Buffer.byteLength(content) + (context?.tar.length ?? 0), async (trx) => {
      const n = await countDockerfiles(trx, actor.id);
      if (n >= s.config.web.quotaDockerfiles) {
        throw conflict(`You have reached your limit of ${s.config.web.quotaDockerfiles} Dockerfiles; delete one first.`);
      }
      const existing = await trx('dockerfiles').where({ owner_id: actor.id, name }).first();
      if (existing) throw conflict(`You already have a Dockerfile named "${name}".`);
      const { dockerfile } = await insertDockerfile(trx, { ownerId: actor.id, name, content, context });
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

/**
 * A build context as uploaded: one .tar, several flat files, or (on edit) an instruction to drop the current one.
 * Absent means "keep what the Dockerfile has" (nothing, for a new one).
 */
export type ContextUpload =
  | { kind: 'tar'; data: Buffer }
  | { kind: 'files'; files: Array<{ name: string; data: Buffer }> }
  | { kind: 'remove' };

/** Validates and re-packs an upload before any transaction starts: a refused context stores nothing. */
async function contextChange(u: ContextUpload | undefined): Promise<ContextChange> {
  if (!u) return { kind: 'keep' };
  if (u.kind === 'remove') return { kind: 'remove' };
  return { kind: 'set', context: u.kind === 'tar' ? await contextFromTar(u.data) : await contextFromFiles(u.files) };
}

export interface DockerfileView { dockerfile: DockerfileRow; version: DockerfileVersionRow; context: ContextMeta | null; builds: BuildListItem[] }

export async function getDockerfileView(db: Db, actor: Actor, rawId: unknown): Promise<DockerfileView> {
  const dockerfile = await dockerfileFor(db, actor, rawId);
  const version = dockerfile.current_version_id == null ? undefined : await getVersion(db, dockerfile.current_version_id);
  if (!version) throw new KilnError('internal', 'Dockerfile has no content', { detail: { dockerfile: dockerfile.id } });
  const builds = await listBuildsOfDockerfile(db, dockerfile.id);
  const context = version.context_id == null ? null : (await getContextMeta(db, version.context_id)) ?? null;
  return { dockerfile, version, context, builds };
}

/**
 * Saves new content and/or context as a new version (unchanged content and context keep the current one). The
 * context is kept unless a new one is uploaded or removal is asked for. Earlier builds keep their version.
 */
export async function updateDockerfile(s: Services, actor: Actor, rawId: unknown, rawContent: string, context?: ContextUpload): Promise<DockerfileVersionRow> {
  const df = await dockerfileFor(s.db, actor, rawId);
  const content = await acceptableDockerfile(s, rawContent);
  const change = await contextChange(context);
  const bytes = Buffer.byteLength(content) + (change.kind === 'set' ? change.context.tar.length : 0);
  return storeWithinQuota(s, df.owner_id, bytes, (trx) => updateDockerfileContent(trx, df.id, content, change));
}
