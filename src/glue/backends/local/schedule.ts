/**
 * Daily and weekly builds of the local backend (Jenkins has its own timer): once per period (UTC day, ISO week) for
 * every enabled job with a schedule, under an idempotency key naming the period, so a second check, a restart or a
 * second runner in the same period makes no second build. A period that began before the schedule was set is not
 * fired after the fact.
 */
import type { JobInfo, Schedule } from '../../../protocol/index.js';
import type { Logger } from '../../../shared/logger.js';
import type { BuildStore } from './records.js';

/** Starts the builds whose period is due; `build` is the backend's own (idempotent by key). */
export async function fireSchedules(store: BuildStore, jobs: JobInfo[], build: (job: number, key: string, cause: string) => Promise<unknown>, log: Logger): Promise<void> {
  const now = store.now();
  for (const j of jobs) {
    if (!j.managed || j.job === undefined || !j.enabled || !j.schedule || j.schedule === 'off') continue;
    const meta = await store.readMeta(j.job);
    if (!meta) continue;
    const { key, start } = periodOf(j.schedule, now);
    if (new Date(meta.scheduleSince) >= start || meta.keys[key] !== undefined) continue;
    await build(j.job, key, `timer ${j.schedule}`).catch((e: unknown) => log.warn({ err: e, job: j.job }, 'scheduled build refused'));
  }
}

/** The schedule period `now` falls in (UTC) and its idempotency key: one timer build per day or ISO week. */
export function periodOf(schedule: Exclude<Schedule, 'off'>, now: Date): { key: string; start: Date } {
  const day = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
  if (schedule === 'daily') return { key: `daily-${day.toISOString().slice(0, 10).replaceAll('-', '')}`, start: day };
  const dow = (day.getUTCDay() + 6) % 7; // Monday = 0
  const monday = new Date(day.getTime() - dow * 86_400_000);
  return { key: `weekly-${monday.toISOString().slice(0, 10).replaceAll('-', '')}`, start: monday };
}
