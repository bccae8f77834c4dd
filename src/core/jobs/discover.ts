/**
 * Builds the backend started on its own (its timer) become builds in the web, with trigger `schedule`: part of each
 * reconciliation pass. Cheap when nothing is new: only jobs whose last build number (jobs.list) is past the highest
 * the web knows are asked for their builds (job.builds).
 */
import { findDockerfile, hasBackendBuild, insertScheduledBuild, knownBackendBuilds } from '../../db/index.js';
import type { JobInfo } from '../../protocol/index.js';
import { isKilnError } from '../../shared/errors.js';
import type { CoreDeps } from '../deps.js';
import { buildSubject, enqueue } from '../tasks/queue.js';

/**
 * Records every timer build of a Kiln job the web does not know yet (as `queued`, with its refresh task, which
 * takes it from there like any build). Returns how many were added. Builds started by hand in Jenkins are left out.
 */
export async function discoverScheduledBuilds(
  d: Pick<CoreDeps, 'db' | 'glue' | 'config' | 'now' | 'logger'>,
  jobs: readonly JobInfo[],
): Promise<number> {
  const known = await knownBackendBuilds(d.db);
  let added = 0;
  for (const j of jobs) {
    if (!j.managed || j.job === undefined || !j.lastBuild || (known.get(j.job) ?? 0) >= j.lastBuild) continue;
    const df = await findDockerfile(d.db, j.job, null);
    if (!df || df.deleting_at || df.current_version_id == null) continue;
    const builds = await d.glue.call('job.builds', [j.job]).then(
      (r) => r.builds,
      (e: unknown) => {
        if (isKilnError(e, 'not_found')) return [];
        throw e;
      },
    );
    for (const b of builds.filter((x) => x.trigger === 'schedule').reverse()) {
      if (await hasBackendBuild(d.db, j.job, b.build)) continue;
      const row = await d.db.transaction(async (trx) => {
        // The version the job holds is the one last put: the Dockerfile's current one, kept in step by job.sync.
        const r = await insertScheduledBuild(trx, {
          dockerfileId: df.id,
          versionId: df.current_version_id!,
          ownerId: df.owner_id,
          backendBuild: b.build,
          ...(b.queuedAt ? { queuedAt: b.queuedAt } : {}),
        });
        if (r) await enqueue(trx, d, 'build.refresh', buildSubject(r.id));
        return r;
      });
      if (row) {
        added++;
        d.logger.info(
          { build: row.id, dockerfile: df.id, backendBuild: b.build },
          'found a build the schedule started',
        );
      }
    }
  }
  return added;
}
