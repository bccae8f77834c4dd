/**
 * Where a waiting build stands: its place in the queue and an estimate of when it starts, from how long past
 * builds took. The order is the fair one the backends serve (the local runner: round robin by user; Jenkins: the
 * per-user cap of worker.userBuildsInFlight): a user's k-th waiting build comes in round k, a user with builds
 * running comes later in each round, and within a round the longer-waiting user first.
 */
import { countRunningByOwner, listWaitingBuilds, recentRunTimes, type BuildRow } from '../../db/index.js';
import type { CoreDeps } from '../deps.js';

export interface QueuePlace {
  /** 1 = next to start. */
  position: number;
  /** Builds waiting in all. */
  waiting: number;
  /** Seconds until it is expected to start, when past builds allow a guess. */
  etaSeconds?: number;
  /** What builds typically take here (median of the latest). */
  typicalSeconds?: number;
}

/** Waiting builds' ids in the order they are expected to start. */
export function fairOrder(
  waiting: readonly Pick<BuildRow, 'id' | 'owner_id'>[],
  runningByOwner: ReadonlyMap<number, number> = new Map(),
): number[] {
  const seen = new Map<number, number>();
  const firstOf = new Map<number, number>();
  const keyed = waiting.map((b) => {
    const k = seen.get(b.owner_id) ?? 0;
    seen.set(b.owner_id, k + 1);
    if (!firstOf.has(b.owner_id)) firstOf.set(b.owner_id, b.id);
    return { id: b.id, round: k + (runningByOwner.get(b.owner_id) ?? 0), first: firstOf.get(b.owner_id)! };
  });
  keyed.sort((a, b) => a.round - b.round || a.first - b.first || a.id - b.id);
  return keyed.map((k) => k.id);
}

export function median(xs: number[]): number | undefined {
  if (!xs.length) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1]! + s[m]!) / 2;
}

/** The place of a waiting build (undefined when it is not waiting). */
export async function queuePlace(
  d: Pick<CoreDeps, 'db' | 'config'>,
  build: Pick<BuildRow, 'id' | 'state' | 'dockerfile_id'>,
): Promise<QueuePlace | undefined> {
  if (build.state !== 'requested' && build.state !== 'queued') return undefined;
  const [waiting, runningByOwner, times] = await Promise.all([
    listWaitingBuilds(d.db),
    countRunningByOwner(d.db),
    recentRunTimes(d.db, { limit: 20 }),
  ]);
  const running = [...runningByOwner.values()].reduce((a, b) => a + b, 0);
  const order = fairOrder(waiting, runningByOwner);
  const at = order.indexOf(build.id);
  if (at < 0) return undefined;
  const typical = median(
    times
      .map((t) => (Date.parse(t.finished_at) - Date.parse(t.started_at)) / 1000)
      .filter((s) => Number.isFinite(s) && s >= 0),
  );
  const slots = Math.max(1, d.config.glue.concurrency);
  const place: QueuePlace = { position: at + 1, waiting: order.length };
  if (typical !== undefined) {
    place.typicalSeconds = Math.round(typical);
    // Conservative: each build ahead, and each one running, holds a slot for a typical build's time.
    place.etaSeconds = Math.round(Math.floor((at + running) / slots) * typical);
  }
  return place;
}
