/**
 * Builds cut off by a fault of Kiln or its machine, not by their Dockerfile: the glue reports them `lost` (a
 * restart of the glue or of Jenkins, a lost agent, an SDK killed from outside), or their backend build has
 * vanished. Such a build is requeued once, under a glue idempotency key derived from its own, so a requeue that
 * is retried (or run by two web instances at once) still makes one backend build. A second interruption fails it.
 */
import { createHash } from 'node:crypto';
import { findBuild, nowIso, requeueBuild, updateBuild, type BuildRow } from '../../db/index.js';
import type { CoreDeps } from '../deps.js';
import { buildEnded } from '../following/notify.js';

/** Requeues after an interruption; the one after that fails the build. */
export const MAX_REQUEUES = 1;

/**
 * The key the glue knows the build's current attempt by: the submission's own key, then, per requeue, one derived
 * from it (`r<n>-` and 43 base64url characters: within the protocol's key pattern whatever the original's length).
 */
export function glueKey(b: Pick<BuildRow, 'idempotency_key' | 'requeues'>): string {
  if (b.requeues === 0) return b.idempotency_key;
  const digest = createHash('sha256').update(`${b.idempotency_key}\nrequeue ${b.requeues}`).digest('base64url');
  return `r${b.requeues}-${digest}`;
}

/**
 * Records that the backend lost `build` (`why` is the glue's reason): back to `requested` for its one requeue, or
 * failed with a reason a user can act on. Returns the row as stored afterwards; the caller dispatches a requeued one.
 */
export async function afterInterruption(
  s: Pick<CoreDeps, 'db' | 'logger' | 'config' | 'now'>,
  build: BuildRow,
  why: string,
): Promise<BuildRow> {
  if (build.backend_build == null) return build;
  if (build.requeues < MAX_REQUEUES) {
    if (await requeueBuild(s.db, build.id, build.backend_build, why)) {
      s.logger.warn(
        { build: build.id, backendBuild: build.backend_build, why },
        'build interrupted by a fault of the build service: requeued',
      );
    }
  } else if (
    await updateBuild(s.db, build.id, ['queued', 'running'], {
      state: 'failed',
      finished_at: nowIso(),
      reason: `The build was interrupted twice by a fault of the build service, not by your Dockerfile (${why}). Kiln does not retry it again: press Build to start it anew.`,
    })
  ) {
    await buildEnded(s.db, s, build.id);
    s.logger.warn(
      { build: build.id, backendBuild: build.backend_build, why },
      'build interrupted again after its requeue: failed',
    );
  }
  return (await findBuild(s.db, build.id, null))!;
}
