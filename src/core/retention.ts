/**
 * Retention: which builds keep their artifacts, pins, and the tasks that carry both to the build service.
 *
 * The rule (config `retention`), per Dockerfile, over its builds at the backend newest first, as Jenkins' build
 * discarder (hudson.tasks.LogRotator) applies it to a job's artifacts: a build beyond the newest `keepBuilds`, or
 * started more than `keepDays` days ago, loses its artifacts; never one that is pinned, not finished, its
 * Dockerfile's latest successful build, or one a release is being copied from. Releases live in their own store
 * and are never touched. The same numbers go to Jenkins with every job.put (its job's build discarder); the local
 * backend discards when told.
 *
 *   retention (every reconciliation pass, or for one Dockerfile): for each build the rule drops, one transaction
 *     marks it (`artifacts_expired_at`, its bytes no longer counted; downloads refuse it from then on) and
 *     enqueues build.discard. The mark is guarded (not pinned, final, not being released), so a pin racing it wins
 *     or loses whole.
 *   build.discard: the glue drops the files (local: the build's archive; Jenkins: its discarder does, the answer
 *     says whether yet). Idempotent; a build the backend has lost is done.
 *   pin / unpin (a user, within retention.pinsPerUser): the row, and build.keep (the backend keeps the build too:
 *     Jenkins' keepLog, which its discarder honours), in one transaction.
 */
import {
  countPins,
  dockerfilesToTrim,
  expireArtifacts,
  lockUserRow,
  retentionBuilds,
  setPinned,
  findBuild,
  isFinal,
  type BuildRow,
  type RetentionBuild,
} from '../db/index.js';
import { conflict, isKilnError, KilnError } from '../shared/errors.js';
import { actorLabel, type Actor } from './actor.js';
import { buildFor } from './builds/access.js';
import { expired } from './builds/artifacts.js';
import { buildOf } from './builds/dispatch.js';
import { clockOf, type CoreDeps } from './deps.js';
import { buildSubject, dockerfileIdOf, dockerfileSubject, enqueue, isoAt, wake } from './tasks/queue.js';
import type { TaskKind } from './tasks/worker.js';

const DAY_MS = 86_400_000;

export interface RetentionRule {
  keepBuilds: number;
  keepDays: number;
}

/** The rule in words, for the pages: "each Dockerfile's newest 20 builds (started within 30 days)". */
export function describeRetention(r: RetentionRule): string {
  const days = r.keepDays > 0 ? `started within the last ${r.keepDays} day${r.keepDays === 1 ? '' : 's'}` : '';
  if (r.keepBuilds > 0)
    return `the artifacts of each Dockerfile's newest ${r.keepBuilds} builds${days ? ` ${days}` : ''}`;
  return days ? `the artifacts of builds ${days}` : "every build's artifacts";
}

/**
 * The builds (of one Dockerfile, newest first) whose artifacts the rule drops at `nowMs`. Pure: the one statement of
 * the rule, for the task and its tests.
 */
export function buildsToDiscard(builds: readonly RetentionBuild[], rule: RetentionRule, nowMs: number): number[] {
  const cutoff = rule.keepDays > 0 ? isoAt(nowMs - rule.keepDays * DAY_MS) : undefined;
  const lastSucceeded = builds.find((b) => b.state === 'succeeded');
  return builds
    .filter((b, i) => (rule.keepBuilds > 0 && i >= rule.keepBuilds) || (cutoff !== undefined && b.started < cutoff))
    .filter((b) => !b.pinned && !b.releasing && b !== lastSucceeded && isFinal(b.state))
    .map((b) => b.id);
}

/** Applies the rule to one Dockerfile: marks what it drops and enqueues its discards. Returns the builds marked. */
export async function applyRetention(d: CoreDeps, dockerfileId: number): Promise<number[]> {
  const rule = d.config.retention;
  const marked: number[] = [];
  for (const id of buildsToDiscard(await retentionBuilds(d.db, dockerfileId), rule, clockOf(d))) {
    const done = await d.db.transaction(async (trx) => {
      if (!(await expireArtifacts(trx, id))) return false;
      await enqueue(trx, d, 'build.discard', buildSubject(id));
      return true;
    });
    if (done) marked.push(id);
  }
  if (marked.length) wake(d);
  return marked;
}

/**
 * `retention`: subject '' (every reconciliation pass: the Dockerfiles with more builds kept than the rule allows, or
 * one too old), or `dockerfile:<id>` (after an unpin).
 */
export const retentionTask: TaskKind = {
  async run(d, { task, log }) {
    const rule = d.config.retention;
    if (rule.keepBuilds <= 0 && rule.keepDays <= 0) return;
    const one = dockerfileIdOf(task.subject);
    const before = rule.keepDays > 0 ? isoAt(clockOf(d) - rule.keepDays * DAY_MS) : undefined;
    const ids =
      one !== undefined
        ? [one]
        : await dockerfilesToTrim(d.db, { keepBuilds: rule.keepBuilds, ...(before ? { before } : {}) });
    let n = 0;
    for (const id of ids) n += (await applyRetention(d, id)).length;
    if (n) log.info({ builds: n }, 'retention: artifacts expired');
  },
};

/** `build.discard` (subject `build:<id>`): the backend drops an expired build's artifacts. */
export const discardTask: TaskKind = {
  async run(d, { task, log }) {
    const b = await buildOf(d, task.subject);
    if (!b?.artifacts_expired_at || b.backend_build == null) return;
    try {
      const r = await d.glue.call('build.discard', [b.dockerfile_id, b.backend_build]);
      log.info({ build: b.id, discarded: r.discarded }, 'build artifacts discarded');
    } catch (e) {
      // The job or the build is gone at the backend: nothing left to discard.
      if (!isKilnError(e, 'not_found')) throw e;
    }
  },
};

/** `build.keep` (subject `build:<id>`): the backend keeps the build as its row says (pinned or not, read now). */
export const keepTask: TaskKind = {
  async run(d, { task }) {
    const b = await buildOf(d, task.subject);
    if (!b || b.backend_build == null) return;
    try {
      await d.glue.call('build.keep', [b.dockerfile_id, b.backend_build, b.pinned ? 'on' : 'off']);
    } catch (e) {
      if (!isKilnError(e, 'not_found')) throw e;
    }
  },
};

/**
 * Pins a build the actor may pin (its owner, or an admin): retention keeps it until it is unpinned. Only a succeeded
 * build whose artifacts are still there; at most retention.pinsPerUser pinned builds per owner (counted under the
 * owner's lock, so parallel pins cannot pass the limit together). Pinning a pinned build changes nothing.
 */
export async function pinBuild(d: CoreDeps, actor: Actor, rawId: unknown): Promise<BuildRow> {
  const b = await buildFor(d.db, actor, rawId, 'build.pin');
  if (b.pinned) return b;
  if (b.artifacts_expired_at) throw expired(b);
  if (b.state !== 'succeeded') throw conflict(`Build ${b.id} is ${b.state}: only a succeeded build can be pinned.`);
  const limit = d.config.retention.pinsPerUser;
  await d.db.transaction(async (trx) => {
    await lockUserRow(trx, b.owner_id);
    const pins = await countPins(trx, b.owner_id);
    if (pins >= limit)
      throw new KilnError(
        'quota_exceeded',
        `${pins} builds are pinned already, the most one user may pin (retention.pinsPerUser = ${limit}); unpin one first.`,
      );
    // Retention may have taken it since it was read: then nothing is pinned and the caller is told why.
    if (!(await setPinned(trx, b.id, true))) {
      const now = await findBuild(trx, b.id, null);
      if (now?.artifacts_expired_at) throw expired(now);
      if (!now?.pinned) throw conflict(`Build ${b.id} cannot be pinned now; reload and try again.`);
      return;
    }
    await enqueue(trx, d, 'build.keep', buildSubject(b.id));
  });
  wake(d);
  d.logger.info({ build: b.id, ...actorLabel(actor) }, 'build pinned');
  return (await findBuild(d.db, b.id, null))!;
}

/** Unpins a build: the backend lets it go, and retention looks at its Dockerfile again now. */
export async function unpinBuild(d: CoreDeps, actor: Actor, rawId: unknown): Promise<BuildRow> {
  const b = await buildFor(d.db, actor, rawId, 'build.pin');
  if (!b.pinned) return b;
  await d.db.transaction(async (trx) => {
    if (!(await setPinned(trx, b.id, false))) return;
    await enqueue(trx, d, 'build.keep', buildSubject(b.id));
    await enqueue(trx, d, 'retention', dockerfileSubject(b.dockerfile_id));
  });
  wake(d);
  d.logger.info({ build: b.id, ...actorLabel(actor) }, 'build unpinned');
  return (await findBuild(d.db, b.id, null))!;
}
