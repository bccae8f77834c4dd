/**
 * Job settings (migration 008): what the user asked the backend's job to be, and how far the glue has it. The
 * glue's side is written only by the core's job.sync task; `revision` / `synced_revision` say whether it is behind.
 */
import { ACTIVE_STATES, type BuildRow, type WebBuildState } from './builds.js';
import type { Queryable } from './knex.js';
import { nowIso } from './knex.js';

export interface JobSettingsRow {
  dockerfile_id: number;
  /** null: the site's default formats. */
  formats: string[] | null;
  build_args: Record<string, string>;
  /** null: the SDK's default firmware. */
  boot_firmware: string[] | null;
  schedule: 'off' | 'daily' | 'weekly';
  schedule_hour: number;
  schedule_weekday: number;
  enabled: boolean;
  revision: number;
  synced_revision: number;
  sync_error: string | null;
  updated_at: string;
}

export type JobSettingsPatch = Partial<
  Pick<
    JobSettingsRow,
    'formats' | 'build_args' | 'boot_firmware' | 'schedule' | 'schedule_hour' | 'schedule_weekday' | 'enabled'
  >
>;

const list = (v: unknown): string[] | null => (v == null || v === '' ? null : String(v).split(','));
function norm(r: Record<string, unknown>): JobSettingsRow {
  let args: Record<string, string> = {};
  try {
    args = r.build_args == null ? {} : (JSON.parse(String(r.build_args)) as Record<string, string>);
  } catch {
    /* stored by saveJobSettings only */
  }
  return {
    dockerfile_id: Number(r.dockerfile_id),
    formats: list(r.formats),
    build_args: args,
    boot_firmware: list(r.boot_firmware),
    schedule: String(r.schedule) as JobSettingsRow['schedule'],
    schedule_hour: Number(r.schedule_hour),
    schedule_weekday: Number(r.schedule_weekday),
    enabled: r.enabled === true || r.enabled === 1 || r.enabled === '1',
    revision: Number(r.revision),
    synced_revision: Number(r.synced_revision),
    sync_error: r.sync_error == null ? null : String(r.sync_error),
    updated_at: String(r.updated_at),
  };
}

export async function getJobSettings(db: Queryable, dockerfileId: number): Promise<JobSettingsRow | undefined> {
  const r = await db('job_settings').where({ dockerfile_id: dockerfileId }).first();
  return r ? norm(r) : undefined;
}

/** Applies `patch` as a new revision (creating the row with the defaults first). Call inside a transaction. */
export async function saveJobSettings(
  db: Queryable,
  dockerfileId: number,
  patch: JobSettingsPatch,
): Promise<JobSettingsRow> {
  const cols: Record<string, unknown> = { updated_at: nowIso() };
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) continue;
    cols[k] =
      k === 'build_args'
        ? JSON.stringify(v)
        : k === 'formats' || k === 'boot_firmware'
          ? v === null
            ? null
            : (v as string[]).join(',')
          : v;
  }
  const n = await db('job_settings')
    .where({ dockerfile_id: dockerfileId })
    .update({ ...cols, revision: db.raw('revision + 1') });
  if (Number(n) === 0) await db('job_settings').insert({ dockerfile_id: dockerfileId, ...cols, revision: 1 });
  return (await getJobSettings(db, dockerfileId))!;
}

/** The glue has revision `revision` (or a later save wins when it lands). Clears the error of a failed attempt. */
export async function markJobSynced(db: Queryable, dockerfileId: number, revision: number): Promise<void> {
  await db('job_settings')
    .where({ dockerfile_id: dockerfileId })
    .where('synced_revision', '<', revision)
    .update({ synced_revision: revision, sync_error: null });
}

export async function setJobSyncError(db: Queryable, dockerfileId: number, error: string | null): Promise<void> {
  await db('job_settings').where({ dockerfile_id: dockerfileId }).update({ sync_error: error });
}

/** Dockerfiles whose saved settings the glue does not have yet (not being deleted). */
export async function listJobsToSync(db: Queryable, limit = 100): Promise<number[]> {
  const rows = await db('job_settings as j')
    .join('dockerfiles as d', 'd.id', 'j.dockerfile_id')
    .whereNull('d.deleting_at')
    .whereRaw('j.synced_revision < j.revision')
    .orderBy('j.dockerfile_id')
    .limit(limit)
    .select('j.dockerfile_id');
  return rows.map((r: Record<string, unknown>) => Number(r.dockerfile_id));
}

/** Whether a build of this Dockerfile ever reached the backend (so its job exists there). */
export async function hasDispatchedBuild(db: Queryable, dockerfileId: number): Promise<boolean> {
  return !!(await db('builds').where({ dockerfile_id: dockerfileId }).whereNotNull('backend_build').first('id'));
}

/** Marks a Dockerfile for deletion; false when it already was. */
export async function markDockerfileDeleting(db: Queryable, id: number): Promise<boolean> {
  return Number(await db('dockerfiles').where({ id }).whereNull('deleting_at').update({ deleting_at: nowIso() })) > 0;
}

export async function listDeletingDockerfiles(db: Queryable, limit = 100): Promise<number[]> {
  const rows = await db('dockerfiles').whereNotNull('deleting_at').orderBy('id').limit(limit).select('id');
  return rows.map((r: Record<string, unknown>) => Number(r.id));
}

/**
 * Removes a Dockerfile marked for deletion with everything stored for it: versions, contexts, builds (and their
 * attestations), job settings (ON DELETE CASCADE), so its owner's storage use drops by all of it.
 */
export async function purgeDockerfile(db: Queryable, id: number): Promise<boolean> {
  return Number(await db('dockerfiles').where({ id }).whereNotNull('deleting_at').delete()) > 0;
}

/** Builds of one Dockerfile that are not over yet. */
export async function activeBuildsOf(
  db: Queryable,
  dockerfileId: number,
): Promise<Array<Pick<BuildRow, 'id' | 'state' | 'backend_build'>>> {
  const rows = await db('builds')
    .where({ dockerfile_id: dockerfileId })
    .whereIn('state', [...ACTIVE_STATES, 'verifying'] as WebBuildState[])
    .select('id', 'state', 'backend_build');
  return rows.map((r: Record<string, unknown>) => ({
    id: Number(r.id),
    state: r.state as WebBuildState,
    backend_build: r.backend_build == null ? null : Number(r.backend_build),
  }));
}

/** The highest backend build number the web knows per Dockerfile. */
export async function knownBackendBuilds(db: Queryable): Promise<Map<number, number>> {
  const rows = await db('builds')
    .whereNotNull('backend_build')
    .groupBy('dockerfile_id')
    .select('dockerfile_id')
    .max({ n: 'backend_build' });
  return new Map(rows.map((r: Record<string, unknown>) => [Number(r.dockerfile_id), Number(r.n)]));
}

/** Whether the web has a row for this backend build of this Dockerfile. */
export async function hasBackendBuild(db: Queryable, dockerfileId: number, backendBuild: number): Promise<boolean> {
  return !!(await db('builds').where({ dockerfile_id: dockerfileId, backend_build: backendBuild }).first('id'));
}

/**
 * Records a build the backend's timer started: `queued` with its backend number, trigger `schedule`, under a key
 * made from the Dockerfile and the number, so two reconcilers finding it make one row (the key is UNIQUE).
 * Returns undefined when it is already recorded.
 */
export async function insertScheduledBuild(
  db: Queryable,
  b: { dockerfileId: number; versionId: number; ownerId: number; backendBuild: number; queuedAt?: string },
): Promise<BuildRow | undefined> {
  const now = nowIso();
  const rows = await db('builds')
    .insert({
      dockerfile_id: b.dockerfileId,
      version_id: b.versionId,
      owner_id: b.ownerId,
      idempotency_key: `schedule-${b.dockerfileId}-${b.backendBuild}`,
      state: 'queued',
      backend_build: b.backendBuild,
      trigger: 'schedule',
      dispatch_attempts: 0,
      requested_at: b.queuedAt ?? now,
      queued_at: b.queuedAt ?? now,
      updated_at: now,
    })
    .onConflict('idempotency_key')
    .ignore()
    .returning('id');
  return rows.length ? ({ id: Number((rows[0] as Record<string, unknown>).id ?? rows[0]) } as BuildRow) : undefined;
}

/** Whether a dispatch of any build of this Dockerfile is pending or running (it may still put the job). */
export async function hasLiveDispatch(db: Queryable, dockerfileId: number): Promise<boolean> {
  const subjects = db('builds').where({ dockerfile_id: dockerfileId }).select(db.raw(`'build:' || id`));
  return !!(await db('tasks')
    .where({ kind: 'build.dispatch' })
    .whereIn('state', ['pending', 'running'])
    .whereIn('subject', subjects)
    .first('id'));
}
