/**
 * The tasks that carry a job (src/core/tasks): `job.sync` puts a Dockerfile's job as its settings say, and
 * `dockerfile.delete` deletes the job of a Dockerfile whose deletion was confirmed, then its rows. Both are
 * idempotent (job.put is create-or-update, enable/disable/delete of a job already so succeed) and run again after
 * any failure; reconciliation enqueues them again for whatever is still behind (listJobsToSync,
 * listDeletingDockerfiles), so a glue that stays away for long only delays them.
 */
import {
  findDockerfile,
  getJobSettings,
  hasDispatchedBuild,
  hasLiveDispatch,
  markJobSynced,
  purgeDockerfile,
  releasesOfDockerfile,
  setJobSyncError,
} from '../../db/index.js';
import { removeReleaseFiles } from '../releases.js';
import { putJob } from '../builds/dispatch.js';
import { dockerfileIdOf } from '../tasks/queue.js';
import type { TaskKind } from '../tasks/worker.js';

/**
 * `job.sync` (subject `dockerfile:<id>`): job.put of the current version with the current settings, then
 * job.enable or job.disable, so a switch flipped in Kiln reaches the backend's own enable/disable (a Jenkins job
 * someone disabled by hand is enabled again the same way). Marks the revision it read as the glue's.
 */
export const syncTask: TaskKind = {
  async run(d, { task, log }) {
    const id = dockerfileIdOf(task.subject);
    const df = id === undefined ? undefined : await findDockerfile(d.db, id, null);
    if (!df || df.deleting_at || df.current_version_id == null) return;
    const row = await getJobSettings(d.db, df.id);
    // Nothing chosen and never built: the backend has no job and needs none yet.
    if (!row && !(await hasDispatchedBuild(d.db, df.id))) return;
    await putJob(d, df.id, df.current_version_id, df.owner_id);
    const enabled = row?.enabled ?? true;
    await d.glue.call(enabled ? 'job.enable' : 'job.disable', [df.id]);
    if (row) await markJobSynced(d.db, df.id, row.revision);
    log.info({ dockerfile: df.id, revision: row?.revision, enabled }, 'job put through the glue');
  },
  async gaveUp(d, task, error) {
    const id = dockerfileIdOf(task.subject);
    if (id !== undefined)
      await setJobSyncError(
        d.db,
        id,
        `Kiln could not apply these settings to the build service (${error}); it tries again.`,
      );
  },
};

/**
 * `dockerfile.delete` (subject `dockerfile:<id>`): once no dispatch of its builds is in flight (one landing after the
 * delete would put the job back) and no release of it is being made, job.delete through the glue (which stops its
 * builds and removes their artifacts), its releases' files, then the Dockerfile's rows (releases included) in one
 * statement. The glue away: retried; the page says deletion is
 * pending meanwhile, and nothing is half-deleted (the rows go only after the glue confirmed).
 */
export const deleteTask: TaskKind = {
  async run(d, { task, log }) {
    const id = dockerfileIdOf(task.subject);
    const df = id === undefined ? undefined : await findDockerfile(d.db, id, null);
    if (!df?.deleting_at) return;
    if (await hasLiveDispatch(d.db, df.id)) return { again: d.config.worker.refreshMs };
    // A release being made would land its files after they were removed: it ends first (made, or failed).
    const releases = await releasesOfDockerfile(d.db, df.id);
    if (releases.pending) return { again: d.config.worker.refreshMs };
    const { deleted } = await d.glue.call('job.delete', [df.id]);
    // The files before the rows: a crash in between leaves rows (retried) whose files are gone, never stray files.
    await removeReleaseFiles(d.config, releases.ids);
    await purgeDockerfile(d.db, df.id);
    log.info({ dockerfile: df.id, jobDeleted: deleted }, 'Dockerfile deleted with its job');
  },
};
