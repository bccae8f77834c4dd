/**
 * Daily and weekly builds of the local backend (Jenkins has its own timer): once per period for every enabled job
 * with a schedule, under an idempotency key naming the period, so a second check, a restart or a second runner in
 * the same period makes no second build. A daily period starts at the job's hour (UTC), a weekly one at that hour
 * of its weekday; without them (specs from before they existed) at midnight, and on Monday. A period that began
 * before the schedule was set is not fired after the fact.
 */
import type { JobInfo, Schedule } from '../../../protocol/index.js';
import type { Logger } from '../../../shared/logger.js';
import type { BuildStore } from './records.js';

/** Starts the builds whose period is due; `build` is the backend's own (idempotent by key). */
export async function fireSchedules(
  store: BuildStore,
  jobs: JobInfo[],
  build: (job: number, key: string) => Promise<unknown>,
  log: Logger,
): Promise<void> {
  const now = store.now();
  for (const j of jobs) {
    if (!j.managed || j.job === undefined || !j.enabled || !j.schedule || j.schedule === 'off') continue;
    const meta = await store.readMeta(j.job);
    const spec = await store.readSpec(j.job).catch(() => undefined);
    if (!meta || !spec || spec.schedule === 'off') continue;
    const { key, start } = periodOf(spec.schedule, now, { hour: spec.scheduleHour, weekday: spec.scheduleWeekday });
    if (new Date(meta.scheduleSince) >= start || meta.keys[key] !== undefined) continue;
    await build(j.job, key).catch((e: unknown) => log.warn({ err: e, job: j.job }, 'scheduled build refused'));
  }
}

const DAY_MS = 86_400_000;
const stamp = (d: Date) => d.toISOString().slice(0, 10).replaceAll('-', '');

/**
 * The schedule period `now` falls in (UTC) and its idempotency key: one timer build per day or week. A period
 * starts at `hour` (default 0) of each day, or of each `weekday` (0 = Sunday; default Monday) for a weekly one.
 */
export function periodOf(
  schedule: Exclude<Schedule, 'off'>,
  now: Date,
  at: { hour?: number | undefined; weekday?: number | undefined } = {},
): { key: string; start: Date } {
  const hourMs = (at.hour ?? 0) * 3600_000;
  const day = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  let start = day + hourMs;
  if (start > now.getTime()) start -= DAY_MS;
  if (schedule === 'daily') return { key: `daily-${stamp(new Date(start))}`, start: new Date(start) };
  const weekday = at.weekday ?? 1;
  start -= ((new Date(start).getUTCDay() - weekday + 7) % 7) * DAY_MS;
  return { key: `weekly-${stamp(new Date(start))}`, start: new Date(start) };
}
