/**
 * A build's end, told once: `build.notify` (enqueued in the transaction, or right after the update, that ends the
 * build; reconciliation enqueues it for any ended build still without a notice) records the build's notice with
 * its package diff against the previous successful build (computed here once, by report.ts's own diff, so feeds
 * read it from the database instead of reading manifests per request) and, when the Dockerfile has a webhook and
 * the build succeeded, failed or was cancelled, its one delivery and the `webhook.deliver` task, in one transaction.
 */
import { randomUUID } from 'node:crypto';
import {
  buildsWithoutNotice,
  findDockerfile,
  findUserById,
  getWebhook,
  hasNotice,
  insertDelivery,
  insertNotice,
  isFinal,
  type BuildRow,
  type Queryable,
} from '../../db/index.js';
import { buildOf } from '../builds/dispatch.js';
import { Coalescer } from '../builds/live.js';
import { diffOfBuild } from '../builds/report.js';
import type { CoreDeps } from '../deps.js';
import { isTransient } from '../ports.js';
import { buildSubject, enqueue, wake } from '../tasks/queue.js';
import type { TaskKind } from '../tasks/worker.js';

/** The ends a webhook is told of (a `skipped` scheduled build is in the feeds only: nothing was built). */
export const ANNOUNCED_STATES = ['succeeded', 'failed', 'cancelled'] as const;

/** The package diff as notices keep it: what changed, never the whole list. */
export interface NoticeDiff {
  previousBuild: number;
  added: Array<{ name: string; version: string; architecture?: string }>;
  removed: Array<{ name: string; version: string; architecture?: string }>;
  changed: Array<{ name: string; architecture?: string; from: string; to: string }>;
  unchanged: number;
}

/** Call with the transaction (or connection) that ended the build, after its update moved it. */
export async function buildEnded(db: Queryable, d: Pick<CoreDeps, 'config' | 'now'>, buildId: number): Promise<void> {
  await enqueue(db, d, 'build.notify', buildSubject(buildId));
}

/** Reconciliation's net: ended builds whose notice was never written (a crash between the end and its enqueue). */
export async function enqueueMissingNotices(d: CoreDeps): Promise<number> {
  const ids = await buildsWithoutNotice(d.db, ['succeeded', 'failed', 'cancelled', 'skipped'], 100);
  for (const id of ids) await buildEnded(d.db, d, id);
  return ids.length;
}

const pkgOut = (p: { name: string; version: string; architecture?: string | undefined }) => ({
  name: p.name,
  version: p.version,
  ...(p.architecture ? { architecture: p.architecture } : {}),
});

async function noticeDiff(d: CoreDeps, b: BuildRow): Promise<NoticeDiff | null> {
  if (b.state !== 'succeeded') return null;
  try {
    const diff = await diffOfBuild({ ...d, live: new Coalescer(4) }, b);
    if (!diff.available || !diff.previous) return null;
    return {
      previousBuild: diff.previous.id,
      added: diff.added.map(pkgOut),
      removed: diff.removed.map(pkgOut),
      changed: diff.changed,
      unchanged: diff.unchanged,
    };
  } catch (e) {
    // The glue away: try again later. A document that cannot be read (too large, changed): no diff to tell.
    if (isTransient(e)) throw e;
    return null;
  }
}

/** The webhook's JSON body, without the per-attempt timestamp (added when it is sent). */
export function deliveryBody(
  d: Pick<CoreDeps, 'config'>,
  o: { deliveryId: string; build: BuildRow; dockerfileName: string; owner: string; diff: NoticeDiff | null },
): Record<string, unknown> {
  const b = o.build;
  const base = d.config.web.publicUrl?.replace(/\/+$/, '');
  return {
    event: 'build.ended',
    deliveryId: o.deliveryId,
    dockerfile: { id: b.dockerfile_id, name: o.dockerfileName, owner: o.owner },
    build: {
      id: b.id,
      ...(base ? { url: `${base}/builds/${b.id}` } : {}),
      state: b.state,
      trigger: b.trigger,
      reason: b.reason,
      requestedAt: b.requested_at,
      startedAt: b.started_at,
      finishedAt: b.finished_at,
      gitCommit: b.git_commit,
      imageSha256: b.image_sha256,
      artifacts: b.artifacts.map((a) => ({ name: a.name, size: a.size, sha256: a.sha256 ?? null })),
    },
    packageDiff: o.diff,
  };
}

export const notifyTask: TaskKind = {
  async run(d, { task, log }) {
    const build = await buildOf(d, task.subject);
    if (!build || !isFinal(build.state) || (await hasNotice(d.db, build.id))) return;
    const diff = await noticeDiff(d, build);
    const df = await findDockerfile(d.db, build.dockerfile_id, null);
    const owner = await findUserById(d.db, build.owner_id);
    if (!df || !owner) return;
    const delivered = await d.db.transaction(async (trx) => {
      if (!(await insertNotice(trx, { build_id: build.id, dockerfile_id: df.id, diff }))) return undefined;
      // A Dockerfile being deleted announces nothing more (its not-yet-dispatched builds were cancelled by it).
      if (!(ANNOUNCED_STATES as readonly string[]).includes(build.state) || df.deleting_at) return undefined;
      if (!(await getWebhook(trx, df.id))) return undefined;
      const deliveryId = randomUUID();
      const body = deliveryBody(d, { deliveryId, build, dockerfileName: df.name, owner: owner.username, diff });
      const row = await insertDelivery(trx, {
        delivery_id: deliveryId,
        build_id: build.id,
        dockerfile_id: df.id,
        event: 'build.ended',
        body: JSON.stringify(body),
      });
      await enqueue(trx, d, 'webhook.deliver', deliverySubject(row.id));
      return row.id;
    });
    if (delivered !== undefined) {
      log.info({ build: build.id, delivery: delivered }, 'webhook delivery queued');
      wake(d);
    }
  },
};

/** The subject of a task about one webhook delivery. */
export const deliverySubject = (id: number): string => `delivery:${id}`;
export function deliveryIdOf(subject: string): number | undefined {
  const m = /^delivery:([1-9][0-9]{0,11})$/.exec(subject);
  return m ? Number(m[1]) : undefined;
}
