/**
 * Enqueueing: what use cases and task handlers call to ask for background work. A task is named by its kind and
 * its subject (`build:42`); enqueueing one that is already pending or running does nothing, so callers enqueue
 * freely. Enqueue inside the transaction that makes the work necessary, then `wake` after it committed.
 */
import { enqueueTask, type Queryable } from '../../db/index.js';
import { clockOf, type CoreDeps } from '../deps.js';

export const TASK_KINDS = [
  'build.dispatch',
  'build.refresh',
  'build.cancel',
  'build.attest',
  'build.withdraw',
  'job.sync',
  'dockerfile.delete',
  'reconcile',
  'job.control',
  'build.fetch',
  'git.fetch',
  'git.poll',
  'release.make',
  'retention',
  'build.discard',
  'build.keep',
  'build.notify',
  'webhook.deliver',
] as const;
export type TaskKindName = (typeof TASK_KINDS)[number];

/** The subject of a task about one build. */
export const buildSubject = (buildId: number): string => `build:${buildId}`;
export function buildIdOf(subject: string): number | undefined {
  const m = /^build:([1-9][0-9]{0,11})$/.exec(subject);
  return m ? Number(m[1]) : undefined;
}

/** The subject of a task about one Dockerfile (its job). */
export const dockerfileSubject = (dockerfileId: number): string => `dockerfile:${dockerfileId}`;
export function dockerfileIdOf(subject: string): number | undefined {
  const m = /^dockerfile:([1-9][0-9]{0,11})$/.exec(subject);
  return m ? Number(m[1]) : undefined;
}

/** The subject of a task about one release. */
export const releaseSubject = (releaseId: number): string => `release:${releaseId}`;
export function releaseIdOf(subject: string): number | undefined {
  const m = /^release:([1-9][0-9]{0,11})$/.exec(subject);
  return m ? Number(m[1]) : undefined;
}

export const isoAt = (ms: number): string => new Date(ms).toISOString();

/** Adds a task (unless one like it is live), due now or after `delayMs`. Returns whether it was added. */
export function enqueue(
  db: Queryable,
  d: Pick<CoreDeps, 'config' | 'now'>,
  kind: TaskKindName,
  subject: string,
  o: { delayMs?: number } = {},
): Promise<boolean> {
  const now = clockOf(d);
  return enqueueTask(db, {
    kind,
    subject,
    runAt: isoAt(now + (o.delayMs ?? 0)),
    maxAttempts: d.config.worker.maxAttempts,
    now: isoAt(now),
  });
}

/** Tells a worker in this process that work is waiting (call after the enqueueing transaction committed). */
export function wake(d: Pick<CoreDeps, 'onEnqueue'>): void {
  d.onEnqueue?.();
}
