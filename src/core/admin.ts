/**
 * The admin console's use cases beyond accounts (users.ts): the backend's jobs (every one the glue reports, Kiln's
 * or not) with enable, disable and delete carried out by the worker; the queue of every owner's builds; the site's
 * health; the metrics. Each asks the policy first; the glue is only read here, and changed by `job.control` tasks.
 */
import { statfs } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import {
  QUEUE_STATES,
  countBuildsByState,
  dockerfilesByIds,
  dropPendingTasks,
  getJobSettings,
  listBuildsInStates,
  listTasks,
  queueStats,
  type BuildListItem,
  type TaskRow,
} from '../db/index.js';
import { backendJobName, type PingReply, type QueueItem } from '../protocol/index.js';
import { KilnError, conflict, isKilnError, toKilnError } from '../shared/errors.js';
import { gaugeLines, renderProcessMetrics } from '../shared/metrics.js';
import { actorLabel, type Actor } from './actor.js';
import { recordAudit } from './audit.js';
import { Id, parse } from './commands.js';
import { clockOf, type CoreDeps } from './deps.js';
import { setEnabled } from './jobs/index.js';
import { authorize, mayReadMetrics } from './policy.js';
import { enqueue, wake } from './tasks/queue.js';
import type { TaskKind } from './tasks/worker.js';

// ------------------------------------------------------------------------------------------------------ jobs

export const JOB_OPS = ['enable', 'disable', 'delete'] as const;
export type JobOp = (typeof JOB_OPS)[number];

/** The subject of a `job.control` task: the job and what to do to it (a task row carries no payload). */
export const jobControlSubject = (job: number, op: JobOp): string => `job:${job}:${op}`;
export function parseJobControlSubject(subject: string): { job: number; op: JobOp } | undefined {
  const m = /^job:([1-9][0-9]{0,11}):(enable|disable|delete)$/.exec(subject);
  return m ? { job: Number(m[1]), op: m[2] as JobOp } : undefined;
}

/** One job as the glue reports it, with what Kiln knows of it and what an admin asked for. */
export interface AdminJob {
  /** Kiln's job id (`kiln-job-<id>`); absent for a job with another name, which the glue will not act on. */
  job?: number;
  backendName: string;
  enabled: boolean;
  schedule?: string;
  lastBuild?: number;
  /** The Dockerfile behind it, or null: a job this Kiln did not create (another site's, or made in the backend). */
  dockerfile: { id: number; name: string; owner: string } | null;
  /**
   * A change the worker has not carried out yet: an admin's request on a job without a Dockerfile, or `sync` for a
   * Dockerfile's job whose saved settings (its switch included) are not in the backend yet.
   */
  pending?: JobOp | 'sync';
  /** The last change, when it failed for good (after worker.maxAttempts tries), with its error. */
  failed?: { op: JobOp | 'sync'; error: string; at?: string };
}

/** The latest job.control task per job decides what the page says: pending, failed, or nothing (done). */
function requestsByJob(tasks: readonly TaskRow[]): Map<number, TaskRow> {
  const out = new Map<number, TaskRow>();
  for (const t of tasks) {
    // newest first
    const s = parseJobControlSubject(t.subject);
    if (s && !out.has(s.job)) out.set(s.job, t);
  }
  return out;
}

/** Every job the glue reports, including jobs Kiln did not create. backend_unavailable when the glue is away. */
export async function listJobs(d: CoreDeps, actor: Actor): Promise<{ jobs: AdminJob[] }> {
  authorize(actor, 'job.list');
  const [{ jobs }, tasks] = await Promise.all([
    d.glue.call('jobs.list', []),
    listTasks(d.db, { kind: 'job.control', limit: 500 }),
  ]);
  const ids = jobs.flatMap((j) => (j.job === undefined ? [] : [j.job]));
  const known = await dockerfilesByIds(d.db, ids);
  const requests = requestsByJob(tasks);
  return {
    jobs: await Promise.all(
      jobs.map(async (j) => {
        const df = j.job === undefined ? undefined : known.get(j.job);
        const out: AdminJob = {
          backendName: j.backendName,
          enabled: j.enabled,
          dockerfile: df && j.job !== undefined ? { id: j.job, ...df } : null,
        };
        if (j.job !== undefined) out.job = j.job;
        if (j.schedule) out.schedule = j.schedule;
        if (j.lastBuild !== undefined) out.lastBuild = j.lastBuild;
        if (df && j.job !== undefined) {
          // A Dockerfile's job: its saved settings are what the backend should have (src/core/jobs).
          const settings = await getJobSettings(d.db, j.job);
          if (settings && settings.synced_revision !== settings.revision) out.pending = 'sync';
          if (settings?.sync_error) out.failed = { op: 'sync', error: settings.sync_error };
          return out;
        }
        const t = j.job === undefined ? undefined : requests.get(j.job);
        const op = t ? parseJobControlSubject(t.subject)!.op : undefined;
        if (t && op && (t.state === 'pending' || t.state === 'running')) out.pending = op;
        if (t && op && t.state === 'failed')
          out.failed = { op, error: t.last_error ?? 'failed', at: t.finished_at ?? t.updated_at };
        return out;
      }),
    ),
  };
}

const controlCommand = z.object({ id: Id, op: z.enum(JOB_OPS), confirm: z.unknown().optional() });

/**
 * Enables, disables or deletes a job. A job with a Dockerfile behind it is that Dockerfile's: enabling or disabling
 * flips its switch (src/core/jobs `setEnabled`, so its page and the backend agree, audited there), and it is
 * deleted with its Dockerfile (the Dockerfile's page: its builds and storage go too), so deleting it here is a
 * conflict. Any other job (made in the backend, or left by another Kiln) is changed by the worker through the glue
 * (task `job.control`), the request audited in its transaction, superseding the job's earlier ones still waiting.
 * Deleting needs `confirm` to be the job's backend name (`kiln-job-7`), typed or sent back by the confirmation form.
 */
export async function controlJob(
  d: CoreDeps,
  actor: Actor,
  input: { id: unknown; op: unknown; confirm?: unknown },
): Promise<{ job: number; op: JobOp; requested: boolean }> {
  authorize(actor, 'job.manage');
  const cmd = parse(controlCommand, input);
  const name = backendJobName(cmd.id);
  if (cmd.op === 'delete' && cmd.confirm !== name) {
    throw new KilnError('invalid_input', `Deleting a job cannot be undone: confirm with the job's name, ${name}.`);
  }
  const df = (await dockerfilesByIds(d.db, [cmd.id])).get(cmd.id);
  if (df) {
    if (cmd.op === 'delete') {
      throw conflict(
        `${name} is the job of the Dockerfile "${df.name}" of ${df.owner}: delete the Dockerfile (on its page) to delete its job and free its storage.`,
      );
    }
    await setEnabled(d, actor, String(cmd.id), { enabled: cmd.op === 'enable' });
    return { job: cmd.id, op: cmd.op, requested: true };
  }
  const subject = jobControlSubject(cmd.id, cmd.op);
  const requested = await d.db.transaction(async (trx) => {
    await dropPendingTasks(
      trx,
      'job.control',
      JOB_OPS.filter((o) => o !== cmd.op).map((o) => jobControlSubject(cmd.id, o)),
    );
    const added = await enqueue(trx, d, 'job.control', subject);
    await recordAudit(trx, d, actor, `job.${cmd.op}`, `job:${cmd.id}`, { backendName: name });
    return added;
  });
  wake(d);
  d.logger.info({ ...actorLabel(actor), job: cmd.id, op: cmd.op }, 'job change requested');
  return { job: cmd.id, op: cmd.op, requested };
}

/**
 * `job.control`: job.enable / job.disable / job.delete through the glue (each idempotent: already in that state,
 * or already gone, is success). A job that is gone when asked to change is nothing left to do. Transient failures
 * retry with backoff; after worker.maxAttempts the task fails and the jobs page shows the error.
 */
export const jobControlTask: TaskKind = {
  async run(d, { task }) {
    const s = parseJobControlSubject(task.subject);
    if (!s) throw new KilnError('internal', `job.control: bad subject ${task.subject}`);
    try {
      if (s.op === 'delete') await d.glue.call('job.delete', [s.job]);
      else await d.glue.call(s.op === 'enable' ? 'job.enable' : 'job.disable', [s.job]);
    } catch (e) {
      if (!isKilnError(e, 'not_found')) throw e;
      d.logger.warn({ job: s.job, op: s.op }, 'job.control: the backend has no such job any more');
    }
  },
  async gaveUp(d, task, error) {
    d.logger.error({ subject: task.subject, error }, 'job.control failed for good');
  },
};

// ----------------------------------------------------------------------------------------------------- queue

export interface AdminQueue {
  /** Every owner's builds not finished yet (requested, queued, running, verifying), oldest request first. */
  builds: BuildListItem[];
  /** The backend's own queue (what waits for an executor, Kiln's jobs or not), or null with `backendError`. */
  backend: QueueItem[] | null;
  backendError?: string;
}

export async function listQueue(d: CoreDeps, actor: Actor): Promise<AdminQueue> {
  authorize(actor, 'queue.read');
  const [builds, backend] = await Promise.all([
    listBuildsInStates(d.db, QUEUE_STATES),
    d.glue.call('queue.list', []).then(
      (r) => ({ items: r.items }),
      (e: unknown) => ({ error: toKilnError(e).message }),
    ),
  ]);
  return 'items' in backend
    ? { builds, backend: backend.items }
    : { builds, backend: null, backendError: backend.error };
}

// ---------------------------------------------------------------------------------------------------- health

export interface SiteHealth {
  glue: { reachable: boolean; latencyMs?: number; error?: string };
  backend: { kind?: string; version?: string; reachable?: boolean; error?: string };
  docker: { reachable: boolean; version?: string; apiVersion?: string; error?: string } | { seen: false; why: string };
  disk: { path: string; freeBytes?: number; totalBytes?: number; error?: string };
  database: { client: string; reachable: boolean; error?: string };
}

async function databaseReachable(d: Pick<CoreDeps, 'db'>): Promise<{ reachable: boolean; error?: string }> {
  try {
    await d.db.raw('select 1');
    return { reachable: true };
  } catch (e) {
    return { reachable: false, error: isKilnError(e) ? e.message : 'the database did not answer' };
  }
}

/** The glue (ping, timed), the backend and its Docker engine as the glue sees them, the data directory's disk, the database. */
export async function siteHealth(d: CoreDeps, actor: Actor): Promise<SiteHealth> {
  authorize(actor, 'site.health');
  const started = performance.now();
  const [ping, disk, database] = await Promise.all([
    d.glue.call('ping', []).then(
      (r): PingReply | { error: string } => r,
      (e: unknown) => ({ error: toKilnError(e).message }),
    ),
    statfs(path.resolve(d.config.dataDir)).then(
      (s) => ({ freeBytes: Number(s.bavail) * Number(s.bsize), totalBytes: Number(s.blocks) * Number(s.bsize) }),
      (e: NodeJS.ErrnoException) => ({ error: e.code ?? 'cannot read' }),
    ),
    databaseReachable(d),
  ]);
  const latencyMs = Math.round((performance.now() - started) * 10) / 10;
  const dbClient = (d.db.client as { config: { client: string } }).config.client;
  const base = {
    disk: { path: path.resolve(d.config.dataDir), ...disk },
    database: { client: dbClient === 'pg' ? 'PostgreSQL' : 'SQLite', ...database },
  };
  if ('error' in ping) {
    return {
      ...base,
      glue: { reachable: false, error: ping.error },
      backend: {},
      docker: { seen: false, why: 'the glue did not answer' },
    };
  }
  return {
    ...base,
    glue: { reachable: true, latencyMs },
    backend: {
      kind: ping.backend,
      ...(ping.version ? { version: ping.version } : {}),
      ...(ping.backendReachable !== undefined ? { reachable: ping.backendReachable } : {}),
      ...(ping.backendError ? { error: ping.backendError } : {}),
    },
    docker: ping.docker ?? {
      seen: false,
      why:
        ping.backend === 'jenkins'
          ? 'builds run on the Jenkins agents; their engines are not visible to the glue'
          : 'the glue did not report one',
    },
  };
}

/** For load balancers: 200 while this instance can serve (its database answers), else 503. No auth, no detail. */
export async function readiness(d: Pick<CoreDeps, 'db'>): Promise<boolean> {
  return (await databaseReachable(d)).reachable;
}

// --------------------------------------------------------------------------------------------------- metrics

/**
 * The Prometheus exposition: builds by state, the queue's depth and its oldest wait (from the database, so every
 * instance reports the same), and this process's glue-call and HTTP latency histograms. Admins, or a scraper whose
 * address is in web.metricsAllow (`address`: the client address the front door saw).
 */
export async function metricsText(d: CoreDeps, actor: Actor, address: string | undefined): Promise<string> {
  if (!mayReadMetrics(actor, address, d.config.web.metricsAllow)) authorize(actor, 'metrics.read');
  const [byState, queue] = await Promise.all([countBuildsByState(d.db), queueStats(d.db)]);
  const now = clockOf(d);
  const oldestWait = queue.oldestRequestedAt ? Math.max(0, (now - Date.parse(queue.oldestRequestedAt)) / 1000) : 0;
  return (
    [
      ...gaugeLines(
        'kiln_builds',
        'Builds by state (every owner).',
        Object.entries(byState).map(([state, n]) => [{ state }, n] as const),
      ),
      ...gaugeLines('kiln_queue_depth', 'Builds waiting to start (requested or queued).', [[{}, queue.depth]]),
      ...gaugeLines('kiln_queue_oldest_wait_seconds', 'How long the longest-waiting build has waited to start.', [
        [{}, oldestWait],
      ]),
      ...renderProcessMetrics(),
    ].join('\n') + '\n'
  );
}
