/**
 * Following a build live (the build page's Server-Sent Events): its log line by line, its progress from the SDK's
 * machine lines, and its row when it changes, until it ends.
 *
 * Many viewers of one build cost one glue call per poll, not one each: reads go through a `Coalescer` (one call in
 * flight per key, its answer kept briefly), and every viewer of a live log asks for the same offset, the end of the
 * last complete line. Positions are byte offsets into the raw log: a viewer that reconnects with the offset of the
 * last event it saw (Last-Event-ID) gets exactly the lines after it, none lost or repeated.
 */
import { WEB_BUILD_STATES, findBuild, isFinal, type BuildRow } from '../../db/index.js';
import { notFound } from '../../shared/errors.js';
import type { LogChunk } from '../../protocol/index.js';
import type { ProgressEvent } from '../../protocol/sdk-output.js';
import type { Actor } from '../actor.js';
import type { CoreDeps } from '../deps.js';
import { buildFor } from './access.js';
import { parsePosition, positionOf, readFrom, RESTART_LINE, type LogPosition } from './log-position.js';
import { completeLines, lineHtml, plainLine, splitMachineLines, type AnsiState } from './log-view.js';

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
  /** Complete log lines: HTML the page can insert (escaped, colours as classes), or plain text (the REST API). */
  | { type: 'log'; id: number; lines: string[] }
  | { type: 'progress'; progress: ProgressEvent }
  | { type: 'build'; build: BuildRow }
  | { type: 'end' };

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
 * aborts. Authorisation happens before the first event: a refused viewer gets the error, not an empty stream. Log
 * lines come as `html` (the build page) or plain `text` (the REST API).
 */
export async function followBuild(
  d: Deps,
  actor: Actor,
  rawId: unknown,
  rawFrom: unknown,
  signal: AbortSignal,
  format: 'html' | 'text' = 'html',
): Promise<AsyncGenerator<LiveEvent>> {
  const first = await buildFor(d.db, actor, rawId);
  return follow(d, first, parsePosition(rawFrom), signal, format);
}

/** The row as every follower and waiter of a build in this process shares it: one read per build and poll. */
const sharedRow = (d: Deps, id: number): Promise<BuildRow | undefined> =>
  d.live.get(
    `row:${id}`,
    () => d.config.web.livePollMs,
    () => findBuild(d.db, id, null),
  );

/**
 * Waiters on builds (the REST API's long poll), served by one timer: every `pollMs` while anyone waits, one
 * statement reads the rows of every build waited on, and each waiter whose condition holds is answered. A hundred
 * clients waiting cost one query per poll, not a hundred; between polls nothing is held but the waiters' promises.
 */
interface Waiter {
  id: number;
  done: (b: BuildRow) => boolean;
  deadline: number;
  /** The row as the last poll read it. */
  last?: BuildRow;
  /** The row, the last one read (undefined: none yet), or null: the build is gone. */
  settle: (b: BuildRow | null | undefined) => void;
  fail: (e: unknown) => void;
}

export class BuildWatch {
  private readonly waiters = new Set<Waiter>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly read: (ids: number[]) => Promise<Map<number, BuildRow>>,
    private readonly pollMs: number,
  ) {}

  /**
   * The build's row once `done` holds for it; at `deadline` (ms, Date.now) or on abort the last row read (undefined
   * if none was); null once the build is gone.
   */
  until(id: number, done: (b: BuildRow) => boolean, deadline: number, signal: AbortSignal) {
    return new Promise<BuildRow | null | undefined>((resolve, reject) => {
      if (signal.aborted) return resolve(undefined);
      const leave = () => {
        signal.removeEventListener('abort', onAbort);
        this.waiters.delete(w);
      };
      const w: Waiter = {
        id,
        done,
        deadline,
        settle: (b) => {
          leave();
          resolve(b);
        },
        fail: (e) => {
          leave();
          reject(e);
        },
      };
      const onAbort = () => w.settle(w.last);
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(w);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.timer || this.waiters.size === 0) return;
    const soonest = Math.min(...[...this.waiters].map((w) => w.deadline));
    this.timer = setTimeout(() => void this.tick(), Math.max(0, Math.min(this.pollMs, soonest - Date.now())));
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    const waiting = [...this.waiters];
    try {
      const rows = await this.read([...new Set(waiting.map((w) => w.id))]);
      const now = Date.now();
      for (const w of waiting) {
        const b = rows.get(w.id);
        if (!b) w.settle(null);
        else if (w.done(b) || now >= w.deadline) w.settle(b);
        else w.last = b;
      }
    } catch (e) {
      for (const w of waiting) w.fail(e);
    } finally {
      this.timer = undefined;
      this.schedule();
    }
  }
}

/**
 * The long poll: a build the actor may read, answered once its state is not `rawSeen` (the state the client saw;
 * by default the one it has now) or is final, or when `waitMs` have passed or `signal` aborts (BuildWatch).
 */
export async function waitForBuild(
  d: Pick<CoreDeps, 'db'> & { watch: BuildWatch },
  actor: Actor,
  rawId: unknown,
  o: { seen?: unknown; waitMs: number },
  signal: AbortSignal,
): Promise<BuildRow> {
  const row = await buildFor(d.db, actor, rawId);
  const seen = (WEB_BUILD_STATES as readonly unknown[]).includes(o.seen) ? o.seen : row.state;
  const moved = (b: BuildRow) => b.state !== seen || isFinal(b.state);
  if (moved(row) || o.waitMs <= 0) return row;
  const later = await d.watch.until(row.id, moved, Date.now() + o.waitMs, signal);
  if (later === null) throw notFound('No such build');
  return later ?? row;
}

async function* follow(
  d: Deps,
  first: BuildRow,
  from: LogPosition,
  signal: AbortSignal,
  format: 'html' | 'text',
): AsyncGenerator<LiveEvent> {
  const poll = d.config.web.livePollMs;
  const id = first.id;
  let { attempt, offset } = from;
  let seen = '';
  const sgr: { sgr: AnsiState } = { sgr: {} };
  while (!signal.aborted) {
    const row = await sharedRow(d, id);
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
    // A requeued build's log starts over under its new backend build (log-position.ts).
    if (attempt !== row.requeues) {
      const r = readFrom({ attempt, offset }, row.requeues);
      attempt = row.requeues;
      offset = r.offset;
      if (r.restarted) yield { type: 'log', id: positionOf(attempt, offset), lines: [restartLine(format)] };
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
      yield {
        type: 'log',
        id: positionOf(attempt, offset),
        lines: human.map((l) => (format === 'html' ? lineHtml(l, sgr) : plainLine(l))),
      };
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

const restartLine = (format: 'html' | 'text') =>
  format === 'html' ? lineHtml(RESTART_LINE, { sgr: {} }) : RESTART_LINE;
