/**
 * `build.refresh`: pulls the glue's view of a dispatched build into its row, again and again while it is queued
 * or running (each pass returns `again`, and a requeued build waiting for its new dispatch keeps it), and ends when
 * the build does. Each pass that leaves the build at the backend asks the worker to hold a wait on it (waits.ts),
 * whose answer runs the next pass at once when the build moves: `worker.refreshMs` is the pace of its progress and
 * what a lost wake-up costs, not how late its end is seen. A build the backend finished is `verifying` and gets its attestation task; one the glue lost
 * (`lost`, or it no longer knows the build) is requeued once and dispatched again (requeue.ts). The glue
 * unreachable: thrown, retried with backoff; when that goes on for worker.maxAttempts runs the build fails with the
 * reason and its backend build is stopped.
 *
 * `build.cancel`: the owner asked to cancel a build the backend has: build.cancel through the glue, and the row
 * takes the answer (cancelled; a build that ended on its own first keeps its real end, taken as a refresh takes it).
 */
import {
  ACTIVE_STATES,
  isFinal,
  nowIso,
  updateBuild,
  type BuildRow,
  type Queryable,
  type WebBuildState,
} from '../../db/index.js';
import type { BuildStatus } from '../../protocol/index.js';
import { isKilnError } from '../../shared/errors.js';
import type { CoreDeps } from '../deps.js';
import { buildIdOf, enqueue } from '../tasks/queue.js';
import type { TaskKind, TaskResult } from '../tasks/worker.js';
import { buildOf } from './dispatch.js';
import { afterInterruption } from './requeue.js';
import type { WaitedState } from './waits.js';
import { buildEnded } from '../following/notify.js';

type Deps = Pick<CoreDeps, 'db' | 'glue' | 'logger' | 'config' | 'now'>;

/**
 * Records what the glue says of a dispatched build. Returns whether the row moved. A backend `succeeded` is the
 * builder's word: the build is `verifying` until the web has hashed what it received and signed it (attest.ts),
 * and gets its attestation task in the same transaction; the digests shown are then the web's, never result.json's.
 */
async function takeStatus(d: Deps, build: BuildRow, st: BuildStatus, subject: string): Promise<WebBuildState> {
  const next: WebBuildState =
    st.state === 'succeeded' ? 'verifying' : (st.state as Exclude<BuildStatus['state'], 'succeeded' | 'lost'>);
  await d.db.transaction(async (trx: Queryable) => {
    const moved = await updateBuild(trx, build.id, ACTIVE_STATES, {
      state: next,
      // Every failed or cancelled build says why, even when its backend did not.
      reason:
        st.reason ||
        (next === 'failed' ? 'The build failed; its log says why.' : next === 'cancelled' ? 'Cancelled.' : null),
      // A final status carries no event: the last one seen stays (where a failed build stopped).
      progress: st.progress ?? build.progress,
      artifacts: st.artifacts,
      started_at: st.startedAt ?? build.started_at,
      finished_at: isFinal(next) || next === 'verifying' ? (st.finishedAt ?? nowIso()) : null,
    });
    if (moved && next === 'verifying') await enqueue(trx, d, 'build.attest', subject);
    if (moved && isFinal(next)) await buildEnded(trx, d, build.id);
  });
  return next;
}

/** The glue lost the build (`why`): requeued once (and dispatched again) or failed. */
async function interrupted(d: Deps, build: BuildRow, why: string, subject: string): Promise<TaskResult> {
  const row = await afterInterruption(d, build, why);
  if (row.state === 'requested') await enqueue(d.db, d, 'build.dispatch', subject);
  return isFinal(row.state) ? undefined : { again: d.config.worker.refreshMs };
}

/**
 * One look at a dispatched build: its result as a task's, and the state it is in at the backend while it is there
 * (queued or running), for the held wait that tells its next change at once (waits.ts).
 */
async function look(d: Deps, subject: string): Promise<{ result: TaskResult; at?: WaitedState; build?: BuildRow }> {
  const build = await buildOf(d, subject);
  if (!build || isFinal(build.state) || build.state === 'verifying') return { result: undefined };
  if (build.state === 'requested' || build.backend_build == null) {
    // Requeued, waiting for its dispatch: make sure one is coming (a no-op when it is), and look again later.
    await enqueue(d.db, d, 'build.dispatch', subject);
    return { result: { again: d.config.worker.refreshMs } };
  }
  let st: BuildStatus;
  try {
    st = await d.glue.call('build.status', [build.dockerfile_id, build.backend_build]);
  } catch (e) {
    if (!isKilnError(e, 'not_found')) throw e;
    return { result: await interrupted(d, build, 'the build vanished from the build service', subject) };
  }
  if (st.state === 'lost') return { result: await interrupted(d, build, st.reason ?? 'interrupted', subject) };
  const next = await takeStatus(d, build, st, subject);
  if (next !== 'queued' && next !== 'running') return { result: undefined };
  return { result: { again: d.config.worker.refreshMs }, at: next, build };
}

export const refreshTask: TaskKind = {
  async run(d, { task, waits }) {
    const seen = await look(d, task.subject);
    // Still at the backend: its next change comes through the held wait at once, and the look again after
    // refreshMs keeps its progress and is the net under a lost wake-up. Anything else (ended, requeued, gone): none.
    const id = buildIdOf(task.subject);
    if (seen.at && seen.build) waits?.watch(seen.build, seen.at);
    else if (id !== undefined) waits?.forget(id);
    return seen.result;
  },
  async gaveUp(d, task, error) {
    const build = await buildOf(d, task.subject);
    if (!build) return;
    await d.db.transaction(async (trx) => {
      const failed = await updateBuild(trx, build.id, ['queued', 'running'], {
        state: 'failed',
        finished_at: nowIso(),
        reason: `Kiln lost contact with the build service while this build was in it (${error}); press Build to try again.`,
      });
      if (failed) {
        await enqueue(trx, d, 'build.withdraw', task.subject);
        await buildEnded(trx, d, build.id);
      }
    });
  },
};

export const cancelTask: TaskKind = {
  async run(d, { task }) {
    const build = await buildOf(d, task.subject);
    if (!build || isFinal(build.state) || build.state === 'verifying') return;
    if (build.backend_build == null) {
      // Requeued meanwhile (the backend lost it): nothing runs; cancel here, and take back any dispatch of it.
      await d.db.transaction(async (trx) => {
        if (
          await updateBuild(trx, build.id, ['requested'], {
            state: 'cancelled',
            reason: 'Cancelled before it started.',
            finished_at: nowIso(),
          })
        ) {
          await enqueue(trx, d, 'build.withdraw', task.subject);
          await buildEnded(trx, d, build.id);
        }
      });
      return;
    }
    const r = await d.glue.call('build.cancel', [build.dockerfile_id, build.backend_build]).catch((e: unknown) => {
      if (isKilnError(e, 'not_found')) return { state: 'lost' as const };
      throw e;
    });
    // A build the backend lost meanwhile is not requeued once its owner asked to cancel it.
    if (r.state === 'cancelled' || r.state === 'lost') {
      if (
        await updateBuild(d.db, build.id, ACTIVE_STATES, {
          state: 'cancelled',
          reason: 'Cancelled.',
          finished_at: nowIso(),
        })
      )
        await buildEnded(d.db, d, build.id);
      return;
    }
    if (isFinal(r.state)) {
      // It ended on its own first: its real outcome, with its reason, the way every other end is taken (a success
      // still has to be verified and signed before it counts).
      await takeStatus(
        d,
        build,
        await d.glue.call('build.status', [build.dockerfile_id, build.backend_build]),
        task.subject,
      );
      return;
    }
    // Still stopping (a Jenkins build between abort and its end): ask again.
    return { again: d.config.worker.refreshMs };
  },
};
