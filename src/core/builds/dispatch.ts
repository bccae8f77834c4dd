/**
 * Handing builds to the glue, and taking back what a cancelled build may have started. Both run as tasks
 * (src/core/tasks), never in a request; both are idempotent: job.put is create-or-update, job.build returns the same
 * backend build for the same key, build.cancel and build.withdraw of a build that has ended report its state.
 */
import {
  bumpDispatchAttempts,
  clearDispatchAttempts,
  isDispatchTurn,
  lockUserRow,
  findBuild,
  findDockerfile,
  findUserById,
  getContextTar,
  getGitSource,
  getVersion,
  isFinal,
  isTaskLive,
  nowIso,
  updateBuild,
  type BuildRow,
} from '../../db/index.js';
import { specSha256, type JobSpecInput } from '../../protocol/index.js';
import { KilnError, conflict, isKilnError } from '../../shared/errors.js';
import { siteBaseNames } from '../base-names.js';
import { settingsOf, specFields } from '../jobs/settings.js';
import type { CoreDeps } from '../deps.js';
import { isTransient } from '../ports.js';
import { buildIdOf, enqueue } from '../tasks/queue.js';
import type { TaskKind } from '../tasks/worker.js';
import { glueKey } from './requeue.js';
import { needsFetch } from '../git/pin.js';
import { buildEnded } from '../following/notify.js';

type Deps = Pick<CoreDeps, 'db' | 'glue' | 'logger' | 'config' | 'now'>;

/**
 * Creates or updates the glue's job for a Dockerfile from a stored version, with the job settings as they are
 * (job.put is create-or-update, so this is also how reconciliation recreates a job the backend lost, and how the
 * job.sync task applies settings). Returns the spec's digest (protocol.specSha256).
 */
export async function putJob(
  d: Pick<CoreDeps, 'db' | 'glue' | 'config'>,
  dockerfileId: number,
  versionId: number,
  ownerId: number,
): Promise<string> {
  const df = await findDockerfile(d.db, dockerfileId, null);
  const version = await getVersion(d.db, versionId);
  const owner = await findUserById(d.db, ownerId);
  if (!df || !version || !owner) throw new KilnError('not_found', 'The Dockerfile of this build is gone.');
  // The settings as saved: a build never changes its job's schedule, switch, formats, arguments or firmware. A git
  // Dockerfile's timer is Kiln's own (it fetches first), so its job has none.
  const kilnTimer = !!(await getGitSource(d.db, df.id));
  const spec: JobSpecInput = {
    owner: owner.username,
    name: df.name,
    dockerfile: version.content,
    ...specFields(await settingsOf(d, d.db, df.id), { kilnTimer }),
    ...(version.source ? { source: version.source } : {}),
    // The site's retention, for a backend that discards by itself (Jenkins' build discarder): the web's rule, once.
    retention: { keepBuilds: d.config.retention.keepBuilds, keepDays: d.config.retention.keepDays },
  };
  // The site's names for bases as they are now; the builder's SDK checks each against its own sdk.bases.
  const baseNames = await siteBaseNames(d.db);
  if (baseNames.length) spec.baseNames = baseNames;
  let tar: Buffer | undefined;
  if (version.context_id != null) {
    // The context stored with this version (not the Dockerfile's current one): a retried dispatch builds what was requested.
    tar = await getContextTar(d.db, version.context_id);
    if (!tar) throw new KilnError('not_found', 'The build context of this build is gone.');
    spec.contextTarBase64 = tar.toString('base64');
  }
  await d.glue.call('job.put', [df.id], JSON.stringify(spec));
  return specSha256(version.content, tar, version.source ?? undefined);
}

/**
 * job.put of the build's version, then job.build of exactly that version (its digest): a job.put of another
 * version that lands in between (a concurrent dispatch) makes the glue refuse with `conflict`, and the pair is
 * tried again, a few times.
 */
async function putAndBuild(d: Deps, build: BuildRow) {
  if (!(await settingsOf(d, d.db, build.dockerfile_id)).enabled) {
    throw conflict(
      "The Dockerfile's job was switched off before this build started; switch it on and press Build again.",
    );
  }
  for (let attempt = 1; ; attempt++) {
    const sha = await putJob(d, build.dockerfile_id, build.version_id, build.owner_id);
    try {
      return await d.glue.call('job.build', [build.dockerfile_id, glueKey(build), sha]);
    } catch (e) {
      if (!isKilnError(e, 'conflict')) throw e;
      if (attempt >= 3)
        throw conflict('The Dockerfile kept changing while this build was being started; press Build to try again.');
    }
  }
}

/**
 * Counts the dispatch attempt, if it is this build's turn: under `worker.userBuildsInFlight` (a cap per user on
 * builds at the backend, for backends that run their queue first come first served, Jenkins) a build waits in
 * `requested` while its owner has that many at the backend or being handed over, and behind the owner's older waiting
 * builds. Checked and counted under the owner's row lock, so two workers never both take the last slot.
 */
async function takeDispatchTurn(d: Deps, build: BuildRow): Promise<boolean> {
  const cap = d.config.worker.userBuildsInFlight;
  if (cap === 0) {
    await bumpDispatchAttempts(d.db, build.id);
    return true;
  }
  return d.db.transaction(async (trx) => {
    await lockUserRow(trx, build.owner_id);
    if (!(await isDispatchTurn(trx, build, cap))) return false;
    await bumpDispatchAttempts(trx, build.id);
    return true;
  });
}

/**
 * `build.dispatch`: hands a `requested` build to the glue; the row becomes `queued` with the backend build number
 * and its refresh task is enqueued, in one transaction. The glue unreachable: thrown, so the task is retried with
 * backoff under the same key (never a second backend build). A refusal (the glue's answer about this build, e.g. a
 * policy violation or a Dockerfile that is gone) fails the build with it. A build that is no longer `requested`
 * (cancelled meanwhile, already dispatched) is left alone: the withdraw task takes back what a cancelled one started.
 */
export const dispatchTask: TaskKind = {
  async run(d, { task, log, waits }) {
    const build = await buildOf(d, task.subject);
    if (build?.state !== 'requested') return;
    // A build of a git Dockerfile whose commit is not pinned yet (a reconciliation found it requested) fetches first.
    if (await needsFetch(d.db, build)) {
      await enqueue(d.db, d, 'build.fetch', task.subject);
      return;
    }
    if (!(await takeDispatchTurn(d, build))) return { again: d.config.worker.refreshMs };
    let r;
    try {
      r = await putAndBuild(d, build);
    } catch (e) {
      if (isTransient(e) || !isKilnError(e)) throw e;
      log.warn({ build: build.id, err: e.message }, 'the glue refused the build');
      if (
        await updateBuild(d.db, build.id, ['requested'], { state: 'failed', reason: e.message, finished_at: nowIso() })
      )
        await buildEnded(d.db, d, build.id);
      return;
    }
    const queued = await d.db.transaction(async (trx) => {
      const moved = await updateBuild(trx, build.id, ['requested'], {
        state: 'queued',
        backend_build: r.build,
        queued_at: nowIso(),
        reason: null,
      });
      if (moved) await enqueue(trx, d, 'build.refresh', task.subject, { delayMs: d.config.worker.refreshMs });
      return moved;
    });
    if (!queued) return;
    log.info({ build: build.id, job: build.dockerfile_id, backendBuild: r.build }, 'build dispatched');
    // Its start (and, for a short build, its end) is heard through the held wait, before the first refresh is due.
    waits?.watch({ ...build, backend_build: r.build }, 'queued');
  },
  async gaveUp(d, task, error) {
    const build = await buildOf(d, task.subject);
    if (!build) return;
    await d.db.transaction(async (trx) => {
      const failed = await updateBuild(trx, build.id, ['requested'], {
        state: 'failed',
        finished_at: nowIso(),
        reason: `Kiln could not hand this build to the build service (${error}); press Build to try again.`,
      });
      // A try may have reached the backend without an answer: take it back.
      if (failed) {
        await enqueue(trx, d, 'build.withdraw', task.subject);
        await buildEnded(trx, d, build.id);
      }
    });
  },
};

/**
 * `build.withdraw`: makes the backend drop what an ended build still has there. A build with a backend number is
 * cancelled by it; one without, whose dispatch may have reached the backend unanswered (a Jenkins trigger still
 * in its queue), is withdrawn by its key, once no dispatch of it is in flight any more (one that lands after the
 * withdrawal would run after all), and its dispatch attempts are cleared.
 */
export const withdrawTask: TaskKind = {
  async run(d, { task, log }) {
    const build = await buildOf(d, task.subject);
    if (!build || !isFinal(build.state)) return;
    if (build.backend_build != null) {
      const r = await d.glue.call('build.cancel', [build.dockerfile_id, build.backend_build]).catch((e: unknown) => {
        if (isKilnError(e, 'not_found')) return undefined;
        throw e;
      });
      if (r)
        log.info(
          { build: build.id, backendBuild: build.backend_build, state: r.state },
          'stopped the backend build of an ended build',
        );
      return;
    }
    if (build.dispatch_attempts === 0) return;
    if (await isTaskLive(d.db, 'build.dispatch', task.subject)) return { again: d.config.worker.refreshMs };
    const r = await d.glue.call('build.withdraw', [build.dockerfile_id, glueKey(build)]).catch((e: unknown) => {
      if (isKilnError(e, 'not_found')) return { withdrawn: false as const, build: undefined };
      throw e;
    });
    await clearDispatchAttempts(d.db, build.id);
    if (r.withdrawn)
      log.info({ build: build.id, backendBuild: r.build }, 'withdrew the backend trigger of an ended build');
  },
};

/** The build a task is about (its subject `build:<id>`), as stored now. */
export async function buildOf(d: Pick<CoreDeps, 'db'>, subject: string): Promise<BuildRow | undefined> {
  const id = buildIdOf(subject);
  return id === undefined ? undefined : findBuild(d.db, id, null);
}
