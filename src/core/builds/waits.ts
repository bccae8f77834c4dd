/**
 * Held waits on builds at the backend: how a build's start and end reach the web in well under a second without
 * asking the glue every few milliseconds. While a build is queued or running at the backend, the worker that
 * dispatched or refreshed it holds one `build.wait` on it (GluePort.wait), which the glue answers as soon as the
 * build's state moves (the local backend hears build.json change; the Jenkins backend asks Jenkins twice a second),
 * or after WAIT_SECONDS; an answer that says it moved runs the build's `build.refresh` at once (Worker.hurry)
 * instead of at its next `worker.refreshMs`. The refresh stays what carries the build: it records every state, and
 * a wait that is lost, refused or never held costs at most the old interval, never a stuck build.
 *
 * Lifecycle: a started worker makes one (`Worker.start`), its task runs reach it as `TaskRun.waits`, and
 * `Worker.stop` closes it (every held wait is abandoned). Bounds: at most `worker.buildWaits` held at once (each
 * is an SSH session: under the OpenSSH door a `kiln glue` process), running builds first: a queued build's wait
 * gives way to a running build's. Nothing here writes the build's row.
 */
import type { BuildRow } from '../../db/index.js';
import type { BuildState } from '../../protocol/index.js';
import { isKilnError } from '../../shared/errors.js';
import type { CoreDeps } from '../deps.js';
import { buildSubject } from '../tasks/queue.js';

/** How long one wait is held (the glue answers then at the latest, and the wait is asked again). */
export const WAIT_SECONDS = 30;
/** A glue that does not know build.wait (older than this web) is asked again after this long. */
const UNKNOWN_VERB_PAUSE_MS = 10 * 60_000;

/** The states a build waits in at the backend. */
export type WaitedState = Extract<BuildState, 'queued' | 'running'>;

interface Entry {
  id: number;
  job: number;
  build: number;
  /** The newest state of the build the worker knows (states only move forward: queued, then running). */
  known: WaitedState;
  /** The held wait, while one is. */
  hold?: AbortController;
}

export class BuildWaits {
  private readonly entries = new Map<number, Entry>();
  private held = 0;
  private closed = false;
  private pausedUntil = 0;

  /** `moved(subject)`: the build's state moved at the backend; its refresh should run now. */
  constructor(
    private readonly d: Pick<CoreDeps, 'glue' | 'config' | 'logger'>,
    private readonly moved: (subject: string) => void,
  ) {}

  /** How many waits are held now. */
  get holding(): number {
    return this.held;
  }

  /** How many builds this worker keeps a wait for (held, or waiting for room). */
  get watching(): number {
    return this.entries.size;
  }

  /** A dispatch or refresh saw the build at the backend in `state`: hold a wait on it (one per build). */
  watch(b: Pick<BuildRow, 'id' | 'dockerfile_id' | 'backend_build'>, state: WaitedState): void {
    if (this.closed || b.backend_build == null || this.d.config.worker.buildWaits === 0) return;
    const e = this.entries.get(b.id);
    if (e?.build === b.backend_build) {
      // Every refresh of every build at the backend comes here: only news (or room) is worth a look at the rest.
      const news = state === 'running' && e.known !== 'running';
      if (state === 'running') e.known = 'running';
      if (!news && this.held >= this.d.config.worker.buildWaits) return;
    } else {
      // A requeued build is another backend build: the wait on the one before goes.
      if (e) this.forget(b.id);
      this.entries.set(b.id, { id: b.id, job: b.dockerfile_id, build: b.backend_build, known: state });
    }
    this.fill();
  }

  /** The build left the backend's hands (ended, requeued, gone): no wait on it any more. */
  forget(id: number): void {
    const e = this.entries.get(id);
    if (!e) return;
    this.entries.delete(id);
    e.hold?.abort();
  }

  /** Abandons every held wait; nothing is held after this. */
  close(): void {
    this.closed = true;
    for (const e of this.entries.values()) e.hold?.abort();
    this.entries.clear();
  }

  /** Holds waits while there is room, running builds first; a running build takes a queued one's place. */
  private fill(): void {
    if (this.closed || Date.now() < this.pausedUntil) return;
    const max = this.d.config.worker.buildWaits;
    const unheld = [...this.entries.values()]
      .filter((e) => !e.hold)
      .sort((a, b) => Number(b.known === 'running') - Number(a.known === 'running'));
    for (const e of unheld) {
      if (this.held < max) {
        this.hold(e);
        continue;
      }
      if (e.known !== 'running') return;
      // Its end matters more than a queued build's start: that wait gives way (its end calls fill() again).
      const queued = [...this.entries.values()].find((x) => x.hold && !x.hold.signal.aborted && x.known === 'queued');
      if (!queued) return;
      queued.hold!.abort();
    }
  }

  private hold(e: Entry): void {
    const hold = new AbortController();
    const known = e.known;
    e.hold = hold;
    this.held++;
    const mine = () => this.entries.get(e.id) === e;
    const early = Date.now() + (WAIT_SECONDS * 1000) / 2;
    this.d.glue
      .wait(e.job, e.build, known, WAIT_SECONDS, hold.signal)
      .then(
        (st) => {
          // An answer that crossed close(): the worker is stopping, and its database may be going too.
          if (this.closed) return;
          if (st.state !== known) this.moved(buildSubject(e.id));
          if (!mine()) return;
          // The glue's word is the newest: the next wait is on it. Ended: the refresh takes it from here. Answered
          // early with nothing moved (a glue closing, or one that does not hold): asked again only when a refresh of
          // this worker asks (never in a loop), and not kept meanwhile, since another worker may follow it from now on.
          if (st.state === known && Date.now() < early && !hold.signal.aborted) this.entries.delete(e.id);
          else if (st.state === 'queued' || st.state === 'running') e.known = st.state;
          else this.entries.delete(e.id);
        },
        (err: unknown) => {
          if (hold.signal.aborted || this.closed) return; // given way, forgotten, or closing
          if (mine()) this.entries.delete(e.id);
          if (isKilnError(err, 'not_found')) {
            // Gone from the backend: the refresh finds out how, and requeues or ends the build.
            this.moved(buildSubject(e.id));
          } else if (isKilnError(err, 'invalid_input')) {
            this.pausedUntil = Date.now() + UNKNOWN_VERB_PAUSE_MS;
            this.d.logger.warn(
              { err: err.message },
              'the glue does not hold build.wait (older than this web?): builds are followed by refresh only for a while',
            );
          } else {
            // The glue away or slow: the refresh carries the build, and its next look asks for a wait again.
            this.d.logger.debug({ build: e.id, err: (err as Error).message }, 'build.wait failed');
          }
        },
      )
      .finally(() => {
        e.hold = undefined;
        this.held--;
        this.fill();
      })
      .catch((err: unknown) => this.d.logger.error({ err, build: e.id }, 'build.wait bookkeeping failed'));
  }
}
