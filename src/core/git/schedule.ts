/**
 * Kiln's own timer for git Dockerfiles, run in each reconciliation pass. The backend's timer cannot fetch (it builds
 * what its job holds), so a git Dockerfile's job is put without one (jobs/settings.ts specFields) and Kiln requests
 * its scheduled builds itself: each daily or weekly slot once (the slot is taken with a guarded update, the build's
 * key is `sched-<dockerfile>-<slot>`), as `schedule` builds whose build.fetch skips them when the commit has not
 * changed since the last success. A schedule that changed starts at its latest slot without firing it, as the local
 * backend's timer does. Following Dockerfiles are polled here too (`git.poll`, every git.pollSeconds).
 */
import { findDockerfile, listScheduledSources, listSourcesToPoll, takeScheduleSlot } from '../../db/index.js';
import { isKilnError } from '../../shared/errors.js';
import { requestOf } from '../builds/index.js';
import { clockOf, type CoreDeps } from '../deps.js';
import { dockerfileSubject, enqueue, isoAt } from '../tasks/queue.js';

const DAY_MS = 24 * 3600_000;

/** The latest start of a daily (at `hour` UTC) or weekly (on `weekday`, 0 = Sunday) schedule at or before `now`. */
export function latestSlot(now: number, s: { schedule: 'daily' | 'weekly'; hour: number; weekday: number }): number {
  const d = new Date(now);
  let t = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), s.hour);
  if (t > now) t -= DAY_MS;
  if (s.schedule === 'weekly') while (new Date(t).getUTCDay() !== s.weekday) t -= DAY_MS;
  return t;
}

const specOf = (s: { schedule: string; schedule_hour: number; schedule_weekday: number }) =>
  `${s.schedule}@${s.schedule === 'weekly' ? s.schedule_weekday : '-'}@${s.schedule_hour}`;

/** Requests the scheduled builds that are due; returns how many. */
export async function scheduleGitBuilds(d: CoreDeps): Promise<number> {
  let n = 0;
  for (const s of await listScheduledSources(d.db)) {
    const slot = isoAt(
      latestSlot(clockOf(d), { schedule: s.schedule, hour: s.schedule_hour, weekday: s.schedule_weekday }),
    );
    const spec = specOf(s);
    if (s.schedule_spec !== spec) {
      // A new or changed schedule: its current period began before it was set, so it starts with the next slot.
      await takeScheduleSlot(d.db, s.dockerfile_id, s.schedule_slot, slot, spec);
      continue;
    }
    if (s.schedule_slot !== null && slot <= s.schedule_slot) continue;
    if (!(await takeScheduleSlot(d.db, s.dockerfile_id, s.schedule_slot, slot, spec))) continue;
    const df = await findDockerfile(d.db, s.dockerfile_id, null);
    if (!df || df.deleting_at) continue;
    try {
      const key = `sched-${df.id}-${slot.replace(/[^0-9]/g, '').slice(0, 12)}`;
      const r = await requestOf(d, df, { key, trigger: 'schedule', quota: false });
      if (r.created) {
        n++;
        d.logger.info({ dockerfile: df.id, build: r.build.id, slot }, 'scheduled build of a git Dockerfile requested');
      }
    } catch (e) {
      if (!isKilnError(e, 'conflict')) throw e;
      d.logger.warn({ dockerfile: df.id, slot, err: e.message }, 'scheduled build of a git Dockerfile not requested');
    }
  }
  return n;
}

/** Enqueues a poll of every following Dockerfile not polled for git.pollSeconds (0: no polling). */
export async function enqueueGitPolls(d: CoreDeps): Promise<number> {
  const every = d.config.git.pollSeconds;
  if (every === 0) return 0;
  let n = 0;
  for (const s of await listSourcesToPoll(d.db, isoAt(clockOf(d) - every * 1000)))
    if (await enqueue(d.db, d, 'git.poll', dockerfileSubject(s.dockerfile_id))) n++;
  return n;
}
