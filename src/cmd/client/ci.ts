/**
 * The Idempotency-Key `kiln client build` sends when none is given: derived from the CI job it runs in, so the job
 * retried (a flaky network, a `retry:` in the pipeline's script, a step run twice) gets the build it already asked
 * for instead of a second one. A new pipeline run, a retried job or a re-run attempt is a new key: those are meant
 * to build again. Outside CI the key is random, so only the command's own retries share it.
 */
import { createHash, randomUUID } from 'node:crypto';

export interface DerivedKey {
  key: string;
  /** Where it came from, for the log line (`CI_JOB_ID`, ... or `random`). */
  source: string;
}

/**
 * The job's identity from the usual variables: GitLab (CI_JOB_ID, unique per job run in an instance), GitHub
 * Actions (the run, its attempt and the job), Jenkins (BUILD_TAG: job name and build number). The Dockerfile's name
 * is part of the key: one job may build several Dockerfiles, and a key names one request (for another Dockerfile
 * Kiln answers 422 idempotency_key_reused).
 */
export function defaultIdempotencyKey(env: NodeJS.ProcessEnv, dockerfileName: string): DerivedKey {
  const v = (name: string) => env[name] ?? '';
  let source: string;
  let parts: string[];
  if (env.CI_JOB_ID) {
    source = 'CI_JOB_ID';
    parts = ['gitlab', v('CI_SERVER_URL'), v('CI_PROJECT_ID'), v('CI_JOB_ID')];
  } else if (env.GITHUB_RUN_ID) {
    source = 'GITHUB_RUN_ID';
    parts = ['github', v('GITHUB_REPOSITORY'), v('GITHUB_RUN_ID'), v('GITHUB_RUN_ATTEMPT'), v('GITHUB_JOB')];
  } else if (env.BUILD_TAG) {
    source = 'BUILD_TAG';
    parts = ['jenkins', v('JENKINS_URL'), v('BUILD_TAG')];
  } else {
    return { key: `kiln-client-${randomUUID()}`, source: 'random' };
  }
  // Hashed: the variables may hold any characters, and the key must be 1-255 visible ASCII.
  const digest = createHash('sha256')
    .update(JSON.stringify([...parts, dockerfileName]))
    .digest('hex');
  return { key: `kiln-client-${parts[0]}-${digest.slice(0, 40)}`, source };
}
