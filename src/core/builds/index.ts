/**
 * Build lifecycle on the web side.
 *
 *   request (one transaction: idempotency key + quota + row in state `requested`)
 *     -> dispatch (glue job.put + job.build, both idempotent; row -> `queued` with the backend build number)
 *     -> refresh (glue build.status; row follows queued -> running -> verifying|failed|cancelled)
 *        a build the glue lost (`lost`, or vanished) is requeued once: back to `requested` (requeue.ts)
 *     -> attest (attest.ts, background: the web hashes and signs what it received; verifying -> succeeded|failed)
 *
 * A glue outage between the transaction and dispatch leaves the row `requested`; `reconcile` retries it with the
 * same key, and the glue's job.build returns the same build for the same key, so a build is never started twice.
 */
import { Readable, Transform } from 'node:stream';
import {
  ACTIVE_STATES, bumpDispatchAttempts, clearDispatchAttempts, countActiveBuilds, findAttestation, findBuild, findBuildByKey, findDockerfile, findUserById, getContextTar, getVersion,
  insertBuild, isFinal, listBuildsOfOwner, isUniqueViolation, lockUserRow, listBuildsToReconcile, nowIso, updateBuild,
  type BuildListItem, type BuildRow, type DockerfileRow, type Queryable, type WebBuildState,
} from '../../db/index.js';
import { ARTIFACT_NAMES, FORMATS, specSha256, type ArtifactName, type BuildStatus, type Format, type JobSpecInput, type LogChunk } from '../../protocol/index.js';
import { KilnError, conflict, isKilnError, notFound } from '../../shared/errors.js';
import { actorLabel, type Actor } from '../actor.js';
import { Id, IdempotencyKey, parse } from '../commands.js';
import type { CoreDeps } from '../deps.js';
import { dockerfileFor } from '../dockerfiles.js';
import { authorize, ownerScope, type OwnedAction } from '../policy.js';
import { isTransient } from '../ports.js';
import { refuseBuildOverQuota } from '../storage.js';
import { afterInterruption, glueKey } from './requeue.js';
import { siteBaseNames } from '../base-names.js';

/** Glue failures worth retrying later; anything else is a permanent answer about this build. */
const transient = isTransient;

/** The build `rawId` names, if the actor may take `action` on it; not-yours is not_found, like a missing id. */
export async function buildFor(db: Queryable, actor: Actor, rawId: unknown, action: OwnedAction = 'build.read'): Promise<BuildRow> {
  const b = await findBuild(db, parse(Id, rawId), ownerScope(actor));
  if (!b) throw notFound('No such build');
  authorize(actor, action, b.owner_id, 'No such build');
  return b;
}

/** Records a build request, or returns the existing build for a repeated key. */
export async function requestBuild(s: CoreDeps, actor: Actor, input: { dockerfileId: unknown; key: unknown }): Promise<{ build: BuildRow; created: boolean }> {
  const df = await dockerfileFor(s.db, actor, input.dockerfileId, 'build.request');
  const key = parse(IdempotencyKey, input.key);
  const again = async (): Promise<{ build: BuildRow; created: boolean } | undefined> => {
    const b = await findBuildByKey(s.db, key);
    if (!b) return undefined;
    // A key is one form submission; the same key from someone else or for another Dockerfile is a client bug.
    if (b.dockerfile_id !== df.id) throw conflict('This form was already used; reload the page.');
    return { build: b, created: false };
  };
  const prior = await again();
  if (prior) return prior;
  let build: BuildRow | undefined;
  try {
    build = await s.db.transaction(async (trx) => {
      // Builds belong to the Dockerfile's owner (also when an admin presses Build): their quota applies.
      await lockUserRow(trx, df.owner_id);
      // Checked again under the lock: a replay racing its original must find it, not hit the quota.
      if (await findBuildByKey(trx, key)) return undefined;
      const active = await countActiveBuilds(trx, df.owner_id);
      if (active >= s.config.web.quotaQueuedBuilds) {
        throw new KilnError('rate_limited', `You already have ${active} builds waiting or running; wait for one to finish.`, { detail: { retryAfterSeconds: 30 } });
      }
      await refuseBuildOverQuota(trx, s, df.owner_id);
      if (df.current_version_id == null) throw new KilnError('internal', 'Dockerfile has no content');
      return insertBuild(trx, { dockerfileId: df.id, versionId: df.current_version_id, ownerId: df.owner_id, key });
    });
  } catch (e) {
    if (isUniqueViolation(e)) {
      const raced = await again();
      if (raced) return raced;
    }
    throw e;
  }
  if (!build) return (await again())!;
  s.logger.info({ build: build.id, dockerfile: df.id, ...actorLabel(actor) }, 'build requested');
  return { build: await dispatch(s, build), created: true };
}

function formatsFor(s: CoreDeps): Format[] {
  const f = s.config.sdk.formats.filter((x): x is Format => (FORMATS as readonly string[]).includes(x));
  return f.length ? f : ['raw'];
}

/**
 * Creates or updates the glue's job for a Dockerfile from a stored version (job.put is create-or-update, so this is
 * also how the reconciler recreates a job the backend lost). Returns the spec's digest (protocol.specSha256).
 */
export async function putJob(s: Pick<CoreDeps, 'db' | 'glue' | 'config'>, dockerfileId: number, versionId: number, ownerId: number): Promise<string> {
  const df = await findDockerfile(s.db, dockerfileId, null);
  const version = await getVersion(s.db, versionId);
  const owner = await findUserById(s.db, ownerId);
  if (!df || !version || !owner) throw new KilnError('not_found', 'The Dockerfile of this build is gone.');
  const spec: JobSpecInput = { owner: owner.username, name: df.name, dockerfile: version.content, formats: formatsFor(s as CoreDeps), schedule: 'off', enabled: true };
  // The site's names for bases as they are now; the builder's SDK checks each against its own sdk.bases.
  const baseNames = await siteBaseNames(s.db);
  if (baseNames.length) spec.baseNames = baseNames;
  let tar: Buffer | undefined;
  if (version.context_id != null) {
    // The context stored with this version (not the Dockerfile's current one): a retried dispatch builds what was requested.
    tar = await getContextTar(s.db, version.context_id);
    if (!tar) throw new KilnError('not_found', 'The build context of this build is gone.');
    spec.contextTarBase64 = tar.toString('base64');
  }
  await s.glue.call('job.put', [df.id], JSON.stringify(spec));
  return specSha256(version.content, tar);
}

/**
 * job.put of the build's version, then job.build of exactly that version (its digest): a job.put of another
 * version that lands in between (a concurrent dispatch) makes the glue refuse with `conflict`, and the pair is
 * tried again, a few times.
 */
async function putAndBuild(s: Pick<CoreDeps, 'db' | 'glue' | 'config'>, build: BuildRow) {
  for (let attempt = 1; ; attempt++) {
    const sha = await putJob(s, build.dockerfile_id, build.version_id, build.owner_id);
    try {
      return await s.glue.call('job.build', [build.dockerfile_id, glueKey(build), sha]);
    } catch (e) {
      if (!isKilnError(e, 'conflict')) throw e;
      if (attempt >= 3) throw conflict('The Dockerfile kept changing while this build was being started; press Build to try again.');
    }
  }
}

/**
 * For a build cancelled before the web learnt its backend number: withdraws whatever its dispatch attempts may
 * have started (build.withdraw by idempotency key, idempotent), then records that nothing is left outstanding by
 * clearing its dispatch attempts. Leaves the row as it is when the glue is unreachable (the reconciler retries).
 */
export async function withdraw(s: Pick<CoreDeps, 'db' | 'glue' | 'logger'>, build: BuildRow): Promise<void> {
  if (build.state !== 'cancelled' || build.backend_build != null || build.dispatch_attempts === 0) return;
  try {
    const r = await s.glue.call('build.withdraw', [build.dockerfile_id, glueKey(build)]);
    await clearDispatchAttempts(s.db, build.id);
    if (r.withdrawn) s.logger.info({ build: build.id, backendBuild: r.build }, 'withdrew the backend trigger of a cancelled build');
  } catch (e) {
    if (!transient(e)) throw e;
    s.logger.warn({ build: build.id, err: (e as Error).message }, 'glue unavailable; withdrawal left to the reconciler');
  }
}

/**
 * Hands a `requested` build to the glue. Idempotent: job.put is create-or-update and job.build returns the same
 * backend build for the same key. Returns the row as stored afterwards.
 */
export async function dispatch(s: Pick<CoreDeps, 'db' | 'glue' | 'logger' | 'config'>, build: BuildRow): Promise<BuildRow> {
  if (build.state !== 'requested') return build;
  const { db, glue, logger } = s;
  await bumpDispatchAttempts(db, build.id);
  try {
    const r = await putAndBuild(s, build);
    await updateBuild(db, build.id, ['requested'], { state: 'queued', backend_build: r.build, queued_at: nowIso(), reason: null });
    logger.info({ build: build.id, job: build.dockerfile_id, backendBuild: r.build }, 'build dispatched');
  } catch (e) {
    if (transient(e)) {
      logger.warn({ build: build.id, err: (e as Error).message }, 'glue unavailable; build stays requested');
    } else {
      const reason = isKilnError(e) ? e.message : 'Internal error while starting the build.';
      logger.error({ build: build.id, err: e }, 'build dispatch failed');
      await updateBuild(db, build.id, ['requested'], { state: 'failed', reason, finished_at: nowIso() });
    }
  }
  return (await findBuild(db, build.id, null))!;
}

/**
 * Pulls the glue's view of a dispatched build into the row. Leaves the row alone when the glue is unreachable. A
 * build the glue lost, or no longer knows, is requeued once (and dispatched again) or failed (requeue.ts).
 */
export async function refresh(s: Pick<CoreDeps, 'db' | 'glue' | 'logger' | 'config'>, build: BuildRow): Promise<BuildRow> {
  if (isFinal(build.state) || build.backend_build == null) return build;
  let st: BuildStatus;
  try {
    st = await s.glue.call('build.status', [build.dockerfile_id, build.backend_build]);
  } catch (e) {
    if (transient(e)) return build;
    if (isKilnError(e, 'not_found')) return requeueOrFail(s, build, 'the build vanished from the build service');
    throw e;
  }
  if (st.state === 'lost') return requeueOrFail(s, build, st.reason ?? 'interrupted');
  // The backend's "succeeded" is the builder's word: the build is `verifying` until the web has hashed what it
  // received and signed it (attest.ts); the digests shown are then the web's, never result.json's.
  const next: WebBuildState = st.state === 'succeeded' ? 'verifying' : st.state;
  await updateBuild(s.db, build.id, ACTIVE_STATES, {
    state: next,
    // Every failed or cancelled build says why, even when its backend did not.
    reason: st.reason || (next === 'failed' ? 'The build failed; its log says why.' : next === 'cancelled' ? 'Cancelled.' : null),
    progress: st.progress ?? null,
    artifacts: st.artifacts,
    started_at: st.startedAt ?? build.started_at,
    finished_at: isFinal(next) || next === 'verifying' ? st.finishedAt ?? nowIso() : null,
  });
  return (await findBuild(s.db, build.id, null))!;
}

async function requeueOrFail(s: Pick<CoreDeps, 'db' | 'glue' | 'logger' | 'config'>, build: BuildRow, why: string): Promise<BuildRow> {
  const row = await afterInterruption(s, build, why);
  return row.state === 'requested' ? dispatch(s, row) : row;
}

export function listBuilds(s: Pick<CoreDeps, 'db'>, actor: Actor, limit = 20): Promise<BuildListItem[]> {
  authorize(actor, 'build.list');
  return listBuildsOfOwner(s.db, ownerScope(actor), limit);
}

/** The build with its Dockerfile and the digest of the version it builds (the build page). */
export async function buildVersion(s: CoreDeps, actor: Actor, rawId: unknown): Promise<{ build: BuildRow; dockerfile: DockerfileRow; versionSha: string }> {
  const build = await getBuild(s, actor, rawId);
  const dockerfile = await dockerfileFor(s.db, actor, String(build.dockerfile_id));
  const version = await getVersion(s.db, build.version_id);
  return { build, dockerfile, versionSha: version?.sha256 ?? '' };
}

/** The build page's data: the row, refreshed from the glue while it is active. */
export async function getBuild(s: CoreDeps, actor: Actor, rawId: unknown): Promise<BuildRow> {
  let b = await buildFor(s.db, actor, rawId);
  if (b.state === 'requested' && Date.now() - Date.parse(b.updated_at) > 5000) b = await dispatch(s, b);
  if (b.state === 'queued' || b.state === 'running') b = await refresh(s, b);
  return b;
}

/**
 * Cancels a build the actor may see. Final builds are left as they are; a build the glue never got is cancelled
 * here; otherwise the glue cancels it (idempotent there) and the row follows its answer.
 */
export async function cancelBuild(s: CoreDeps, actor: Actor, rawId: unknown): Promise<BuildRow> {
  const b = await buildFor(s.db, actor, rawId, 'build.cancel');
  if (isFinal(b.state)) return b;
  if (b.backend_build == null) {
    await updateBuild(s.db, b.id, ['requested'], { state: 'cancelled', reason: 'Cancelled before it started.', finished_at: nowIso() });
    // A dispatch may have reached the backend without an answer (a Jenkins trigger still in its queue): withdraw
    // it by key, or it would run after all. If the glue is away now, the reconciler does it later.
    if (b.dispatch_attempts > 0) await withdraw(s, (await findBuild(s.db, b.id, null))!);
  } else {
    const r = await s.glue.call('build.cancel', [b.dockerfile_id, b.backend_build]);
    // A build the backend lost meanwhile is not requeued once its owner asked to cancel it.
    if (r.state === 'cancelled' || r.state === 'lost') {
      await updateBuild(s.db, b.id, ACTIVE_STATES, { state: 'cancelled', reason: 'Cancelled.', finished_at: nowIso() });
    } else if (isFinal(r.state)) {
      // It ended on its own first: take its real outcome, with its reason, the way every other end is taken
      // (a success still has to be verified and signed before it counts).
      await refresh(s, b);
    }
  }
  s.logger.info({ build: b.id, ...actorLabel(actor) }, 'build cancel requested');
  return (await findBuild(s.db, b.id, null))!;
}

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]/g;
/** Build output is attacker-written: escapes and control characters are removed (the page sets it as text). */
export const cleanLogText = (t: string): string => t.replace(ANSI, '');

export async function readLog(s: CoreDeps, actor: Actor, rawId: unknown, rawOffset: unknown): Promise<LogChunk> {
  const b = await buildFor(s.db, actor, rawId);
  const offset = typeof rawOffset === 'string' && /^(0|[1-9][0-9]{0,14})$/.test(rawOffset) ? Number(rawOffset) : 0;
  if (b.backend_build == null) return { text: '', offset, nextOffset: offset, more: !isFinal(b.state) };
  const chunk = await s.glue.call('build.log', [b.dockerfile_id, b.backend_build, offset]);
  return { ...chunk, text: cleanLogText(chunk.text) };
}

export interface ArtifactDownload {
  stream: Readable;
  filename: string;
  size: number;
  /** Set for a range answer (206). */
  range?: { start: number; end: number };
}

/**
 * Opens an artifact of a build the actor may see. The name must be one of the protocol's artifact names and
 * listed on the build; the bytes come from the glue (never from a path the web computes).
 */
export async function openArtifact(s: CoreDeps, actor: Actor, rawId: unknown, rawName: unknown, rangeHeader?: string): Promise<ArtifactDownload> {
  const b = await buildFor(s.db, actor, rawId);
  if (typeof rawName !== 'string' || !(ARTIFACT_NAMES as readonly string[]).includes(rawName)) throw notFound('No such artifact');
  const name = rawName as ArtifactName;
  const art = b.artifacts.find((a) => a.name === name);
  if (!art || b.backend_build == null) throw notFound('No such artifact');
  const own = await signedDocument(s, b, name);
  const size = own?.length ?? art.size;
  const filename = `kiln-${b.id}-${name}`;
  let start = 0;
  let end = size - 1;
  let ranged = false;
  if (rangeHeader) {
    const m = /^bytes=(\d{1,15})-(\d{0,15})$/.exec(rangeHeader.trim());
    if (m) {
      start = Number(m[1]);
      if (m[2]) end = Math.min(Number(m[2]), size - 1);
      if (start >= size || start > end) throw new KilnError('bad_request', 'Range not satisfiable', { detail: { status: 416, size } });
      ranged = true;
    }
  }
  const src = own ? Readable.from([own.subarray(start)]) : await s.glue.artifact(b.dockerfile_id, b.backend_build, name, start);
  const stream = ranged ? src.pipe(limitBytes(end - start + 1, () => src.destroy())) : src;
  if (ranged) src.on('error', (e) => stream.destroy(e));
  return { stream, filename, size, ...(ranged ? { range: { start, end } } : {}) };
}

/**
 * SHA256SUMS and its signature are the web's own (attest.ts), served from the database once the build is verified;
 * the builder's are never served. Undefined for every other artifact (its bytes come from the glue).
 */
async function signedDocument(s: CoreDeps, b: BuildRow, name: ArtifactName): Promise<Buffer | undefined> {
  if (name !== 'SHA256SUMS' && name !== 'SHA256SUMS.sig') return undefined;
  const att = b.state === 'succeeded' ? await findAttestation(s.db, b.id) : undefined;
  if (!att) throw notFound('No such artifact');
  return Buffer.from(name === 'SHA256SUMS' ? att.sums : att.signature, 'utf8');
}

function limitBytes(n: number, onDone: () => void): Transform {
  let left = n;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (left <= 0) return cb();
      const part = chunk.length > left ? chunk.subarray(0, left) : chunk;
      left -= part.length;
      this.push(part);
      if (left <= 0) { this.push(null); onDone(); }
      cb();
    },
  });
}

/**
 * One reconciliation pass (the caller schedules it): dispatches builds still `requested` and refreshes the ones
 * the glue has. Safe to run concurrently with requests and with itself. Returns how many rows it looked at.
 */
export async function reconcileBuilds(s: Pick<CoreDeps, 'db' | 'glue' | 'logger' | 'config'>): Promise<number> {
  const { db, logger } = s;
  const rows = await listBuildsToReconcile(db);
  for (const b of rows) {
    try {
      if (b.state === 'requested') await dispatch(s, b);
      else await refresh(s, b);
    } catch (e) {
      logger.error({ build: b.id, err: e }, 'reconcile failed for build');
    }
  }
  return rows.length;
}
