/**
 * Repairs drift between the web's records and the build backend behind the glue. One pass:
 *   1. builds: `requested` ones are dispatched (glue unreachable => they stay requested and are retried next pass;
 *      the idempotency key makes a retry find the same backend build, never a second one), and queued/running
 *      ones take the backend's state (a build that finished while nobody looked ends here);
 *   2. cancelled builds whose dispatch may have reached the backend get it withdrawn (build.withdraw by key);
 *   3. jobs: every Dockerfile the backend has been given must have its job; a missing one (deleted by hand, lost
 *      with a Jenkins home) is recreated from the stored Dockerfile;
 *   4. builds the backend finished (`verifying`) are hashed, checked against the builder's claim and signed
 *      (attest.ts). startReconciler runs this on its own cadence, so hashing a large image never holds up dispatch.
 * Passes never overlap within a process; across web instances every step is idempotent.
 */
import { listBuildsToWithdraw, listDispatchedDockerfiles, type Db } from '../../db/index.js';
import { isKilnError } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import type { GluePort } from '../ports.js';
import { attestBuilds } from '../builds/attest.js';
import { putJob, reconcileBuilds, withdraw } from '../builds/index.js';
import type { CoreDeps } from '../deps.js';

export interface ReconcileResult {
  builds: number;
  jobsRecreated: number[];
  /** Builds whose verification ended (succeeded or failed) in this pass. */
  attested: number;
}

/** Recreates the backend jobs the web knows but the backend does not. Returns the Dockerfile ids recreated. */
export async function reconcileJobs(s: Pick<CoreDeps, 'db' | 'glue' | 'config'> & { logger: Logger }): Promise<number[]> {
  const { jobs } = await s.glue.call('jobs.list', []);
  const present = new Set(jobs.filter((j) => j.managed && j.job !== undefined).map((j) => j.job!));
  const recreated: number[] = [];
  for (const df of await listDispatchedDockerfiles(s.db)) {
    if (present.has(df.id)) continue;
    await putJob(s, df.id, df.current_version_id!, df.owner_id);
    s.logger.warn({ job: df.id }, 'job missing in the backend: recreated from the stored Dockerfile');
    recreated.push(df.id);
  }
  return recreated;
}

export async function reconcileOnce(db: Db, glue: GluePort, config: CoreDeps['config'], logger: Logger = silentLogger, o: { attest?: boolean } = {}): Promise<ReconcileResult> {
  const builds = await reconcileBuilds({ db, glue, logger, config });
  for (const b of await listBuildsToWithdraw(db)) {
    // Per row, as reconcileBuilds does: one build the backend will not withdraw must not stop the whole pass.
    try {
      await withdraw({ db, glue, logger }, b);
    } catch (e) {
      logger.error({ err: e, build: b.id }, 'withdrawing a cancelled build failed; retried next pass');
    }
  }
  let jobsRecreated: number[] = [];
  try {
    jobsRecreated = await reconcileJobs({ db, glue, config, logger });
  } catch (e) {
    // Backend away: nothing to compare against this time; the next pass tries again.
    if (!isKilnError(e, 'backend_unavailable') && !isKilnError(e, 'timeout')) throw e;
    logger.warn({ err: (e as Error).message }, 'glue unavailable; job reconciliation skipped');
  }
  const attested = o.attest === false ? 0 : await attestBuilds({ db, glue, config, logger });
  return { builds, jobsRecreated, attested };
}

/**
 * Runs reconcileOnce every `seconds`, one pass at a time, and beside it the attestation passes, one at a time: a
 * verification streams whole images and may take minutes, during which dispatch and refresh go on. Returns a stop
 * function.
 */
export function startReconciler(db: Db, glue: GluePort, config: CoreDeps['config'], logger: Logger, seconds: number): () => void {
  let running = false;
  let attesting = false;
  const timer = setInterval(() => {
    if (!attesting) {
      attesting = true;
      attestBuilds({ db, glue, config, logger })
        .catch((e: unknown) => logger.error({ err: e }, 'attestation pass failed'))
        .finally(() => { attesting = false; });
    }
    if (running) return;
    running = true;
    reconcileOnce(db, glue, config, logger, { attest: false })
      .catch((e: unknown) => logger.error({ err: e }, 'reconcile failed'))
      .finally(() => { running = false; });
  }, Math.max(1, seconds) * 1000);
  timer.unref();
  return () => clearInterval(timer);
}
