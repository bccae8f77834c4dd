/**
 * Whether a build of a git Dockerfile still has to fetch its commit before it can be dispatched. A build's commit is
 * pinned when its version (what job.put sends) came from that commit: from then on every dispatch, retry and requeue
 * builds exactly it.
 */
import { getGitSource, getVersion, type BuildRow, type Queryable } from '../../db/index.js';

export async function needsFetch(db: Queryable, b: Pick<BuildRow, 'dockerfile_id' | 'version_id' | 'git_commit'>) {
  // No commit yet: a build of a git Dockerfile fetches the ref's head (one that stopped being from git is built as requested).
  if (b.git_commit == null) return !!(await getGitSource(db, b.dockerfile_id));
  return (await getVersion(db, b.version_id))?.source?.commit !== b.git_commit;
}
