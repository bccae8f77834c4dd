/**
 * Dockerfiles: create, edit (a new version), read and list. Each use case takes the actor and the raw command,
 * parses the command (commands.ts), asks the policy (policy.ts), and reaches the database only through src/db.
 */
import { z } from 'zod';
import type { Knex } from 'knex';
import {
  countDockerfiles,
  deleteGitSource,
  getGitSource,
  insertDockerfileRow,
  findDockerfile,
  findDockerfileByName,
  getContextMeta,
  getJobSettings,
  getVersion,
  hasDispatchedBuild,
  insertDockerfile,
  isUniqueViolation,
  listBuildsOfDockerfile,
  listDockerfiles,
  markDockerfileDeleting,
  nowIso,
  saveJobSettings,
  updateBuild,
  updateDockerfileContent,
  activeBuildsOf,
  type BuildListItem,
  type ContextChange,
  type ContextMeta,
  type DockerfileListItem,
  type DockerfileRow,
  type DockerfileVersionRow,
  type Queryable,
} from '../db/index.js';
import { checkDockerfile, kilnBaseConfigs } from '../dockerfile/policy.js';
import { KilnError, conflict, isKilnError, notFound } from '../shared/errors.js';
import type { Actor } from './actor.js';
import { policyBaseNames } from './base-names.js';
import { contextFromFiles, contextFromTar, gunzipContext } from './build-context.js';
import { DockerfileName, Id, dockerfileText, parse } from './commands.js';
import type { CoreDeps } from './deps.js';
import { actorLabel } from './actor.js';
import { authorize, ownerScope, requireUser, type OwnedAction } from './policy.js';
import { storeWithinQuota } from './storage.js';
import { PageLimit, decodeCursor, encodeCursor } from './cursor.js';
import { checkSettings, saveSettings } from './jobs/index.js';
import { effectiveSettings, type JobSettings } from './jobs/settings.js';
import { dockerfileSubject, enqueue, wake } from './tasks/queue.js';
import { parseSource, saveSource, sourceView, type GitSourceView } from './git/index.js';

/**
 * The Dockerfile `rawId` names, if the actor may take `action` on it; not-yours is not_found, like a missing id.
 * The one way use cases turn an id into a Dockerfile.
 */
export async function dockerfileFor(
  db: Queryable,
  actor: Actor,
  rawId: unknown,
  action: OwnedAction = 'dockerfile.read',
): Promise<DockerfileRow> {
  const id = parse(Id, rawId);
  return mayActOn(actor, await findDockerfile(db, id, ownerScope(actor)), action);
}

/** `df` (read with `ownerScope(actor)` or checked against it) if the actor may take `action` on it. */
export function mayActOn(
  actor: Actor,
  df: DockerfileRow | undefined,
  action: OwnedAction = 'dockerfile.read',
): DockerfileRow {
  const scope = ownerScope(actor);
  if (!df || (scope !== null && df.owner_id !== scope)) throw notFound('No such Dockerfile');
  authorize(actor, action, df.owner_id, 'No such Dockerfile');
  // Being deleted: it can still be looked at (the page says deletion is pending), not changed or built.
  if (df.deleting_at && action !== 'dockerfile.read' && action !== 'dockerfile.delete')
    throw conflict('This Dockerfile is being deleted.');
  return df;
}

/**
 * The actor's own Dockerfile named `rawName` (names are unique per owner; an admin names their own too), if the
 * actor may take `action` on it. The REST API names Dockerfiles this way.
 */
export async function dockerfileByName(
  db: Queryable,
  actor: Actor,
  rawName: unknown,
  action: OwnedAction = 'dockerfile.read',
): Promise<DockerfileRow> {
  const name = parse(DockerfileName, rawName);
  const df = await findDockerfileByName(db, requireUser(actor).id, name);
  if (!df) throw notFound(`You have no Dockerfile named "${name}".`);
  return dockerfileFor(db, actor, String(df.id), action);
}

/**
 * A build context as uploaded: one .tar (or .tar.gz: `targz`), several flat files, or (on edit) an instruction to
 * drop the current one. Absent means "keep what the Dockerfile has" (nothing, for a new one).
 */
export type ContextUpload =
  | { kind: 'tar' | 'targz'; data: Buffer }
  | { kind: 'files'; files: Array<{ name: string; data: Buffer }> }
  | { kind: 'remove' };

const contextUpload = z.custom<ContextUpload>((v) => typeof v === 'object' && v !== null && 'kind' in v).optional();

/**
 * The SDK's Dockerfile policy with this site's settings (sdk.bases, sdk.baseNames and the site's own base names,
 * sdk.allowRemoteAdd), the bases taken as Kiln makes them: a Dockerfile the build would refuse is refused here,
 * before anything is stored, with the findings and their lines (`policy_violation`, detail = findings).
 */
export async function policyChecked(d: CoreDeps, content: string): Promise<string> {
  const { bases, allowRemoteAdd } = d.config.sdk;
  checkDockerfile(content, {
    bases,
    baseNames: await policyBaseNames(d),
    allowRemoteAdd,
    baseConfigs: kilnBaseConfigs(bases),
  });
  return content;
}

/** Validates and re-packs an upload before any transaction starts: a refused context stores nothing. */
async function contextChange(u: ContextUpload | undefined): Promise<ContextChange> {
  if (!u) return { kind: 'keep' };
  if (u.kind === 'remove') return { kind: 'remove' };
  if (u.kind === 'files') return { kind: 'set', context: await contextFromFiles(u.files) };
  return { kind: 'set', context: await contextFromTar(u.kind === 'tar' ? u.data : await gunzipContext(u.data)) };
}

const createCommand = (max: number) =>
  z.object({ name: DockerfileName, content: dockerfileText(max), context: contextUpload });

/**
 * Stores a new Dockerfile owned by the actor: pasted or uploaded `content` (decoded by the front door, see
 * validation.decodeDockerfile; the text rules run again here so no door can store text that skipped them), or a git
 * `source` (git/index.ts: stored with no content yet; the worker's git.fetch makes its first version). Quota checks
 * (count and bytes) and insert share one transaction, with the owner's row locked on PostgreSQL (SQLite serialises
 * writers already), so parallel uploads cannot overshoot a quota (storage.ts).
 */
export async function createDockerfile(
  d: CoreDeps,
  actor: Actor,
  input: { name: unknown; content?: unknown; context?: ContextUpload; source?: unknown },
): Promise<DockerfileRow> {
  authorize(actor, 'dockerfile.create');
  const owner = requireUser(actor);
  if (input.source !== undefined) return createFromGit(d, owner.id, input);
  const cmd = parse(createCommand(d.config.web.maxDockerfileBytes), input);
  const content = await policyChecked(d, cmd.content);
  const change = await contextChange(cmd.context);
  if (change.kind === 'remove')
    throw new KilnError('invalid_input', 'A new Dockerfile has no build context to remove.');
  const context = change.kind === 'set' ? change.context : undefined;
  return insertNew(d, owner.id, cmd.name, Buffer.byteLength(content) + (context?.tar.length ?? 0), (trx) =>
    insertDockerfile(trx, { ownerId: owner.id, name: cmd.name, content, context }).then((r) => r.dockerfile),
  );
}

/** A Dockerfile from git: its name and source now, its content when the worker has fetched it. */
async function createFromGit(
  d: CoreDeps,
  ownerId: number,
  input: { name: unknown; content?: unknown; context?: ContextUpload; source?: unknown },
): Promise<DockerfileRow> {
  const name = parse(z.object({ name: DockerfileName }), input).name;
  if (input.content !== undefined || input.context !== undefined)
    throw new KilnError('invalid_input', 'A Dockerfile from git takes its text and build context from the repository.');
  const src = parseSource(d.config, input.source);
  const df = await insertNew(d, ownerId, name, 0, async (trx) => {
    const row = await insertDockerfileRow(trx, { ownerId, name });
    await saveSource(trx, d, row.id, src);
    return row;
  });
  wake(d);
  return df;
}

/** The count quota, the name check and the insert, in one transaction within the owner's storage quota. */
async function insertNew(
  d: CoreDeps,
  ownerId: number,
  name: string,
  bytes: number,
  insert: (trx: Knex.Transaction) => Promise<DockerfileRow>,
): Promise<DockerfileRow> {
  try {
    return await storeWithinQuota(d, ownerId, bytes, async (trx) => {
      const n = await countDockerfiles(trx, ownerId);
      if (n >= d.config.web.quotaDockerfiles) {
        throw conflict(
          `You have reached your limit of ${d.config.web.quotaDockerfiles} Dockerfiles; delete one first.`,
        );
      }
      const same = await findDockerfileByName(trx, ownerId, name);
      if (same?.deleting_at)
        throw conflict(`Your Dockerfile "${name}" is still being deleted; use another name, or try again later.`);
      if (same) throw conflict(`You already have a Dockerfile named "${name}".`);
      return insert(trx);
    });
  } catch (e) {
    if (isUniqueViolation(e)) throw conflict(`You already have a Dockerfile named "${name}".`);
    throw e;
  }
}

const updateCommand = (max: number) => z.object({ id: Id, content: dockerfileText(max), context: contextUpload });

/**
 * Saves new content and/or context as a new version (unchanged content and context keep the current one). The
 * context is kept unless a new one is uploaded or removal is asked for. Earlier builds keep their version. Pasted
 * content on a Dockerfile from git makes it an ordinary one again.
 */
export async function updateDockerfile(
  d: CoreDeps,
  actor: Actor,
  input: { id: unknown; content: unknown; context?: ContextUpload },
): Promise<DockerfileVersionRow> {
  const df = await dockerfileFor(d.db, actor, input.id, 'dockerfile.update');
  const cmd = parse(updateCommand(d.config.web.maxDockerfileBytes), input);
  const content = await policyChecked(d, cmd.content);
  const change = await contextChange(cmd.context);
  const bytes = Buffer.byteLength(content) + (change.kind === 'set' ? change.context.tar.length : 0);
  const version = await storeWithinQuota(d, df.owner_id, bytes, async (trx) => {
    // Pasted text: the Dockerfile no longer follows a repository.
    await deleteGitSource(trx, df.id);
    const v = await updateDockerfileContent(trx, df.id, content, change);
    await afterNewVersion(trx, d, df, v);
    return v;
  });
  wake(d);
  return version;
}

/**
 * Makes a Dockerfile take its text and context from a git repository, or changes where (a new revision of its
 * source); the worker fetches it (git.fetch) and the fetched commit becomes its next version.
 */
export async function setGitSource(
  d: CoreDeps,
  actor: Actor,
  input: { id: unknown; source: unknown },
): Promise<GitSourceView> {
  const df = await dockerfileFor(d.db, actor, input.id, 'dockerfile.update');
  const src = parseSource(d.config, input.source);
  const row = await d.db.transaction((trx) => saveSource(trx, d, df.id, src));
  wake(d);
  d.logger.info({ dockerfile: df.id, ...actorLabel(actor) }, 'git source saved');
  return sourceView(row);
}

/**
 * A job's timer builds what the job holds: a new current version reaches it too (a new settings revision, so the
 * page says it is on its way until the glue has it). Inside the transaction that made the version current.
 */
export async function afterNewVersion(
  trx: Knex.Transaction,
  d: CoreDeps,
  df: Pick<DockerfileRow, 'id' | 'current_version_id'>,
  v: DockerfileVersionRow,
): Promise<void> {
  if (v.id === df.current_version_id) return;
  if ((await getJobSettings(trx, df.id)) || (await hasDispatchedBuild(trx, df.id))) {
    await saveJobSettings(trx, df.id, {});
    await enqueue(trx, d, 'job.sync', dockerfileSubject(df.id));
  }
}

const removeCommand = z.object({ confirm: z.unknown() });

/**
 * Deletes a Dockerfile once its name is typed as confirmation: marks it for deletion, cancels its builds that the
 * backend does not have yet and enqueues `dockerfile.delete` (jobs/tasks.ts: the job is deleted through the glue,
 * which stops its builds and frees their artifacts, then the Dockerfile's versions, contexts and builds go, and
 * with them their share of the owner's storage). Asking again while it is pending changes nothing.
 */
export async function removeDockerfile(
  d: CoreDeps,
  actor: Actor,
  input: { id: unknown; confirm?: unknown },
): Promise<{ dockerfile: DockerfileRow; pending: true }> {
  const df = await dockerfileFor(d.db, actor, input.id, 'dockerfile.delete');
  const { confirm } = parse(removeCommand, input);
  if (!df.deleting_at && confirm !== df.name)
    throw new KilnError('invalid_input', `To delete it, type the Dockerfile's name, "${df.name}", to confirm.`);
  await d.db.transaction(async (trx) => {
    if (!(await markDockerfileDeleting(trx, df.id))) return;
    for (const b of await activeBuildsOf(trx, df.id)) {
      if (b.state === 'requested')
        await updateBuild(trx, b.id, ['requested'], {
          state: 'cancelled',
          reason: 'Cancelled: its Dockerfile is being deleted.',
          finished_at: nowIso(),
        });
    }
    await enqueue(trx, d, 'dockerfile.delete', dockerfileSubject(df.id));
  });
  wake(d);
  d.logger.info({ dockerfile: df.id, ...actorLabel(actor) }, 'Dockerfile deletion requested');
  return { dockerfile: (await findDockerfile(d.db, df.id, null)) ?? df, pending: true };
}

export function listDockerfilesFor(d: Pick<CoreDeps, 'db'>, actor: Actor): Promise<DockerfileListItem[]> {
  authorize(actor, 'dockerfile.list');
  return listDockerfiles(d.db, ownerScope(actor));
}

const pageQuery = z.object({ cursor: z.string().optional(), limit: PageLimit });
const dockerfilePosition = z.tuple([z.string().max(64), z.number().int().positive()]);

/** The Dockerfiles `listDockerfilesFor` gives, by name, in keyset pages (`nextCursor`; null: no more). */
export async function listDockerfilePage(
  d: Pick<CoreDeps, 'db'>,
  actor: Actor,
  raw: unknown,
): Promise<{ items: DockerfileListItem[]; nextCursor: string | null }> {
  authorize(actor, 'dockerfile.list');
  const q = parse(pageQuery, raw);
  const after = decodeCursor('dockerfiles', q.cursor, dockerfilePosition);
  const rows = await listDockerfiles(d.db, ownerScope(actor), {
    ...(after ? { after: { name: after[0], id: after[1] } } : {}),
    limit: q.limit + 1,
  });
  const items = rows.slice(0, q.limit);
  const last = items[items.length - 1];
  return {
    items,
    nextCursor: rows.length > q.limit && last ? encodeCursor('dockerfiles', [last.name, last.id]) : null,
  };
}

/**
 * Creates the actor's Dockerfile named `name`, or saves a new version of it (unchanged text and context keep the
 * current one), then its job settings when given (only the fields that differ: a pipeline sends the same on every
 * run). Everything is checked before anything is stored: the settings, the text and the policy, the context. Two
 * creators racing on one name end with one Dockerfile, the second a version of it.
 */
export async function putDockerfile(
  d: CoreDeps,
  actor: Actor,
  input: { name: unknown; content: unknown; context?: ContextUpload; settings?: unknown },
): Promise<{ view: DockerfileView; created: boolean; settings: JobSettings }> {
  const owner = requireUser(actor);
  const name = parse(DockerfileName, input.name);
  if (input.settings !== undefined) checkSettings(input.settings);
  const existing = await findDockerfileByName(d.db, owner.id, name);
  let created = false;
  let id = existing?.id;
  if (id === undefined) {
    try {
      id = (await createDockerfile(d, actor, { name, content: input.content, context: input.context })).id;
      created = true;
    } catch (e) {
      const raced = isKilnError(e, 'conflict') && (await findDockerfileByName(d.db, owner.id, name));
      if (!raced) throw e;
      id = raced.id;
    }
  }
  if (!created) await updateDockerfile(d, actor, { id: String(id), content: input.content, context: input.context });
  const settings =
    input.settings === undefined
      ? await jobSettingsOf(d, String(id))
      : await saveSettings(d, actor, String(id), input.settings, { onlyChanges: true });
  return { view: await getDockerfile(d, actor, String(id)), created, settings };
}

/** The settings in force for a Dockerfile the actor may read. */
async function jobSettingsOf(d: Pick<CoreDeps, 'db' | 'config'>, id: string): Promise<JobSettings> {
  return effectiveSettings(d, await getJobSettings(d.db, Number(id)));
}

export interface DockerfileView {
  dockerfile: DockerfileRow;
  /** The current version; null for a Dockerfile from git whose first fetch has not succeeded yet. */
  version: DockerfileVersionRow | null;
  context: ContextMeta | null;
  /** Where it comes from when it follows a git repository. */
  git: GitSourceView | null;
  builds: BuildListItem[];
}

/** `getDockerfile` of the actor's own Dockerfile named `rawName`, with its job settings in force. */
export async function getDockerfileByName(
  d: Pick<CoreDeps, 'db' | 'config'>,
  actor: Actor,
  rawName: unknown,
): Promise<{ view: DockerfileView; settings: JobSettings }> {
  const id = String((await dockerfileByName(d.db, actor, rawName)).id);
  return { view: await getDockerfile(d, actor, id), settings: await jobSettingsOf(d, id) };
}

/** A Dockerfile with its current version, build context, git source and latest builds. */
export async function getDockerfile(d: Pick<CoreDeps, 'db'>, actor: Actor, rawId: unknown): Promise<DockerfileView> {
  const dockerfile = await dockerfileFor(d.db, actor, rawId);
  const git = await getGitSource(d.db, dockerfile.id);
  const version =
    dockerfile.current_version_id == null ? undefined : await getVersion(d.db, dockerfile.current_version_id);
  if (!version && !git)
    throw new KilnError('internal', 'Dockerfile has no content', { detail: { dockerfile: dockerfile.id } });
  const builds = await listBuildsOfDockerfile(d.db, dockerfile.id);
  const context = version?.context_id == null ? null : ((await getContextMeta(d.db, version.context_id)) ?? null);
  return { dockerfile, version: version ?? null, context, git: git ? sourceView(git) : null, builds };
}
