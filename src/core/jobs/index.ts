/**
 * Jobs: each Dockerfile's job in the backend (Jenkins, or the local runner): its settings (output formats, build
 * arguments, boot firmware, a daily or weekly schedule, the enabled switch), read back from the backend with what
 * differs, and kept in step by the `job.sync` task. A request saves the settings as a new revision and enqueues
 * the task in one transaction; the worker puts the job through the glue (job.put, then job.enable or job.disable),
 * retried until the glue has it. Pressing Build never changes them: a dispatch puts the job with these settings.
 */
import { z } from 'zod';
import {
  getContextMeta,
  getGitSource,
  getJobSettings,
  getVersion,
  hasDispatchedBuild,
  saveJobSettings,
  type JobSettingsPatch,
  type JobSettingsRow,
} from '../../db/index.js';
import {
  BUILD_ARG_NAME_RE,
  BUILD_ARG_VALUE_RE,
  FIRMWARES,
  FORMATS,
  MAX_BUILD_ARGS,
  MAX_BUILD_ARG_VALUE,
  SCHEDULES,
  specDigest,
  type JobView,
} from '../../protocol/index.js';
import { KilnError, isKilnError } from '../../shared/errors.js';
import { actorLabel, type Actor } from '../actor.js';
import { parse, rule } from '../commands.js';
import type { CoreDeps } from '../deps.js';
import { dockerfileFor } from '../dockerfiles.js';
import { isTransient } from '../ports.js';
import { dockerfileSubject, enqueue, wake } from '../tasks/queue.js';
import { recordAudit } from '../audit.js';
import { backendView, driftOf, effectiveSettings, type JobSettings } from './settings.js';

export { describeSchedule, WEEKDAYS, type JobSettings } from './settings.js';

const list = (v: unknown): unknown[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const oneOf = <T extends string>(allowed: readonly T[], what: string, min = 0) =>
  rule((v): T[] => {
    const out = [...new Set(list(v).map(String))];
    if (out.length < min) throw new KilnError('invalid_input', `Choose at least one ${what}.`);
    const bad = out.find((x) => !(allowed as readonly string[]).includes(x));
    if (bad !== undefined)
      throw new KilnError('invalid_input', `Unknown ${what} "${bad.slice(0, 20)}"; choose from ${allowed.join(', ')}.`);
    return out as T[];
  });
const int = (lo: number, hi: number, what: string) =>
  rule((v): number => {
    const n = typeof v === 'number' ? v : typeof v === 'string' && /^[0-9]{1,2}$/.test(v) ? Number(v) : NaN;
    if (!Number.isInteger(n) || n < lo || n > hi)
      throw new KilnError('invalid_input', `${what} must be a whole number from ${lo} to ${hi}.`);
    return n;
  });

/** Build arguments as `{NAME: value}` (JSON) or `NAME=VALUE` lines (the form's text box). */
const BuildArgs = rule((v): Record<string, string> => {
  const entries: Array<[string, unknown]> =
    typeof v === 'string'
      ? v
          .replace(/\r\n/g, '\n')
          .split('\n')
          .filter((l) => l.trim() !== '')
          .map((l) => {
            const eq = l.indexOf('=');
            if (eq < 1)
              throw new KilnError(
                'invalid_input',
                `Write each build argument as NAME=VALUE, one per line ("${l.slice(0, 40)}" is not).`,
              );
            return [l.slice(0, eq).trim(), l.slice(eq + 1)];
          })
      : v !== null && typeof v === 'object' && !Array.isArray(v)
        ? Object.entries(v)
        : (() => {
            throw new KilnError('invalid_input', 'Build arguments are NAME=VALUE lines or an object.');
          })();
  if (entries.length > MAX_BUILD_ARGS)
    throw new KilnError('invalid_input', `At most ${MAX_BUILD_ARGS} build arguments.`);
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [k, val] of entries) {
    if (!BUILD_ARG_NAME_RE.test(k))
      throw new KilnError(
        'invalid_input',
        `"${k.slice(0, 70)}" is not a build argument name (letters, digits and _, not starting with a digit).`,
      );
    if (typeof val !== 'string' || val.length > MAX_BUILD_ARG_VALUE || !BUILD_ARG_VALUE_RE.test(val)) {
      throw new KilnError(
        'invalid_input',
        `The value of ${k} must be text of at most ${MAX_BUILD_ARG_VALUE} characters without control characters.`,
      );
    }
    if (Object.hasOwn(out, k)) throw new KilnError('invalid_input', `${k} is given twice.`);
    out[k] = val;
  }
  return { ...out };
});

/** Saving settings: every field optional; what is left out stays as it is. */
const saveCommand = z.object({
  formats: oneOf(FORMATS, 'output format', 1).optional(),
  buildArgs: BuildArgs.optional(),
  /** None chosen: the SDK's default firmware. */
  bootFirmware: oneOf(FIRMWARES, 'firmware').optional(),
  schedule: z.enum(SCHEDULES, { message: 'The schedule is off, daily or weekly.' }).optional(),
  hour: int(0, 23, 'The hour').optional(),
  weekday: int(0, 6, 'The weekday').optional(),
  /** The switch, with the rest (the REST API sends all settings at once; the page has its own switch). */
  enabled: z.boolean({ message: 'enabled must be true or false.' }).optional(),
});

/** Checks settings as `saveSettings` takes them, storing nothing: a door checks them before other writes. */
export function checkSettings(input: unknown): void {
  parse(saveCommand, input);
}

const enabledCommand = z.object({ enabled: z.boolean({ message: 'enabled must be true or false.' }) });

/** What the Dockerfile page and GET /api/dockerfiles/:id/job show. */
export interface JobStatus {
  settings: JobSettings;
  /** Kiln has settings the glue has not confirmed yet (the job.sync task is on it). */
  pending: boolean;
  /** Why the last attempt to apply them gave up (it is tried again by reconciliation). */
  syncError: string | null;
  /** The job as the backend holds it; null when it has none (`missing`) or cannot be asked now (`unreachable`). */
  backend: JobView | null;
  backendState: 'ok' | 'missing' | 'unreachable';
  /** How the backend's job differs from Kiln's settings (only when nothing is pending). */
  drift: string[];
}

/**
 * The job as Kiln means it and as the backend has it (read through the glue, changing nothing), with the
 * differences when someone changed the job behind Kiln's back. The glue away is not an error: the page says so.
 */
export async function jobStatus(d: CoreDeps, actor: Actor, rawId: unknown): Promise<JobStatus> {
  const df = await dockerfileFor(d.db, actor, rawId);
  const row = await getJobSettings(d.db, df.id);
  const settings = effectiveSettings(d, row);
  const pending = !!row && row.synced_revision < row.revision;
  let backend: JobView | null = null;
  let backendState: JobStatus['backendState'] = 'ok';
  try {
    backend = await d.glue.call('job.get', [df.id]);
  } catch (e) {
    if (isKilnError(e, 'not_found')) backendState = 'missing';
    else if (isTransient(e) || isKilnError(e)) backendState = 'unreachable';
    else throw e;
  }
  let drift: string[] = [];
  if (!pending && backend) {
    const version = df.current_version_id == null ? undefined : await getVersion(d.db, df.current_version_id);
    const context = version?.context_id == null ? undefined : await getContextMeta(d.db, version.context_id);
    const kilnTimer = !!(await getGitSource(d.db, df.id));
    drift = driftOf(
      backendView(settings, { kilnTimer }),
      backend,
      specDigest(version?.sha256 ?? '', context?.sha256 ?? null, version?.source),
    );
  } else if (!pending && backendState === 'missing' && (row || (await hasDispatchedBuild(d.db, df.id)))) {
    drift = ['The build service has no job for this Dockerfile any more; Kiln puts it back within a minute.'];
  }
  return { settings, pending, syncError: row?.sync_error ?? null, backend, backendState, drift };
}

/** Applies a settings change as a new revision and enqueues its job.sync, in one transaction. */
async function change(d: CoreDeps, actor: Actor, rawId: unknown, patch: JobSettingsPatch): Promise<JobSettingsRow> {
  const df = await dockerfileFor(d.db, actor, rawId, 'job.update');
  const row = await d.db.transaction(async (trx) => {
    const r = await saveJobSettings(trx, df.id, patch);
    await enqueue(trx, d, 'job.sync', dockerfileSubject(df.id));
    // An admin changing someone else's job (its page, or the admin console's jobs) is an admin action: audited with it.
    if (actor.kind === 'user' && df.owner_id !== actor.id) {
      const what =
        Object.keys(patch).length === 1 && patch.enabled !== undefined
          ? patch.enabled
            ? 'job.enable'
            : 'job.disable'
          : 'job.settings';
      await recordAudit(trx, d, actor, what, `job:${df.id}`, { owner: df.owner_id, dockerfile: df.name });
    }
    return r;
  });
  wake(d);
  d.logger.info({ dockerfile: df.id, revision: row.revision, ...actorLabel(actor) }, 'job settings saved');
  return row;
}

/**
 * Saves job settings (fields left out stay as they are); the worker puts the job through the glue. Saving is a new
 * revision even when nothing differs (the page's Save puts the job again, which repairs drift); with `onlyChanges`
 * (the REST API's PUT, which a pipeline sends on every run) fields equal to the stored ones are left out, and
 * nothing is written when none is left.
 */
export async function saveSettings(
  d: CoreDeps,
  actor: Actor,
  rawId: unknown,
  input: unknown,
  opts: { onlyChanges?: boolean } = {},
): Promise<JobSettings> {
  const df = await dockerfileFor(d.db, actor, rawId, 'job.update');
  const cmd = parse(saveCommand, input);
  let patch: JobSettingsPatch = {
    ...(cmd.formats ? { formats: cmd.formats } : {}),
    ...(cmd.buildArgs ? { build_args: cmd.buildArgs } : {}),
    ...(cmd.bootFirmware ? { boot_firmware: cmd.bootFirmware.length ? cmd.bootFirmware : null } : {}),
    ...(cmd.schedule ? { schedule: cmd.schedule } : {}),
    ...(cmd.hour !== undefined ? { schedule_hour: cmd.hour } : {}),
    ...(cmd.weekday !== undefined ? { schedule_weekday: cmd.weekday } : {}),
    ...(cmd.enabled !== undefined ? { enabled: cmd.enabled } : {}),
  };
  if (opts.onlyChanges) {
    const row = await getJobSettings(d.db, df.id);
    patch = row ? changedFields(row, patch) : patch;
    if (Object.keys(patch).length === 0) return effectiveSettings(d, row);
  }
  return effectiveSettings(d, await change(d, actor, rawId, patch));
}

const sameSet = (a: readonly string[] | null, b: readonly string[] | null): boolean =>
  [...new Set(a ?? [])].sort().join(',') === [...new Set(b ?? [])].sort().join(',');
const sameArgs = (a: Record<string, string>, b: Record<string, string>): boolean =>
  JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());

/** The fields of `patch` that differ from the stored row. */
function changedFields(row: JobSettingsRow, patch: JobSettingsPatch): JobSettingsPatch {
  const out: JobSettingsPatch = {};
  for (const [k, v] of Object.entries(patch) as Array<[keyof JobSettingsPatch, unknown]>) {
    const cur = row[k];
    const same =
      k === 'build_args'
        ? sameArgs(cur as Record<string, string>, v as Record<string, string>)
        : k === 'formats' || k === 'boot_firmware'
          ? cur === null || v === null
            ? cur === v
            : sameSet(cur as string[], v as string[])
          : cur === v;
    if (!same) Object.assign(out, { [k]: v });
  }
  return out;
}

/** The switch: enables or disables the job (job.enable / job.disable through the worker). */
export async function setEnabled(d: CoreDeps, actor: Actor, rawId: unknown, input: unknown): Promise<JobSettings> {
  await dockerfileFor(d.db, actor, rawId, 'job.update');
  const { enabled } = parse(enabledCommand, input);
  return effectiveSettings(d, await change(d, actor, rawId, { enabled }));
}
