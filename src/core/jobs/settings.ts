/**
 * A Dockerfile's job settings as Kiln means them (the stored row, or the defaults), the job spec fields they make,
 * and how the job the backend holds differs from them (drift).
 */
import { getJobSettings, type JobSettingsRow, type Queryable } from '../../db/index.js';
import { FORMATS, type Format, type JobSpecInput, type JobView } from '../../protocol/index.js';
import type { CoreDeps } from '../deps.js';

export const WEEKDAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'] as const;

/** The settings in force: the stored ones, with the site's and SDK's defaults where none were chosen. */
export interface JobSettings {
  formats: Format[];
  /** Whether `formats` is the site's default (nothing chosen). */
  defaultFormats: boolean;
  buildArgs: Record<string, string>;
  /** null: the SDK's default firmware. */
  bootFirmware: Array<'bios' | 'uefi'> | null;
  schedule: 'off' | 'daily' | 'weekly';
  hour: number;
  weekday: number;
  enabled: boolean;
}

/** The site's default output formats (sdk.formats, those a job spec can carry). */
export function siteFormats(d: Pick<CoreDeps, 'config'>): Format[] {
  const f = d.config.sdk.formats.filter((x): x is Format => (FORMATS as readonly string[]).includes(x));
  return f.length ? f : ['raw'];
}

export function effectiveSettings(d: Pick<CoreDeps, 'config'>, row: JobSettingsRow | undefined): JobSettings {
  const formats = row?.formats?.filter((x): x is Format => (FORMATS as readonly string[]).includes(x));
  return {
    formats: formats?.length ? formats : siteFormats(d),
    defaultFormats: !formats?.length,
    buildArgs: row?.build_args ?? {},
    bootFirmware:
      (row?.boot_firmware?.filter((f) => f === 'bios' || f === 'uefi') as JobSettings['bootFirmware']) ?? null,
    schedule: row?.schedule ?? 'off',
    hour: row?.schedule_hour ?? 2,
    weekday: row?.schedule_weekday ?? 1,
    enabled: row?.enabled ?? true,
  };
}

export async function settingsOf(
  d: Pick<CoreDeps, 'config' | 'db'>,
  db: Queryable,
  dockerfileId: number,
): Promise<JobSettings> {
  return effectiveSettings(d, await getJobSettings(db, dockerfileId));
}

/** The job spec's settings fields: what job.put carries besides the Dockerfile, its context and the base names. */
export function specFields(
  settings: JobSettings,
  o: { kilnTimer?: boolean } = {},
): Pick<
  JobSpecInput,
  'formats' | 'buildArgs' | 'bootFirmware' | 'schedule' | 'scheduleHour' | 'scheduleWeekday' | 'enabled'
> {
  const s = backendView(settings, o);
  return {
    formats: s.formats,
    buildArgs: s.buildArgs,
    schedule: s.schedule,
    enabled: s.enabled,
    ...(s.bootFirmware?.length ? { bootFirmware: s.bootFirmware } : {}),
    ...(s.schedule !== 'off' ? { scheduleHour: s.hour } : {}),
    ...(s.schedule === 'weekly' ? { scheduleWeekday: s.weekday } : {}),
  };
}

/**
 * The settings as the backend's job should hold them. `kilnTimer`: a git Dockerfile, whose schedule Kiln runs itself
 * (it fetches before each build: git/schedule.ts), so the backend's job has no timer.
 */
export const backendView = (s: JobSettings, o: { kilnTimer?: boolean } = {}): JobSettings =>
  o.kilnTimer ? { ...s, schedule: 'off' } : s;

const hh = (h: number) => `${String(h).padStart(2, '0')}:00 UTC`;

/** A schedule in words: "off", "daily at 02:00 UTC", "weekly on Monday at 02:00 UTC". */
export function describeSchedule(s: {
  schedule: string;
  hour?: number | undefined;
  weekday?: number | undefined;
  timerSpec?: string | undefined;
}): string {
  if (s.schedule === 'off') return 'off';
  if (s.schedule === 'other') return `a timer Kiln did not set (${s.timerSpec ?? '?'})`;
  const at = s.hour === undefined ? ' at an hour the build service picks' : ` at ${hh(s.hour)}`;
  if (s.schedule === 'daily') return `daily${at}`;
  return `weekly on ${s.weekday === undefined ? 'a day the build service picks' : WEEKDAYS[s.weekday]}${at}`;
}

const sameList = (a: readonly string[] | null | undefined, b: readonly string[] | null | undefined) =>
  [...new Set(a ?? [])].sort().join(',') === [...new Set(b ?? [])].sort().join(',');
const argsText = (a: Record<string, string>) =>
  Object.keys(a)
    .sort()
    .map((k) => `${k}=${a[k]}`)
    .join('\n');

/**
 * How the backend's job differs from Kiln's settings, one sentence per difference (empty: none). `versionSha` is
 * the spec digest of the Dockerfile's current version: a job holding another would build that on its timer.
 */
export function driftOf(s: JobSettings, job: JobView, versionSha: string): string[] {
  const out: string[] = [];
  const onOff = (b: boolean) => (b ? 'on' : 'off');
  if (s.enabled !== job.enabled)
    out.push(`Switched ${onOff(s.enabled)} in Kiln, ${onOff(job.enabled)} in the build service.`);
  const mine = describeSchedule({ schedule: s.schedule, hour: s.hour, weekday: s.weekday });
  const theirs = describeSchedule({
    schedule: job.schedule,
    hour: job.scheduleHour,
    weekday: job.scheduleWeekday,
    timerSpec: job.timerSpec,
  });
  if (mine !== theirs) out.push(`Schedule: ${mine} in Kiln, ${theirs} in the build service.`);
  if (!sameList(s.formats, job.formats))
    out.push(
      `Output formats: ${s.formats.join(', ')} in Kiln, ${job.formats.join(', ') || 'none'} in the build service.`,
    );
  if (!sameList(s.bootFirmware ?? [], job.bootFirmware ?? [])) {
    out.push(
      `Boot firmware: ${s.bootFirmware?.join(', ') ?? 'the default'} in Kiln, ${job.bootFirmware?.join(', ') ?? 'the default'} in the build service.`,
    );
  }
  if (argsText(s.buildArgs) !== argsText(job.buildArgs))
    out.push('Build arguments differ between Kiln and the build service.');
  if (job.specSha256 && job.specSha256 !== versionSha)
    out.push(
      "The build service holds another version of the Dockerfile (or its build context) than Kiln's current one.",
    );
  return out;
}
