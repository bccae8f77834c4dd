/**
 * Builds: the use cases (request, read, list, cancel, log, artifacts) and, in the files beside this one, the tasks
 * that carry a build through its life:
 *
 *   request (one transaction: idempotency key + quotas + row `requested` + its `build.dispatch` task)
 *     -> build.dispatch (dispatch.ts: glue job.put + job.build; row -> `queued` + its `build.refresh` task)
 *     -> build.refresh  (refresh.ts: glue build.status, repeated while active; queued -> running -> verifying|failed|
 *                        cancelled; a build the glue lost is requeued once: back to `requested`, dispatched again)
 *     -> build.attest   (attest.ts: the web hashes and signs what it received; verifying -> succeeded|failed)
 *   cancel: not dispatched yet -> row `cancelled` + `build.withdraw` (drops what a dispatch may have started);
 *           dispatched -> `build.cancel` (refresh.ts: the glue stops it, the row takes the answer)
 *
 * Requests never call the glue to change anything: they record the intent and enqueue; the worker does the rest,
 * retrying with backoff. A task that keeps failing fails its build with the reason (never stuck `requested`,
 * `queued` or `verifying`). Tasks are idempotent: the glue returns the same build for the same key.
 */
import { createHash } from 'node:crypto';
import {
  countActiveBuilds,
  findBuild,
  findBuildByKey,
  insertBuild,
  isFinal,
  isUniqueViolation,
  listBuildSummaries,
  lockUserRow,
  nowIso,
  updateBuild,
  getGitSource,
  type BuildSummary,
  type BuildRow,
  type BuildTrigger,
  type DockerfileRow,
} from '../../db/index.js';
import { KilnError, conflict } from '../../shared/errors.js';
import { actorLabel, type Actor } from '../actor.js';
import { recordAudit } from '../audit.js';
import { IdempotencyKey, parse, rule } from '../commands.js';
import { settingsOf } from '../jobs/settings.js';
import type { CoreDeps } from '../deps.js';
import { dockerfileByName, dockerfileFor } from '../dockerfiles.js';
import { authorize, ownerScope } from '../policy.js';
import { refuseBuildOverQuota } from '../storage.js';
import { buildSubject, enqueue, wake } from '../tasks/queue.js';
import { buildFor } from './access.js';
import { needsFetch } from '../git/pin.js';
import { buildEnded } from '../following/notify.js';

export { buildFor, buildVersion } from './access.js';
export { openArtifact, readLog, type ArtifactDownload } from './artifacts.js';
export { BuildWatch, Coalescer, followBuild, waitForBuild, type LiveEvent } from './live.js';
export { buildReport, manifestView, packageDiff, sbomView, serialLog } from './report.js';
export {
  buildPage,
  buildQueuePlace,
  listBuildFeed,
  listBuildPage,
  progressOf,
  type BuildListQuery,
  type BuildListView,
  type BuildPage,
  type ProgressView,
} from './view.js';
export type { QueuePlace } from './waiting.js';

/**
 * An Idempotency-Key as a client sends it (the REST API): 1-255 visible ASCII characters, optionally quoted as a
 * structured-field string. Clients pick them (a pipeline id, say), so two users may pick the same one.
 */
const ClientKey = rule((v): string => {
  const raw = typeof v === 'string' ? v.trim() : '';
  const k = raw.length > 1 && raw.startsWith('"') && raw.endsWith('"') ? raw.slice(1, -1) : raw;
  if (!/^[\x21-\x7e]{1,255}$/.test(k))
    throw new KilnError('invalid_input', 'The Idempotency-Key must be 1 to 255 visible ASCII characters.');
  return k;
});

/**
 * The stored key for a client's key: derived from the requester and the key, so each user has keys of their own (no
 * collisions, no oracle on others' keys) and the result is a key the protocol carries (`c` + 43 base64url).
 */
function storedClientKey(actor: Actor, clientKey: string): string {
  const who = actor.kind === 'user' ? `user:${actor.id}` : actor.kind;
  return `c${createHash('sha256').update(`${who}\n${clientKey}`).digest('base64url')}`;
}

/**
 * Records a build request and enqueues its first task, or returns the existing build for a repeated key. `trigger` is
 * the door's word (the page's Build button is `manual`, the JSON APIs `api`, the SSH door `ssh`), never the requester's. `key` is a
 * form's key (made by the page); `clientKey` one a client chose (the REST API's Idempotency-Key), which names one
 * request of that user: sent again for another Dockerfile it is `idempotency_key_reused`.
 */
export async function requestBuild(
  d: CoreDeps,
  actor: Actor,
  input: {
    dockerfileId?: unknown;
    /** Instead of the id: the actor's own Dockerfile of that name (the REST API). */
    dockerfileName?: unknown;
    key?: unknown;
    clientKey?: unknown;
    trigger?: 'manual' | 'api' | 'ssh';
  },
): Promise<{ build: BuildRow; created: boolean }> {
  const df =
    input.dockerfileName !== undefined
      ? await dockerfileByName(d.db, actor, input.dockerfileName, 'build.request')
      : await dockerfileFor(d.db, actor, input.dockerfileId, 'build.request');
  const fromClient = input.clientKey !== undefined;
  const key = fromClient ? storedClientKey(actor, parse(ClientKey, input.clientKey)) : parse(IdempotencyKey, input.key);
  const r = await requestOf(d, df, {
    key,
    trigger: input.trigger ?? 'manual',
    quota: true,
    fromClient,
  });
  if (r.created) d.logger.info({ build: r.build.id, dockerfile: df.id, ...actorLabel(actor) }, 'build requested');
  return r;
}

/**
 * The one way a build row comes to be requested (a door's request, a push, Kiln's schedule for a git Dockerfile):
 * key lookup, the switch, quotas (`quota`: the owner's active builds and storage; Kiln's own timer skips them, like
 * the backend's timer builds), the row and its first task in one transaction. `gitCommit`: the commit a push asked
 * for. A key seen before returns its build; the same key for another Dockerfile is a client's mistake
 * (`fromClient`: an Idempotency-Key reused) or a stale form.
 */
export async function requestOf(
  d: CoreDeps,
  df: DockerfileRow,
  o: { key: string; trigger: BuildTrigger; quota: boolean; gitCommit?: string; fromClient?: boolean },
): Promise<{ build: BuildRow; created: boolean }> {
  const key = o.key;
  const again = async (): Promise<{ build: BuildRow; created: boolean } | undefined> => {
    const b = await findBuildByKey(d.db, key);
    if (!b) return undefined;
    // A key is one request; the same key for another Dockerfile is a client bug (a form: someone else's, or stale).
    if (b.dockerfile_id !== df.id)
      throw o.fromClient
        ? new KilnError(
            'idempotency_key_reused',
            `This Idempotency-Key was already used for build ${b.id} of another Dockerfile; send a new key for a new build.`,
          )
        : conflict('This form was already used; reload the page.');
    return { build: b, created: false };
  };
  const prior = await again();
  if (prior) return prior;
  if (!(await settingsOf(d, d.db, df.id)).enabled)
    throw conflict("This Dockerfile's job is switched off; switch it on to build.");
  const git = await getGitSource(d.db, df.id);
  if (df.current_version_id == null) {
    throw git
      ? conflict(
          git.fetch_error
            ? `Kiln could not fetch this Dockerfile from git: ${git.fetch_error}`
            : 'Kiln is still fetching this Dockerfile from git; try again in a moment.',
        )
      : new KilnError('internal', 'Dockerfile has no content');
  }
  const versionId = df.current_version_id;
  let build: BuildRow | undefined;
  try {
    build = await d.db.transaction(async (trx) => {
      // Builds belong to the Dockerfile's owner (also when an admin presses Build): their quota applies.
      await lockUserRow(trx, df.owner_id);
      // Checked again under the lock: a replay racing its original must find it, not hit the quota.
      if (await findBuildByKey(trx, key)) return undefined;
      if (o.quota) {
        const active = await countActiveBuilds(trx, df.owner_id);
        if (active >= d.config.web.quotaQueuedBuilds) {
          throw new KilnError(
            'rate_limited',
            `You already have ${active} builds waiting or running; wait for one to finish.`,
            { detail: { retryAfterSeconds: 30 } },
          );
        }
        await refuseBuildOverQuota(trx, d, df.owner_id);
      }
      const row = await insertBuild(trx, {
        dockerfileId: df.id,
        versionId,
        ownerId: df.owner_id,
        key,
        trigger: o.trigger,
        ...(o.gitCommit ? { gitCommit: o.gitCommit } : {}),
      });
      // A git Dockerfile's build first fetches its commit (build.fetch), unless the current version is that commit.
      const first = git && (await needsFetch(trx, row)) ? 'build.fetch' : 'build.dispatch';
      await enqueue(trx, d, first, buildSubject(row.id));
      return row;
    });
  } catch (e) {
    if (isUniqueViolation(e)) {
      const raced = await again();
      if (raced) return raced;
    }
    throw e;
  }
  if (!build) return (await again())!;
  wake(d);
  return { build, created: true };
}

/** The actor's latest builds (everyone's for an admin), as lists show them. */
export function listBuilds(d: Pick<CoreDeps, 'db'>, actor: Actor, limit = 20): Promise<BuildSummary[]> {
  authorize(actor, 'build.list');
  return listBuildSummaries(d.db, ownerScope(actor), limit);
}

/** A build as stored (the worker keeps it current; reading it changes nothing and calls no one). */
export function getBuild(d: Pick<CoreDeps, 'db'>, actor: Actor, rawId: unknown): Promise<BuildRow> {
  return buildFor(d.db, actor, rawId);
}

/**
 * Cancels a build the actor may see. One the backend never got (`requested`) is `cancelled` at once, and a
 * `build.withdraw` task takes back whatever its dispatch may have started. One the backend has gets a `build.cancel`
 * task: the glue stops it and the row takes the answer (`cancelled`, or the real end of a build that ended on its
 * own first). Final and `verifying` builds (the backend has finished; the web is checking what it got) are left
 * as they are.
 */
export async function cancelBuild(d: CoreDeps, actor: Actor, rawId: unknown): Promise<BuildRow> {
  const b = await buildFor(d.db, actor, rawId, 'build.cancel');
  if (isFinal(b.state) || b.state === 'verifying') return b;
  const subject = buildSubject(b.id);
  await d.db.transaction(async (trx) => {
    // An admin stopping someone else's build (the console's queue) is an admin action: audited with it.
    if (actor.kind === 'user' && b.owner_id !== actor.id)
      await recordAudit(trx, d, actor, 'build.cancel', subject, { owner: b.owner_id, state: b.state });
    if (b.backend_build != null) {
      await enqueue(trx, d, 'build.cancel', subject);
    } else if (
      await updateBuild(trx, b.id, ['requested'], {
        state: 'cancelled',
        reason: 'Cancelled before it started.',
        finished_at: nowIso(),
      })
    ) {
      await enqueue(trx, d, 'build.withdraw', subject);
      await buildEnded(trx, d, b.id);
    } else {
      // Dispatched between the read and this transaction: the backend has it now.
      await enqueue(trx, d, 'build.cancel', subject);
    }
  });
  wake(d);
  d.logger.info({ build: b.id, ...actorLabel(actor) }, 'build cancel requested');
  return (await findBuild(d.db, b.id, null))!;
}
