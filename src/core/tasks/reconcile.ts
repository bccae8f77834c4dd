/**
 * `reconcile`: the safety net under the task queue, run every worker.reconcileSeconds (each worker asks for it; one
 * pass runs at a time, whoever claims it). One pass:
 *   1. every build that is not final has the task that moves it on (requested -> build.dispatch, queued/running ->
 *      build.refresh, verifying -> build.attest), and every ended build whose dispatch may have reached the backend
 *      unanswered has its build.withdraw: enqueueing is a no-op for a task that is already there, so this only
 *      repairs what got lost (a row written by an older Kiln, say);
 *   2. jobs: every Dockerfile the backend has been given must have its job; one the backend lost (deleted by hand,
 *      gone with a Jenkins home) is put again from the stored Dockerfile;
 *   3. jobs: every job whose saved settings the glue has not confirmed has its job.sync, every Dockerfile whose
 *      deletion is pending its dockerfile.delete, and builds the backend's timer started are recorded
 *      (jobs/discover.ts);
 *   4. git Dockerfiles: their scheduled builds that are due are requested (Kiln's own timer, git/schedule.ts) and
 *      the following ones not polled for git.pollSeconds get their git.poll;
 *   5. releases still pending have their release.make, and a retention pass is asked for (retention.ts);
 *   6. ended builds without their notice (a crash between the end and its enqueue) get build.notify
 *      (following/notify.ts);
 *   7. done tasks older than a day are removed (failed ones stay, for the record).
 */
import { enqueueMissingNotices } from '../following/notify.js';
import {
  listBuildsToReconcile,
  listBuildsToWithdraw,
  listDeletingDockerfiles,
  listDispatchedDockerfiles,
  listJobsToSync,
  listPendingReleases,
  pruneDoneTasks,
  type BuildRow,
} from '../../db/index.js';
import type { JobInfo } from '../../protocol/index.js';
import { discoverScheduledBuilds } from '../jobs/discover.js';
import { enqueueGitPolls, scheduleGitBuilds } from '../git/schedule.js';
import { putJob } from '../builds/dispatch.js';
import { clockOf, type CoreDeps } from '../deps.js';
import { isTransient } from '../ports.js';
import { buildSubject, dockerfileSubject, enqueue, isoAt, releaseSubject, type TaskKindName } from './queue.js';
import type { TaskKind } from './worker.js';

const DAY_MS = 24 * 3600_000;

const taskFor = (b: BuildRow): TaskKindName =>
  b.state === 'requested' ? 'build.dispatch' : b.state === 'verifying' ? 'build.attest' : 'build.refresh';

/** Enqueues the task of every build that is not final (and every withdrawal owed). Returns how many were missing. */
export async function ensureBuildTasks(d: Pick<CoreDeps, 'db' | 'config' | 'now'>): Promise<number> {
  let added = 0;
  for (let after = 0; ;) {
    const page = await listBuildsToReconcile(d.db, { afterId: after });
    if (!page.length) break;
    for (const b of page) if (await enqueue(d.db, d, taskFor(b), buildSubject(b.id))) added++;
    after = page.at(-1)!.id;
  }
  for (const b of await listBuildsToWithdraw(d.db))
    if (await enqueue(d.db, d, 'build.withdraw', buildSubject(b.id))) added++;
  for (const id of await listJobsToSync(d.db)) if (await enqueue(d.db, d, 'job.sync', dockerfileSubject(id))) added++;
  for (const id of await listDeletingDockerfiles(d.db))
    if (await enqueue(d.db, d, 'dockerfile.delete', dockerfileSubject(id))) added++;
  for (const id of await listPendingReleases(d.db))
    if (await enqueue(d.db, d, 'release.make', releaseSubject(id))) added++;
  return added;
}

/** Recreates the backend jobs the web knows but the backend does not. Returns the Dockerfile ids recreated. */
export async function reconcileJobs(
  d: Pick<CoreDeps, 'db' | 'glue' | 'config' | 'logger'>,
  listed?: readonly JobInfo[],
): Promise<number[]> {
  const jobs = listed ?? (await d.glue.call('jobs.list', [])).jobs;
  const present = new Set(jobs.filter((j) => j.managed && j.job !== undefined).map((j) => j.job!));
  const recreated: number[] = [];
  for (const df of await listDispatchedDockerfiles(d.db)) {
    if (present.has(df.id)) continue;
    await putJob(d, df.id, df.current_version_id!, df.owner_id);
    d.logger.warn({ job: df.id }, 'job missing in the backend: recreated from the stored Dockerfile');
    recreated.push(df.id);
  }
  return recreated;
}

export const reconcileTask: TaskKind = {
  async run(d, { log }) {
    const added = await ensureBuildTasks(d);
    if (added) log.warn({ added }, 'reconciliation enqueued tasks that were missing');
    try {
      const { jobs } = await d.glue.call('jobs.list', []);
      await reconcileJobs(d, jobs);
      const found = await discoverScheduledBuilds(d, jobs);
      if (found) log.info({ found }, 'recorded builds the schedule started');
    } catch (e) {
      // Backend away: nothing to compare against this time; the next pass tries again.
      if (!isTransient(e)) throw e;
      log.warn({ err: (e as Error).message }, 'glue unavailable; job reconciliation skipped');
    }
    const scheduled = await scheduleGitBuilds(d);
    if (scheduled) log.info({ scheduled }, 'requested scheduled builds of git Dockerfiles');
    await enqueueGitPolls(d);
    await enqueue(d.db, d, 'retention', '');
    await enqueueMissingNotices(d);
    await pruneDoneTasks(d.db, isoAt(clockOf(d) - DAY_MS));
  },
};
