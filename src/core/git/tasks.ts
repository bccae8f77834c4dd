/**
 * The tasks that fetch and follow git Dockerfiles (src/core/tasks). Each is idempotent: a fetch stores a version only
 * if an identical one is not there already, a build's commit is pinned by a guarded update, a commit is built once
 * per Dockerfile (its key is `push-<dockerfile>-<commit>`).
 *
 *   git.fetch   (dockerfile:<id>)  the source's ref -> the Dockerfile's current version (after an edit, or creation)
 *   build.fetch (build:<id>)       a requested build's commit (a push's, or the ref's head) -> its version, pinned;
 *                                  a scheduled build whose commit has not changed since the last success is skipped
 *   git.poll    (dockerfile:<id>)  a following Dockerfile's branch head; a new one is built (trigger `push`)
 *
 * A refusal (the URL, the address, the ref, the size, the policy) ends the task at once, visibly: the source's
 * fetch error, or the build failed with the reason. Network trouble is thrown: retried with backoff, and after
 * worker.maxAttempts it ends the same visible way.
 */
import type { Logger } from '../../shared/logger.js';
import {
  advanceFollowed,
  findDockerfile,
  findLastSucceeded,
  getGitSource,
  hasBuildOfCommit,
  markPolled,
  nowIso,
  putFetchedVersion,
  recordFetch,
  updateBuild,
  type BuildRow,
  type DockerfileRow,
  type GitSourceRow,
} from '../../db/index.js';
import { KilnError, isKilnError } from '../../shared/errors.js';
import { buildOf } from '../builds/dispatch.js';
import { requestOf } from '../builds/index.js';
import type { CoreDeps } from '../deps.js';
import { afterNewVersion, policyChecked } from '../dockerfiles.js';
import { isTransient } from '../ports.js';
import { storeWithinQuota } from '../storage.js';
import { dockerfileIdOf, enqueue, wake } from '../tasks/queue.js';
import type { TaskKind } from '../tasks/worker.js';
import { branchHead, fetchSource, type Fetched } from './fetch.js';
import { needsFetch } from './pin.js';
import { branchOf, parseGitUrl } from './url.js';
import { buildEnded } from '../following/notify.js';

const gitDeps = (d: CoreDeps) => ({ config: d.config, logger: d.logger, ...(d.lookup ? { lookup: d.lookup } : {}) });

/** Fetches what `src` names (exactly `commit`, when given) and runs the Dockerfile policy on it. */
async function fetchChecked(d: CoreDeps, src: GitSourceRow, signal: AbortSignal, commit?: string): Promise<Fetched> {
  const fetched = await fetchSource(gitDeps(d), {
    url: parseGitUrl(src.url, d.config.git.mirrors),
    ref: src.ref,
    ...(commit ? { commit } : {}),
    path: src.dockerfile_path,
    context: src.context_dir,
    signal,
  });
  try {
    await policyChecked(d, fetched.dockerfile);
  } catch (e) {
    if (isKilnError(e, 'policy_violation') && Array.isArray(e.detail)) {
      const findings = (e.detail as { line: number; message: string }[])
        .map((f) => `line ${f.line}: ${f.message}`)
        .join('; ');
      throw new KilnError('policy_violation', `${src.dockerfile_path} at ${fetched.commit.slice(0, 12)}: ${findings}`, {
        detail: e.detail,
      });
    }
    throw e;
  }
  return fetched;
}

/** A final refusal to keep (the rest is thrown, for a retry). */
const refusal = (e: unknown): KilnError | undefined => (isKilnError(e) && !isTransient(e) ? e : undefined);

/**
 * Stores a fetch as the Dockerfile's current version (within its owner's storage quota), records the commit on the
 * source when it is still the revision that was fetched, and lets `then` act in the same transaction.
 */
async function storeFetched<T>(
  d: CoreDeps,
  df: DockerfileRow,
  src: GitSourceRow,
  fetched: Fetched,
  then: (trx: Parameters<Parameters<typeof storeWithinQuota>[3]>[0], versionId: number) => Promise<T>,
): Promise<T> {
  const bytes = Buffer.byteLength(fetched.dockerfile) + (fetched.context?.tar.length ?? 0);
  return storeWithinQuota(d, df.owner_id, bytes, async (trx) => {
    const { version } = await putFetchedVersion(trx, df.id, {
      content: fetched.dockerfile,
      ...(fetched.context ? { context: fetched.context } : {}),
      source: fetched.source,
    });
    await afterNewVersion(trx, d, df, version);
    await recordFetch(trx, df.id, src.revision, { commit: fetched.commit });
    return then(trx, version.id);
  });
}

/** `git.fetch`: the source's ref, as the Dockerfile's current version. An edit meanwhile fetches again. */
export const gitFetchTask: TaskKind = {
  async run(d, { task, signal, log }) {
    const id = dockerfileIdOf(task.subject);
    const df = id === undefined ? undefined : await findDockerfile(d.db, id, null);
    const src = df && !df.deleting_at ? await getGitSource(d.db, df.id) : undefined;
    if (!df || !src) return;
    let fetched: Fetched;
    try {
      fetched = await fetchChecked(d, src, signal);
      const stale = await storeFetched(d, df, src, fetched, async (trx) => {
        const now = await getGitSource(trx, df.id);
        // Edited while this fetch ran: what it fetched is not what the source names now.
        if (now?.revision !== src.revision) throw new StaleFetch();
        return false;
      }).catch((e: unknown) => {
        if (e instanceof StaleFetch) return true;
        throw e;
      });
      if (stale) return { again: 0 };
    } catch (e) {
      const r = refusal(e);
      if (!r) throw e;
      await recordFetch(d.db, df.id, src.revision, { error: r.message });
      log.warn({ dockerfile: df.id, err: r.message }, 'git fetch refused');
      return;
    }
    // Following starts from what the source was at when it was set (a baseline, not a build).
    if (src.follow && src.followed_commit === null) await advanceFollowed(d.db, df.id, null, fetched.commit);
    log.info({ dockerfile: df.id, commit: fetched.commit }, 'fetched from git');
  },
  async gaveUp(d, task, error) {
    const id = dockerfileIdOf(task.subject);
    const src = id === undefined ? undefined : await getGitSource(d.db, id);
    if (src) await recordFetch(d.db, src.dockerfile_id, src.revision, { error: `Kiln gave up fetching (${error}).` });
  },
};

class StaleFetch extends Error {}

async function failBuild(d: CoreDeps, build: BuildRow, reason: string): Promise<void> {
  if (await updateBuild(d.db, build.id, ['requested'], { state: 'failed', reason, finished_at: nowIso() }))
    await buildEnded(d.db, d, build.id);
}

/**
 * `build.fetch`: pins a requested build of a git Dockerfile to a commit (its push's, or the ref's head now) and the
 * version made from it, then hands it to build.dispatch. A scheduled build whose commit (and version) is the last
 * successful build's is `skipped`, with the reason.
 */
export const buildFetchTask: TaskKind = {
  async run(d, { task, signal, log }) {
    const build = await buildOf(d, task.subject);
    if (build?.state !== 'requested') return;
    const df = await findDockerfile(d.db, build.dockerfile_id, null);
    const src = df ? await getGitSource(d.db, df.id) : undefined;
    if (!df || !src || !(await needsFetch(d.db, build))) {
      await enqueue(d.db, d, 'build.dispatch', task.subject);
      wake(d);
      return;
    }
    let fetched: Fetched;
    try {
      fetched = await fetchChecked(d, src, signal, build.git_commit ?? undefined);
    } catch (e) {
      const r = refusal(e);
      if (!r) throw e;
      await failBuild(d, build, `Kiln could not fetch the Dockerfile from git: ${r.message}`);
      if (!build.git_commit) await recordFetch(d.db, df.id, src.revision, { error: r.message });
      return;
    }
    let outcome: 'dispatch' | 'skipped' | 'gone';
    try {
      outcome = await storeFetched(d, df, src, fetched, async (trx, versionId) => {
        const last = build.trigger === 'schedule' ? await findLastSucceeded(trx, df.id) : undefined;
        if (last && last.git_commit === fetched.commit && last.version_id === versionId) {
          const skipped = await updateBuild(trx, build.id, ['requested'], {
            state: 'skipped',
            version_id: versionId,
            git_commit: fetched.commit,
            reason: `Skipped: commit ${fetched.commit.slice(0, 12)} has not changed since build #${last.id}, which succeeded.`,
            finished_at: nowIso(),
          });
          if (skipped) await buildEnded(trx, d, build.id);
          return skipped ? 'skipped' : 'gone';
        }
        const pinned = await updateBuild(trx, build.id, ['requested'], {
          version_id: versionId,
          git_commit: fetched.commit,
        });
        if (pinned) await enqueue(trx, d, 'build.dispatch', task.subject);
        return pinned ? 'dispatch' : 'gone';
      });
    } catch (e) {
      const r = refusal(e);
      if (!r) throw e;
      await failBuild(d, build, r.message);
      return;
    }
    if (outcome === 'dispatch') wake(d);
    log.info({ build: build.id, commit: fetched.commit, outcome }, 'build pinned to a git commit');
  },
  async gaveUp(d, task, error) {
    const build = await buildOf(d, task.subject);
    if (build)
      await failBuild(d, build, `Kiln could not fetch the Dockerfile from git (${error}); press Build to try again.`);
  },
};

/** The idempotency key of the build of one commit a Dockerfile follows (webhook and poll make the same one). */
export const pushKey = (dockerfileId: number, commit: string): string => `push-${dockerfileId}-${commit.slice(0, 40)}`;

export type FollowOutcome =
  | { outcome: 'build'; build: number; created: boolean }
  | { outcome: 'seen' | 'baseline' }
  | { outcome: 'refused'; message: string };

/**
 * A following Dockerfile learnt that its branch is at `commit` (a push, or a poll): a commit it has not built is
 * requested once (trigger `push`, the active-build quota applies), and following moves on to it. A poll's first
 * look only sets where following starts. A refusal (switched off, quota) leaves following where it was: a later
 * poll tries again.
 */
export async function followCommit(
  d: CoreDeps,
  df: DockerfileRow,
  src: GitSourceRow,
  commit: string,
  from: 'push' | 'poll',
): Promise<FollowOutcome> {
  if (src.followed_commit === null && from === 'poll') {
    await advanceFollowed(d.db, df.id, null, commit);
    return { outcome: 'baseline' };
  }
  if (commit === src.followed_commit) return { outcome: 'seen' };
  if (await hasBuildOfCommit(d.db, df.id, commit)) {
    await advanceFollowed(d.db, df.id, src.followed_commit, commit);
    return { outcome: 'seen' };
  }
  try {
    const r = await requestOf(d, df, { key: pushKey(df.id, commit), trigger: 'push', quota: true, gitCommit: commit });
    await advanceFollowed(d.db, df.id, src.followed_commit, commit);
    return { outcome: 'build', build: r.build.id, created: r.created };
  } catch (e) {
    const r = refusal(e);
    if (!r) throw e;
    return { outcome: 'refused', message: r.message };
  }
}

/** `git.poll`: asks the repository where the followed branch is; a new head is built (followCommit). */
export const gitPollTask: TaskKind = {
  async run(d, { task, signal, log }) {
    const id = dockerfileIdOf(task.subject);
    const df = id === undefined ? undefined : await findDockerfile(d.db, id, null);
    const src = df && !df.deleting_at ? await getGitSource(d.db, df.id) : undefined;
    const branch = src?.follow ? branchOf(src.ref) : undefined;
    if (!df || !src || !branch) return;
    await markPolled(d.db, df.id, nowIso());
    let head: string | undefined;
    try {
      head = await branchHead(gitDeps(d), parseGitUrl(src.url, d.config.git.mirrors), branch, signal);
      if (!head) throw new KilnError('not_found', `The repository has no branch ${branch}.`);
    } catch (e) {
      const r = refusal(e);
      if (!r) throw e;
      await recordFetch(d.db, df.id, src.revision, { error: r.message });
      return;
    }
    logFollow(log, df.id, head, await followCommit(d, df, src, head, 'poll'));
  },
};

export function logFollow(log: Logger, dockerfile: number, commit: string, r: FollowOutcome): void {
  if (r.outcome === 'build' && r.created)
    log.info({ dockerfile, commit, build: r.build }, 'new commit: build requested');
  if (r.outcome === 'refused') log.warn({ dockerfile, commit, err: r.message }, 'new commit not built');
}
