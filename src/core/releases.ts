/**
 * Releases: a succeeded build promoted to a name (`v1.2`), unique per Dockerfile and immutable once made. Its files
 * are copied out of the build service into the release store (`releases.dir`, the web's, never the backend's build
 * storage), so retention never touches them, and signed by the web's key with their provenance (release.json).
 *
 *   promote (one transaction: the name checked, the row `pending` within the owner's storage quota, its task)
 *     -> release.make (the worker: every file the build's signed SHA256SUMS lists streamed from the glue into a temp
 *        directory of the store and hashed; each must have the digest that SHA256SUMS (whose signature is checked
 *        first) says; release.json written; SHA256SUMS over all of them signed; the temp directory renamed to the
 *        release's own; then the row `ready` with its files, sums and signature in one update)
 *   or `failed` with the reason (a file gone or changed at the build service; the build's artifacts expired).
 *
 * A crash or a broken stream anywhere before the rename leaves only a temp directory, which the task's next run
 * (or its end) removes: a release is in the store whole or not at all, and is served only once `ready`.
 */
import { createHash } from 'node:crypto';
import { constants as fsc, promises as fsp } from 'node:fs';
import path from 'node:path';
import {
  completeRelease,
  failRelease,
  findAttestation,
  findBuild,
  findDockerfile,
  findRelease,
  findReleaseByName,
  findUserById,
  getVersion,
  insertRelease,
  isUniqueViolation,
  listReleases as listReleaseRows,
  retryRelease,
  type BuildRow,
  type ReleaseFile,
  type ReleaseListItem,
  type ReleaseRow,
} from '../db/index.js';
import type { FrozenConfig } from '../config/index.js';
import { ARTIFACT_NAMES, RELEASE_JSON, RELEASE_TYPE, type ArtifactName } from '../protocol/index.js';
import { formatSha256Sums, parseSha256Sums } from '../shared/checksums.js';
import { KilnError, conflict, isKilnError, notFound } from '../shared/errors.js';
import { verifyText } from '../shared/sshsig.js';
import { actorLabel, type Actor } from './actor.js';
import { buildFor } from './builds/access.js';
import { download, expired, type ArtifactDownload } from './builds/artifacts.js';
import { Id, ReleaseName, parse } from './commands.js';
import type { CoreDeps } from './deps.js';
import { dockerfileByName } from './dockerfiles.js';
import { authorize, ownerScope } from './policy.js';
import { storeWithinQuota } from './storage.js';
import { signingKey } from './signing.js';
import { enqueue, releaseIdOf, releaseSubject, wake } from './tasks/queue.js';
import type { TaskKind } from './tasks/worker.js';

/** The release's own files, next to the build's: its provenance, its SHA256SUMS and the web's signature of it. */
const SUMS = 'SHA256SUMS';
const SIG = 'SHA256SUMS.sig';

/** The release store's directory. */
export const releaseRoot = (config: Pick<FrozenConfig, 'dataDir' | 'releases'>): string =>
  path.resolve(config.releases.dir ?? path.join(config.dataDir, 'releases'));
/** A release's directory: named by its id, never by its (user-chosen) name. */
const releaseDir = (root: string, id: number) => path.join(root, String(id));
const TEMP_PREFIX = (id: number) => `.tmp-${id}-`;

/** Names of files a build's signed SHA256SUMS may list and a release copies. */
const PRODUCTS: ReadonlySet<string> = new Set(
  ARTIFACT_NAMES.filter((n) => !['SHA256SUMS', 'SHA256SUMS.sig'].includes(n)),
);

/**
 * Promotes a build the actor may promote (its Dockerfile's owner, or an admin) to `name`. The same build and name
 * again is the same release (created: false); a name the Dockerfile's releases already hold for another build is
 * `conflict` (names are never reused: a release is immutable), unless that one failed to be made: a name never made
 * is free again.
 */
export async function promote(
  d: CoreDeps,
  actor: Actor,
  input: { build?: unknown; name?: unknown },
): Promise<{ release: ReleaseRow; created: boolean }> {
  const name = parse(ReleaseName, input.name);
  const build = await buildFor(d.db, actor, input.build, 'build.promote');
  const df = await findDockerfile(d.db, build.dockerfile_id, null);
  if (!df || df.deleting_at) throw conflict('This Dockerfile is being deleted.');
  const existing = await findReleaseByName(d.db, df.id, name);
  if (existing && existing.state !== 'failed') {
    if (existing.build_id === build.id) return { release: existing, created: false };
    throw taken(name, df.name, existing);
  }
  promotable(build);
  const att = await findAttestation(d.db, build.id);
  if (!att) throw conflict(`Build ${build.id} has no signed SHA256SUMS to release from.`);
  const bytes = productsOf(att.sums).reduce(
    (n, e) => n + (build.artifacts.find((a) => a.name === e.name)?.size ?? 0),
    0,
  );
  const by = actor.kind === 'user' ? actor.id : null;
  let release: ReleaseRow;
  try {
    release = await storeWithinQuota(d, build.owner_id, bytes, async (trx) => {
      const row = existing
        ? (await retryRelease(trx, existing.id, { buildId: build.id, bytes, createdBy: by }))
          ? (await findReleaseByName(trx, df.id, name))!
          : undefined
        : await insertRelease(trx, {
            dockerfileId: df.id,
            buildId: build.id,
            ownerId: build.owner_id,
            name,
            bytes,
            createdBy: by,
          });
      if (!row) throw conflict(`The release ${name} changed meanwhile; try again.`);
      await enqueue(trx, d, 'release.make', releaseSubject(row.id));
      return row;
    });
  } catch (e) {
    // Two promotions of one name at once: the first one's row decides, as if it had come first.
    if (!isUniqueViolation(e)) throw e;
    const won = await findReleaseByName(d.db, df.id, name);
    if (won?.build_id === build.id) return { release: won, created: false };
    throw won ? taken(name, df.name, won) : e;
  }
  wake(d);
  d.logger.info({ release: release.id, build: build.id, ...actorLabel(actor) }, 'release requested');
  return { release, created: true };
}

const taken = (name: string, dockerfile: string, r: ReleaseRow): KilnError =>
  conflict(
    `${dockerfile} already has a release ${name} (build ${r.build_id}); a release never changes, so give this one another name.`,
  );

/** Only a succeeded build whose artifacts the build service still keeps can be promoted. */
function promotable(b: BuildRow): void {
  if (b.state !== 'succeeded') throw conflict(`Build ${b.id} is ${b.state}: only a succeeded build can be released.`);
  if (b.artifacts_expired_at) throw expired(b);
}

/** The products a build's signed SHA256SUMS lists (what a release copies). */
function productsOf(sums: string) {
  return parseSha256Sums(sums).filter((e) => PRODUCTS.has(e.name));
}

/** A release the actor may see (its Dockerfile's owner, or an admin); not yours is not found. */
export async function getRelease(d: Pick<CoreDeps, 'db'>, actor: Actor, rawId: unknown): Promise<ReleaseListItem> {
  const r = await findRelease(d.db, parse(Id, rawId), ownerScope(actor));
  if (!r) throw notFound('No such release');
  authorize(actor, 'release.read', r.owner_id, 'No such release');
  return r;
}

/**
 * The actor's releases (an admin: everyone's), newest first; of one Dockerfile (by id, or by the actor's own name:
 * the REST API), one build, or one release name.
 */
export async function listReleases(
  d: Pick<CoreDeps, 'db'>,
  actor: Actor,
  o: { dockerfileId?: number; dockerfileName?: unknown; buildId?: number; name?: unknown } = {},
): Promise<ReleaseListItem[]> {
  authorize(actor, 'release.list');
  const dockerfileId =
    o.dockerfileName !== undefined
      ? (await dockerfileByName(d.db, actor, o.dockerfileName, 'dockerfile.read')).id
      : o.dockerfileId;
  return listReleaseRows(d.db, {
    ownerId: ownerScope(actor),
    ...(dockerfileId !== undefined ? { dockerfileId } : {}),
    ...(o.buildId !== undefined ? { buildId: o.buildId } : {}),
    ...(o.name !== undefined ? { name: parse(ReleaseName, o.name) } : {}),
  });
}

/**
 * A file of a ready release, from the release store: its name must be one the release lists; opened without
 * following links, from the directory named by the release's id. Range as for artifacts.
 */
export async function openReleaseFile(
  d: Pick<CoreDeps, 'db' | 'config'>,
  actor: Actor,
  rawId: unknown,
  rawName: unknown,
  rangeHeader?: string,
): Promise<ArtifactDownload> {
  const r = await getRelease(d, actor, rawId);
  const file = r.state === 'ready' ? r.files.find((f) => f.name === rawName) : undefined;
  if (!file) throw notFound(r.state === 'ready' ? 'No such file in this release' : `Release ${r.name} is ${r.state}`);
  const p = path.join(releaseDir(releaseRoot(d.config), r.id), file.name);
  return download(`kiln-${r.name}-${file.name}`, file.size, rangeHeader, async (start) => {
    const fh = await fsp.open(p, fsc.O_RDONLY | fsc.O_NOFOLLOW).catch(() => {
      throw new KilnError('internal', `Release ${r.id}'s file ${file.name} is missing from the release store`);
    });
    return fh.createReadStream({ start, autoClose: true });
  });
}

// ------------------------------------------------------------------------------------------------- the task

/** Why a release cannot be made from its build: it fails with this, not retried. */
class Refusal extends Error {}

/**
 * `release.make` (subject `release:<id>`): makes a pending release (see the top of this file). A stream that
 * breaks off or a glue away is thrown (retried; the temp directory is removed first); a file that is gone or
 * differs from the signed SHA256SUMS fails the release with the reason.
 */
export const releaseTask: TaskKind = {
  concurrency: 1,
  async run(d, { task, log, signal }) {
    const id = releaseIdOf(task.subject);
    const r = id === undefined ? undefined : await findRelease(d.db, id, null);
    if (r?.state !== 'pending') return;
    const root = releaseRoot(d.config);
    await fsp.mkdir(root, { recursive: true, mode: 0o755 });
    await removeLeftovers(root, r.id);
    const tmp = await fsp.mkdtemp(path.join(root, TEMP_PREFIX(r.id)));
    try {
      const made = await makeFiles(d, r, tmp, signal);
      await syncDir(tmp);
      await fsp.rename(tmp, releaseDir(root, r.id));
      await syncDir(root);
      if (!(await completeRelease(d.db, r.id, made))) {
        // Not pending any more (failed meanwhile by an operator or a give-up): its files go too.
        await fsp.rm(releaseDir(root, r.id), { recursive: true, force: true });
        return;
      }
      log.info({ release: r.id, build: r.build_id, files: made.files.length }, 'release made and signed');
    } catch (e) {
      if (!(e instanceof Refusal)) throw e;
      await failRelease(d.db, r.id, `Kiln could not make this release: ${e.message}`);
      log.warn({ release: r.id, reason: e.message }, 'release refused');
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  },
  async gaveUp(d, task, error) {
    const id = releaseIdOf(task.subject);
    if (id === undefined) return;
    // Only a release that was still pending: a ready one's directory is the release.
    if (await failRelease(d.db, id, `Kiln could not make this release: ${error}`))
      await removeLeftovers(releaseRoot(d.config), id);
  },
};

/** A crashed earlier run's temp directories, and a directory renamed into place whose row never became ready. */
async function removeLeftovers(root: string, id: number): Promise<void> {
  for (const n of await fsp.readdir(root).catch(() => [] as string[]))
    if (n.startsWith(TEMP_PREFIX(id)) || n === String(id))
      await fsp.rm(path.join(root, n), { recursive: true, force: true });
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, fsc.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Copies, checks and signs the release's files into `dir`; what completeRelease stores. */
async function makeFiles(
  d: CoreDeps,
  r: ReleaseListItem,
  dir: string,
  signal: AbortSignal,
): Promise<{ files: ReleaseFile[]; sums: string; signature: string; publicKey: string }> {
  const build = await findBuild(d.db, r.build_id, null);
  if (!build || build.backend_build == null) throw new Refusal('its build is gone');
  if (build.artifacts_expired_at)
    throw new Refusal(`the artifacts of build ${build.id} expired before they were copied`);
  const att = await findAttestation(d.db, build.id);
  if (build.state !== 'succeeded' || !att) throw new Refusal(`build ${build.id} has no signed SHA256SUMS`);
  // The stored SHA256SUMS is what the files are checked against: its signature first, so a changed row fails here.
  const signed = await verifyText(att.sums, att.signature, att.public_key);
  if (!signed.ok) throw new Refusal(`the signature of build ${build.id}'s SHA256SUMS does not verify`);
  const files: ReleaseFile[] = [];
  for (const e of productsOf(att.sums)) {
    signal.throwIfAborted();
    const got = await copyArtifact(d, build, e.name as ArtifactName, path.join(dir, e.name));
    if (got.sha256 !== e.sha256)
      throw new Refusal(
        `${e.name} at the build service no longer matches build ${build.id}'s signed SHA256SUMS (sha256 ${got.sha256}, signed ${e.sha256})`,
      );
    files.push({ name: e.name, size: got.size, sha256: got.sha256 });
  }
  if (!files.length) throw new Refusal(`build ${build.id}'s SHA256SUMS lists no file to release`);
  const provenance = `${JSON.stringify(await provenanceOf(d, r, build, att, files), null, 2)}\n`;
  files.push(await writeFile(path.join(dir, RELEASE_JSON), provenance));
  const sums = formatSha256Sums(files);
  const key = await signingKey(d.config);
  const signature = await key.sign(sums);
  const own = [await writeFile(path.join(dir, SUMS), sums), await writeFile(path.join(dir, SIG), signature)];
  return { files: [...files, ...own], sums, signature, publicKey: key.publicKey };
}

/** One artifact streamed from the glue into `file` (created here), hashed on the way and synced. */
async function copyArtifact(
  d: CoreDeps,
  b: BuildRow,
  name: ArtifactName,
  file: string,
): Promise<{ sha256: string; size: number }> {
  // The file first: a stream that errors before it is read (an await between) has nobody listening, and its error
  // would be uncaught. The file is in the release's temp directory, removed whole when the release fails.
  const fh = await fsp.open(file, 'wx', 0o644);
  let stream;
  try {
    try {
      stream = await d.glue.artifact(b.dockerfile_id, b.backend_build!, name);
    } catch (e) {
      if (isKilnError(e, 'not_found')) throw new Refusal(`${name} is gone from the build service`);
      throw e;
    }
    const h = createHash('sha256');
    let size = 0;
    for await (const chunk of stream) {
      const c = chunk as Buffer;
      await fh.write(c);
      h.update(c);
      size += c.length;
    }
    await fh.sync();
    return { sha256: h.digest('hex'), size };
  } finally {
    stream?.destroy();
    await fh.close();
  }
}

async function writeFile(file: string, text: string): Promise<ReleaseFile> {
  await fsp.writeFile(file, text, { flag: 'wx', mode: 0o644, flush: true });
  return {
    name: path.basename(file),
    size: Buffer.byteLength(text),
    sha256: createHash('sha256').update(text).digest('hex'),
  };
}

/** release.json: what was released, from which build and inputs, by whom, and what the build's signature covered. */
async function provenanceOf(
  d: CoreDeps,
  r: ReleaseListItem,
  b: BuildRow,
  att: { sums: string; public_key: string },
  files: readonly ReleaseFile[],
): Promise<Record<string, unknown>> {
  const version = await getVersion(d.db, b.version_id);
  const by = r.created_by === null ? undefined : await findUserById(d.db, r.created_by);
  return {
    type: RELEASE_TYPE,
    name: r.name,
    dockerfile: {
      id: r.dockerfile_id,
      name: r.dockerfile_name,
      owner: r.owner,
      versionSha256: version?.sha256 ?? null,
    },
    build: {
      id: b.id,
      trigger: b.trigger,
      gitCommit: b.git_commit,
      startedAt: b.started_at,
      finishedAt: b.finished_at,
      imageSha256: b.image_sha256,
      sha256sums: createHash('sha256').update(att.sums).digest('hex'),
      signedBy: att.public_key,
    },
    promotedBy: by?.username ?? null,
    promotedAt: r.created_at,
    subject: files.map((f) => ({ name: f.name, digest: { sha256: f.sha256 }, size: f.size })),
  };
}

/** Removes the files of these releases from the store (their Dockerfile is deleted). */
export async function removeReleaseFiles(config: Pick<FrozenConfig, 'dataDir' | 'releases'>, ids: readonly number[]) {
  const root = releaseRoot(config);
  for (const id of ids) await removeLeftovers(root, id);
}
