/**
 * Git sources (migration 012): where a Dockerfile's content and build context come from when they live in a git
 * repository, and the state of fetching and following it. Written by the core's git use cases and tasks only.
 */
import { toBuildRow, type BuildRow } from './builds.js';
import type { Queryable } from './knex.js';
import { nowIso } from './knex.js';

export interface GitSourceRow {
  dockerfile_id: number;
  /** The repository URL as the user gave it, checked (never with credentials). */
  url: string;
  /** Host and path of the repository, as pushes name it (src/core/git/url.ts matchKey). */
  match_key: string;
  ref: string;
  dockerfile_path: string;
  /** '' = the repository's root. */
  context_dir: string;
  follow: boolean;
  webhook_secret: string;
  revision: number;
  fetched_revision: number;
  fetched_commit: string | null;
  fetched_at: string | null;
  fetch_error: string | null;
  followed_commit: string | null;
  polled_at: string | null;
  schedule_slot: string | null;
  /** The schedule `schedule_slot` belongs to (`daily@-@2`, `weekly@1@2`). */
  schedule_spec: string | null;
  created_at: string;
  updated_at: string;
}

export type GitSourceFields = Pick<
  GitSourceRow,
  'url' | 'match_key' | 'ref' | 'dockerfile_path' | 'context_dir' | 'follow'
>;

const bool = (v: unknown): boolean => v === true || v === 1 || v === '1';
const str = (v: unknown): string | null => (v == null ? null : String(v));
function norm(r: Record<string, unknown>): GitSourceRow {
  return {
    dockerfile_id: Number(r.dockerfile_id),
    url: String(r.url),
    match_key: String(r.match_key),
    ref: String(r.ref),
    dockerfile_path: String(r.dockerfile_path),
    context_dir: String(r.context_dir ?? ''),
    follow: bool(r.follow),
    webhook_secret: String(r.webhook_secret),
    revision: Number(r.revision),
    fetched_revision: Number(r.fetched_revision),
    fetched_commit: str(r.fetched_commit),
    fetched_at: str(r.fetched_at),
    fetch_error: str(r.fetch_error),
    followed_commit: str(r.followed_commit),
    polled_at: str(r.polled_at),
    schedule_slot: str(r.schedule_slot),
    schedule_spec: str(r.schedule_spec),
    created_at: String(r.created_at),
    updated_at: String(r.updated_at),
  };
}

export async function getGitSource(db: Queryable, dockerfileId: number): Promise<GitSourceRow | undefined> {
  const r = await db('git_sources').where({ dockerfile_id: dockerfileId }).first();
  return r ? norm(r) : undefined;
}

/**
 * Creates or changes a Dockerfile's source as a new revision (the next fetch applies it). Changing where it points
 * forgets what following had seen: the next fetch sets the new baseline. Call inside a transaction.
 */
export async function putGitSource(
  db: Queryable,
  dockerfileId: number,
  f: GitSourceFields,
  newSecret: () => string,
): Promise<GitSourceRow> {
  const now = nowIso();
  const cur = await getGitSource(db, dockerfileId);
  if (!cur) {
    await db('git_sources').insert({
      dockerfile_id: dockerfileId,
      ...f,
      webhook_secret: newSecret(),
      revision: 1,
      fetched_revision: 0,
      created_at: now,
      updated_at: now,
    });
  } else {
    const moved = cur.url !== f.url || cur.ref !== f.ref;
    await db('git_sources')
      .where({ dockerfile_id: dockerfileId })
      .update({
        ...f,
        revision: db.raw('revision + 1'),
        ...(moved || (f.follow && !cur.follow) ? { followed_commit: null } : {}),
        updated_at: now,
      });
  }
  return (await getGitSource(db, dockerfileId))!;
}

export async function deleteGitSource(db: Queryable, dockerfileId: number): Promise<void> {
  await db('git_sources').where({ dockerfile_id: dockerfileId }).delete();
}

/** A new webhook secret (the old one stops working at once). */
export async function setWebhookSecret(db: Queryable, dockerfileId: number, secret: string): Promise<void> {
  await db('git_sources')
    .where({ dockerfile_id: dockerfileId })
    .update({ webhook_secret: secret, updated_at: nowIso() });
}

/**
 * What a fetch of revision `revision` found: its commit (and no error), or its error. Ignored when the source was
 * edited meanwhile (its result belongs to an older revision). Returns whether it was recorded.
 */
export async function recordFetch(
  db: Queryable,
  dockerfileId: number,
  revision: number,
  r: { commit: string } | { error: string },
): Promise<boolean> {
  const now = nowIso();
  const n = await db('git_sources')
    .where({ dockerfile_id: dockerfileId, revision })
    .update(
      'commit' in r
        ? { fetched_revision: revision, fetched_commit: r.commit, fetched_at: now, fetch_error: null, updated_at: now }
        : { fetch_error: r.error, fetched_at: now, updated_at: now },
    );
  return Number(n) > 0;
}

/**
 * Moves what following has seen of the branch to `commit`, unless it is there already (`from`: the value read).
 * Returns whether this call moved it: of concurrent pollers and webhooks, one acts on a new head.
 */
export async function advanceFollowed(
  db: Queryable,
  dockerfileId: number,
  from: string | null,
  commit: string,
): Promise<boolean> {
  const q = db('git_sources').where({ dockerfile_id: dockerfileId });
  void (from === null ? q.whereNull('followed_commit') : q.where({ followed_commit: from }));
  const n = await q.update({ followed_commit: commit, updated_at: nowIso() });
  return Number(n) > 0;
}

export async function markPolled(db: Queryable, dockerfileId: number, at: string): Promise<void> {
  await db('git_sources').where({ dockerfile_id: dockerfileId }).update({ polled_at: at });
}

/** Records the timer slot (of schedule `spec`) Kiln's schedule handled for a Dockerfile, if no one did it first. */
export async function takeScheduleSlot(
  db: Queryable,
  dockerfileId: number,
  from: string | null,
  slot: string,
  spec: string,
): Promise<boolean> {
  const q = db('git_sources').where({ dockerfile_id: dockerfileId });
  void (from === null ? q.whereNull('schedule_slot') : q.where({ schedule_slot: from }));
  return Number(await q.update({ schedule_slot: slot, schedule_spec: spec })) > 0;
}

/** Sources (of Dockerfiles not being deleted) whose repository has this match key, with the Dockerfile's owner. */
export async function findSourcesByMatchKey(
  db: Queryable,
  matchKey: string,
): Promise<Array<GitSourceRow & { owner_id: number }>> {
  const rows = await db('git_sources as g')
    .join('dockerfiles as d', 'd.id', 'g.dockerfile_id')
    .where('g.match_key', matchKey)
    .whereNull('d.deleting_at')
    .select('g.*', 'd.owner_id')
    .orderBy('g.dockerfile_id');
  return rows.map((r: Record<string, unknown>) => ({ ...norm(r), owner_id: Number(r.owner_id) }));
}

/** Sources that follow their branch and were not polled since `before` (never polled first). */
export async function listSourcesToPoll(db: Queryable, before: string, limit = 100): Promise<GitSourceRow[]> {
  const rows = await db('git_sources as g')
    .join('dockerfiles as d', 'd.id', 'g.dockerfile_id')
    .where('g.follow', true)
    .whereNull('d.deleting_at')
    .where((q) => q.whereNull('g.polled_at').orWhere('g.polled_at', '<', before))
    .select('g.*')
    .orderBy('g.polled_at')
    .limit(limit);
  return rows.map((r: Record<string, unknown>) => norm(r));
}

/** Sources of Dockerfiles with a schedule whose job is switched on, with the schedule and when it was last saved. */
export async function listScheduledSources(db: Queryable): Promise<
  Array<
    GitSourceRow & {
      owner_id: number;
      schedule: 'daily' | 'weekly';
      schedule_hour: number;
      schedule_weekday: number;
      settings_at: string;
    }
  >
> {
  const rows = await db('git_sources as g')
    .join('dockerfiles as d', 'd.id', 'g.dockerfile_id')
    .join('job_settings as j', 'j.dockerfile_id', 'g.dockerfile_id')
    .whereNull('d.deleting_at')
    .whereNotNull('d.current_version_id')
    .whereIn('j.schedule', ['daily', 'weekly'])
    .where('j.enabled', true)
    .select('g.*', 'd.owner_id', 'j.schedule', 'j.schedule_hour', 'j.schedule_weekday', 'j.updated_at as settings_at');
  return rows.map((r: Record<string, unknown>) => ({
    ...norm(r),
    owner_id: Number(r.owner_id),
    schedule: String(r.schedule) as 'daily' | 'weekly',
    schedule_hour: Number(r.schedule_hour),
    schedule_weekday: Number(r.schedule_weekday),
    settings_at: String(r.settings_at),
  }));
}

/** The latest succeeded build of a Dockerfile. */
export async function findLastSucceeded(db: Queryable, dockerfileId: number): Promise<BuildRow | undefined> {
  const r = await db('builds').where({ dockerfile_id: dockerfileId, state: 'succeeded' }).orderBy('id', 'desc').first();
  return r ? toBuildRow(r) : undefined;
}

/** Whether any build of the Dockerfile builds this commit (following builds each commit once). */
export async function hasBuildOfCommit(db: Queryable, dockerfileId: number, commit: string): Promise<boolean> {
  return !!(await db('builds').where({ dockerfile_id: dockerfileId, git_commit: commit }).first('id'));
}
