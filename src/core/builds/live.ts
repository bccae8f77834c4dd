/**
 * Following a build live (the build page's Server-Sent Events): its log line by line, its progress from the SDK's
 * machine lines, and its row when it changes, until it ends.
 *
 * Many viewers of one build cost one glue call per poll, not one each: reads go through a `Coalescer` (one call in
 * flight per key, its answer kept briefly), and every viewer of a live log asks for the same offset, the end of the
 * last complete line. Positions are byte offsets into the raw log: a viewer that reconnects with the offset of the
 * last event it saw (Last-Event-ID) gets exactly the lines after it, none lost or repeated.
 */
import { findBuild, isFinal, type BuildRow } from '../../db/index.js';
import type { LogChunk } from '../../protocol/index.js';
import type { ProgressEvent } from '../../protocol/sdk-output.js';
import type { Actor } from '../actor.js';
import type { CoreDeps } from '../deps.js';
import { buildFor } from './access.js';
import { completeLines, lineHtml, splitMachineLines, type AnsiState } from './log-view.js';

/** One call in flight per key; its answer reused for `ttlMs` (an error is never kept). Bounded. */
export class Coalescer {
  private readonly entries = new Map<string, { value: Promise<unknown>; expires: number }>();
  constructor(
    private readonly max = 2000,
    private readonly now: () => number = Date.now,
  ) {}

  get<T>(key: string, ttlMs: (v: T) => number, fn: () => Promise<T>): Promise<T> {
    const t = this.now();
    const hit = this.entries.get(key);
    if (hit && hit.expires > t) return hit.value as Promise<T>;
    const value = fn();
    // In flight: shared until it settles; then kept for its ttl.
    this.entries.set(key, { value, expires: Number.POSITIVE_INFINITY });
    value.then(
      (v) => {
        const e = this.entries.get(key);
        if (e?.value === value) e.expires = this.now() + ttlMs(v);
      },
      () => {
        if (this.entries.get(key)?.value === value) this.entries.delete(key);
      },
    );
    if (this.entries.size > this.max) {
      for (const [k, e] of this.entries) {
        if (this.entries.size <= this.max * 0.9) break;
        if (e.expires !== Number.POSITIVE_INFINITY) this.entries.delete(k);
      }
    }
    return value;
  }
}

export type LiveEvent =
  | { type: 'log'; id: number; html: string[] }
  | { type: 'progress'; progress: ProgressEvent }
  | { type: 'build'; build: BuildRow }
  | { type: 'end' };

/** An offset as a client sent it (Last-Event-ID or `from`), or 0. */
export function parseOffset(raw: unknown): number {
  return typeof raw === 'string' && /^(0|[1-9][0-9]{0,14})$/.test(raw) ? Number(raw) : 0;
}

type Deps = Pick<CoreDeps, 'db' | 'glue' | 'config'> & { live: Coalescer };

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

/**
 * The events of a build the actor may read, from byte `rawFrom` of its log, until it ends (then `end`) or `signal`
 * aborts. Authorisation happens before the first event: a refused viewer gets the error, not an empty stream.
 */
export async function followBuild(
  d: Deps,
  actor: Actor,
  rawId: unknown,
  rawFrom: unknown,
  signal: AbortSignal,
): Promise<AsyncGenerator<LiveEvent>> {
  const first = await buildFor(d.db, actor, rawId);
  return follow(d, first, parseOffset(rawFrom), signal);
}

async function* follow(d: Deps, first: BuildRow, from: number, signal: AbortSignal): AsyncGenerator<LiveEvent> {
  const poll = d.config.web.livePollMs;
  const id = first.id;
  let offset = from;
  let seen = '';
  const sgr: { sgr: AnsiState } = { sgr: {} };
  while (!signal.aborted) {
    const row = await d.live.get(
      `row:${id}`,
      () => poll,
      async () => (await findBuild(d.db, id, null))!,
    );
    if (!row) return;
    const stamp = `${row.state} ${row.updated_at}`;
    if (stamp !== seen) {
      seen = stamp;
      yield { type: 'build', build: row };
    }
    if (row.backend_build == null) {
      if (isFinal(row.state)) {
        yield { type: 'end' };
        return;
      }
      await sleep(poll, signal);
      continue;
    }
    const job = row.dockerfile_id;
    const no = row.backend_build;
    // A chunk holding a complete line is kept: every viewer reading at this offset moves past it. One with nothing
    // or a partial line only is asked again next poll (the line is still being written).
    const chunk: LogChunk = await d.live.get(
      `log:${job}:${no}:${offset}`,
      (c) => (c.text.includes('\n') || !c.more ? 30_000 : poll),
      () => d.glue.call('build.log', [job, no, offset]),
    );
    const cut = completeLines(chunk);
    if (cut.next > offset || cut.lines.length) {
      const { human, progress } = splitMachineLines(cut.lines);
      offset = cut.next;
      for (const p of progress) yield { type: 'progress', progress: p };
      yield { type: 'log', id: offset, html: human.map((l) => lineHtml(l, sgr)) };
      continue;
    }
    // Nothing new: the log is complete once the backend says so and the row is past running.
    if (!chunk.more && (isFinal(row.state) || row.state === 'verifying')) {
      if (isFinal(row.state)) {
        yield { type: 'end' };
        return;
      }
    }
    await sleep(poll, signal);
  }
}
