/**
 * Builds as pages show them: the progress bar (from the SDK's events and the build's state, so a finished build
 * never shows a stale stage), the build page's whole view, and the filtered, paginated build lists.
 */
import { z } from 'zod';
import {
  WEB_BUILD_STATES,
  isFinal,
  listBuildHistory,
  listBuildsBefore,
  type BuildHistoryItem,
  type BuildRow,
  type DockerfileRow,
  type WebBuildState,
} from '../../db/index.js';
import type { Actor } from '../actor.js';
import { parse } from '../commands.js';
import type { CoreDeps } from '../deps.js';
import { PageLimit, decodeCursor, encodeCursor } from '../cursor.js';
import { dockerfileByName, dockerfileFor } from '../dockerfiles.js';
import { authorize, ownerScope } from '../policy.js';
import { buildFor, buildVersion } from './access.js';
import type { Coalescer } from './live.js';
import { reportOf, type BuildReport } from './report.js';
import { queuePlace, type QueuePlace } from './waiting.js';

type Deps = Pick<CoreDeps, 'db' | 'glue' | 'config'> & { live: Coalescer };

export interface ProgressView {
  percent: number;
  label: string;
}

/**
 * The progress a build shows. Running: the SDK's last event. Ended: what the end says (a succeeded build is 100%,
 * "image ready"), never the stage it was in when the last event came.
 */
export function progressOf(b: Pick<BuildRow, 'state' | 'progress' | 'reason'>): ProgressView {
  const last = b.progress;
  const pct = Math.max(0, Math.min(100, Number(last?.percent) || 0));
  switch (b.state) {
    case 'succeeded':
      return { percent: 100, label: 'image ready' };
    case 'verifying':
      return { percent: 100, label: 'built; Kiln is verifying the artifacts' };
    case 'failed':
      return { percent: pct, label: last?.stage && last.stage !== 'done' ? `failed during ${last.stage}` : 'failed' };
    case 'cancelled':
      return { percent: pct, label: 'cancelled' };
    case 'skipped':
      return { percent: 0, label: 'skipped: nothing changed' };
    case 'requested':
      return { percent: 0, label: 'waiting to be handed to the build service' };
    case 'queued':
      return { percent: 0, label: 'queued at the build service' };
    default:
      return last
        ? { percent: pct, label: `${last.stage}${last.message ? `: ${last.message}` : ''}` }
        : { percent: 0, label: 'starting' };
  }
}

/** Seconds a build ran (or has run), when it started. */
export function durationSeconds(b: Pick<BuildRow, 'started_at' | 'finished_at'>, now = Date.now()): number | undefined {
  if (!b.started_at) return undefined;
  const end = b.finished_at ? Date.parse(b.finished_at) : now;
  const s = (end - Date.parse(b.started_at)) / 1000;
  return Number.isFinite(s) && s >= 0 ? Math.round(s) : undefined;
}

export interface BuildPage {
  build: BuildRow;
  dockerfile: DockerfileRow;
  versionSha: string;
  progress: ProgressView;
  queue?: QueuePlace;
  report: BuildReport;
}

/** Everything the build page shows. Reads only; the documents of a finished build come through the glue once. */
export async function buildPage(d: Deps, actor: Actor, rawId: unknown): Promise<BuildPage> {
  const { build, dockerfile, versionSha } = await buildVersion(d, actor, rawId);
  const [queue, report] = await Promise.all([
    queuePlace(d, build),
    // The page still renders when the build service cannot be reached; the report is then empty.
    isFinal(build.state)
      ? reportOf(d, build).catch((): BuildReport => ({
          bootTests: [],
          stages: [],
          ...(build.state === 'failed' ? { failure: { message: build.reason ?? 'The build failed.' } } : {}),
        }))
      : Promise.resolve({ bootTests: [], stages: [] }),
  ]);
  return {
    build,
    dockerfile,
    versionSha,
    progress: progressOf(build),
    ...(queue ? { queue } : {}),
    report,
  };
}

/** The queue place of a build the actor may read (the live page refreshes it). */
export async function buildQueuePlace(d: Deps, actor: Actor, rawId: unknown): Promise<QueuePlace | undefined> {
  return queuePlace(d, await buildFor(d.db, actor, rawId));
}

const PER_PAGE = 25;
const listQuery = z
  .object({
    state: z.enum(WEB_BUILD_STATES).or(z.literal('active')).optional().catch(undefined),
    dockerfile: z
      .string()
      .regex(/^[1-9][0-9]{0,11}$/)
      .optional()
      .catch(undefined),
    page: z.coerce.number().int().min(1).max(10_000).catch(1).default(1),
  })
  .strip();
export type BuildListQuery = { state?: string; dockerfile?: string; page?: string | number };

export interface BuildListView {
  items: (BuildHistoryItem & { durationSeconds?: number })[];
  total: number;
  page: number;
  pages: number;
  filter: { state?: string; dockerfile?: number };
}

/**
 * A page of the builds the actor may see (their own; an admin: everyone's), newest first, optionally of one
 * Dockerfile (which the actor must be able to read: another's is 404) and in one state (`active`: not final).
 * Unknown filter values are ignored, not errors: a list link with a stale filter still shows a list.
 */
export async function listBuildPage(
  d: Pick<CoreDeps, 'db'>,
  actor: Actor,
  raw: BuildListQuery,
): Promise<BuildListView> {
  authorize(actor, 'build.list');
  const q = parse(listQuery, raw);
  const df = q.dockerfile ? await dockerfileFor(d.db, actor, q.dockerfile) : undefined;
  const { items, total } = await listBuildHistory(d.db, {
    ownerId: ownerScope(actor),
    ...(df ? { dockerfileId: df.id } : {}),
    ...statesOf(q.state),
    page: q.page,
    perPage: PER_PAGE,
  });
  return {
    items: withDurations(items),
    total,
    page: q.page,
    pages: Math.max(1, Math.ceil(total / PER_PAGE)),
    filter: { ...(q.state ? { state: q.state } : {}), ...(df ? { dockerfile: df.id } : {}) },
  };
}

const statesOf = (state: string | undefined): { states?: readonly WebBuildState[] } =>
  state === 'active'
    ? { states: ['requested', 'queued', 'running', 'verifying'] }
    : state
      ? { states: [state as WebBuildState] }
      : {};

function withDurations(items: BuildHistoryItem[]): BuildListView['items'] {
  const now = Date.now();
  return items.map((b) => {
    const s = durationSeconds(b, now);
    return s === undefined ? b : { ...b, durationSeconds: s };
  });
}

const feedQuery = z.object({
  state: z.enum(WEB_BUILD_STATES).or(z.literal('active')).optional(),
  /** A Dockerfile of the actor's own, by name. */
  dockerfile: z.string().optional(),
  cursor: z.string().optional(),
  limit: PageLimit,
});

/**
 * The builds the actor may see, newest first, filtered like `listBuildPage` (a Dockerfile by its name, among the
 * actor's own), in keyset pages: `nextCursor` continues after the last one (null: no more).
 */
export async function listBuildFeed(
  d: Pick<CoreDeps, 'db'>,
  actor: Actor,
  raw: unknown,
): Promise<{ items: BuildListView['items']; nextCursor: string | null }> {
  authorize(actor, 'build.list');
  const q = parse(feedQuery, raw);
  const beforeId = decodeCursor('builds', q.cursor, z.number().int().positive());
  const df = q.dockerfile === undefined ? undefined : await dockerfileByName(d.db, actor, q.dockerfile);
  const rows = await listBuildsBefore(d.db, {
    ownerId: ownerScope(actor),
    ...(df ? { dockerfileId: df.id } : {}),
    ...statesOf(q.state),
    ...(beforeId !== undefined ? { beforeId } : {}),
    limit: q.limit + 1,
  });
  const items = rows.slice(0, q.limit);
  return {
    items: withDurations(items),
    nextCursor: rows.length > q.limit ? encodeCursor('builds', items[items.length - 1]!.id) : null,
  };
}
